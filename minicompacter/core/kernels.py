"""Fast versions of nn.py's layers: autograd primitives with hand-written gradients.

Read nn.py first: its plain functions say what is computed, and autograd differentiates
them with no help. The functions here compute the same things (tests/test_kernels.py
checks values and gradients against nn.py, in float64 with central differences) but
tell autograd the gradient directly, for these reasons, found by profiling a training step
(docs/performance.md). layers.py chooses between the two sets; nothing here is used
unless that switch says so.

- Fewer, larger temporaries. Autograd records every elementwise operation of a plain
  layer norm, GELU or softmax and keeps its inputs until the backward pass; one primitive
  keeps only what its gradient needs, and its forward works in place.
- Statistics computed once. A layer norm's mean and 1/std, a GELU's Phi(x), attention's
  probabilities are computed on the untraced value (`getval`) and handed to the primitive
  as constants, so the backward pass reuses them instead of recomputing them. (This makes
  the primitives first-order only: autograd's grad of grad would treat those constants as
  constants. Training needs first order.)
- One 2-D GEMM per dense layer. `x @ w` with x of shape (B, T, d) makes autograd compute
  the weight gradient as B batched products and a sum; `linear` flattens the rows, and a
  frozen weight's backward is only dy @ W^T: the input x is not kept for it.
- A faster exact GELU: SciPy's erf runs one element at a time (about 13 ns an element);
  for float32, Phi is interpolated in a table, to within float32's rounding.
- Every core, inside a `parallel()` block: a pool of threads runs the large products by
  rows and the elementwise chains in cache-sized blocks (`in_parts`), with BLAS on one
  thread (threads.py).
- No einsum through autograd (its gradient is slow); the few einsums here are plain
  NumPy reductions inside primitives.

Everything stays in the input's dtype: float32 in, float32 out, gradients included.
"""

import math

import autograd.numpy as anp
import numpy as onp
import scipy.special
from autograd.extend import defvjp, defvjp_argnums, primitive
from autograd.tracer import getval, isbox

from .threads import in_parts

_CHUNK = 1 << 16                 # elements per block of a chain of elementwise passes (256 KiB)


def _rows(x):
    """x as a 2-D array of rows: (..., d) -> (N, d), a view when it can be."""
    return x.reshape(-1, x.shape[-1])


