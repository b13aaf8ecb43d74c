"""Kronecker products and the PHM layer (parameterised hypercomplex multiplication).

The PHM layer (Zhang et al., ICLR 2021; Compacter, Mahabadi et al., NeurIPS 2021,
arXiv 2106.04647, Eq. 3-5) is a linear layer whose weight is a sum of n Kronecker
products,

    y = x @ W + b,        W = sum_{i=1..n} A_i kron B_i                     (Eq. 3-4)

    A: (n, n, n)  the "rules" A_i, n x n each (Compacter: one A shared by the whole model)
    B: (n, d_in/n, d_out/n)                   W: (d_in, d_out)

so it holds n^3 + d_in d_out / n numbers instead of d_in d_out; n must divide d_in and
d_out. With n = 4 and the A_i fixed to the signed permutation matrices of the Hamilton
product it is a quaternion linear layer (`algebra_rule("quaternion")`; the complex numbers
and the octonions too); PHM learns the A_i (notebook 01, "Where PHM comes from"). The
reference code can also factor each rule, A_i = a_i b_i^T (`rule`). Compacter (LPHM,
Eq. 5) makes each B_i low rank, B_i = s_i t_i^T with the paper's t_i: (d_out/n, r). The factors are stored as s: (n, d_in/n, r) and
t: (n, r, d_out/n), so the array t[i] already holds t_i^T and B = s @ t.

Row-vector convention as in the reference code (rabeehk/compacter,
seq2seq/hypercomplex/layers.py): the row index of A_i picks the input block, the
column index the output block,

    W[a p + u, c q + v] = sum_i A_i[a, c] B_i[u, v]      (p = d_in/n, q = d_out/n)

The layer can be computed two ways, equal up to float rounding:
  - built: form W (one matrix product of A and B), then x @ W;
  - factored: never form W. Split x into n blocks X_a of width p; output block c is
        y_c = sum_i sum_a A_i[a, c] (X_a s_i) t_i^T        (t_i^T is the stored t[i])
    which costs n r (d_in + n^2 + d_out) multiply-adds per row instead of d_in d_out.
"""

import math
from functools import partial

import autograd.numpy as np
import numpy as onp

from .layers import current


# --- the weight ------------------------------------------------------------------------

def kron(a, b):
    """The Kronecker product of two matrices, written out: block (i, j) is a[i, j] * b.
    a: (m, n)  b: (p, q)  ->  (m p, n q). Equals np.kron; kept as the definition."""
    m, n = a.shape
    p, q = b.shape
    return np.reshape(a[:, None, :, None] * b[None, :, None, :], (m * p, n * q))


def phm_weight(A, B):
    """W = sum_i kron(A[i], B[i]).   A: (n, n, n)  B: (n, p, q)  ->  W: (n p, n q)

    All n products at once: M[(a, c), (u, v)] = sum_i A[i, a, c] B[i, u, v] is one
    matrix product, then (a, c, u, v) is reordered to (a, u, c, v)."""
    n, p, q = B.shape
    M = np.reshape(A, (n, n * n)).T @ np.reshape(B, (n, p * q))             # (n n, p q)
    M = np.transpose(np.reshape(M, (n, n, p, q)), (0, 2, 1, 3))              # (a, u, c, v)
    return np.reshape(M, (n * p, n * q))                                     # (d_in, d_out)


def low_rank_B(s, t):
    """B_i = s_i t_i^T for every i, as s @ t: the stored t[i] is t_i^T.
    s: (n, p, r)  t: (n, r, q)  ->  B: (n, p, q)
    (The factored rule A_i = a_i b_i^T is the same product: `rule`.)"""
    return s @ t


def rule(params):
    """The rules A of a PHM layer or of the model's shared entry: params["A"], or the
    factored rule of the reference's factorized_phm_rule, A_i = a_i b_i^T, stored as
    A_left: (n, n, r) holding the a_i and A_right: (n, r, n) holding the b_i^T
    (AdapterHub's phm_rule_left, phm_rule_right, with r = 1).   ->  A: (n, n, n)"""
    if "A" in params:
        return params["A"]
    return low_rank_B(params["A_left"], params["A_right"])                   # (n, n, n)


# --- the layer -------------------------------------------------------------------------

