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
# # 01 · Kronecker products and the PHM layer
#
# Compacter's adapters are built from one idea: a weight matrix written as a **sum of
# Kronecker products** (the PHM layer of Zhang et al., ICLR 2021; Compacter, Eq. 3-5):
#
# $$W = \sum_{i=1}^{n} A_i \otimes B_i, \qquad A_i \in \mathbb{R}^{n\times n},\; B_i \in \mathbb{R}^{\frac{d_\text{in}}{n}\times\frac{d_\text{out}}{n}},\; W \in \mathbb{R}^{d_\text{in}\times d_\text{out}}.$$
#
# This notebook builds the Kronecker product by hand, counts what the sum saves, computes
# the PHM layer in its two ways (building $W$, or the factored product that never builds
# it), shows $W$'s block structure, and checks the gradients live.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np
from autograd.test_util import check_grads

import minicompacter as mc
from minicompacter.core.phm import kron, low_rank_B

SMALL = os.environ.get("MINICOMPACTER_NOTEBOOK_SIZE", "full") == "small"
rng = np.random.default_rng(0)

# %% [markdown]
# ## The Kronecker product, by hand
#
# $A \otimes B$ replaces each entry $a_{jk}$ of $A$ by the block $a_{jk} B$:
#
# $$A \otimes B = \begin{pmatrix} a_{11} B & \cdots & a_{1n} B \\ \vdots & & \vdots \\ a_{m1} B & \cdots & a_{mn} B \end{pmatrix}$$

# %%
A = np.array([[1, 2], [3, 4]])
B = np.array([[0, 1, 2], [1, 0, -1]])
by_hand = np.block([[A[j, k] * B for k in range(2)] for j in range(2)])
print(by_hand)
print("equal to np.kron:", np.array_equal(by_hand, np.kron(A, B)),
      "| equal to minicompacter.core.phm.kron:", np.array_equal(by_hand, kron(A, B)))

# %% [markdown]
# ## A sum of $n$ Kronecker products needs about $1/n$ of the parameters
#
# A dense $d_\text{in}\times d_\text{out}$ matrix holds $d_\text{in} d_\text{out}$ numbers. The sum above holds $n$
# matrices $A_i$ ($n^3$ numbers) and $n$ matrices $B_i$ ($n \cdot \frac{d_\text{in}}{n}\frac{d_\text{out}}{n} = \frac{d_\text{in} d_\text{out}}{n}$):
# $n^3 + d_\text{in} d_\text{out} / n$. Compacter then makes each $B_i = s_i t_i^\top$ rank one, which leaves
# $n^3 + n\,(d_\text{in}/n + d_\text{out}/n) = n^3 + d_\text{in} + d_\text{out}$.

# %%
d_in, d_out = 768, 768
print(f"{'n':>3} {'dense':>10} {'PHM':>10} {'ratio':>7} {'PHM rank 1':>11}")
for n in (1, 2, 4, 8, 12, 16):
    phm = n ** 3 + d_in * d_out // n
    print(f"{n:>3} {d_in * d_out:>10,} {phm:>10,} {phm / (d_in * d_out):>7.3f} {n ** 3 + d_in + d_out:>11,}")

# %% [markdown]
# ## The PHM weight, and its block structure
#
# `mc.phm_weight(A, B)` computes $\sum_i A_i \otimes B_i$ with one matrix product and a reshape.
# Block $(a, c)$ of $W$ is $\sum_i A_i[a, c]\, B_i$: the rules $A_i$ decide how the $n$ small
# matrices $B_i$ are mixed into each of the $n \times n$ blocks.

# %%
n, p, q = 4, 6, 6
A = rng.standard_normal((n, n, n))
B = rng.standard_normal((n, p, q))
W = mc.phm_weight(A, B)
reference = sum(np.kron(A[i], B[i]) for i in range(n))
print("W:", W.shape, "| max |W - sum of np.kron| =", np.abs(W - reference).max())

fig, axes = plt.subplots(1, n + 1, figsize=(12, 2.6))
for i in range(n):
    axes[i].imshow(np.kron(A[i], B[i]), cmap="RdBu", vmin=-6, vmax=6)
    axes[i].set_title(f"$A_{i + 1} \\otimes B_{i + 1}$")