def matmul_rows(a, b, bias=None):
    """a @ b (+ bias) for 2-D a, b, the rows of a split over the threads."""
    out = onp.empty((a.shape[0], b.shape[1]), onp.result_type(a, b))

    def work(rows):
        onp.matmul(a[rows], b, out=out[rows])
        if bias is not None:
            out[rows] += bias
    in_parts(work, a.shape[0], a.shape[0] * a.shape[1] * b.shape[1] // 16)
    return out


# --- dense ------------------------------------------------------------------------------

@primitive
def linear(x, w, b=None):
    """y = x @ w + b as one 2-D matrix product with the bias added in place.
    x: (..., d_in)  w: (d_in, d_out)  b: (d_out,) or None  ->  (..., d_out)"""
    return matmul_rows(_rows(x), w, b).reshape(x.shape[:-1] + (w.shape[1],))


def _linear_dw(ans, x, w, b=None):
    def vjp(g):                                                  # x^T dy, by rows of dw
        xr, gr = _rows(x), _rows(g)
        return matmul_rows(xr.T, gr)
    return vjp


defvjp(linear,
       lambda ans, x, w, b=None: lambda g: matmul_rows(_rows(g), w.T).reshape(x.shape),  # dy W^T
       _linear_dw,
       lambda ans, x, w, b=None: lambda g: _rows(g).sum(axis=0))                        # sum dy


def dense(params, x):
    """nn.dense as a primitive: y = x @ w + b (x @ w without a bias)."""
    return linear(x, params["w"], params.get("b"))


# --- embedding --------------------------------------------------------------------------

@primitive
def embedding(table, ids):
    """nn.embedding as a primitive: rows of the table.  table: (V, d)  ids: (...) int"""
    return table[ids]


def _embedding_dtable(ans, table, ids):
    def vjp(g):
        # The gradient of each row used: the sum of the gradients at its positions. Sorting
        # the ids and summing runs with add.reduceat beats autograd's np.add.at several times.
        flat = onp.asarray(ids).reshape(-1)
        order = onp.argsort(flat, kind="stable")
        sorted_ids = flat[order]
        starts = onp.flatnonzero(onp.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        out = onp.zeros(table.shape, g.dtype)
        out[sorted_ids[starts]] = onp.add.reduceat(_rows(g)[order], starts, axis=0)
        return out
    return vjp


defvjp(embedding, _embedding_dtable, None)


# --- layer norm and RMS norm ---------------------------------------------------------------

def normalize(x, g, b, eps, center=True):
    """(y, xhat, rstd) for y = xhat * g (+ b), xhat = (x - mu) * rstd, rstd = 1 / sqrt(var + eps)
    over the last axis; untraced, rows split over the threads. center=False is T5's RMS norm:
    mu = 0 and var is the mean square; b may be None (no bias)."""
    x = _rows(onp.asarray(x))
    N, d = x.shape
    y, xhat = onp.empty_like(x), onp.empty_like(x)
    rstd = onp.empty((N, 1), x.dtype)

    def work(rows):
        xh = xhat[rows]
        if center:
            onp.subtract(x[rows], x[rows].sum(axis=-1, keepdims=True) * (1.0 / d), out=xh)
        else:
            onp.copyto(xh, x[rows])
        r = rstd[rows]
        r[:, 0] = onp.einsum("ni,ni->n", xh, xh)
        r *= 1.0 / d
        r += eps
        onp.sqrt(r, out=r)
        onp.reciprocal(r, out=r)
        xh *= r
        onp.multiply(xh, g, out=y[rows])
        if b is not None:
            y[rows] += b
    in_parts(work, N, x.size, chunk=_CHUNK // d)
    return y, xhat, rstd


@primitive
def _layer_norm(x, g, b, y, xhat, rstd, center):
    """Returns y, computed by `normalize`; here to attach the gradient."""
    return y


def _layer_norm_dx(ans, x, g, b, y, xhat, rstd, center):
    d = xhat.shape[-1]

    def vjp(dy):
        # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * g;
        # without centering (RMS norm) the mean(dxhat) term is absent
        dy = _rows(dy)
        dx = onp.empty_like(xhat)

        def work(rows):
            dxh, xh = dx[rows], xhat[rows]
            onp.multiply(dy[rows], g, out=dxh)
            mean_dxhat_xhat = onp.einsum("ni,ni->n", dxh, xh)[:, None] * (1.0 / d)
            if center:
                dxh -= dxh.sum(axis=-1, keepdims=True) * (1.0 / d)
            dxh -= xh * mean_dxhat_xhat
            dxh *= rstd[rows]
        in_parts(work, dx.shape[0], dx.size, chunk=_CHUNK // d)
        return dx.reshape(x.shape)
    return vjp


defvjp(_layer_norm, _layer_norm_dx,
       lambda ans, x, g, b, y, xhat, rstd, center:
           lambda dy: onp.einsum("ni,ni->i", _rows(dy), xhat),
       lambda ans, x, g, b, y, xhat, rstd, center: lambda dy: _rows(dy).sum(axis=0),
       None, None, None, None)


def layer_norm(params, x, eps=1e-12):
    """nn.layer_norm as a primitive: the statistics are computed once, in the forward pass,
    and kept for the backward pass."""
    g, b = params["g"], params["b"]
    y, xhat, rstd = normalize(getval(x), getval(g), getval(b), eps)
    return _layer_norm(x, g, b, y.reshape(x.shape), xhat, rstd, True)


def rms_norm(params, x, eps=1e-6):
    """nn.rms_norm as a primitive (the same one as the layer norm's, without centering)."""
    g, b = params["g"], params.get("b")
    y, xhat, rstd = normalize(getval(x), getval(g), None if b is None else getval(b), eps,
                              center=False)
    return _layer_norm(x, g, b, y.reshape(x.shape), xhat, rstd, False)


# --- GELU -------------------------------------------------------------------------------

_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# Phi and phi in float32 from one table. SciPy's erf costs about 13 ns an element (it runs
# the float64 algorithm one element at a time), which made the exact GELU the largest cost
# of a training step after the matrix products; NumPy's float32 exp, which phi(x) =
# exp(-x^2 / 2) / sqrt(2 pi) needs, costs 2.4-3.1 ns an element on an AMD EPYC with AVX2,
# against 0.2 ns for a multiplication (bench/bench_passes.py). Both are smooth, so linear
# interpolation in a table of their float64 values at steps of h = 2^-10 over [-8, 8]
# (16,384 cells, 256 KiB: it stays in cache) is off by at most h^2/8 max|Phi''| = 3e-8 for
# Phi and h^2/8 max|phi''| = 5e-8 for phi, below float32's rounding of Phi (6e-8 near 1);
# with float32 arithmetic the measured error is under 1e-7 (tests/test_kernels.py). Each
# row holds a cell's (Phi, its rise, phi, its rise), so one gather fetches all four.
# Outside [-8, 8], Phi is 0 or 1 to float32 precision and phi is taken as 0 (the two end
# cells hold phi = 0: 5e-15 at |x| = 8), so that a huge |x| gets the derivative Phi exactly.
# Float64 inputs (the gradient checks) use SciPy's exact erf and NumPy's exp.
_TABLE_STEP = 1024                        # 1 / h
_TABLE_LIMIT = 8.0
_grid = onp.arange(-_TABLE_LIMIT * _TABLE_STEP, _TABLE_LIMIT * _TABLE_STEP + 1) / _TABLE_STEP
_Phi = 0.5 * (1.0 + scipy.special.erf(_grid * _INV_SQRT_2))
_phi = onp.exp(-0.5 * _grid ** 2) * _INV_SQRT_2PI
_phi[[0, 1, -2, -1]] = 0.0                # the end cells: phi = 0 there
_PHI_TABLE = onp.stack([_Phi[:-1], onp.diff(_Phi), _phi[:-1], onp.diff(_phi)],
                       axis=1).astype(onp.float32)          # (cells, 4)
del _grid, _Phi, _phi


def _phi_float32(x, cdf, pdf, scratch):
    """cdf = Phi(x) and, unless pdf is None, pdf = phi(x), by interpolation in the table
    above; x, cdf, pdf, scratch: float32, same shape."""
    t = scratch
    onp.clip(x, -_TABLE_LIMIT, _TABLE_LIMIT - 1.0 / _TABLE_STEP, out=t)
    t *= float(_TABLE_STEP)                               # position in cells, from 0 at x = 0
    onp.floor(t, out=cdf)
    t -= cdf                                              # fraction of the cell, in [0, 1)
    cdf += _TABLE_LIMIT * _TABLE_STEP                     # cell index, from 0 at x = -8
    rows = onp.take(_PHI_TABLE, cdf.astype(onp.intp), axis=0, mode="clip")   # (n, 4)
    onp.multiply(rows[:, 1], t, out=cdf)
    cdf += rows[:, 0]
    if pdf is not None:
        onp.multiply(rows[:, 3], t, out=pdf)
        pdf += rows[:, 2]


def gelu_block(xs, ys, ds=None):
    """ys = x Phi(x) and, unless ds is None, ds = its derivative Phi(x) + x phi(x), for one
    1-D block xs on the calling thread, into ys and ds (same shape and dtype as xs): Phi and
    phi from the table above for float32, from SciPy's erf and NumPy's exp for float64."""
    c = onp.empty_like(xs)                                             # Phi(x)
    if xs.dtype == onp.float32:
        _phi_float32(xs, c, ds, ys)                                    # ds: phi(x) for now
    else:
        onp.multiply(xs, _INV_SQRT_2, out=c)
        scipy.special.erf(c, out=c)
        c += 1.0
        c *= 0.5
        if ds is not None:
            onp.multiply(xs, xs, out=ds)
            ds *= -0.5
            onp.exp(ds, out=ds)
            ds *= _INV_SQRT_2PI
    onp.multiply(xs, c, out=ys)
    if ds is not None:
        ds *= xs                                                       # x phi(x)
        ds += c


def gelu_parts(x, slope=False):
    """(x Phi(x), its derivative Phi(x) + x phi(x) or None), Phi(x) = (1 + erf(x / sqrt 2)) / 2,
    phi(x) = exp(-x^2 / 2) / sqrt(2 pi); untraced, in x's dtype (`gelu_block`); large arrays
    on every core, in blocks that stay in cache. The derivative is computed here, while x is
    in cache, when `slope`."""
    x = onp.ascontiguousarray(x)
    y = onp.empty_like(x)
    dydx = onp.empty_like(x) if slope else None
    fx, fy = x.reshape(-1), y.reshape(-1)
    fd = dydx.reshape(-1) if slope else None
    in_parts(lambda rows: gelu_block(fx[rows], fy[rows], None if fd is None else fd[rows]),
             fx.size, fx.size, chunk=_CHUNK)
    return y, dydx


@primitive
def _gelu(x, y, dydx):
    """Returns y = gelu(x), computed by `gelu_parts`; here to attach the gradient."""
    return y


def _gelu_dx(ans, x, y, dydx):
    def vjp(g):
        return g * dydx
    return vjp


defvjp(_gelu, _gelu_dx, None, None)


def gelu(x):
    """nn.gelu (the exact form) as a primitive. When x is traced (training), the forward
    pass also computes the derivative, in the same pass over x, and keeps it: the
    backward pass is one multiplication."""
    y, dydx = gelu_parts(getval(x), slope=isbox(x))
    return _gelu(x, y, dydx)


# --- attention --------------------------------------------------------------------------

def _heads(qkv, num_heads, kv=None):
    """q, k, v each (B, h, T, d_h), views: from qkv (B, T, 3 h d_h) when kv is None, else q
    from qkv (B, T_q, h d_h) and k, v from kv (B, T_k, 2 h d_h)."""
    if kv is None:
        B, T, three_inner = qkv.shape
        dh = three_inner // (3 * num_heads)
        x = qkv.reshape(B, T, 3, num_heads, dh).transpose(2, 0, 3, 1, 4)    # (3, B, h, T, dh)
        return x[0], x[1], x[2]
    B, Tq, inner = qkv.shape
    dh = inner // num_heads
    q = qkv.reshape(B, Tq, num_heads, dh).transpose(0, 2, 1, 3)           # (B, h, Tq, dh)
    x = kv.reshape(B, kv.shape[1], 2, num_heads, dh).transpose(2, 0, 3, 1, 4)   # (2, B, h, Tk, dh)
    return q, x[0], x[1]


def attention_probs(qkv, bias, num_heads, kv=None, scale=None, position_bias=None):
    """softmax(scale q k^T + bias + position_bias), untraced, in place, each half of the batch
    on its own core.  qkv: (B, T, 3 h d_h), or with kv (B, T_k, 2 h d_h) (B, T_q, h d_h)
    bias: broadcastable to (B, h, T_q, T_k)  position_bias: (1, h, T_q, T_k) or None
    ->  (B, h, T_q, T_k)"""
    q, k, _ = _heads(qkv, num_heads, kv)
    B, h, Tq, dh = q.shape
    Tk = k.shape[2]
    scale = 1.0 / math.sqrt(dh) if scale is None else scale
    p = onp.empty((B, h, Tq, Tk), qkv.dtype)
    padded = bool(onp.any(bias))                 # no padding: the bias is all zeros
    per_row = onp.ndim(bias) == 4 and onp.shape(bias)[0] == B > 1

    def work(rows):
        s = p[rows]
        onp.matmul(q[rows] * scale if scale != 1.0 else q[rows], k[rows].swapaxes(-1, -2), out=s)
        if padded:
            s += bias[rows] if per_row else bias
        if position_bias is not None:
            s += position_bias
        s -= s.max(axis=-1, keepdims=True)
        onp.exp(s, out=s)
        s *= 1.0 / s.sum(axis=-1, keepdims=True)
    in_parts(work, B, p.size, chunk=max(1, _CHUNK // (h * Tq * Tk)))
    return p


@primitive
def _attend(qkv, kv, position_bias, p, keep, dropped, num_heads, scale):
    """The heads of dropped @ v, merged: (B, T_q, h d_h). dropped = p * keep (keep: the scaled
    dropout mask, None without dropout); qkv, kv (None: self-attention) and position_bias
    (None: none) are its differentiable inputs, p and keep are there for the gradient."""
    _, _, v = _heads(qkv, num_heads, kv)
    B, h, _, dh = v.shape
    Tq = p.shape[2]
    ctx = onp.empty((B, Tq, h, dh), qkv.dtype)
    ctx_heads = ctx.transpose(0, 2, 1, 3)                               # (B, h, Tq, dh) view

    def work(rows):
        onp.matmul(dropped[rows], v[rows], out=ctx_heads[rows])
    in_parts(work, B, dropped.size, chunk=max(1, _CHUNK // dropped[0].size))
    return ctx.reshape(B, Tq, h * dh)


def _attend_dqkv(argnums, ans, args, kwargs):
    """The gradients of `_attend` with respect to qkv (0), kv (1) and position_bias (2): one
    pass computes the scores' gradient dS and all three from it."""
    qkv, kv, position_bias, p, keep, dropped, num_heads, scale = args
    q, k, v = _heads(qkv, num_heads, kv)
    B, h, Tq, dh = q.shape

    def vjp(g):
        g = g.reshape(B, Tq, h, dh).transpose(0, 2, 1, 3)               # (B, h, Tq, dh)
        d_qkv = onp.empty(qkv.shape, qkv.dtype)
        d_kv = None if kv is None else onp.empty(kv.shape, kv.dtype)
        dq, dk, dv = _heads(d_qkv, num_heads, d_kv)                     # views into them
        d_scores = onp.empty(p.shape, p.dtype) if 2 in argnums else None

        def work(rows):
            onp.matmul(dropped[rows].swapaxes(-1, -2), g[rows], out=dv[rows])   # dropped^T g
            ds = g[rows] @ v[rows].swapaxes(-1, -2)                     # d dropped
            if keep is not None:
                ds *= keep[rows]                                        # d p
            pr = p[rows]
            ds -= onp.einsum("...i,...i->...", ds, pr)[..., None]       # softmax's Jacobian:
            ds *= pr                                                    # p * (dp - <dp, p>)
            if d_scores is not None:
                d_scores[rows] = ds                                     # d position_bias
            onp.matmul(ds, k[rows], out=dq[rows])
            onp.matmul(ds.swapaxes(-1, -2), q[rows], out=dk[rows])
            if scale != 1.0:
                dq[rows] *= scale
                dk[rows] *= scale
        in_parts(work, B, p.size, chunk=max(1, _CHUNK // p[0].size))
        grads = {0: d_qkv, 1: d_kv,
                 2: None if d_scores is None else _unbroadcast(d_scores, position_bias.shape)}
        return tuple(grads[i] for i in argnums)
    return vjp


def _unbroadcast(g, shape):
    """g summed over the axes that broadcasting added or stretched, back to `shape`."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    return g.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1),
                 keepdims=True)


defvjp_argnums(_attend, _attend_dqkv)


def projections(params, names, x, project=None):
    """[x W_a | x W_b | ...] (+ the biases, where the layer has them) as one matrix product,
    then each part through the hook.  x: (B, T, d)  ->  (B, T, len(names) h d_h)"""
    ws = [params[n]["w"] for n in names]
    bs = [params[n].get("b") for n in names]
    traced = any(isbox(a) for a in ws + bs)
    cat = anp.concatenate if traced else onp.concatenate
    w = cat(ws, axis=1)                                                 # (d, len(names) h d_h)
    b = None
    if any(v is not None for v in bs):
        b = cat([onp.zeros(getval(wi).shape[1], getval(wi).dtype) if v is None else v
                 for v, wi in zip(bs, ws)])
    y = linear(x, w, b)                                                 # (B, T, len(names) h d_h)
    if project is None:
        return y
    inner = getval(ws[0]).shape[1]
    return anp.concatenate([project(n, x, y[..., j * inner:(j + 1) * inner])
                            for j, n in enumerate(names)], axis=-1)


def key_values(params, memory, project=None):
    """nn.key_values with one product for both projections: (B, T_k, 2 h d_h)."""
    return projections(params, ("key", "value"), memory, project)


def attention(params, x, bias, num_heads, *, dropout_rate=0.0, rng=None, project=None,
              kv=None, position_bias=None, scale=None):
    """nn.attention with one fused query/key/value product (the query alone when kv is given)
    and one primitive for the attention core (scores, softmax, dropout, context), whose
    gradient is written out. Same arguments and result as nn.attention."""
    if kv is None:
        qkv = projections(params, ("query", "key", "value"), x, project)   # (B, T, 3 h dh)
    else:
        qkv = projections(params, ("query",), x, project)                  # (B, Tq, h dh)
    if scale is None:
        scale = 1.0 / math.sqrt(getval(params["query"]["w"]).shape[1] // num_heads)
    p = attention_probs(getval(qkv), bias, num_heads, None if kv is None else getval(kv), scale,
                        None if position_bias is None else getval(position_bias))   # constant
    keep, dropped = None, p
    if rng is not None and dropout_rate > 0.0:                          # as nn.dropout
        keep = (rng.random(p.shape, dtype=onp.float32) >= dropout_rate).astype(p.dtype)
        keep *= 1.0 / (1.0 - dropout_rate)
        dropped = p * keep
    ctx = _attend(qkv, kv, position_bias, p, keep, dropped, num_heads, scale)   # (B, Tq, h dh)
    y = linear(ctx, params["output"]["w"], params["output"].get("b"))
    return y if project is None else project("output", ctx, y)


# --- cross-entropy ------------------------------------------------------------------------

@primitive
def _nll(logits, labels, logp):
    return -logp[onp.arange(len(labels)), labels].sum() * (1.0 / len(labels))


def _nll_dlogits(ans, logits, labels, logp):
    def vjp(g):
        d = onp.exp(logp)                                               # softmax
        d[onp.arange(len(labels)), labels] -= 1.0
        d *= g * (1.0 / len(labels))
        return d.astype(logits.dtype, copy=False)
    return vjp


defvjp(_nll, _nll_dlogits, None, None)


def cross_entropy(logits, labels):
    """nn.cross_entropy as a primitive: mean -log softmax(logits)[label], gradient
    (softmax - onehot) / B."""
    z = getval(logits)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - onp.log(onp.exp(z).sum(axis=-1, keepdims=True))
    return _nll(logits, onp.asarray(labels), logp)