# When the factored product pays, as bench/bench_phm.py measured (docs/performance.md): of
# the rules it scored, two never picked a path more than 15% slower than the better one,
# "at most a tenth of the built path's multiply-adds", n r (d_in + n^2 + d_out) <=
# d_in d_out / 10, and the simpler min(d_in, d_out) >= 10 n r used here. They differ: the
# factored path's share of the work is
#     n r / d_in + n r / d_out + n^3 r / (d_in d_out),
# which the simple rule bounds by 0.2 + n / (100 r) (0.24 for a square layer at the
# threshold with n = 4, r = 1), not by a tenth. Narrow adapter bottlenecks with a large n
# lose (up to 4x at 384 -> 12, n = 12); square layers win (up to 9x at 4096).
FACTORED_MIN_RATIO = 10


def prefers_factored(n, d_in, d_out, r):
    """The default choice of `phm_linear` for a low-rank layer."""
    return min(d_in, d_out) >= FACTORED_MIN_RATIO * n * r


def phm_linear(params, x, *, shared_A=None, build_W=None):
    """The PHM layer y = x @ (sum_i A_i kron B_i) + b.

    params: {"A": (n, n, n)} unless shared_A is given; either {"B": (n, d_in/n, d_out/n)}
            or the low-rank factors {"s": (n, d_in/n, r), "t": (n, r, d_out/n)};
            optionally {"b": (d_out,)}.
    x: (..., d_in)  ->  y: (..., d_out)
    build_W: True builds W, then x @ W; False computes the factored product, which never
            builds W (low-rank factors only); None picks by size: the factored product for
            low-rank layers with min(d_in, d_out) >= 10 n r (`prefers_factored`, the rule
            bench/bench_phm.py measured), where its share of the built path's
            multiply-adds, n r / d_in + n r / d_out + n^3 r / (d_in d_out), is at most
            0.2 + n / (100 r): 0.24 for n = 4, r = 1 at the threshold, far less on wide
            layers. (Not AdapterHub's factorized_phm_W, which says whether B_i = s_i t_i^T.)"""
    A = params["A"] if shared_A is None else shared_A
    if "s" in params:
        n, p, r = params["s"].shape
        q = params["t"].shape[-1]
    else:
        n, p, q = params["B"].shape
    if A.shape != (n, n, n):
        raise ValueError(f"A has shape {A.shape} but the layer's phm_dim is {n}: A must be "
                         f"({n}, {n}, {n}). A shared A must have the model's phm_dim.")
    if x.shape[-1] != n * p:
        raise ValueError(f"PHM layer expects inputs of width {n * p}, got {x.shape[-1]}.")
    if build_W is None:
        factored = "s" in params and prefers_factored(n, n * p, n * q, r)
    else:
        factored = not build_W
    if factored and "s" not in params:
        raise ValueError("build_W=False needs the low-rank factors s and t; with a full B "
                         "the factored order costs n times more than building W.")
    if factored:
        y = _phm_factored(A, params["s"], params["t"], x)
        return y + params["b"] if "b" in params else y
    B = params["B"] if "s" not in params else low_rank_B(params["s"], params["t"])
    return current().linear(x, phm_weight(A, B), params.get("b"))           # x W + b


def _phm_factored(A, s, t, x):
    """sum_i sum_a A_i[a, c] (X_a s_i) t_i^T for each output block c, without W (t[i] = t_i^T).
    A: (n, n, n)  s: (n, p, r)  t: (n, r, q)  x: (..., n p)  ->  (..., n q)"""
    n, p, r = s.shape
    q = t.shape[-1]
    lead = x.shape[:-1]
    N = int(onp.prod(lead)) if lead else 1
    X = np.reshape(x, (N * n, p))                                            # rows (row, a)
    S = np.reshape(np.transpose(s, (1, 0, 2)), (p, n * r))                   # (p, (i, r))
    Z = np.reshape(X @ S, (N, n, n, r))                                      # (row, a, i, r)
    Z = np.reshape(np.transpose(Z, (2, 1, 0, 3)), (n, n, N * r))             # (i, a, (row, r))
    V = np.transpose(A, (0, 2, 1)) @ Z                                       # (i, c, (row, r))
    V = np.reshape(np.transpose(np.reshape(V, (n, n, N, r)), (2, 1, 0, 3)),
                   (N * n, n * r))                                           # ((row, c), (i, r))
    y = V @ np.reshape(t, (n * r, q))                                        # ((row, c), q)
    return np.reshape(y, lead + (n * q,))


# --- initialisation (as the reference code ran it) ----------------------------------------

