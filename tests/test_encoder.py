"""The encoder on the tiny config: gradient checks with respect to parameters and
inputs (float64), float32 gradients, the adapter slots' placement against a reference
block written out by hand, padding, pooling, heads and bad input."""

import dataclasses

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import grad
from autograd.test_util import check_grads

import minicompacter as mc
from minicompacter.core.encoder import block
from minicompacter.core.nn import mask_bias
from minicompacter.core.tree import cast, leaves

from conftest import backward_dtypes

CFG = dataclasses.replace(mc.TINY, vocab_size=50, max_positions=16, num_layers=2)


def tiny_params(dtype=onp.float64, seed=0, std=0.2):
    cfg = dataclasses.replace(CFG, initializer_range=std)
    return mc.init_encoder(onp.random.default_rng(seed), cfg, dtype=dtype)


def tiny_batch(B=2, T=5):
    rng = onp.random.default_rng(7)
    mask = onp.ones((B, T), onp.int64)
    mask[0, T - 2:] = 0                                       # row 0 has two padding tokens
    return {"input_ids": rng.integers(0, CFG.vocab_size, (B, T)),
            "token_type_ids": (onp.arange(T) >= T // 2).astype(onp.int64)[None].repeat(B, 0),
            "attention_mask": mask}


# --- gradient checks -------------------------------------------------------------------

def test_encoder_grad_wrt_all_parameters():
    batch = tiny_batch()
    check_grads(lambda p: mc.encoder(p, batch, CFG), modes=["rev"], order=1)(tiny_params())


def test_encoder_grad_with_dropout_and_a_head():
    batch = tiny_batch()
    def loss(p, h):
        hidden = mc.encoder(p, batch, CFG, rng=onp.random.default_rng(1))   # same masks each call
        return mc.head(h, mc.pool(hidden, batch["attention_mask"], "mean"))
    h = mc.init_head(onp.random.default_rng(2), CFG.hidden_size, 3, std=0.5, dtype=onp.float64)
    check_grads(loss, argnum=(0, 1), modes=["rev"], order=1)(tiny_params(), h)


def test_blocks_grad_wrt_input_states():
    p, batch = tiny_params(), tiny_batch()
    bias = mask_bias(batch["attention_mask"], onp.float64)
    def blocks(h):
        for i in range(CFG.num_layers):
            h = block(p, i, h, bias, CFG)
        return h
    check_grads(blocks, modes=["rev"], order=1)(onp.random.default_rng(3).standard_normal((2, 5, 32)))


# --- float32 ---------------------------------------------------------------------------

def test_float32_params_and_inputs_give_float32_everywhere():
    p = tiny_params(onp.float32)
    h = mc.init_head(onp.random.default_rng(2), CFG.hidden_size, 2)
    batch = tiny_batch()
    def loss(p, h):
        hidden = mc.encoder(p, batch, CFG, rng=onp.random.default_rng(0))
        logits = mc.head(h, mc.pool(hidden, batch["attention_mask"], "mean"))
        return np.sum(logits * logits)
    assert mc.encoder(p, batch, CFG).dtype == onp.float32
    gp, gh = grad(loss, (0, 1))(p, h)
    dtypes = {".".join(map(str, path)): g.dtype for path, g in leaves((gp, gh))}
    assert len(dtypes) == sum(1 for _ in leaves((p, h)))
    assert {str(t) for t in dtypes.values()} == {"float32"}, dtypes
    flowing = backward_dtypes(loss, p, h)                    # every intermediate gradient
    assert len(flowing) > 50 and set(flowing) == {onp.dtype(onp.float32)}, set(flowing)


# --- the block and its slots, against a reference written out by hand -------------------

def reference_encoder(p, batch, cfg, slot_attention, slot_ffn):
    """BERT's post-LN encoder in plain NumPy (mean / var, per-head loop), the two
    adapter slots applied to the sublayer outputs before the residual add."""
    def ln(q, x):
        return (x - x.mean(-1, keepdims=True)) / onp.sqrt(x.var(-1, keepdims=True)
                                                         + cfg.layer_norm_eps) * q["g"] + q["b"]
    from scipy.special import erf
    gelu = lambda x: 0.5 * x * (1 + erf(x / onp.sqrt(2)))
    ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    B, T = ids.shape
    e = p["embeddings"]
    h = ln(e["ln"], e["word"][ids] + e["position"][onp.arange(T)] + e["token_type"][types])
    nh, dh = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    for i, L in enumerate(p["layers"]):
        a = L["attention"]
        q, k, v = (h @ a[n]["w"] + a[n]["b"] for n in ("query", "key", "value"))
        ctx = onp.zeros_like(h)
        for b in range(B):
            for j in range(nh):
                sl = slice(j * dh, (j + 1) * dh)
                s = q[b, :, sl] @ k[b, :, sl].T / onp.sqrt(dh)
                s = onp.where(mask[b][None, :] == 1, s, -onp.inf)
                w = onp.exp(s - s.max(-1, keepdims=True))
                ctx[b, :, sl] = (w / w.sum(-1, keepdims=True)) @ v[b, :, sl]
        att = ctx @ a["output"]["w"] + a["output"]["b"]
        h = ln(L["attention_ln"], h + slot_attention(i, att))
        f = gelu(h @ L["ffn"]["in"]["w"] + L["ffn"]["in"]["b"]) @ L["ffn"]["out"]["w"] + L["ffn"]["out"]["b"]
        h = ln(L["ffn_ln"], h + slot_ffn(i, f))
    return h


def test_encoder_matches_reference_without_hooks():
    p, batch = tiny_params(), tiny_batch()
    ident = lambda i, x: x
    ref = reference_encoder(p, batch, CFG, ident, ident)
    out = mc.encoder(p, batch, CFG)
    real = batch["attention_mask"].astype(bool)
    onp.testing.assert_allclose(out[real], ref[real], atol=1e-10)


def test_slots_act_on_sublayer_outputs_before_residual_and_layer_norm():
    p, batch = tiny_params(), tiny_batch()
    # nonlinear, layer-dependent slot functions, so a misplaced slot cannot match
    sa = lambda i, x: onp.tanh(x) * (i + 2.0)
    sf = lambda i, x: x * x - (i + 1.0)
    hooks = mc.Hooks(attention_output=lambda params, i, a, h, norm: np.tanh(a) * (i + 2.0),
                     ffn_output=lambda params, i, f, h, norm: f * f - (i + 1.0))
    ref = reference_encoder(p, batch, CFG, sa, sf)
    out = mc.encoder(p, batch, CFG, hooks=hooks)
    real = batch["attention_mask"].astype(bool)
    onp.testing.assert_allclose(out[real], ref[real], atol=1e-10)
    assert onp.abs(out - mc.encoder(p, batch, CFG))[real].max() > 1e-2


def test_hooks_receive_the_whole_tree_and_the_layer_index():
    p, batch = tiny_params(), tiny_batch()
    p = dict(p, shared={"scale": onp.array(0.0)})          # a method's own top-level entry
    calls = []
    def ffn_output(params, i, f, h, norm):
        calls.append((i, f.shape))
        return f * params["shared"]["scale"]                # zero: the FFN sublayer drops out
    def projection(params, i, name, x, y):
        calls.append((i, name))
        return y
    mc.encoder(p, batch, CFG, hooks=mc.Hooks(ffn_output=ffn_output, attention_projection=projection))
    assert [c for c in calls if c[1] == (2, 5, 32)] == [(0, (2, 5, 32)), (1, (2, 5, 32))]
    assert [c for c in calls if isinstance(c[1], str)] == [
        (i, n) for i in range(2) for n in ("query", "key", "value", "output")]


def test_identity_hooks_equal_no_hooks():
    p, batch = tiny_params(), tiny_batch()
    ident = mc.Hooks(attention_output=lambda p, i, a, h, norm: a,
                     ffn_output=lambda p, i, f, h, norm: f,
                     attention_projection=lambda p, i, n, x, y: y)
    onp.testing.assert_array_equal(mc.encoder(p, batch, CFG, hooks=ident), mc.encoder(p, batch, CFG))


# --- padding, dropout, pooling, heads --------------------------------------------------

def test_padding_does_not_change_real_tokens():
    p = tiny_params(onp.float32)
    ids = onp.array([[5, 6, 7, 8, 9, 10]])
    short = mc.encoder(p, {"input_ids": ids[:, :4]}, CFG)
    padded = mc.encoder(p, {"input_ids": onp.concatenate([ids[:, :4], [[0, 0]]], 1),
                            "attention_mask": onp.array([[1, 1, 1, 1, 0, 0]])}, CFG)
    onp.testing.assert_allclose(padded[:, :4], short, atol=1e-6)


def test_dropout_only_with_rng_and_reproducible_by_seed():
    p, batch = tiny_params(onp.float32), tiny_batch()
    cfg = dataclasses.replace(CFG, hidden_dropout=0.3)
    base = mc.encoder(p, batch, cfg)
    onp.testing.assert_array_equal(base, mc.encoder(p, batch, cfg))
    a = mc.encoder(p, batch, cfg, rng=onp.random.default_rng(1))
    b = mc.encoder(p, batch, cfg, rng=onp.random.default_rng(1))
    onp.testing.assert_array_equal(a, b)
    assert onp.abs(a - base).max() > 1e-2


def test_pooling():
    hidden = onp.arange(2 * 3 * 2, dtype=onp.float64).reshape(2, 3, 2)
    mask = onp.array([[1, 1, 0], [1, 1, 1]])
    onp.testing.assert_array_equal(mc.pool(hidden, mask, "cls"), hidden[:, 0])
    onp.testing.assert_allclose(mc.pool(hidden, mask, "mean"),
                                [hidden[0, :2].mean(0), hidden[1].mean(0)])
    with pytest.raises(ValueError, match="pooling"):
        mc.pool(hidden, mask, "max")


def test_head_shapes_classification_and_regression():
    pooled = onp.ones((4, 32), onp.float32)
    for labels in (2, 3, 1):
        h = mc.init_head(onp.random.default_rng(0), 32, labels)
        assert mc.head(h, pooled).shape == (4, labels)
    with pytest.raises(ValueError, match="num_labels"):
        mc.init_head(onp.random.default_rng(0), 32, 0)


# --- bad input -------------------------------------------------------------------------

def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="not a multiple of num_heads"):
        mc.EncoderConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="hidden_act 'quick_gelu' is not supported"):
        mc.EncoderConfig(hidden_act="quick_gelu")
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        mc.EncoderConfig(num_layers=0)
    with pytest.raises(ValueError, match="hidden_dropout"):
        mc.EncoderConfig(hidden_dropout=1.0)


def test_batch_errors_name_the_problem():
    p = tiny_params(onp.float32)
    with pytest.raises(ValueError, match="only 16 position embeddings; truncate"):
        mc.encoder(p, {"input_ids": onp.zeros((1, 17), onp.int64)}, CFG)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        mc.encoder(p, {"input_ids": onp.zeros((1, 4), onp.int64),
                       "attention_mask": onp.ones((1, 5))}, CFG)
    with pytest.raises(ValueError, match="outside"):
        mc.encoder(p, {"input_ids": onp.full((1, 4), 50)}, CFG)
    with pytest.raises(ValueError, match="shape \\(batch, tokens\\)"):
        mc.encoder(p, {"input_ids": onp.zeros(4, onp.int64)}, CFG)


def test_cast_to_float64_keeps_integers():
    p = cast({"a": onp.ones(2, onp.float32), "ids": onp.arange(3)}, onp.float64)
    assert p["a"].dtype == onp.float64 and p["ids"].dtype == onp.arange(3).dtype
