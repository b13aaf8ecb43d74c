"""kernels.py against nn.py: each fast primitive gives the plain version's values and
gradients (float64, central differences through autograd.test_util.check_grads, and
autograd's own gradient of the plain version), with and without the thread split;
float32 stays float32; the thread settings behave as documented. (The whole model on
both sets of layers: tests/test_layers.py.)"""

import subprocess
import sys

import numpy as onp
import pytest
from autograd import grad
from autograd.test_util import check_grads

import minicompacter as mc
from minicompacter.core import kernels, nn, threads
from minicompacter.core.model import init_model, loss
from minicompacter.core.tree import flatten


@pytest.fixture(params=["one thread", "split"])
def split(request, monkeypatch):
    """Run each test once on one thread and once inside `parallel(2)` with every array split
    over the pool in blocks of 7 rows (odd sizes on purpose), so both code paths are checked."""
    if request.param == "split":
        monkeypatch.setattr(threads, "_PARALLEL_MIN", 0)
        monkeypatch.setattr(kernels, "_CHUNK", 7)
        with threads.parallel(2):
            assert threads.active_threads() == 2
            yield request.param
    else:
        assert threads.active_threads() == 1
        yield request.param


def rand(rng, *shape, dtype=onp.float64):
    return rng.standard_normal(shape).astype(dtype)


def same_value_and_grads(fast, plain, args, argnums, rtol=1e-10):
    """fast(*args) == plain(*args); for each argnum the gradient of a random projection
    agrees, and check_grads passes on the fast one."""
    onp.testing.assert_allclose(fast(*args), plain(*args), rtol=rtol, atol=1e-12)
    w = onp.random.default_rng(9).standard_normal(onp.shape(plain(*args)))
    for i in argnums:
        gf = grad(lambda *a: (fast(*a) * w).sum(), i)(*args)
        gp = grad(lambda *a: (plain(*a) * w).sum(), i)(*args)
        ff, fp = flatten({"g": gf}), flatten({"g": gp})
        assert ff.keys() == fp.keys()
        for key in ff:
            onp.testing.assert_allclose(ff[key], fp[key], rtol=1e-9, atol=1e-11, err_msg=key)
        check_grads(fast, argnum=i, modes=["rev"], order=1)(*args)


def test_linear_matches_dense(split):
    rng = onp.random.default_rng(0)
    params = {"w": rand(rng, 6, 5), "b": rand(rng, 5)}
    x = rand(rng, 3, 4, 6)
    same_value_and_grads(lambda x, w, b: kernels.linear(x, w, b),
                         lambda x, w, b: nn.dense({"w": w, "b": b}, x),
                         (x, params["w"], params["b"]), (0, 1, 2))
    same_value_and_grads(lambda x, w: kernels.linear(x, w), lambda x, w: x @ w,
                         (x, params["w"]), (0, 1))


def test_layer_norm_matches_plain(split):
    rng = onp.random.default_rng(1)
    x, g, b = rand(rng, 3, 5, 8) * 3 + 1, rand(rng, 8), rand(rng, 8)
    same_value_and_grads(lambda x, g, b: kernels.layer_norm({"g": g, "b": b}, x, 1e-12),
                         lambda x, g, b: nn.layer_norm({"g": g, "b": b}, x, 1e-12),
                         (x, g, b), (0, 1, 2))


@pytest.mark.parametrize("with_bias", [False, True])
def test_rms_norm_matches_plain(split, with_bias):
    rng = onp.random.default_rng(11)
    x, g, b = rand(rng, 3, 5, 8) * 3 + 1, rand(rng, 8), rand(rng, 8)
    if with_bias:
        same_value_and_grads(lambda x, g, b: kernels.rms_norm({"g": g, "b": b}, x, 1e-6),
                             lambda x, g, b: nn.rms_norm({"g": g, "b": b}, x, 1e-6),
                             (x, g, b), (0, 1, 2))
    else:
        same_value_and_grads(lambda x, g: kernels.rms_norm({"g": g}, x, 1e-6),
                             lambda x, g: nn.rms_norm({"g": g}, x, 1e-6), (x, g), (0, 1))