def glorot_uniform(rng, shape, gain=math.sqrt(2.0), dtype=onp.float32):
    """Xavier/Glorot uniform on the last two axes, each leading slice separately:
    U(-a, a), a = gain sqrt(6 / (fan_in + fan_out)). The reference uses gain sqrt 2."""
    fan_in, fan_out = shape[-2], shape[-1]
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(dtype)


def glorot_normal(rng, shape, gain=math.sqrt(2.0), dtype=onp.float32):
    """Xavier/Glorot normal per slice: N(0, gain^2 2 / (fan_in + fan_out))."""
    std = gain * math.sqrt(2.0 / (shape[-2] + shape[-1]))
    return (rng.standard_normal(shape) * std).astype(dtype)


W_INITS = ("glorot-uniform", "glorot-normal", "normal")
C_INITS = ("normal", "uniform")


def init_phm_rule(rng, n, *, shared, phm_c_init="normal", phm_init_range=1e-4,
                  dtype=onp.float32, shape=None):
    """The rules A: (n, n, n) (or another shape: a factor of a factored rule). Shared
    (Compacter): N(0, phm_init_range^2), so each adapter starts near the identity; or
    U(-1, 1) with phm_c_init="uniform". Per layer (PHM-Adapter): N(0, 0.01^2), or
    U(-0.01, 0.01)."""
    shape = shape or (n, n, n)
    if phm_c_init == "normal":
        std = phm_init_range if shared else 0.01
        return (rng.standard_normal(shape) * std).astype(dtype)
    if phm_c_init == "uniform":
        a = 1.0 if shared else 0.01
        return rng.uniform(-a, a, size=shape).astype(dtype)
    raise ValueError(f"phm_c_init {phm_c_init!r} is unknown; use one of {C_INITS}.")


def init_rule(rng, n, *, shared, algebra=None, rank=None, phm_c_init="normal",
              phm_init_range=1e-4, dtype=onp.float32):
    """The rules of one PHM layer, or the model's shared ones, as the entries they are stored
    under: {"A": (n, n, n)}, an algebra's (`algebra_rule`) or drawn by `init_phm_rule`; or,
    with a rank r (the reference's factorized_phm_rule), {"A_left": (n, n, r),
    "A_right": (n, r, n)}, each factor drawn as a rule is (as AdapterHub draws
    phm_rule_left and phm_rule_right), so that A_i = a_i b_i^T starts near zero."""
    if algebra is not None:
        return {"A": algebra_rule(algebra).astype(dtype)}
    draw = partial(init_phm_rule, n=n, shared=shared, phm_c_init=phm_c_init,
                   phm_init_range=phm_init_range, dtype=dtype)
    if rank is None:
        return {"A": draw(rng)}
    if rank < 1:
        raise ValueError(f"phm_rule_rank must be at least 1, got {rank}.")
    r_left, r_right = rng.spawn(2)
    return {"A_left": draw(r_left, shape=(n, n, rank)),                 # a_i: (n, r)
            "A_right": draw(r_right, shape=(n, rank, n))}               # b_i^T: (r, n)


def init_phm_linear(rng, n, d_in, d_out, *, rank=None, with_A=True, with_B=True, bias=True,
                    hypercomplex_nonlinearity="glorot-uniform", phm_c_init="normal",
                    phm_init_range=1e-4, algebra=None, rule_rank=None, dtype=onp.float32):
    """A PHM layer's parameters: its rules (unless with_A=False: they are shared), B or the
    factors s, t (rank given; unless with_B=False: they are shared too) and a zero bias.
    hypercomplex_nonlinearity is AdapterHub's name for the initialisation of B / s / t:
    "glorot-uniform" (gain sqrt 2, per slice), "glorot-normal", or "normal" (std
    phm_init_range). The rules: `init_rule` (algebra: a fixed algebra's; rule_rank: the
    factored A_i = a_i b_i^T)."""
    check_phm_dim(n, d_in, d_out)
    if rank is not None and rank < 1:
        raise ValueError(f"phm_rank must be at least 1, got {rank}.")
    if hypercomplex_nonlinearity not in W_INITS:
        raise ValueError(f"hypercomplex_nonlinearity {hypercomplex_nonlinearity!r} is unknown; "
                         f"use one of {W_INITS}.")
    r_A, r_s, r_t = rng.spawn(3)
    params = {}
    if with_A:
        params.update(init_rule(r_A, n, shared=False, algebra=algebra, rank=rule_rank,
                                phm_c_init=phm_c_init, phm_init_range=phm_init_range,
                                dtype=dtype))
    if with_B:
        params.update(init_phm_factors(r_s, r_t, n, d_in // n, d_out // n, rank,
                                       hypercomplex_nonlinearity, phm_init_range, dtype))
    if bias:
        params["b"] = onp.zeros(d_out, dtype)
    return params


