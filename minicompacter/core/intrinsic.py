"""Intrinsic-SAID (Aghajanyan, Zettlemoyer and Gupta 2021, arXiv 2012.13255, after Li et al.
2018, arXiv 1804.08838): every weight of the model moves inside one random subspace of
dimension d',

    theta_i = theta_0,i + lambda_i P_i(theta_d)          for each weight tensor i = 1 .. n

theta_0 is the pretrained model (frozen). Trained: theta_d, d' - n numbers starting at zero
(so the model starts exactly at theta_0), and lambda, one scale per tensor starting at one;
d' counts both, as the reference does (d' = 20,000: theta_d has 20,000 - n entries). The
task head is trained directly, as with every other method.

P_i: R^(d'-n) -> R^(D_i) is a Fastfood transform (Le, Sarlos and Smola 2013), one per tensor
of D_i entries, with its own fixed random B, Pi and G of length L_i = 2^ceil(log2 D_i):

    P_i(x) = [H G Pi H B pad(x)]_(1..D_i) / (||G|| sqrt(D_i))

  pad(x)  x padded with zeros, or cut, to L_i entries (as the reference does: a tensor
          smaller than d' reads only the first L_i coordinates of theta_d)
  B       random signs +-1 (a diagonal);   Pi  a random permutation;   G  N(0, 1) draws (a diagonal)
  H       the Walsh-Hadamard matrix of order L_i, entries +-1, unnormalised, Sylvester's
          order: H_1 = [1], H_2m = [[H_m, H_m], [H_m, -H_m]]; H H = L I and H is symmetric
The scale keeps ||P_i(x)|| near ||x||: each H multiplies a norm by sqrt(L_i), G by about
sqrt(L_i) / ||G||, and D_i of the L_i entries are kept.

H is never built. For x of length L = 2^m, H_L = H_(2^k1) kron H_(2^k2) kron ... (k1 + k2 + ...
= m), so H x is x read as a tensor of shape (2^k1, 2^k2, ...) with a small dense Hadamard
matrix applied along each axis: `walsh_hadamard` reshapes x to (2^k, L / 2^k), multiplies the
first axis by H_(2^k) and moves it last, k <= 6 bits at a time: O(L log L) work, no L x L
matrix, and no D x d' projection either.

Both layer sets (layers.py): "plain" composes these steps in autograd.numpy and lets autograd
differentiate them; "fast" makes the Walsh-Hadamard transform and the whole Fastfood
transform primitives with the gradients written out (H is symmetric, so the transform's
vector-Jacobian product is the transform itself; a gather by Pi is undone by a scatter).

Reference: rabeehk/compacter, seq2seq/projections/intrinsic.py (Aghajanyan's
IntrinsicDimensionLight with said=True: fastfood_vars, fastfood_torched, and its Walsh-
Hadamard transform by reshapes), applied to every parameter of T5-base.
"""

from functools import reduce

import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp, primitive

from . import kernels
from .layers import current
from .paths import FASTFOOD, INTRINSIC
from .tree import dotted, leaves, path_map, unflatten

MAX_BITS = 6              # H is applied 2^6 = 64 rows at a time: a few small matrix products


# --- the Walsh-Hadamard transform ----------------------------------------------------------

def hadamard(order, dtype=onp.float64):
    """H of Sylvester's order, entries +-1 (order a power of two).  -> (order, order)"""
    H = onp.ones((1, 1), dtype)
    while H.shape[0] < order:
        H = onp.block([[H, H], [H, -H]])                          # (2m, 2m)
    return H


def bit_steps(length):
    """The orders of the small transforms whose Kronecker product is H_length: 64, 64, ...,
    then the rest (length must be a power of two)."""
    m = int(length).bit_length() - 1
    if length < 1 or 2 ** m != length:
        raise ValueError(f"the Walsh-Hadamard transform needs a power-of-two length, got {length}.")
    return [2 ** min(MAX_BITS, m - j) for j in range(0, m, MAX_BITS)]


def walsh_hadamard_plain(x):
    """H x by reshapes, written plainly (autograd differentiates it).  x: (L,) -> (L,)"""
    for b in bit_steps(x.shape[0]):
        x = np.reshape(np.dot(np.transpose(np.reshape(x, (b, -1))), hadamard(b, x.dtype)), (-1,))
    return x                                                     # (L,)


@primitive
def walsh_hadamard_fast(x):
    """H x by reshapes, each small product split over the threads.  x: (L,) -> (L,)"""
    for b in bit_steps(x.shape[0]):
        x = kernels.matmul_rows(x.reshape(b, -1).T, hadamard(b, x.dtype)).reshape(-1)   # (L / b, b)
    return x


defvjp(walsh_hadamard_fast, lambda ans, x: lambda g: walsh_hadamard_fast(g))   # H^T = H


def walsh_hadamard(x):
    """H x on the layers in use (plain or fast).  x: (L,) -> (L,)"""
    return (walsh_hadamard_fast if current().name == "fast" else walsh_hadamard_plain)(x)


# --- the Fastfood transform --------------------------------------------------------------

def fit(x, length):
    """x padded with zeros, or cut, to `length` entries.  (n,) -> (length,)"""
    n = x.shape[0]
    if n >= length:
        return x[:length]
    return np.concatenate([x, np.zeros(length - n, x.dtype)])


