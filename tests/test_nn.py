"""The primitives: float64 gradient checks against central differences
(autograd.test_util.check_grads), values against independent formulas, and float32 in
giving float32 out, forward and backward."""

import math

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import grad
from autograd.test_util import check_grads

from minicompacter.core import nn
from minicompacter.core.tree import leaves

from conftest import backward_dtypes

RNG = onp.random.default_rng(0)


def rand(*shape, dtype=onp.float64, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def check(f, *args):
    """Reverse-mode gradient check of f with respect to each argument in turn."""
    for i in range(len(args)):
        check_grads(f, argnum=i, modes=["rev"], order=1)(*args)


# --- gradient checks (float64) ----------------------------------------------------------

def test_dense_grad():
    p = nn.init_dense(onp.random.default_rng(1), 5, 3, std=0.5, dtype=onp.float64)
    check(lambda p, x: nn.dense(p, x), p, rand(2, 4, 5))


def test_layer_norm_grad():
    p = {"g": rand(6) + 1.0, "b": rand(6)}
    check(lambda p, x: nn.layer_norm(p, x, 1e-5), p, rand(3, 4, 6))


@pytest.mark.parametrize("fn", [nn.gelu, nn.gelu_tanh, nn.erf, nn.tanh])
def test_elementwise_grads(fn):
    check(fn, rand(4, 7, scale=2.0))


def test_embedding_grad_with_repeated_ids():
    ids = onp.array([[0, 2, 2], [1, 0, 2]])         # repeated rows must add up
    check(lambda t: nn.embedding(t, ids) ** 2, rand(4, 3))


def test_dropout_grad_with_fixed_mask():
    check(lambda x: nn.dropout(x, 0.3, onp.random.default_rng(5)), rand(4, 8))


def test_softmax_grad():
    check(lambda x: nn.softmax(x, axis=-1), rand(3, 5, scale=3.0))


def test_attention_grad_with_padding_and_dropout():
    p = nn.init_attention(onp.random.default_rng(2), 8, std=0.3, dtype=onp.float64)
    bias = nn.mask_bias(onp.array([[1, 1, 1, 0], [1, 1, 1, 1]]), onp.float64)
    f = lambda p, x: nn.attention(p, x, bias, 2, dropout_rate=0.2, rng=onp.random.default_rng(3))
    check(f, p, rand(2, 4, 8))


def test_rms_norm_grad_with_and_without_a_bias():
    check(lambda p, x: nn.rms_norm(p, x, 1e-6), {"g": rand(6) + 1.0}, rand(3, 4, 6))
    check(lambda p, x: nn.rms_norm(p, x, 1e-6), {"g": rand(6) + 1.0, "b": rand(6)}, rand(3, 4, 6))


def t5_attention_case(seed=6):
    """T5-like attention: no biases, heads * d_kv (3 * 4) != d (10), queries from x (2, 3, 10)
    attending to a memory (2, 5, 10), a padding mask and a per-head position bias."""
    rng = onp.random.default_rng(seed)
    p = {n: {"w": rng.standard_normal((10, 12)) * 0.4} for n in ("query", "key", "value")}
    p["output"] = {"w": rng.standard_normal((12, 10)) * 0.4}
    bias = nn.mask_bias(onp.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]), onp.float64)
    return p, rand(2, 3, 10), rand(2, 5, 10), rand(1, 3, 3, 5), bias


def test_attention_grad_with_key_values_position_bias_and_no_scale():
    p, x, memory, pos, bias = t5_attention_case()
    f = lambda p, x, memory, pos: nn.attention(p, x, bias, 3, kv=nn.key_values(p, memory),
                                               position_bias=pos, scale=1.0, dropout_rate=0.2,
                                               rng=onp.random.default_rng(3))
    check(f, p, x, memory, pos)


# --- values against independent formulas --------------------------------------------------

def test_rms_norm_matches_root_mean_square_formula():
    x = rand(3, 10, scale=4.0) + 2.0
    g, b = rand(10), rand(10)
    ref = x / onp.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * g
    onp.testing.assert_allclose(nn.rms_norm({"g": g}, x), ref, rtol=1e-12, atol=1e-12)
    onp.testing.assert_allclose(nn.rms_norm({"g": g, "b": b}, x), ref + b, rtol=1e-12, atol=1e-12)


