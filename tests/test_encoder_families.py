"""The encoder families as configurations of the one encoder, on small random models and
through the core functions only: each family against a reference written out by hand
(positions, token types, the embedding projection), gradient checks, every method on every
family (plain == fast layers, finite losses and gradients, the documented start at the base
model), counting, the frozen sinusoidal table, DistilBERT's missing dropout and bad input.
tests/test_families.py checks the same families against transformers' own outputs."""

import dataclasses

import numpy as onp
import pytest
from autograd import grad
from autograd.test_util import check_grads
from scipy.special import erf

import minicompacter as mc
from minicompacter.core.counting import base_total, count_analytic, count_measured
from minicompacter.core.counting import shapes_from_config
from minicompacter.core.layers import use_layers
from minicompacter.core.model import init_model
from minicompacter.core.nn import attention, mask_bias
from minicompacter.core.tree import count, flatten, leaves, tree_map
from minicompacter.harness.pretrained import Pretrained

BASE = mc.EncoderConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4,
                        intermediate_size=64, max_positions=16, initializer_range=0.2)
FAMILIES = {
    "bert": BASE,
    "roberta": dataclasses.replace(BASE, max_positions=18, type_vocab_size=1, padding_idx=1,
                                   layer_norm_eps=1e-5),
    "distilbert": dataclasses.replace(BASE, type_vocab_size=0, attention_output_dropout=False),
    "distilbert-sinusoidal": dataclasses.replace(BASE, type_vocab_size=0, sinusoidal_positions=True,
                                                 attention_output_dropout=False),
    "electra": dataclasses.replace(BASE, embedding_size=16),
}
PAD = {"roberta": 1}                     # the pad token's id where it matters; 0 elsewhere


def params_of(family, dtype=onp.float64, seed=0):
    return mc.init_encoder(onp.random.default_rng(seed), FAMILIES[family], dtype=dtype)