def test_gelu_matches_plain(split):
    rng = onp.random.default_rng(2)
    x = rand(rng, 4, 9, 11) * 3
    x[0, 0, :3] = (0.0, -30.0, 30.0)            # Phi's extremes
    same_value_and_grads(kernels.gelu, nn.gelu, (x,), (0,))


def test_embedding_matches_indexing_with_repeated_ids():
    rng = onp.random.default_rng(3)
    table = rand(rng, 10, 4)
    ids = onp.array([[1, 3, 3, 9], [0, 3, 1, 1]])
    same_value_and_grads(lambda t: kernels.embedding(t, ids), lambda t: nn.embedding(t, ids),
                         (table,), (0,))


def test_cross_entropy_matches_plain():
    rng = onp.random.default_rng(4)
    logits = rand(rng, 6, 3) * 4
    labels = onp.array([0, 2, 1, 1, 0, 2])
    same_value_and_grads(lambda z: kernels.cross_entropy(z, labels),
                         lambda z: nn.cross_entropy(z, labels), (logits,), (0,))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_attention_matches_plain_with_padding_dropout_and_hook(split, dropout):
    rng = onp.random.default_rng(5)
    d, heads, B, T = 12, 3, 3, 5
    params = nn.init_attention(rng, d, std=0.5, dtype=onp.float64)
    x = rand(rng, B, T, d)
    mask = onp.ones((B, T))
    mask[1, 3:] = 0
    mask[2, 1:] = 0
    bias = nn.mask_bias(mask, onp.float64)
    lora = {"A": rand(rng, d, 2), "B": rand(rng, 2, d)}

    def project(name, inp, y):                  # a LoRA-like hook on query and value
        return y + (inp @ lora["A"]) @ lora["B"] if name in ("query", "value") else y

    def run(impl, hook):
        def f(x, p):
            r = onp.random.default_rng(7) if dropout else None
            return impl(p, x, bias, heads, dropout_rate=dropout, rng=r,
                        project=project if hook else None)
        return f
    for hook in (False, True):
        same_value_and_grads(run(kernels.attention, hook), run(nn.attention, hook),
                             (x, params), (0, 1))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_t5_attention_matches_plain_with_key_values_position_bias_and_hook(split, dropout):
    """No biases, heads * d_kv != d, scale 1, a trained position bias (its gradient too), as
    self-attention (the fused query/key/value product) and over a memory of another length
    (the keys and values given), with a LoRA-like hook."""
    rng = onp.random.default_rng(12)
    d, heads, dh, B, Tq, Tk = 10, 3, 4, 3, 4, 6
    params = {n: {"w": rand(rng, d, heads * dh) * 0.5} for n in ("query", "key", "value")}
    params["output"] = {"w": rand(rng, heads * dh, d) * 0.5}
    x, memory = rand(rng, B, Tq, d), rand(rng, B, Tk, d)
    mask = onp.ones((B, Tk))
    mask[1, 4:] = 0
    lora = {"A": rand(rng, d, 2), "B": rand(rng, 2, heads * dh)}

    def project(name, inp, y):
        return y + (inp @ lora["A"]) @ lora["B"] if name in ("query", "value") else y

    for T, source in ((Tq, None), (Tk, memory)):
        bias = nn.mask_bias(mask[:, :T], onp.float64)
        pos = rand(rng, 1, heads, Tq, T)
        for hook in (None, project):
            def run(impl):
                def f(x, p, pos, m):
                    kv = None if source is None else impl.key_values(p, m, hook)
                    r = onp.random.default_rng(7) if dropout else None
                    return impl.attention(p, x, bias, heads, dropout_rate=dropout, rng=r,
                                          project=hook, kv=kv, position_bias=pos, scale=1.0)
                return f
            args = (x, params, pos, memory if source is not None else x)
            same_value_and_grads(run(kernels), run(nn), args,
                                 (0, 1, 2, 3) if source is not None else (0, 1, 2))