def test_cross_attention_matches_per_head_loop_without_scale_and_with_position_bias():
    p, x, memory, pos, bias = t5_attention_case()
    out = nn.attention(p, x, bias, 3, kv=nn.key_values(p, memory), position_bias=pos, scale=1.0)
    for b, real in ((0, 4), (1, 5)):                 # row 0's last memory token is padding
        q = x[b] @ p["query"]["w"]
        k, v = memory[b, :real] @ p["key"]["w"], memory[b, :real] @ p["value"]["w"]
        heads = []
        for j in range(3):
            sl = slice(4 * j, 4 * j + 4)
            s = q[:, sl] @ k[:, sl].T + pos[0, j, :, :real]          # no 1/sqrt(d_kv)
            w = onp.exp(s - s.max(-1, keepdims=True))
            heads.append((w / w.sum(-1, keepdims=True)) @ v[:, sl])
        ref = onp.concatenate(heads, -1) @ p["output"]["w"]
        onp.testing.assert_allclose(out[b], ref, atol=1e-12)
    # self-attention (kv=None) is attention over the keys and values of x itself
    onp.testing.assert_allclose(
        nn.attention(p, x, 0.0, 3, position_bias=pos[..., :3], scale=0.5),
        nn.attention(p, x, 0.0, 3, kv=nn.key_values(p, x), position_bias=pos[..., :3], scale=0.5),
        atol=1e-14)


