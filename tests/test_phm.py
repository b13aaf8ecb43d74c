"""The Kronecker / PHM math: phm_weight against np.kron, both ways of computing the
layer against a reference built from np.kron, float64 gradient checks of both paths
with respect to x, A, B or s and t, and b, the initialisation, and bad input."""

import math

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import grad
from autograd.test_util import check_grads

import minicompacter as mc
from minicompacter.core.phm import (glorot_uniform, init_phm_linear, init_phm_rule, kron,
                               low_rank_B, phm_weight)

from conftest import backward_dtypes

RNG = onp.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape)


def reference_weight(A, B):
    return sum(onp.kron(A[i], B[i]) for i in range(A.shape[0]))


def test_kron_by_hand_matches_numpy():
    a, b = rand(2, 3), rand(4, 5)
    onp.testing.assert_array_equal(kron(a, b), onp.kron(a, b))


@pytest.mark.parametrize("n,p,q", [(2, 3, 5), (4, 6, 1), (1, 7, 3), (3, 1, 1)])
def test_phm_weight_is_the_sum_of_kronecker_products(n, p, q):
    A, B = rand(n, n, n), rand(n, p, q)
    W = phm_weight(A, B)
    assert W.shape == (n * p, n * q)
    onp.testing.assert_allclose(W, reference_weight(A, B), atol=1e-13)
    # the row index of A_i picks the input block, the column index the output block
    i, a, c, u, v = 0, n - 1, 0, p - 1, q - 1
    only = onp.zeros_like(A); only[i, a, c] = 1.0
    assert phm_weight(only, B)[a * p + u, c * q + v] == B[i, u, v]


def test_exported_names():
    assert mc.phm_weight is phm_weight and mc.phm_linear is not None


