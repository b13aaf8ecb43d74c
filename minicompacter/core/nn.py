"""Functional building blocks of the BERT-style encoder and of T5, written for autograd.

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
Hendrycks and Gimpel, "GELUs", arXiv 1606.08415 (both GELU forms); Raffel et al., "T5",
arXiv 1910.10683 (unscaled attention with a position bias, the RMS norm); Zhang and
Sennrich, "Root Mean Square Layer Normalization", arXiv 1910.07467.
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
    """y = x @ w + b, or x @ w for a layer without a bias (T5's have none).
    x: (..., d_in)  w: (d_in, d_out)  y: (..., d_out)"""
    return linear(x, params["w"], params.get("b"))


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


def init_rms_norm(d, *, dtype=onp.float32):
    """g = 1: T5's layer norm has a weight and no bias."""
    return {"g": onp.ones(d, dtype)}


def rms_norm(params, x, eps=1e-6):
    """T5's layer norm, the root-mean-square norm (Zhang and Sennrich 2019, arXiv 1910.07467):
        y = g * x / sqrt(mean(x^2) + eps)         over the last axis, no mean subtracted
    and + b when the tree holds a bias (BitFit adds one, as the Compacter reference code does).
    x, y: (..., d)   g, b: (d,)"""
    inv_d = 1.0 / x.shape[-1]                                   # a Python float: no float64
    mean_square = np.sum(x * x, axis=-1, keepdims=True) * inv_d     # (..., 1)
    y = x / np.sqrt(mean_square + eps) * params["g"]            # (..., d)
    return y + params["b"] if "b" in params else y


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


def sinusoidal_table(num, d, dtype=onp.float32):
    """Fixed position embeddings (Vaswani et al. 2017, Section 3.5), as DistilBERT's
    sinusoidal_pos_embds makes them: with angle(pos, j) = pos / 10000^(2 floor(j/2) / d),
        table[pos, j] = sin(angle) for even j,  cos(angle) for odd j.     -> (num, d)"""
    pos = onp.arange(num)[:, None]                                     # (num, 1)
    j = onp.arange(d)[None, :]                                         # (1, d)
    angle = pos / onp.power(10000.0, 2 * (j // 2) / d)                 # (num, d), float64
    return onp.where(j % 2 == 0, onp.sin(angle), onp.cos(angle)).astype(dtype)


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


def projection(params, name, x, project=None):
    """One attention projection, x @ W_name (+ b), passed through the hook if there is one."""
    y = dense(params[name], x)
    return y if project is None else project(name, x, y)


def key_values(params, memory, project=None):
    """The keys and values of attention over `memory`, side by side:
        [memory W_k | memory W_v]      memory: (B, T_k, d)  ->  (B, T_k, 2 h d_h)
    Cross-attention attends to the encoder's states this way, and a decoder generating one
    token at a time keeps the keys and values of the tokens before (t5.py)."""
    return np.concatenate([projection(params, "key", memory, project),
                           projection(params, "value", memory, project)], axis=-1)


def attention(params, x, bias, num_heads, *, dropout_rate=0.0, rng=None, project=None,
              kv=None, position_bias=None, scale=None):
    """Multi-head attention (Vaswani et al., Eq. 1), with T5's additions:
        head_j = softmax(scale Q_j K_j^T + bias + position_bias_j) V_j
        out    = [head_1 .. head_h] W_o (+ b_o)
    x: (B, T_q, d)  bias: a constant broadcastable to (B, h, T_q, T_k): (B, 1, 1, T_k) from
    `mask_bias`, or with a causal part (B, 1, T_q, T_k)  ->  (B, T_q, d)

    kv: (B, T_k, 2 h d_h) from `key_values`, the keys and values attended to (cross-attention,
        a decoder's earlier tokens); None: self-attention, keys and values projected from x.
    position_bias: (1, h, T_q, T_k) added to the scores and differentiated (T5's learned
        relative positions); None: none.
    scale: of the scores; None: 1 / sqrt(d_h) (BERT). T5 uses 1.0 (its initialisation
        absorbs the scale).
    The projections are (d, h d_h) and (h d_h, d): h d_h need not equal d (T5's d_kv * heads).
    `project(name, x, y) -> y` is an optional hook on each projection
    ("query", "key", "value", "output"); it sees the projection's input and output and
    returns the output to use (LoRA adds its low-rank update there). Dropout, when `rng`
    is given, acts on the attention probabilities as in BERT and T5."""
    B, Tq, _ = x.shape
    inner = params["query"]["w"].shape[1]                       # h d_h
    dh = inner // num_heads
    scale = 1.0 / math.sqrt(dh) if scale is None else scale

    def split_heads(y):                                          # (B, T, h dh) -> (B, h, T, dh)
        return np.transpose(np.reshape(y, (B, -1, num_heads, dh)), (0, 2, 1, 3))

    q = split_heads(projection(params, "query", x, project))     # (B, h, Tq, dh)
    if kv is None:
        kv = key_values(params, x, project)                      # (B, Tq, 2 h dh)
    k = split_heads(kv[..., :inner])                             # (B, h, Tk, dh)
    v = split_heads(kv[..., inner:])                             # (B, h, Tk, dh)
    scores = (q * scale) @ np.swapaxes(k, -1, -2) + bias         # (B, h, Tq, Tk)
    if position_bias is not None:
        scores = scores + position_bias
    p = dropout(softmax(scores, axis=-1), dropout_rate, rng)     # (B, h, Tq, Tk)
    ctx = np.reshape(np.transpose(p @ v, (0, 2, 1, 3)), (B, Tq, inner))    # (B, Tq, h dh)
    return projection(params, "output", ctx, project)            # (B, Tq, d)


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