def test_tanh_gradient_is_finite_and_silent_for_large_inputs():
    import warnings
    x = onp.array([-100.0, -50.0, 0.0, 50.0, 100.0], onp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = grad(lambda x: np.sum(nn.gelu_tanh(x)))(x)
    onp.testing.assert_allclose(g, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_gelu_exact_matches_math_erf_and_tanh_form_is_close():
    x = onp.linspace(-6, 6, 101)
    exact = onp.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert onp.max(onp.abs(nn.gelu(x) - exact)) < 1e-14
    approx_err = onp.max(onp.abs(nn.gelu_tanh(x) - exact))
    assert 1e-5 < approx_err < 1e-3                 # close, but not the same function


def test_layer_norm_matches_mean_var_formula():
    x = rand(3, 10, scale=4.0) + 2.0
    p = {"g": rand(10), "b": rand(10)}
    ref = (x - x.mean(-1, keepdims=True)) / onp.sqrt(x.var(-1, keepdims=True) + 1e-12) * p["g"] + p["b"]
    onp.testing.assert_allclose(nn.layer_norm(p, x), ref, rtol=1e-12, atol=1e-12)


def test_softmax_is_stable_and_sums_to_one():
    x = onp.array([[1000.0, 1001.0, 999.0], [-1e4, 0.0, 1e4]])
    y = nn.softmax(x)
    assert onp.all(onp.isfinite(y))
    onp.testing.assert_allclose(y.sum(-1), 1.0)
    e = onp.exp(onp.array([1.0, 2.0, 0.0]))
    onp.testing.assert_allclose(y[0], e / e.sum())


def test_dropout_off_without_rng_and_unbiased_with_it():
    x = onp.ones((200, 500))
    assert nn.dropout(x, 0.5, None) is x
    y = nn.dropout(x, 0.25, onp.random.default_rng(0))
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    onp.testing.assert_allclose(y[kept], 1 / 0.75)  # survivors scaled: E[y] = x


def test_attention_matches_per_head_loop_and_ignores_padded_keys():
    d, h = 8, 2
    p = nn.init_attention(onp.random.default_rng(4), d, std=0.3, dtype=onp.float64)
    x = rand(1, 5, d)
    mask = onp.array([[1, 1, 1, 0, 0]])
    out = nn.attention(p, x, nn.mask_bias(mask, onp.float64), h)
    # a reference written head by head, attending to the 3 real tokens only
    q, k, v = (x[0] @ p[n]["w"] + p[n]["b"] for n in ("query", "key", "value"))
    heads = []
    for j in range(h):
        sl = slice(j * d // h, (j + 1) * d // h)
        s = q[:, sl] @ k[:3, sl].T / math.sqrt(d // h)
        w = onp.exp(s - s.max(-1, keepdims=True))
        heads.append((w / w.sum(-1, keepdims=True)) @ v[:3, sl])
    ref = onp.concatenate(heads, -1) @ p["output"]["w"] + p["output"]["b"]
    onp.testing.assert_allclose(out[0], ref, atol=1e-12)
    x2 = x.copy()
    x2[0, 3:] = 100.0                                # change only the padded tokens
    out2 = nn.attention(p, x2, nn.mask_bias(mask, onp.float64), h)
    onp.testing.assert_allclose(out2[0, :3], out[0, :3], atol=1e-12)


def test_projection_hook_sees_every_projection():
    p = nn.init_attention(onp.random.default_rng(4), 8, dtype=onp.float64)
    seen = []

    def project(name, x, y):
        seen.append((name, x.shape, y.shape))
        return y

    nn.attention(p, rand(2, 3, 8), nn.mask_bias(onp.ones((2, 3)), onp.float64), 2, project=project)
    assert [s[0] for s in seen] == ["query", "key", "value", "output"]
    assert all(s[1] == (2, 3, 8) and s[2] == (2, 3, 8) for s in seen)


# --- float32 stays float32 ----------------------------------------------------------------

def float32_cases():
    f32 = onp.float32
    dense_p = nn.init_dense(onp.random.default_rng(1), 6, 6, dtype=f32)
    ln_p = nn.init_layer_norm(6, dtype=f32)
    att_p = nn.init_attention(onp.random.default_rng(2), 6, dtype=f32)
    bias = nn.mask_bias(onp.array([[1, 1, 0], [1, 1, 1]]), f32)
    return {
        "dense": (lambda p, x: nn.dense(p, x), dense_p),
        "layer_norm": (lambda p, x: nn.layer_norm(p, x), ln_p),
        "gelu": (lambda p, x: nn.gelu(x) * p, onp.float32(1.0) * onp.ones(6, f32)),
        "gelu_tanh": (lambda p, x: nn.gelu_tanh(x) * p, onp.ones(6, f32)),
        "softmax": (lambda p, x: nn.softmax(x * p), onp.ones(6, f32)),
        "dropout": (lambda p, x: nn.dropout(x * p, 0.1, onp.random.default_rng(0)), onp.ones(6, f32)),
        "embedding": (lambda p, x: nn.embedding(p, onp.array([[0, 1, 1], [2, 0, 1]])) + x,
                      onp.ones((3, 6), f32)),
        "attention": (lambda p, x: nn.attention(p, x, bias, 2, dropout_rate=0.1,
                                                rng=onp.random.default_rng(0)), att_p),
        "rms_norm": (lambda p, x: nn.rms_norm(p, x), nn.init_rms_norm(6, dtype=f32)),
        "t5_attention": (lambda p, x: nn.attention(
            {k: {"w": v["w"]} for k, v in p.items()}, x, bias, 2, kv=nn.key_values(p, x * 2.0),
            position_bias=x[:1, None, :, :3], scale=1.0, dropout_rate=0.1,
            rng=onp.random.default_rng(0)), att_p),
    }


@pytest.mark.parametrize("name", sorted(float32_cases()))
def test_float32_in_float32_out_forward_and_backward(name):
    f, p = float32_cases()[name]
    x = rand(2, 3, 6, dtype=onp.float32)
    assert f(p, x).dtype == onp.float32
    loss = lambda p, x: np.sum(f(p, x) * f(p, x))
    gp, gx = grad(loss, 0)(p, x), grad(loss, 1)(p, x)
    assert gx.dtype == onp.float32
    dtypes = [g.dtype for _, g in leaves(gp)]
    assert dtypes and all(t == onp.float32 for t in dtypes), dtypes
    flowing = backward_dtypes(loss, p, x, argnum=(0, 1))     # every intermediate gradient
    assert set(flowing) == {onp.dtype(onp.float32)}, set(flowing)
