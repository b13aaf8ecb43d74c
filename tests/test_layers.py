"""The one switch between the plain layers (nn.py) and the fast ones (kernels.py): the
whole model, every method, gives the same loss and gradients on both (float64 to 1e-8,
float32 to its rounding); on the plain layers no fast kernel runs at all; the choice ends
with its block."""

import threading

import numpy as onp
import pytest
from autograd import grad

import minicompacter as mc
from minicompacter.core import kernels
from minicompacter.core.layers import FAST, PLAIN, activation, current, use_layers
from minicompacter.core.model import init_model, loss
from minicompacter.core.tree import flatten, tree_map

# every method; compacter also with the exact GELU inside the adapter (the encoder's own)
CASES = [(m, {}) for m in mc.METHODS] + [("compacter", {"non_linearity": "gelu"})]


def setup(pretrained, method, overrides):
    preset = mc.method_config(method)
    small = {"reduction_factor": 8} if isinstance(preset, mc.AdapterConfig) else {}
    if method == "phm-adapter":
        small["phm_dim"] = 4                   # 12 divides neither 32 nor the bottleneck 4
    if method.startswith("prompt-tuning"):
        small["prompt_length"] = 5
    if method == "intrinsic-said":
        small["intrinsic_dim"] = 300           # 37 lambdas (tiny's tensors) and 263 theta_d
    model, trainable, frozen = init_model(onp.random.default_rng(0), pretrained,
                                          mc.method_config(method, **small, **overrides))
    # move every trained weight off its start (zero up-projections, LoRA's B = 0), so that
    # each adapter and hook changes the output
    trainable = tree_map(lambda v: v + 0.05, trainable)
    batch = mc.tokenize(pretrained.tokenizer, ["a good film", "not bad at all, really"])
    batch["labels"] = onp.array([1, 0])
    return model, trainable, frozen, batch


def value_and_grads(layers, model, trainable, frozen, batch):
    with use_layers(layers):
        return (loss(trainable, frozen, batch, model, onp.random.default_rng(3)),
                grad(loss)(trainable, frozen, batch, model, onp.random.default_rng(3)))


def assert_same(fast, plain, rtol, atol):
    onp.testing.assert_allclose(fast[0], plain[0], rtol=rtol)
    flat_fast, flat_plain = flatten(fast[1]), flatten(plain[1])
    assert flat_fast.keys() == flat_plain.keys()
    for key in flat_fast:
        onp.testing.assert_allclose(flat_fast[key], flat_plain[key], rtol=rtol, atol=atol,
                                    err_msg=key)


@pytest.mark.parametrize("method,overrides", CASES, ids=lambda c: str(c))
def test_fast_and_plain_give_the_same_loss_and_gradients_float64(tiny64, method, overrides):
    args = setup(tiny64, method, overrides)
    assert_same(value_and_grads("fast", *args), value_and_grads("plain", *args), 1e-8, 1e-12)


@pytest.mark.parametrize("method,overrides", CASES, ids=lambda c: str(c))
def test_fast_and_plain_agree_to_float32_rounding(tiny, method, overrides):
    args = setup(tiny, method, overrides)
    fast, plain = value_and_grads("fast", *args), value_and_grads("plain", *args)
    scale = max(onp.abs(g).max() for g in flatten(plain[1]).values())
    assert_same(fast, plain, 2e-4, 2e-5 * scale)


def test_on_the_plain_layers_no_fast_kernel_runs(tiny, monkeypatch):
    """Every fast primitive does its work through one of these helpers; with them broken, the
    plain layers must still compute every method's loss and gradients (and the fast ones fail)."""
    def broken(*args, **kwargs):
        raise AssertionError("a fast kernel ran")
    for name in ("matmul_rows", "normalize", "gelu_parts", "attention_probs", "_phi_float32"):
        monkeypatch.setattr(kernels, name, broken)
    for method, overrides in CASES:
        args = setup(tiny, method, overrides)
        value_and_grads("plain", *args)
        with pytest.raises(AssertionError, match="a fast kernel ran"):
            value_and_grads("fast", *args)


def test_the_choice_lasts_for_its_block_and_its_thread():
    assert current() is FAST
    with use_layers("plain") as layers:
        assert layers is PLAIN and current() is PLAIN
        assert activation("gelu") is PLAIN.gelu and activation("gelu_new") is PLAIN.gelu_tanh
        seen = []
        other = threading.Thread(target=lambda: seen.append(current()))
        other.start()
        other.join()
        assert seen == [FAST]                         # another thread keeps the default
    assert current() is FAST and activation("gelu") is FAST.gelu
    with pytest.raises(ValueError, match="layers 'slow' is unknown; use one of"):
        with use_layers("slow"):
            pass
    with pytest.raises(ValueError, match="activation 'tanhh' is unknown"):
        activation("tanhh")


def test_train_config_layers_reaches_the_training_loop(tiny, monkeypatch):
    """TrainConfig(layer_set="plain") trains on the plain layers: with the fast kernels broken,
    a run still finishes."""
    def broken(*args, **kwargs):
        raise AssertionError("a fast kernel ran")
    for name in ("matmul_rows", "normalize", "gelu_parts", "attention_probs"):
        monkeypatch.setattr(kernels, name, broken)
    cfg = mc.TrainConfig(epochs=1, batch_size=16, max_length=32, progress=False, layer_set="plain")
    m = mc.finetune(tiny, "synthetic-sentiment", mc.method_config("compacter", reduction_factor=8),
                    cfg, train_size=32)
    assert m["config"]["train"]["layer_set"] == "plain"
    with pytest.raises(ValueError, match="layer_set .--layer-set. must be one of .*'slow'"):
        mc.TrainConfig(layer_set="slow")