def test_float32_primitives_return_and_backpropagate_float32(split):
    rng = onp.random.default_rng(6)
    x = rand(rng, 2, 3, 8, dtype=onp.float32)
    ln = {"g": onp.ones(8, onp.float32), "b": onp.zeros(8, onp.float32)}
    attn = nn.init_attention(rng, 8)
    bias = nn.mask_bias(onp.ones((2, 3)), onp.float32)
    pos = rand(rng, 1, 2, 3, 3, dtype=onp.float32)
    fns = {"gelu": kernels.gelu, "layer_norm": lambda x: kernels.layer_norm(ln, x),
           "rms_norm": lambda x: kernels.rms_norm({"g": ln["g"]}, x),
           "linear": lambda x: kernels.linear(x, attn["query"]["w"], attn["query"]["b"]),
           "attention": lambda x: kernels.attention(attn, x, bias, 2),
           "t5_attention": lambda x: kernels.attention(
               attn, x, bias, 2, kv=kernels.key_values(attn, x * 2.0), position_bias=pos * x[0, 0, 0],
               scale=1.0)}
    for name, f in fns.items():
        assert f(x).dtype == onp.float32, name
        assert grad(lambda x: f(x).sum())(x).dtype == onp.float32, name


def test_gelu_float32_is_within_float32_rounding_of_the_exact_value():
    x = onp.linspace(-8, 8, 20001, dtype=onp.float32)
    exact = nn.gelu(x.astype(onp.float64))
    assert onp.max(onp.abs(kernels.gelu(x) - exact)) < 1e-6


def _in_subprocess(code, threads=None):
    import os
    env = dict(os.environ)
    env.pop("MINICOMPACTER_THREADS", None)
    if threads is not None:
        env["MINICOMPACTER_THREADS"] = threads
    return subprocess.run([sys.executable, "-c", "import minicompacter.core.threads as k\n" + code],
                          env=env, capture_output=True, text=True)


def test_parallel_starts_the_pool_and_ends_it():
    # With 2 threads, one part runs on the calling thread and one on the pool's one worker.
    done = _in_subprocess("import threading, time\n"
                          "before = threading.active_count()\n"
                          "ran = set()\n"
                          "def part(rows):\n"
                          "    ran.add(threading.get_ident()); time.sleep(0.2)\n"
                          "with k.parallel(2) as n:\n"
                          "    inside = (n, k.active_threads())\n"
                          "    k.in_parts(part, 10, 1 << 30)\n"
                          "    during = threading.active_count()\n"
                          "print(inside, during - before, len(ran), threading.main_thread().ident in ran,\n"
                          "      k.active_threads(), threading.active_count() - before)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(2,", "2)", "1", "2", "True", "1", "0"], done.stdout


def test_threads_setting_one_keeps_the_pool_off():
    done = _in_subprocess("with k.parallel() as n:\n    print(n, k._pool is None)", threads="1")
    assert done.returncode == 0 and done.stdout.split() == ["1", "True"], done.stderr


def test_bad_threads_setting_names_the_variable_and_the_fix_when_work_starts():
    done = _in_subprocess("print('imported')\nwith k.parallel():\n    pass", threads="two")
    assert done.stdout.split() == ["imported"]                  # importing is fine
    assert done.returncode != 0
    assert "MINICOMPACTER_THREADS" in done.stderr and "whole number" in done.stderr


def forward_dtypes(fun, *args):
    """The dtypes of every value autograd traces while computing fun(*args) with gradients:
    the forward intermediates of a training step."""
    import autograd.tracer

    seen = []
    original = autograd.tracer.new_box

    def recording(value, trace, node):
        if hasattr(value, "dtype"):
            seen.append(onp.dtype(value.dtype))
        return original(value, trace, node)

    autograd.tracer.new_box = recording
    try:
        grad(fun)(*args)
    finally:
        autograd.tracer.new_box = original
    return seen