@pytest.mark.parametrize("factored", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_phm_linear_low_rank_both_paths_equal_np_kron(factored, shared):
    n, p, q, r = 4, 3, 5, 2
    A, s, t, b = rand(n, n, n), rand(n, p, r), rand(n, r, q), rand(n * q)
    x = rand(2, 7, n * p)
    ref = x @ reference_weight(A, onp.stack([s[i] @ t[i] for i in range(n)])) + b
    params = {"s": s, "t": t, "b": b} if shared else {"A": A, "s": s, "t": t, "b": b}
    y = mc.phm_linear(params, x, shared_A=A if shared else None, build_W=not factored)
    assert y.shape == (2, 7, n * q)
    onp.testing.assert_allclose(y, ref, atol=1e-12)


def test_phm_linear_full_B_and_a_single_row():
    n, p, q = 3, 2, 4
    A, B = rand(n, n, n), rand(n, p, q)
    x = rand(n * p)
    onp.testing.assert_allclose(mc.phm_linear({"A": A, "B": B}, x), x @ reference_weight(A, B),
                                atol=1e-12)


def test_default_path_choice_follows_the_size_rule():
    from minicompacter.core import phm
    n = 4
    A = rand(n, n, n)
    calls = []
    original = phm._phm_factored
    def spy(*a):
        calls.append(True)
        return original(*a)
    phm._phm_factored = spy
    try:
        # (d_in, d_out, rank, factored?): an adapter's narrow bottleneck builds W, a square
        # layer 10 n r wide or more does not
        for d_in, d_out, r, expected in [(384, 12, 1, False), (12, 384, 1, False),
                                         (40, 40, 1, True), (36, 36, 1, False),
                                         (80, 80, 2, True), (80, 80, 3, False)]:
            params = {"s": rand(n, d_in // n, r), "t": rand(n, r, d_out // n), "b": rand(d_out)}
            calls.clear()
            mc.phm_linear(params, rand(3, d_in), shared_A=A)
            assert bool(calls) == expected, (d_in, d_out, r)
    finally:
        phm._phm_factored = original


def test_the_size_rule_bounds_the_factored_share_of_the_work_as_documented():
    """phm_linear's docstring: where the rule picks the factored path, its multiply-adds per
    row, n r (d_in + n^2 + d_out), are at most 0.2 + n / (100 r) of the built path's d_in d_out
    (not a tenth), and a square layer at the threshold reaches that bound."""
    from minicompacter.core.phm import prefers_factored
    for n in (2, 4, 8, 12):
        for r in (1, 2, 4):
            bound, worst = 0.2 + n / (100 * r), 0.0
            for d_in in range(n, 64 * n * r, n):
                for d_out in (d_in, 2 * d_in, 10 * n * r, 16 * n * r):
                    if prefers_factored(n, d_in, d_out, r):
                        worst = max(worst, n * r * (d_in + n * n + d_out) / (d_in * d_out))
            assert worst == pytest.approx(bound) and worst > 0.1, (n, r, worst)


# --- gradient checks (float64) ------------------------------------------------------------

@pytest.mark.parametrize("factored", [False, True])
def test_phm_linear_grads_low_rank(factored):
    n, p, q, r = 2, 3, 2, 2
    params = {"A": rand(n, n, n), "s": rand(n, p, r), "t": rand(n, r, q), "b": rand(n * q)}
    f = lambda params, x: mc.phm_linear(params, x, build_W=not factored)
    check_grads(f, argnum=0, modes=["rev"], order=1)(params, rand(4, n * p))
    check_grads(f, argnum=1, modes=["rev"], order=1)(params, rand(4, n * p))


@pytest.mark.parametrize("factored", [False, True])
def test_phm_linear_grads_shared_A(factored):
    n, p, q = 2, 2, 3
    params = {"s": rand(n, p, 1), "t": rand(n, 1, q), "b": rand(n * q)}
    f = lambda A, params, x: mc.phm_linear(params, x, shared_A=A, build_W=not factored)
    check_grads(f, argnum=(0, 1, 2), modes=["rev"], order=1)(rand(n, n, n), params, rand(3, 5, n * p))


def test_phm_linear_grads_full_B():
    n, p, q = 3, 2, 2
    params = {"A": rand(n, n, n), "B": rand(n, p, q), "b": rand(n * q)}
    check_grads(lambda params, x: mc.phm_linear(params, x), argnum=(0, 1), modes=["rev"],
                order=1)(params, rand(4, n * p))


@pytest.mark.parametrize("factored", [False, True])
def test_phm_linear_float32_gradients_stay_float32(factored):
    n = 4
    params = {"A": rand(n, n, n), "s": rand(n, 8, 1), "t": rand(n, 1, 2), "b": rand(2 * n)}
    params = {k: v.astype(onp.float32) for k, v in params.items()}
    x = rand(5, 32).astype(onp.float32)
    loss = lambda params, x: np.sum(mc.phm_linear(params, x, build_W=not factored) ** 2)
    assert mc.phm_linear(params, x, build_W=not factored).dtype == onp.float32
    assert {g.dtype for g in grad(loss)(params, x).values()} == {onp.dtype(onp.float32)}
    assert set(backward_dtypes(loss, params, x, argnum=(0, 1))) == {onp.dtype(onp.float32)}


# --- initialisation -------------------------------------------------------------------------

def test_shared_A_init_std_and_uniform_option():
    A = init_phm_rule(onp.random.default_rng(0), 12, shared=True)
    assert A.shape == (12, 12, 12) and A.dtype == onp.float32
    assert abs(A.std() - 1e-4) < 1e-5 and abs(A.mean()) < 1e-5
    U = init_phm_rule(onp.random.default_rng(0), 12, shared=True, phm_c_init="uniform")
    assert U.min() >= -1 and U.max() <= 1 and abs(U.std() - 1 / math.sqrt(3)) < 0.02
    own = init_phm_rule(onp.random.default_rng(0), 12, shared=False)
    assert abs(own.std() - 0.01) < 1e-3


def test_glorot_uniform_per_slice_with_gain_sqrt2():
    w = glorot_uniform(onp.random.default_rng(0), (4, 200, 100))
    bound = math.sqrt(2) * math.sqrt(6 / 300)
    assert w.max() <= bound and w.min() >= -bound and w.max() > 0.99 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound


def test_init_phm_linear_shapes():
    p = init_phm_linear(onp.random.default_rng(0), 4, 384, 12, rank=1)
    assert {k: v.shape for k, v in p.items()} == {"A": (4, 4, 4), "s": (4, 96, 1),
                                                 "t": (4, 1, 3), "b": (12,)}
    assert not p["b"].any()
    p = init_phm_linear(onp.random.default_rng(0), 12, 384, 12, with_A=False, bias=False)
    assert {k: v.shape for k, v in p.items()} == {"B": (12, 32, 1)}
    assert low_rank_B(onp.ones((2, 3, 1)), onp.ones((2, 1, 4))).shape == (2, 3, 4)


# --- bad input ------------------------------------------------------------------------------

def test_phm_dim_must_divide_the_widths():
    with pytest.raises(ValueError, match=r"phm_dim 5 does not divide the widths \[384, 12\].*\[1, 2, 3, 4, 6, 12\]"):
        init_phm_linear(onp.random.default_rng(0), 5, 384, 12, rank=1)


def test_rank_below_one_and_unknown_inits():
    with pytest.raises(ValueError, match="phm_rank must be at least 1"):
        init_phm_linear(onp.random.default_rng(0), 4, 8, 8, rank=0)
    with pytest.raises(ValueError, match="hypercomplex_nonlinearity 'he' is unknown"):
        init_phm_linear(onp.random.default_rng(0), 4, 8, 8, hypercomplex_nonlinearity="he")
    with pytest.raises(ValueError, match="phm_c_init 'zeros' is unknown"):
        init_phm_rule(onp.random.default_rng(0), 4, shared=True, phm_c_init="zeros")


def test_shared_A_of_the_wrong_shape():
    params = {"s": rand(4, 2, 1), "t": rand(4, 1, 2), "b": rand(8)}
    with pytest.raises(ValueError, match=r"A has shape \(2, 2, 2\) but the layer's phm_dim is 4"):
        mc.phm_linear(params, rand(3, 8), shared_A=rand(2, 2, 2))
    with pytest.raises(ValueError, match="expects inputs of width 8"):
        mc.phm_linear(params, rand(3, 9), shared_A=rand(4, 4, 4))
    with pytest.raises(ValueError, match="build_W=False needs the low-rank factors"):
        mc.phm_linear({"A": rand(2, 2, 2), "B": rand(2, 2, 2)}, rand(1, 4), build_W=False)
