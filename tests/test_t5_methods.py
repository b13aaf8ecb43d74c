"""Every method on T5 (core/methods.py with core/t5.py), on small random T5s of both layouts:
where each method's parameters go (both stacks, none on cross-attention, one shared A), float64
gradient checks of the teacher-forced loss, the plain and fast layers in agreement, counts
measured on the trees equal to the counts from shapes, BitFit's biases as the reference adds
them, and the task model's predict / loss / generate on a T5."""

import dataclasses

import numpy as onp
import pytest
from autograd import value_and_grad
from autograd.test_util import check_grads

from minicompacter.core import t5
from minicompacter.core.counting import count_analytic, count_measured, shapes_from_config
from minicompacter.core.layers import use_layers
from minicompacter.core.methods import METHODS, method_config
from minicompacter.core.model import generate, init_model, loss, predict
from minicompacter.core.paths import ATTENTION_ADAPTER, FFN_ADAPTER, LORA, SHARED
from minicompacter.core.tree import count, dotted, flatten, leaves, merge, split, tree_map

# the presets, shrunk to the tiny models' width 16 where they would not fit it
SMALL = {"adapter": {"reduction_factor": 4}, "pfeiffer": {"reduction_factor": 4},
         "adapter-lowrank": {"reduction_factor": 4}, "compacter": {"reduction_factor": 4},
         "compacter++": {"reduction_factor": 4},
         "phm-adapter": {"reduction_factor": 4, "phm_dim": 4}, "lora": {"r": 2},
         "adapterdrop": {"reduction_factor": 4}, "quaternion-adapter": {"reduction_factor": 4}}
TIED = dataclasses.replace(t5.TINY_T5, feed_forward_proj="relu", tie_word_embeddings=True)
CONFIGS = {"v1.1 (gated, untied)": t5.TINY_T5, "v1.0 (relu, tied)": TIED}


class Base:
    """What init_model reads of a pretrained model."""

    def __init__(self, cfg, dtype):
        self.config = cfg
        self.params = t5.init_t5(onp.random.default_rng(1), cfg, dtype=dtype)
        # make the RMS weights and relative biases mistakes would show in
        rng = onp.random.default_rng(2)
        self.params = tree_map(lambda x: x * (1 + 0.1 * rng.standard_normal(x.shape)).astype(dtype),
                               self.params)


def config(name):
    return method_config(name, **SMALL.get(name, {}))


def batch():
    return {"input_ids": onp.array([[5, 9, 3, 12, 1], [7, 30, 1, 0, 0]]),
            "attention_mask": onp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
            "labels": onp.array([[11, 4, 1], [8, 1, -100]])}


def build(name, cfg=t5.TINY_T5, dtype=onp.float64, seed=0):
    model, trainable, frozen = init_model(onp.random.default_rng(seed), Base(cfg, dtype),
                                          config(name))
    # every parameter the method adds away from its start (LoRA's B and BitFit's biases start
    # at zero, where a gradient check would not see them used)
    rng = onp.random.default_rng(3)
    trainable = tree_map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(x.dtype),
                         trainable)
    return model, trainable, frozen


# --- where the parameters go ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["adapter", "pfeiffer", "compacter", "compacter++",
                                  "adapter-lowrank", "phm-adapter"])
def test_adapters_sit_in_every_block_of_both_stacks_and_never_on_cross_attention(name):
    cfg = t5.TINY_T5
    model, trainable, _ = init_model(onp.random.default_rng(0), Base(cfg, onp.float32),
                                     config(name))
    slots = {FFN_ADAPTER} | ({ATTENTION_ADAPTER} if model.method.config.mh_adapter else set())
    for stack, n in (("encoder", cfg.num_layers), ("decoder", cfg.num_decoder_layers)):
        blocks = trainable[stack]["layers"]
        assert len(blocks) == n
        for block in blocks:                  # (and the layer norms the method trains)
            assert {key for key in block if key.endswith("adapter")} == slots
    shared = [path for path, _ in leaves(trainable) if path[-1] == "A"]
    if name in ("compacter", "compacter++"):
        assert shared == [(SHARED, "A")]                       # one rule for both stacks
    else:
        assert SHARED not in trainable