axes[n].imshow(W, cmap="RdBu", vmin=-6, vmax=6)
axes[n].set_title("$W$ = their sum")
for ax in axes:
    ax.set_xticks(np.arange(-0.5, n * q, q), []); ax.set_yticks(np.arange(-0.5, n * p, p), [])
    ax.grid(color="k", linewidth=0.8)
plt.show()

# %% [markdown]
# *Figure: each Kronecker product repeats one $B_i$ in every block, scaled by the entries of
# $A_i$ (grid lines mark the $n \times n$ blocks); the sum mixes the $n$ patterns differently in
# every block, so $W$ is far richer than any single product while costing only $n^3 + d_\text{in}d_\text{out}/n$ numbers.*

# %% [markdown]
# ## The PHM layer, two ways
#
# `mc.phm_linear(params, x)` computes $y = xW + b$. Built: form $W$, multiply. Factored (for
# low-rank $B_i = s_i t_i$): split $x$ into $n$ blocks $X_a$ of width $d_\text{in}/n$; output block $c$ is
#
# $$y_c = \sum_i \sum_a A_i[a, c]\, (X_a s_i)\, t_i,$$
#
# which never forms $W$ and costs $n r (d_\text{in} + n^2 + d_\text{out})$ multiply-adds per row instead of $d_\text{in} d_\text{out}$.

# %%
n, d_in, d_out, r = 4, 768, 768, 1
params = {"A": rng.standard_normal((n, n, n)).astype(np.float32),
          "s": rng.standard_normal((n, d_in // n, r)).astype(np.float32),
          "t": rng.standard_normal((n, r, d_out // n)).astype(np.float32),
          "b": np.zeros(d_out, np.float32)}
x = rng.standard_normal((1024 if SMALL else 4096, d_in)).astype(np.float32)
y_built = mc.phm_linear(params, x, factored=False)
y_factored = mc.phm_linear(params, x, factored=True)
W = mc.phm_weight(params["A"], low_rank_B(params["s"], params["t"]))
scale = np.abs(y_built).max()
print(f"max |built - factored| / max |y| = {np.abs(y_built - y_factored).max() / scale:.1e} "
      f"(float32 rounding) | built equals x @ W: {np.array_equal(y_built, x @ W)}")


def timed(f, repeats=5):
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); f(); times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


rows = []
for d_in, d_out in [(384, 12), (768, 24), (768, 768), (2048, 2048)]:
    p_ = {"A": params["A"], "s": rng.standard_normal((n, d_in // n, 1)).astype(np.float32),
          "t": rng.standard_normal((n, 1, d_out // n)).astype(np.float32)}
    xx = rng.standard_normal((x.shape[0], d_in)).astype(np.float32)
    rows.append((d_in, d_out, timed(lambda: mc.phm_linear(p_, xx, factored=False)),
                 timed(lambda: mc.phm_linear(p_, xx, factored=True))))
print(f"forward, {x.shape[0]} rows, n = {n}, rank 1")
print(f"{'d_in -> d_out':>15} {'built ms':>9} {'factored ms':>12}")
for d_in, d_out, tb, tf in rows:
    print(f"{f'{d_in} -> {d_out}':>15} {tb:>9.2f} {tf:>12.2f}")

# %% [markdown]
# An adapter's projections are narrow ($384 \to 12$ on MiniLM): building $W$ is as fast or faster.
# Square layers are where the factored product pays; `phm_linear` picks it by itself when
# $\min(d_\text{in}, d_\text{out}) \ge 10\,n\,r$ (the rule `bench/bench_phm.py` measured; BENCHMARKS.md).

# %% [markdown]
# ## A gradient check, live
#
# Every path is checked against central differences in float64, with respect to $x$, $A$,
# the factors $s, t$ and the bias $b$:

# %%
small = {"A": rng.standard_normal((2, 2, 2)), "s": rng.standard_normal((2, 3, 2)),
         "t": rng.standard_normal((2, 2, 4)), "b": rng.standard_normal(8)}
xs = rng.standard_normal((5, 6))
for factored in (False, True):
    check_grads(lambda prm, x: mc.phm_linear(prm, x, factored=factored), argnum=(0, 1),
                modes=["rev"], order=1)(small, xs)
    print(f"factored={factored}: gradient check passed")