@pytest.mark.parametrize("method", ["compacter++", "lora", "full"])
def test_a_float32_training_step_is_float32_forward_backward_and_after_the_update(tiny, method):
    """Every traced forward value, every gradient that flows backward, the new parameters
    and AdamW's moments: float32, with dropout on, through the whole of train_step."""
    from conftest import backward_dtypes
    from minicompacter.core.optim import init_adamw
    from minicompacter.harness.training.train import TrainConfig, train_step

    config = mc.method_config(method, **({"reduction_factor": 8} if method == "compacter++" else {}))
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny, config)
    batch = mc.tokenize(tiny.tokenizer, ["a good film", "not bad at all, really"])
    batch["labels"] = onp.array([1, 0])
    rng = onp.random.default_rng(1)
    args = (trainable, frozen, batch, model, rng)
    forward = forward_dtypes(lambda t: loss(t, *args[1:]), trainable)
    assert len(forward) > 50 and set(forward) == {onp.dtype(onp.float32)}, set(forward)
    backward = backward_dtypes(lambda t: loss(t, *args[1:]), trainable)
    assert len(backward) > 20 and set(backward) == {onp.dtype(onp.float32)}, set(backward)
    value, _, (new, opt) = train_step(trainable, init_adamw(trainable), frozen, batch, model,
                                      1e-3, TrainConfig(), rng)
    assert onp.asarray(value).dtype == onp.float32
    for tree in (new, opt["m"], opt["v"]):
        assert {str(v.dtype) for v in flatten(tree).values()} == {"float32"}


def test_float32_phi_table_is_within_1e7_of_the_exact_phi():
    """The interpolated Phi and phi that the float32 GELU uses, on a dense grid over [-9, 9]
    (beyond the table's ends too) and at its knots."""
    import math

    import scipy.special
    x = onp.concatenate([onp.linspace(-9, 9, 400001), onp.arange(-8, 8, 1 / 1024)]).astype(onp.float32)
    cdf, pdf, scratch = onp.empty_like(x), onp.empty_like(x), onp.empty_like(x)
    kernels._phi_float32(x, cdf, pdf, scratch)
    x64 = x.astype(onp.float64)
    assert cdf.dtype == pdf.dtype == onp.float32
    assert onp.max(onp.abs(cdf - 0.5 * (1.0 + scipy.special.erf(x64 / math.sqrt(2.0))))) < 1e-7
    assert onp.max(onp.abs(pdf - onp.exp(-0.5 * x64 ** 2) / math.sqrt(2.0 * math.pi))) < 1e-7


def test_float32_gelu_slope_is_within_float32_rounding_of_the_exact_one():
    """Phi(x) + x phi(x) from the table against float64, and Phi (0 or 1 to float32
    precision) for huge |x|, where x^2 overflows float32 and x phi(x) must not."""
    import math

    import scipy.special
    x = onp.linspace(-10, 10, 100001, dtype=onp.float32)
    _, slope = kernels.gelu_parts(x, slope=True)
    x64 = x.astype(onp.float64)
    exact = (0.5 * (1.0 + scipy.special.erf(x64 / math.sqrt(2.0)))
             + x64 * onp.exp(-0.5 * x64 ** 2) / math.sqrt(2.0 * math.pi))
    assert slope.dtype == onp.float32
    assert onp.max(onp.abs(slope - exact)) < 5e-7
    huge = onp.array([-3e38, -1e20, -30.0, 30.0, 1e20, 3e38], onp.float32)
    _, slope = kernels.gelu_parts(huge, slope=True)
    assert onp.max(onp.abs(slope - [0.0, 0.0, 0.0, 1.0, 1.0, 1.0])) < 1e-7