def test_lora_adapts_query_and_value_of_every_attention_with_t5s_inner_width():
    cfg = t5.TINY_T5                                           # d 16, inner 3 x 4 = 12
    _, trainable, _ = init_model(onp.random.default_rng(0), Base(cfg, onp.float32),
                                 config("lora"))
    enc = trainable["encoder"]["layers"][0][LORA]
    dec = trainable["decoder"]["layers"][2][LORA]
    assert set(enc) == {"query", "value"}
    assert set(dec) == {"query", "value", "cross_query", "cross_value"}
    for p in list(enc.values()) + list(dec.values()):
        assert p["A"].shape == (16, 2) and p["B"].shape == (2, 12) and not p["B"].any()


def test_bitfit_trains_the_biases_the_reference_adds_to_t5():
    cfg = t5.TINY_T5
    base = Base(cfg, onp.float32)
    _, trainable, frozen = init_model(onp.random.default_rng(0), base, config("bitfit"))
    names = set(flatten(trainable))
    assert "encoder.layers.0.attention.query.b" in names and "lm_head.b" in names
    assert "decoder.layers.2.cross_attention.output.b" in names
    assert "decoder.layers.2.cross_attention_ln.b" in names
    assert "encoder.layers.1.ffn.in_linear.b" in names                 # the gated FFN's
    assert not any("final_ln" in n for n in names)                      # as the reference
    assert all(n.endswith(".b") for n in names) and flatten(frozen).keys().isdisjoint(names)
    # per block: q, k, v (inner each), o (d), FFN in, in_linear (d_ff each), out (d), norms
    d, inner, k = 16, 12, 24
    encoder_block = 3 * inner + d + 2 * k + d + 2 * d
    decoder_block = 2 * (3 * inner + d) + 2 * k + d + 3 * d
    assert count(trainable) == 2 * encoder_block + 3 * decoder_block + cfg.vocab_size
    # zero biases leave the model as it was; the output layer's bias moves the logits by itself
    b = batch()
    model, trainable, frozen = init_model(onp.random.default_rng(0), base, config("bitfit"))
    plain = t5.seq2seq_logits(base.params, dict(b, decoder_input_ids=t5.shift_right(b["labels"], cfg)), cfg)
    batch_dec = dict(b, decoder_input_ids=t5.shift_right(b["labels"], cfg))
    onp.testing.assert_array_equal(predict(trainable, frozen, batch_dec, model), plain)
    trainable["lm_head"]["b"] = onp.arange(cfg.vocab_size, dtype=onp.float32)
    onp.testing.assert_allclose(predict(trainable, frozen, batch_dec, model) - plain,
                                onp.broadcast_to(trainable["lm_head"]["b"], plain.shape),
                                atol=1e-5)


@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
@pytest.mark.parametrize("name", METHODS)
def test_counts_measured_on_the_tree_equal_the_counts_from_shapes(name, cfg):
    model, trainable, _ = init_model(onp.random.default_rng(0), Base(cfg, onp.float32),
                                     config(name))
    assert count_measured(trainable, model.method.config) == count_analytic(
        model.method.config, shapes_from_config(cfg))


# --- gradients, and the two layer sets -----------------------------------------------------------

@pytest.mark.parametrize("name", METHODS)
def test_loss_gradient_matches_finite_differences_in_float64(name):
    model, trainable, frozen = build(name)
    b = batch()
    if name == "full":          # a few leaves of the whole model, to keep the check short
        keys = ("decoder.relative_bias", "encoder.layers.1.ffn.out.w", "embeddings.word",
                "decoder.layers.2.cross_attention.key.w", "decoder.layers.0.ffn_ln.g")
        trainable, rest = split(trainable, lambda path: dotted(path) in keys)
        frozen = merge(frozen, rest)
    with use_layers("plain"):
        check_grads(lambda tr: loss(tr, frozen, b, model), modes=["rev"], order=1)(trainable)


