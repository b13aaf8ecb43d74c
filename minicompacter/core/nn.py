"""Functional building blocks of a BERT-style encoder, written for autograd.

Every layer is a pair of plain functions: ``init_x(rng, ...) -> params`` makes a dict
of arrays, ``x(params, inputs, ...) -> outputs`` applies it. Weights are stored fan-in
first, ``w: (d_in, d_out)``, and applied as ``x @ w + b`` (the row-vector convention
of autograd's examples, jax's stax and the Compacter reference code).

Float32 stays float32. NumPy turns float32 into float64 quietly in a few places, and in
the backward pass that halves the speed of every matrix product (docs/performance.md):
autograd's gradients of ``mean``, ``var``, ``max`` and
``maximum`` produce float64, and so does any NumPy float64 scalar such as
``np.sqrt(2.0)``. So this module divides with Python floats (``sum(x) * (1.0 / d)``
instead of ``mean``), takes the softmax shift outside the traced graph, and keeps
constants as Python floats. Float64 inputs stay float64, which the gradient checks use.

References: Devlin et al., "BERT", arXiv 1810.04805 (the post-LN block); Vaswani et
al., "Attention Is All You Need", arXiv 1706.03762 (scaled dot-product attention);
Hendrycks and Gimpel, "GELUs", arXiv 1606.08415 (both GELU forms).
"""

import math

import autograd.numpy as np
import numpy as onp
import scipy.special
from autograd.extend import defvjp, primitive
from autograd.tracer import getval


# --- dense -----------------------------------------------------------------------------

def init_dense(rng, d_in, d_out, *, std=0.02, dtype=onp.float32):
    """w ~ N(0, std^2) of shape (d_in, d_out), b = 0 (BERT's initialisation)."""
    return {"w": (rng.standard_normal((d_in, d_out)) * std).astype(dtype),
            "b": onp.zeros(d_out, dtype)}


def linear(x, w, b=None):
    """y = x @ w (+ b).   x: (..., d_in)  w: (d_in, d_out)  b: (d_out,) or None  ->  (..., d_out)"""
    return x @ w if b is None else x @ w + b


def dense(params, x):
    """y = x @ w + b.   x: (..., d_in)  w: (d_in, d_out)  y: (..., d_out)"""
    return linear(x, params["w"], params["b"])


# --- layer norm ------------------------------------------------------------------------

def init_layer_norm(d, *, dtype=onp.float32):
    """g = 1, b = 0: the layer starts as plain standardisation."""
    return {"g": onp.ones(d, dtype), "b": onp.zeros(d, dtype)}


def layer_norm(params, x, eps=1e-12):
    """y = g * (x - mu) / sqrt(var + eps) + b over the last axis (biased variance,
    as PyTorch's LayerNorm).   x, y: (..., d)   g, b: (d,)"""
    inv_d = 1.0 / x.shape[-1]                                   # a Python float: no float64
    mu = np.sum(x, axis=-1, keepdims=True) * inv_d              # (..., 1)
    xc = x - mu                                                 # (..., d)
    var = np.sum(xc * xc, axis=-1, keepdims=True) * inv_d       # (..., 1)
    return xc / np.sqrt(var + eps) * params["g"] + params["b"]


# --- GELU ------------------------------------------------------------------------------

@primitive
def erf(x):
    """The error function, elementwise, in the dtype of x (SciPy has float32 loops)."""
    return scipy.special.erf(x)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)      # Python floats keep float32 float32
defvjp(erf, lambda ans, x: lambda g: g * (_TWO_OVER_SQRT_PI * np.exp(-(x * x))))


@primitive
def tanh(x):
    """tanh, with the gradient written as 1 - tanh^2: autograd's own, 1 / cosh^2,
    overflows (harmlessly, but with warnings) for |x| > 44 in float32."""
    return onp.tanh(x)


defvjp(tanh, lambda ans, x: lambda g: g * (1.0 - ans * ans))


def gelu(x):
    """The exact GELU, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)). Pretrained BERT
    checkpoints (hidden_act "gelu") were trained with this form."""
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