def batch_of(family, left=False, pairs=True):
    """Three rows of different lengths, padded with the family's pad id (on the left with
    left=True); token types 0 then 1 where the model has two, else zeros."""
    cfg, pad = FAMILIES[family], PAD.get(family, 0)
    rng = onp.random.default_rng(7)
    B, T, lengths = 3, 9, (9, 6, 3)
    ids = onp.full((B, T), pad)
    mask = onp.zeros((B, T), onp.int64)
    for b, n in enumerate(lengths):
        cols = slice(T - n, T) if left else slice(0, n)
        ids[b, cols] = rng.integers(3, cfg.vocab_size, n)          # never the pad id
        mask[b, cols] = 1
    types = onp.zeros((B, T), onp.int64)
    if pairs and cfg.type_vocab_size > 1:
        types[:, T // 2:] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


# --- against a reference written out by hand ----------------------------------------------

def reference_positions(ids, cfg):
    """Row by row: BERT-style 0..T-1; RoBERTa-style a counter of the non-pad tokens seen so
    far, added to padding_idx, and padding_idx itself on a pad token."""
    if cfg.padding_idx is None:
        return onp.tile(onp.arange(ids.shape[1]), (ids.shape[0], 1))
    out = onp.zeros_like(ids)
    for b in range(ids.shape[0]):
        seen = 0
        for t in range(ids.shape[1]):
            if ids[b, t] != cfg.padding_idx:
                seen += 1
                out[b, t] = cfg.padding_idx + seen
            else:
                out[b, t] = cfg.padding_idx
    return out


def reference_encoder(p, batch, cfg):
    """The post-LN encoder in plain NumPy (mean / var, a loop over heads)."""
    def ln(q, x):
        return (x - x.mean(-1, keepdims=True)) / onp.sqrt(x.var(-1, keepdims=True)
                                                         + cfg.layer_norm_eps) * q["g"] + q["b"]
    gelu = lambda x: 0.5 * x * (1 + erf(x / onp.sqrt(2)))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    e = p["embeddings"]
    x = e["word"][ids] + e["position"][reference_positions(ids, cfg)]
    if cfg.type_vocab_size:
        x = x + e["token_type"][batch["token_type_ids"]]
    h = ln(e["ln"], x)
    if "project" in e:
        h = h @ e["project"]["w"] + e["project"]["b"]
    nh, dh = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    for L in p["layers"]:
        a = L["attention"]
        q, k, v = (h @ a[n]["w"] + a[n]["b"] for n in ("query", "key", "value"))
        ctx = onp.zeros_like(h)
        for b in range(h.shape[0]):
            for j in range(nh):
                sl = slice(j * dh, (j + 1) * dh)
                s = q[b, :, sl] @ k[b, :, sl].T / onp.sqrt(dh)
                s = onp.where(mask[b][None, :] == 1, s, -onp.inf)
                w = onp.exp(s - s.max(-1, keepdims=True))
                ctx[b, :, sl] = (w / w.sum(-1, keepdims=True)) @ v[b, :, sl]
        h = ln(L["attention_ln"], h + ctx @ a["output"]["w"] + a["output"]["b"])
        f = gelu(h @ L["ffn"]["in"]["w"] + L["ffn"]["in"]["b"])
        f = f @ L["ffn"]["out"]["w"] + L["ffn"]["out"]["b"]
        h = ln(L["ffn_ln"], h + f)
    return h


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_matches_the_reference_at_every_position(family, left):
    p, batch, cfg = params_of(family), batch_of(family, left), FAMILIES[family]
    onp.testing.assert_allclose(mc.encoder(p, batch, cfg), reference_encoder(p, batch, cfg),
                                atol=1e-10)


def test_roberta_positions_count_real_tokens_from_padding_idx_plus_one():
    from minicompacter.core.encoder import position_ids
    cfg = FAMILIES["roberta"]
    ids = onp.array([[0, 7, 8, 2, 1, 1], [1, 1, 0, 9, 2, 1], [0, 5, 1, 6, 2, 1]])
    onp.testing.assert_array_equal(position_ids(ids, cfg), [[2, 3, 4, 5, 1, 1], [1, 1, 2, 3, 4, 1],
                                                            [2, 3, 1, 4, 5, 1]])
    onp.testing.assert_array_equal(position_ids(ids, BASE), onp.arange(6))


def test_a_left_padded_row_gives_its_unpadded_states_in_roberta_not_in_bert():
    """RoBERTa's positions skip the padding, so padding on the left changes nothing of the
    real tokens; BERT's count the padding (transformers does the same)."""
    for family, same in (("roberta", True), ("bert", False)):
        p, cfg = params_of(family), FAMILIES[family]
        right, left = batch_of(family, False, pairs=False), batch_of(family, True, pairs=False)
        r, l_ = mc.encoder(p, right, cfg), mc.encoder(p, left, cfg)
        close = onp.allclose(r[2, :3], l_[2, -3:], atol=1e-10)
        assert close == same, family


def test_sinusoidal_table_is_the_formula():
    cfg = FAMILIES["distilbert-sinusoidal"]
    table = params_of("distilbert-sinusoidal")["embeddings"]["position"]
    d = cfg.hidden_size
    for pos in (0, 1, 7, 15):
        for j in (0, 1, 2, 3, 30, 31):
            angle = pos / 10000 ** (2 * (j // 2) / d)
            expected = onp.sin(angle) if j % 2 == 0 else onp.cos(angle)
            assert abs(table[pos, j] - expected) < 1e-12, (pos, j)


def test_distilbert_has_no_dropout_after_attention_and_bert_has():
    """With hidden dropout on, the attention slot sees the attention output itself in
    DistilBERT, a dropped-out copy in BERT."""
    for family, dropped in (("distilbert", False), ("bert", True)):
        cfg = dataclasses.replace(FAMILIES[family], hidden_dropout=0.5, attention_dropout=0.0)
        p, batch = params_of(family), batch_of(family)
        seen = []

        def spy(params, i, a, h, norm):
            seen.append((i, a, h))
            return a
        mc.encoder(p, batch, cfg, hooks=mc.Hooks(attention_output=spy),
                   rng=onp.random.default_rng(0))
        bias = mask_bias(batch["attention_mask"], onp.float64)
        i, a, h = seen[0]
        plain = attention(p["layers"][i]["attention"], h, bias, cfg.num_heads)
        assert onp.allclose(a, plain, atol=1e-12) != dropped, family


def test_token_types_zeros_accepted_ones_refused_where_there_is_one_type_and_unread_in_distilbert():
    p, batch, cfg = params_of("roberta"), batch_of("roberta"), FAMILIES["roberta"]
    without = {k: v for k, v in batch.items() if k != "token_type_ids"}
    onp.testing.assert_array_equal(mc.encoder(p, batch, cfg), mc.encoder(p, without, cfg))
    with pytest.raises(ValueError, match=r"token_type_ids hold values outside \[0, 1\)"):
        mc.encoder(p, dict(batch, token_type_ids=onp.ones_like(batch["input_ids"])), cfg)
    p, batch, cfg = params_of("distilbert"), batch_of("distilbert"), FAMILIES["distilbert"]
    ones = dict(batch, token_type_ids=onp.ones_like(batch["input_ids"]))
    onp.testing.assert_array_equal(mc.encoder(p, ones, cfg), mc.encoder(p, batch, cfg))
    assert "token_type" not in p["embeddings"]


def test_electra_projects_the_embeddings_to_the_model_width():
    p, cfg = params_of("electra"), FAMILIES["electra"]
    assert p["embeddings"]["word"].shape == (50, 16) and p["embeddings"]["ln"]["g"].shape == (16,)
    assert p["embeddings"]["project"]["w"].shape == (16, 32)
    same_width = dataclasses.replace(cfg, embedding_size=32)
    assert not same_width.projects_embeddings
    assert "project" not in mc.init_encoder(onp.random.default_rng(0), same_width)["embeddings"]


# --- gradients --------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_grad_wrt_all_parameters_with_dropout(family):
    cfg, batch = FAMILIES[family], batch_of(family)
    check_grads(lambda p: mc.encoder(p, batch, cfg, rng=onp.random.default_rng(1)),
                modes=["rev"], order=1)(params_of(family))


# --- every method on every family ------------------------------------------------------------

def pretrained(family, dtype=onp.float64):
    return Pretrained(FAMILIES[family], params_of(family, dtype), None, family)


def method_cfg(name):
    """A method's preset made to fit width 32 (bottleneck 4; n = 2 for PHM-Adapter)."""
    preset = mc.method_config(name)
    kw = {}
    if isinstance(preset, mc.AdapterConfig):
        kw["reduction_factor"] = 8
        if preset.projection == "phm":
            kw["phm_dim"] = 2 if name == "phm-adapter" else 4
    if isinstance(preset, mc.PromptConfig):
        kw["prompt_length"] = 3                  # the families' tables have 16 positions
    if isinstance(preset, mc.IntrinsicConfig):
        kw["intrinsic_dim"] = 300
    return mc.method_config(name, **kw)


def setup(family, name, dtype=onp.float64, moved=True):
    model, trainable, frozen = init_model(onp.random.default_rng(0), pretrained(family, dtype),
                                          method_cfg(name))
    if moved:                  # off the start (zero up-projections, LoRA's B = 0)
        trainable = tree_map(lambda v: v + 0.05, trainable)
    batch = dict(batch_of(family), labels=onp.array([1, 0, 1]))
    return model, trainable, frozen, batch


@pytest.mark.parametrize("name", mc.METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_on_every_family_plain_equals_fast(family, name):
    model, trainable, frozen, batch = setup(family, name)
    out = {}
    for layers in ("plain", "fast"):
        with use_layers(layers):
            out[layers] = (mc.loss(trainable, frozen, batch, model, onp.random.default_rng(3)),
                           grad(mc.loss)(trainable, frozen, batch, model,
                                         onp.random.default_rng(3)))
    assert onp.isfinite(out["fast"][0])
    onp.testing.assert_allclose(out["fast"][0], out["plain"][0], rtol=1e-8)
    fast, plain = flatten(out["fast"][1]), flatten(out["plain"][1])
    assert fast.keys() == plain.keys() == flatten(trainable).keys()
    for key in fast:
        assert onp.all(onp.isfinite(fast[key])), key
        onp.testing.assert_allclose(fast[key], plain[key], rtol=1e-8, atol=1e-12, err_msg=key)
    assert max(onp.abs(g).max() for g in fast.values()) > 0


@pytest.mark.parametrize("name", mc.METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_starts_where_documented(family, name):
    """LoRA, LoKr, the PHM update, BitFit, full fine-tuning and Intrinsic-SAID start exactly at
    the base model; an adapter with its up-projection (or Compacter's shared A; the
    quaternion adapter's B, its rule being fixed) zero is exactly the base model;
    Compacter and Compacter++ at the paper's initialisation (A ~ N(0, 1e-4^2)) within 1e-3
    of it; prompt tuning reads P more tokens, so its states are longer and never the base's."""
    model, trainable, frozen, batch = setup(family, name, moved=False)
    cfg = FAMILIES[family]
    base = mc.encoder(pretrained(family).params, batch, cfg)
    out = mc.hidden_states(trainable, frozen, batch, model)
    if name in ("lora", "lokr", "phm-lora", "bitfit", "full", "intrinsic-said"):
        onp.testing.assert_array_equal(out, base)
        return
    if name.startswith("prompt-tuning"):
        assert out.shape == (base.shape[0], 3 + base.shape[1], base.shape[2])
        return
    moved = onp.linalg.norm(out - base) / onp.linalg.norm(base)
    assert 0 < moved < (1e-3 if name.startswith("compacter") else onp.inf)
    zero = dict(trainable)
    if "shared" in trainable:
        zero["shared"] = {"A": onp.zeros_like(trainable["shared"]["A"])}
    else:
        key = {"dense": "w", "low-rank": "t", "phm": "A"}[model.method.config.projection]
        key = "B" if name == "quaternion-adapter" else key            # its rule is frozen
        zero["layers"] = [{s: (dict(v, up=dict(v["up"], **{key: onp.zeros_like(v["up"][key])}))
                               if s.endswith("adapter") else v) for s, v in layer.items()}
                          for layer in trainable["layers"]]
    onp.testing.assert_array_equal(mc.hidden_states(zero, frozen, batch, model), base)


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_family_gives_float32_gradients(family):
    model, trainable, frozen, batch = setup(family, "compacter", onp.float32)
    g = mc.loss_grad(trainable, frozen, batch, model, onp.random.default_rng(0))
    assert {leaf.dtype for _, leaf in leaves(g)} == {onp.dtype(onp.float32)}


# --- what is trained, and counting ------------------------------------------------------------

def test_no_method_trains_a_sinusoidal_table_but_full_trains_a_learned_one():
    for family, trained in (("distilbert-sinusoidal", False), ("distilbert", True)):
        _, trainable, frozen, _ = setup(family, "full", moved=False)
        assert ("position" in trainable["embeddings"]) == trained
        assert ("position" in frozen.get("embeddings", {})) != trained


@pytest.mark.parametrize("name", mc.METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_analytic_count_equals_the_tree(family, name):
    cfg = FAMILIES[family]
    shapes = shapes_from_config(cfg)
    assert base_total(shapes) == count(params_of(family))
    for labels in (1, 3):
        model, trainable, _ = init_model(onp.random.default_rng(0), pretrained(family),
                                         method_cfg(name), num_labels=labels)
        assert count_measured(trainable, model.method.config) == count_analytic(
            model.method.config, shapes, labels)


def test_base_counts_of_the_families_by_hand():
    """BERT: (V + P + 2) d; RoBERTa: one token type; DistilBERT: none; ELECTRA: (V + P + 2) E
    + an E -> d projection; the blocks and the embedding norm as BERT's (E wide for ELECTRA)."""
    d, f, L, V = 32, 64, 2, 50
    blocks = L * (4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d)
    expected = {"bert": (V + 16 + 2) * d + 2 * d + blocks,
                "roberta": (V + 18 + 1) * d + 2 * d + blocks,
                "distilbert": (V + 16) * d + 2 * d + blocks,
                "electra": (V + 16 + 2) * 16 + 2 * 16 + 16 * d + d + blocks}
    for family, n in expected.items():
        assert base_total(shapes_from_config(FAMILIES[family])) == n, family


# --- bad input ---------------------------------------------------------------------------

def test_config_errors_name_the_field():
    cases = [(dict(padding_idx=50), "padding_idx 50 must be a token id below vocab_size 50"),
             (dict(padding_idx=15), "leave room in the 16 positions"),
             (dict(padding_idx=-1), "padding_idx must be an integer >= 0"),
             (dict(embedding_size=0), "embedding_size must be a positive integer"),
             (dict(type_vocab_size=-1), "type_vocab_size must be an integer >= 0"),
             (dict(num_layers=True), "num_layers must be a positive integer"),
             (dict(sinusoidal_positions=1), "sinusoidal_positions must be True or False")]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(BASE, **kw)


def test_roberta_rows_hold_max_positions_minus_padding_idx_plus_one_tokens():
    cfg = FAMILIES["roberta"]
    assert cfg.max_length == 16 and BASE.max_length == 16
    p = params_of("roberta", onp.float32)
    mc.encoder(p, {"input_ids": onp.full((1, 16), 5)}, cfg)
    with pytest.raises(ValueError, match="positions start at padding_idx \\+ 1 = 2, so rows hold "
                                         "at most 16 tokens"):
        mc.encoder(p, {"input_ids": onp.full((1, 17), 5)}, cfg)