@pytest.mark.parametrize("cfg", list(CONFIGS.values()), ids=list(CONFIGS))
@pytest.mark.parametrize("name", METHODS)
def test_plain_and_fast_layers_agree_and_every_trained_leaf_gets_a_gradient(name, cfg):
    model, trainable, frozen = build(name, cfg)
    b = batch()
    results = {}
    for layers in ("plain", "fast"):
        with use_layers(layers):
            results[layers] = value_and_grad(loss)(trainable, frozen, b, model)
    (v_plain, g_plain), (v_fast, g_fast) = results["plain"], results["fast"]
    assert abs(v_plain - v_fast) < 1e-10
    for key, g in flatten(g_plain).items():
        onp.testing.assert_allclose(flatten(g_fast)[key], g, atol=1e-9, err_msg=key)
    unused = [k for k, g in flatten(g_plain).items() if not onp.any(g)]
    assert not unused, f"{name}: leaves the loss does not use: {unused[:4]}"


def test_float32_stays_float32():
    model, trainable, frozen = build("compacter", dtype=onp.float32)
    b = batch()
    value, grads = value_and_grad(loss)(trainable, frozen, b, model)
    assert onp.asarray(value).dtype == onp.float32
    assert {g.dtype for g in flatten(grads).values()} == {onp.dtype(onp.float32)}


# --- the task model on a T5 --------------------------------------------------------------------

def test_predict_loss_and_generate_of_a_t5_task_model():
    model, trainable, frozen = build("lora", dtype=onp.float32)
    assert model.seq2seq and "head" not in trainable
    b = batch()
    params = merge(frozen, trainable)
    decoder_ids = t5.shift_right(b["labels"], model.encoder_config)
    logits = predict(trainable, frozen, dict(b, decoder_input_ids=decoder_ids), model)
    assert logits.shape == (2, 3, model.encoder_config.vocab_size)
    hooks = model.method.hooks
    onp.testing.assert_array_equal(
        logits, t5.seq2seq_logits(params, dict(b, decoder_input_ids=decoder_ids),
                                  model.encoder_config, hooks=hooks))
    assert loss(trainable, frozen, b, model) == t5.seq2seq_loss(params, b, model.encoder_config,
                                                                hooks=hooks)
    ids = generate(trainable, frozen, b, model, 4)
    onp.testing.assert_array_equal(ids, t5.generate(params, model.encoder_config, b["input_ids"],
                                                    b["attention_mask"], 4, hooks=hooks))
    # greedy: each generated token is the argmax of the teacher-forced logits of the tokens
    # generated before it
    forced = predict(trainable, frozen, dict(b, decoder_input_ids=t5.shift_right(ids, model.encoder_config)), model)
    alive = onp.cumsum(ids == model.encoder_config.eos_token_id, axis=1) - (
        ids == model.encoder_config.eos_token_id) == 0
    onp.testing.assert_array_equal(onp.argmax(forced, -1)[alive], ids[alive])


def test_methods_start_at_the_base_model_where_they_should():
    """LoRA (B = 0) and BitFit (zero biases) start exactly at the base model; the adapters
    near it (a small random bottleneck)."""
    base = Base(t5.TINY_T5, onp.float64)
    b = batch()
    reference = t5.seq2seq_loss(base.params, b, base.config)
    for name, tol in (("lora", 0.0), ("bitfit", 0.0), ("full", 0.0), ("adapter", 1e-2),
                      ("compacter", 1e-2)):
        model, trainable, frozen = init_model(onp.random.default_rng(0), base, config(name))
        assert abs(loss(trainable, frozen, b, model) - reference) <= tol, name