def gelu_tanh(x):
    """The tanh approximation (hidden_act "gelu_new"), used by the Compacter reference
    configs: x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))). Differs from the
    exact form by at most about 4.7e-4 (near |x| = 2.7; notebook 00 plots it), enough
    to move a pretrained model's hidden states by a few thousandths."""
    return 0.5 * x * (1.0 + tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def relu(x):
    """max(x, 0), as x times a mask: the mask is a constant, so the gradient stays float32."""
    return x * (x > 0)


def swish(x):
    """x sigmoid(x) (also called SiLU)."""
    return x / (1.0 + np.exp(-x))


# --- embeddings ------------------------------------------------------------------------

def init_embedding(rng, num, d, *, std=0.02, dtype=onp.float32):
    """A lookup table (num, d), N(0, std^2)."""
    return (rng.standard_normal((num, d)) * std).astype(dtype)


def embedding(table, ids):
    """Rows of the table.   table: (V, d)  ids: (...) int  ->  (..., d)"""
    return table[ids]


# --- dropout ---------------------------------------------------------------------------

def dropout(x, rate, rng):
    """Inverted dropout: zero each entry with probability `rate`, scale the rest by
    1 / (1 - rate). Off (the identity) when `rng` is None, which is evaluation."""
    if rng is None or rate == 0.0:
        return x
    keep = rng.random(x.shape, dtype=onp.float32) >= rate       # (...,) bool
    return x * (keep.astype(x.dtype) * (1.0 / (1.0 - rate)))


# --- softmax and attention -------------------------------------------------------------

def softmax(x, axis=-1):
    """exp(x - m) / sum exp(x - m) with m the maximum along the axis. The result does
    not depend on m, so m is taken from the untraced value: its gradient is zero and
    autograd's float64 gradient of max never enters."""
    m = onp.max(getval(x), axis=axis, keepdims=True)            # a constant
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def init_attention(rng, d, *, std=0.02, dtype=onp.float32):
    """Query, key, value and output projections, each (d, d) with a bias."""
    r = rng.spawn(4)
    return {name: init_dense(g, d, d, std=std, dtype=dtype)
            for name, g in zip(("query", "key", "value", "output"), r)}


def mask_bias(mask, dtype):
    """Additive attention bias from a (B, T) mask of 1 (real) and 0 (padding): 0 where
    a key may be attended to, a large negative number where it may not.  -> (B, 1, 1, T)"""
    big = -1e4 if onp.dtype(dtype) == onp.float16 else -1e9
    return ((1 - onp.asarray(mask, dtype)) * big)[:, None, None, :]


def attention(params, x, bias, num_heads, *, dropout_rate=0.0, rng=None, project=None):
    """Multi-head self-attention (Vaswani et al., Eq. 1):
        head_j = softmax(Q_j K_j^T / sqrt(d_h) + bias) V_j,   out = [head_1 .. head_h] W_o + b_o
    x: (B, T, d)  bias: (B, 1, 1, T) from `mask_bias`  ->  (B, T, d)

    `project(name, x, y) -> y` is an optional hook on each projection
    ("query", "key", "value", "output"); it sees the projection's input and output and
    returns the output to use (LoRA adds its low-rank update there). Dropout, when `rng`
    is given, acts on the attention probabilities as in BERT."""
    B, T, d = x.shape
    dh = d // num_heads

    def proj(name, inp):
        y = dense(params[name], inp)
        return y if project is None else project(name, inp, y)

    def split_heads(y):                                          # (B, T, d) -> (B, h, T, dh)
        return np.transpose(np.reshape(y, (B, T, num_heads, dh)), (0, 2, 1, 3))

    q = split_heads(proj("query", x))                            # (B, h, T, dh)
    k = split_heads(proj("key", x))                              # (B, h, T, dh)
    v = split_heads(proj("value", x))                            # (B, h, T, dh)
    scores = (q * (1.0 / math.sqrt(dh))) @ np.swapaxes(k, -1, -2) + bias   # (B, h, T, T)
    p = dropout(softmax(scores, axis=-1), dropout_rate, rng)     # (B, h, T, T)
    ctx = np.reshape(np.transpose(p @ v, (0, 2, 1, 3)), (B, T, d))         # (B, T, d)
    return proj("output", ctx)                                   # (B, T, d)


# --- losses ------------------------------------------------------------------------------

def log_softmax(x, axis=-1):
    """x - log sum exp x, shifted by the (untraced) maximum for stability."""
    z = x - onp.max(getval(x), axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def cross_entropy(logits, labels):
    """Mean negative log-likelihood of integer labels.  logits: (B, C)  labels: (B,) int"""
    B = logits.shape[0]
    picked = log_softmax(logits)[onp.arange(B), onp.asarray(labels)]          # (B,)
    return -np.sum(picked) * (1.0 / B)


def mse(pred, target):
    """Mean squared error of a regression head.  pred: (B, 1) or (B,)  target: (B,)"""
    pred = np.reshape(pred, (-1,))
    diff = pred - onp.asarray(target, dtype=pred.dtype)
    return np.sum(diff * diff) * (1.0 / pred.shape[0])