def init_phm_factors(r_s, r_t, n, p, q, rank, how, phm_init_range, dtype):
    """{"B": (n, p, q)} (rank None) or {"s": (n, p, r), "t": (n, r, q)}, drawn `how`
    (hypercomplex_nonlinearity) from r_s (B, s) and r_t (t)."""
    def w_init(g, shape):
        if how == "glorot-uniform":
            return glorot_uniform(g, shape, dtype=dtype)
        if how == "glorot-normal":
            return glorot_normal(g, shape, dtype=dtype)
        return (g.standard_normal(shape) * phm_init_range).astype(dtype)

    if rank is None:
        return {"B": w_init(r_s, (n, p, q))}
    return {"s": w_init(r_s, (n, p, rank)), "t": w_init(r_t, (n, rank, q))}


def check_phm_dim(n, *widths):
    """phm_dim must divide every width of a PHM layer; say which n would work."""
    if n < 1 or any(w % n for w in widths):
        g = math.gcd(*widths)
        ok = [m for m in range(1, g + 1) if g % m == 0]
        raise ValueError(f"phm_dim {n} does not divide the widths {list(widths)}; n must "
                         f"divide both d_in and d_out. phm_dim values that work here: {ok}.")


# --- fixed rules: the hypercomplex algebras ------------------------------------------------

# The algebras whose rules `algebra_rule` gives, and their dimension n (= phm_dim).
ALGEBRAS = {"complex": 2, "quaternion": 4, "octonion": 8}


def conjugate(p):
    """The conjugate of a hypercomplex number: its real part kept, the others negated."""
    return onp.concatenate([p[:1], -p[1:]])


def cayley_dickson_product(p, q):
    """The product pq in the 2^k-dimensional Cayley-Dickson algebra (k = 0: the reals),
    p and q given by their components on the basis (1, e_1, ..., e_{2^k - 1}). Each number
    is a pair of halves, p = (a, b), q = (c, d), and
        (a, b)(c, d) = (a c - conj(d) b,  d a + b conj(c)).
    k = 1 gives the complex numbers, k = 2 the quaternions on (1, i, j, k) with
    i^2 = j^2 = k^2 = ijk = -1, k = 3 the octonions.   p, q: (2^k,) -> (2^k,)"""
    m = len(p)
    if m == 1:
        return p * q
    a, b, c, d = p[:m // 2], p[m // 2:], q[:m // 2], q[m // 2:]
    return onp.concatenate([cayley_dickson_product(a, c) - cayley_dickson_product(conjugate(d), b),
                            cayley_dickson_product(d, a) + cayley_dickson_product(b, conjugate(c))])


def algebra_rule(name):
    """The PHM rules of a hypercomplex algebra: A: (n, n, n) with
        A[i, a, c] = the coefficient of e_c in the product e_i e_a,
    n = 2 ("complex"), 4 ("quaternion") or 8 ("octonion"). Each A_i is a signed permutation
    matrix (one +-1 in every row and column). In the row-vector convention of this module,
    sum_i q_i A_i is the matrix of LEFT multiplication by q: for a row vector x of
    components, x @ (sum_i q_i A_i) = q x (notebook 01, "Where PHM comes from", derives the
    quaternion case: its E_i are the A_i transposed).

    A PHM layer with these rules, W[a p + u, c q + v] = sum_i A_i[a, c] B_i[u, v], is a
    hypercomplex linear layer: reading the input row as n blocks X_a (x = sum_a X_a e_a)
    and the weight as w = sum_i B_i e_i, output block c is the e_c component of w x, with
    each product of components the matrix product X_a B_i. The octonions are not
    associative: one octonion layer computes one product w x per output, well defined, but
    two stacked octonion layers, w2 (w1 x), are in general not one octonion layer
    ((w2 w1) x), as two quaternion layers are."""
    if name not in ALGEBRAS:
        raise ValueError(f"Unknown algebra {name!r}; the rules known are {list(ALGEBRAS)}.")
    n = ALGEBRAS[name]
    e = onp.eye(n)
    return onp.stack([[cayley_dickson_product(e[i], e[a]) for a in range(n)]
                      for i in range(n)])                                    # (i, a, c)