def fastfood_scale(G, D):
    """1 / (||G|| sqrt(D)), the reference's divisor * sqrt(D / L) with the L's cancelled, in
    G's dtype."""
    return G.dtype.type(1.0 / (onp.sqrt(onp.sum(onp.square(G.astype(onp.float64)))) * onp.sqrt(D)))


def fastfood_plain(x, B, Pi, G, D):
    """P(x) = [H G Pi H B pad(x)]_(1..D) / (||G|| sqrt(D)), written plainly.
    x: (n,)  B, Pi, G: (L,)  ->  (D,)"""
    v = walsh_hadamard_plain(fit(x, G.shape[0]) * B)             # (L,)  H B pad(x)
    u = walsh_hadamard_plain(v[Pi] * G)                          # (L,)  H G Pi H B pad(x)
    return u[:D] * fastfood_scale(G, D)                          # (D,)


@primitive
def fastfood_fast(x, B, Pi, G, D):
    """The same as one primitive (its gradient with respect to x written out below)."""
    v = walsh_hadamard_fast(fit(x, G.shape[0]) * B)              # (L,)
    u = walsh_hadamard_fast(v[Pi] * G)                           # (L,)
    return u[:D] * fastfood_scale(G, D)                          # (D,)


def _fastfood_vjp(ans, x, B, Pi, G, D):
    """P^T g = pad^T B H Pi^T G H [g; 0] / (||G|| sqrt(D)): each step's transpose, in reverse."""
    def vjp(g):
        y = onp.zeros(G.shape[0], g.dtype)
        y[:D] = g * fastfood_scale(G, D)                          # (L,)
        u = walsh_hadamard_fast(y) * G                            # (L,)
        v = onp.empty_like(u)
        v[Pi] = u                                                 # Pi^T: the gather undone
        return fit(walsh_hadamard_fast(v) * B, x.shape[0])       # (n,)
    return vjp


defvjp(fastfood_fast, _fastfood_vjp)


def fastfood(x, B, Pi, G, D):
    """P(x) on the layers in use.  x: (n,)  B, Pi, G: (L,)  ->  (D,)"""
    return (fastfood_fast if current().name == "fast" else fastfood_plain)(x, B, Pi, G, D)


# --- Intrinsic-SAID as a method --------------------------------------------------------------

def init_fastfood(rng, D, dtype):
    """One tensor's fixed B (signs, int8), Pi (a permutation, int32) and G (N(0, 1)), each of
    length L = 2^ceil(log2 D)."""
    L = 1 << max(0, int(D - 1).bit_length())
    r_b, r_pi, r_g = rng.spawn(3)
    return (r_b.choice(onp.array([-1, 1], onp.int8), L), r_pi.permutation(L).astype(onp.int32),
            r_g.standard_normal(L).astype(dtype))


def init_said(cfg, rng, base, dtype=onp.float32):
    """({"intrinsic": {"theta": (d' - n,) zeros, "lambda": (n,) ones}},
        {"fastfood": {"B", "Pi", "G": each a tree shaped like `base`, one (L_i,) per tensor}})
    for the n tensors of `base` (the pretrained weights the method moves), lambda_i and each
    tensor's projection in the order of tree.leaves. The projections are drawn from
    cfg.projection_seed, not from rng, so that a checkpoint finds them again."""
    tensors = list(leaves(base))
    n = len(tensors)
    if cfg.intrinsic_dim <= n:
        raise ValueError(f"intrinsic_dim {cfg.intrinsic_dim} leaves no room for theta_d: the "
                         f"model has {n} weight tensors, each with its lambda counted inside "
                         f"d'; use an intrinsic_dim above {n} (the paper: 20,000).")
    drawn = [init_fastfood(g, leaf.size, dtype) for (_, leaf), g in
             zip(tensors, onp.random.default_rng(cfg.projection_seed).spawn(n))]
    projections = {name: unflatten({dotted(path): parts[j] for (path, _), parts in zip(tensors, drawn)})
                   for j, name in enumerate(("B", "Pi", "G"))}
    trained = {"theta": onp.zeros(cfg.intrinsic_dim - n, dtype), "lambda": onp.ones(n, dtype)}
    return {INTRINSIC: trained}, {FASTFOOD: projections}


def at(tree, path):
    """The subtree or leaf of `tree` at `path`."""
    return reduce(lambda node, key: node[key], path, tree)


def said_weights(params):
    """The `weights` hook of Intrinsic-SAID: every tensor that has a projection in
    params["fastfood"] moved, theta_0,i + lambda_i P_i(theta_d); the rest of the tree as it is."""
    theta_d, lam = params[INTRINSIC]["theta"], params[INTRINSIC]["lambda"]
    projections = params[FASTFOOD]
    moved = {}
    for i, (path, G) in enumerate(leaves(projections["G"])):
        theta_0 = at(params, path)                                # (..., D_i) frozen
        ray = fastfood(theta_d, at(projections["B"], path), at(projections["Pi"], path), G,
                       theta_0.size)                              # (D_i,)
        moved[path] = theta_0 + lam[i] * np.reshape(ray, theta_0.shape)
    return path_map(lambda path, leaf: moved.get(path, leaf), params)
