"""T5 (core/t5.py) and its loader (harness/formats/t5.py) against the committed fixtures of
tests/fixtures/t5/ (made by make_t5_fixtures.py with transformers, AdapterHub and peft; see its
README.md): states, logits, loss and greedy generation equal to transformers on both shapes
(v1.0: relu, tied; v1.1: gated-GELU, untied, bfloat16 shards), relative position buckets
against transformers and a hand-worked example, float64 gradient checks and plain == fast on a
tiny T5, the slots (AdapterHub's T5 adapters and peft's LoRA through the methods' own hooks),
the loader's refusals and the tokenizer's ids."""

import dataclasses
import json
import shutil
from pathlib import Path

import autograd.numpy as np
import numpy as onp
import pytest
from autograd import grad, value_and_grad
from autograd.test_util import check_grads

from minicompacter.core import t5
from minicompacter.core.encoder import Hooks
from minicompacter.core.layers import current, use_layers
from minicompacter.core.methods import make_method
from minicompacter.core.tree import cast, flatten, leaves, tree_map, unflatten
from minicompacter.harness.pretrained import LoadError
from minicompacter.harness.formats.t5 import config_from_t5, load_t5_directory, read_t5_tokenizer

from conftest import backward_dtypes

FIXTURES = Path(__file__).parent / "fixtures" / "t5"
REF = onp.load(FIXTURES / "reference.npz")
INFO = json.loads((FIXTURES / "reference.json").read_text())
MODELS = ("t5_v1_0", "t5_v1_1")


@pytest.fixture(scope="module")
def models():
    return {name: load_t5_directory(FIXTURES / name) for name in MODELS}


def fixture_batch(**extra):
    return {"input_ids": REF["input_ids"], "attention_mask": REF["attention_mask"],
            "decoder_input_ids": REF["decoder_input_ids"], **extra}


# --- equal to transformers ------------------------------------------------------------------
#
# Measured (max abs over every position, both layer sets): float64 runs differ from
# transformers' float64 run by at most 5.6e-7 (states) and 3.3e-6 (logits, which reach 29 in
# v1.1), because transformers' "float64" T5 still computes the RMS norm's mean square and the
# softmax in float32; float32 runs by at most 1.5e-6 and 1.5e-5. The fixtures' attention is not
# nearly one-hot, so no looser tolerance is needed anywhere.
ATOL = {"float64": 1e-5, "float32": 1e-4}


@pytest.mark.parametrize("layers", ["plain", "fast"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", MODELS)
def test_states_logits_and_loss_equal_transformers(models, name, dtype, layers):
    m = models[name]
    params = cast(m.params, dtype)
    batch = fixture_batch()
    with use_layers(layers):
        states = t5.t5_encoder(params, batch, m.config)
        logits = t5.seq2seq_logits(params, batch, m.config)
        masked = t5.seq2seq_logits(params, fixture_batch(
            decoder_attention_mask=REF["decoder_attention_mask"]), m.config)
        loss = t5.seq2seq_loss(params, {**batch, "labels": REF["labels"]}, m.config)
    assert states.dtype == logits.dtype == onp.dtype(dtype)
    for ours, key in ((states, "encoder"), (logits, "logits"), (masked, "logits_decmask")):
        onp.testing.assert_allclose(ours, REF[f"{name}_{key}_f64"], rtol=1e-6, atol=ATOL[dtype],
                                    err_msg=key)
    onp.testing.assert_allclose(loss, REF[f"{name}_loss_f64"], rtol=1e-7 if dtype == "float64"
                                else 1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_greedy_generation_equals_transformers(models, name):
    m = models[name]
    expected = INFO["generate"][name]
    ids, mask = REF["generate_input_ids"], REF["generate_attention_mask"]
    n = INFO["max_new_tokens"]
    for dtype, layers in (("float32", "fast"), ("float64", "plain")):
        params = cast(m.params, dtype)
        with use_layers(layers):
            out = t5.generate(params, m.config, ids, mask, n)
            assert out.dtype == onp.int64 and out.tolist() == expected["f32"]["batch"]
            for row, want in zip(range(len(ids)), expected["f32"]["single"]):
                real = mask[row].astype(bool)
                single = t5.generate(params, m.config, ids[row:row + 1, real], None, n)
                assert single[0].tolist() == want          # shorter than n when EOS came early
    assert expected["f64"] == expected["f32"]


def test_generation_steps_agree_with_the_whole_decoder_recomputed(models):
    """The key/value cache: each generated token is the argmax of the teacher-forced logits
    over the prefix generated so far (no cache), position by position."""
    m = models["t5_v1_1"]
    ids, mask = REF["generate_input_ids"], REF["generate_attention_mask"]
    out = t5.generate(m.params, m.config, ids, mask, 6)
    start = onp.full((len(ids), 1), m.config.decoder_start_token_id)
    decoder_ids = onp.concatenate([start, out[:, :-1]], axis=1)
    logits = t5.seq2seq_logits(m.params, {"input_ids": ids, "attention_mask": mask,
                                          "decoder_input_ids": decoder_ids}, m.config)
    for row in range(len(ids)):
        steps = list(out[row]).index(1) + 1 if 1 in out[row] else out.shape[1]
        assert onp.argmax(logits[row, :steps], -1).tolist() == out[row, :steps].tolist()
        assert set(out[row, steps:].tolist()) <= {m.config.pad_token_id}


def test_the_decoder_one_token_at_a_time_with_its_past_equals_the_decoder_on_all(models):
    """t5_decoder's key/value cache: feeding the tokens one by one (offsets 0, 1, ...) gives
    the states of the whole sequence at once, hooks included."""
    m = models["t5_v1_0"]
    params = cast(m.params, onp.float64)
    hooks = adapter_hooks(m.config)
    params = with_hook_params(params, m.config)
    batch = fixture_batch()
    mem = t5.memory(params, t5.t5_encoder(params, batch, m.config, hooks=hooks),
                    batch["attention_mask"], m.config, hooks)
    ids = batch["decoder_input_ids"]
    whole, _ = t5.t5_decoder(params, ids, mem, m.config, hooks=hooks)
    past, steps = None, []
    for t in range(ids.shape[1]):
        h, past = t5.t5_decoder(params, ids[:, t:t + 1], mem, m.config, hooks=hooks, past=past)
        steps.append(h)
    assert past[0].shape == (3, ids.shape[1], 2 * m.config.inner_dim)
    onp.testing.assert_allclose(onp.concatenate(steps, axis=1), whole, atol=1e-12)


def test_generation_ends_when_every_row_has_finished_and_checks_its_arguments(models):
    m = models["t5_v1_1"]
    rows = REF["generate_input_ids"][2:], REF["generate_attention_mask"][2:]
    out = t5.generate(m.params, m.config, *rows, 8)
    assert out.tolist() == [[1, 0], [27, 1]]               # both end by step 2: 2 columns
    assert t5.generate(m.params, m.config, *rows, 0).shape == (2, 0)
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer"):
        t5.generate(m.params, m.config, *rows, -1)
    with pytest.raises(ValueError, match=r"input_ids hold values outside \[0, 128\)"):
        t5.generate(m.params, m.config, rows[0] + 200, rows[1], 2)


# --- relative position buckets ----------------------------------------------------------------

def test_buckets_equal_transformers_tables():
    rel = onp.arange(-INFO["buckets"]["relative_positions"][1],
                     INFO["buckets"]["relative_positions"][1] + 1)
    for bidirectional, buckets, distance in INFO["buckets"]["tables"]:
        key = f"buckets_{'bi' if bidirectional else 'uni'}_{buckets}_{distance}"
        ours = t5.relative_position_bucket(rel, bidirectional, buckets, distance)
        onp.testing.assert_array_equal(ours, REF[key], err_msg=key)


def test_buckets_of_a_hand_worked_example():
    """8 buckets, max distance 16. Bidirectional: 4 per direction, 2 exact (distances 0, 1),
    then 2 + int(log(n / 2) / log(8) * 2), at most 3; keys after the query add 4. Causal:
    4 exact (0..3), then 4 + int(log(n / 4) / log(4) * 4), at most 7; later keys: 0."""
    rel = onp.array([0, -1, -2, -5, -6, -8, -15, -16, -100, 1, 2, 5, 6, 100])
    assert t5.relative_position_bucket(rel, True, 8, 16).tolist() == [
        0, 1, 2, 2, 3, 3, 3, 3, 3, 5, 6, 6, 7, 7]
    # n = 5: log 2.5 / log 8 * 2 = 0.88 -> 2; n = 6: 1.06 -> 3; n = 16: 2 -> 4, capped at 3
    rel = onp.array([0, -1, -3, -4, -7, -8, -15, -16, 3])
    assert t5.relative_position_bucket(rel, False, 8, 16).tolist() == [0, 1, 3, 4, 5, 6, 7, 7, 0]
    # n = 7: log 1.75 / log 4 * 4 = 1.6 -> 5; n = 8: exactly 2 -> 6; n = 15: 3.8 -> 7


# --- gradients and the two layer sets on a tiny T5 ---------------------------------------------

TIED = dataclasses.replace(t5.TINY_T5, feed_forward_proj="relu", tie_word_embeddings=True)
SILU = dataclasses.replace(t5.TINY_T5, feed_forward_proj="gated-silu")
CONFIGS = {"gated-gelu untied": t5.TINY_T5, "relu tied": TIED, "gated-silu": SILU}


def tiny_batch(cfg):
    rng = onp.random.default_rng(3)
    mask = onp.ones((2, 6), onp.int64)
    mask[1, 4:] = 0
    labels = rng.integers(2, cfg.vocab_size, (2, 4))
    labels[0, 3] = t5.IGNORE_INDEX
    return {"input_ids": rng.integers(0, cfg.vocab_size, (2, 6)), "attention_mask": mask,
            "labels": labels}


def tiny_params(cfg, dtype=onp.float64):
    """init_t5's weights, with the RMS norm weights moved off 1 so that their gradients and
    the slots' placement matter."""
    params = t5.init_t5(onp.random.default_rng(0), cfg, dtype=dtype)
    rng = onp.random.default_rng(1)
    return tree_map(lambda x: x + rng.uniform(-0.3, 0.3, x.shape).astype(x.dtype)
                    if x.ndim == 1 else x, params)


def adapter_hooks(cfg):
    """Hooks with parameters of their own in the tree (an adapter in both slots of every block,
    shared by nothing; a LoRA-like update on the query and cross_value projections)."""
    def slot(key):
        def fn(params, i, f, h, norm):
            a = params["layers"][i][key]
            return f + current().linear(np.tanh(current().linear(norm(f), a["down"])), a["up"])
        return fn

    def projection(params, i, name, x, y):
        if name not in ("query", "cross_value"):
            return y
        a = params["layers"][i]["lora_" + name]
        return y + current().linear(current().linear(x, a["A"]), a["B"])
    return Hooks(attention_output=slot("a"), ffn_output=slot("f"), attention_projection=projection)


def with_hook_params(params, cfg, dtype=onp.float64):
    rng = onp.random.default_rng(5)
    d, inner = cfg.d_model, cfg.inner_dim
    for stack in (t5.ENCODER, t5.DECODER):
        for block in params[stack]["layers"]:
            for key in ("a", "f"):
                block[key] = {"down": rng.normal(0, 0.3, (d, 4)).astype(dtype),
                              "up": rng.normal(0, 0.3, (4, d)).astype(dtype)}
            for name in ("query", "cross_value"):
                block["lora_" + name] = {"A": rng.normal(0, 0.3, (d, 2)).astype(dtype),
                                         "B": rng.normal(0, 0.3, (2, inner)).astype(dtype)}
    return params


def loss_fn(cfg, hooks, batch):
    def loss(params):
        return t5.seq2seq_loss(params, batch, cfg, hooks=hooks, rng=onp.random.default_rng(2))
    return loss


@pytest.mark.parametrize("layers", ["plain", "fast"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_loss_gradient_matches_finite_differences(config, layers):
    """Every parameter of T5 (and of hooks in every slot), dropout on, float64."""
    cfg = CONFIGS[config]
    params = with_hook_params(tiny_params(cfg), cfg)
    with use_layers(layers):
        check_grads(loss_fn(cfg, adapter_hooks(cfg), tiny_batch(cfg)), modes=["rev"],
                    order=1)(params)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_plain_and_fast_layers_agree_in_value_and_gradient(config, dtype):
    cfg = CONFIGS[config]
    params = with_hook_params(tiny_params(cfg, dtype), cfg, dtype)
    f = value_and_grad(loss_fn(cfg, adapter_hooks(cfg), tiny_batch(cfg)))
    with use_layers("plain"):
        plain_value, plain_grad = f(params)
    with use_layers("fast"):
        fast_value, fast_grad = f(params)
    rtol = 1e-9 if dtype == "float64" else 2e-4
    onp.testing.assert_allclose(fast_value, plain_value, rtol=rtol)
    plain_flat, fast_flat = flatten(plain_grad), flatten(fast_grad)
    assert plain_flat.keys() == fast_flat.keys() == flatten(params).keys()
    scale = max(onp.abs(g).max() for g in plain_flat.values())
    for key, g in plain_flat.items():
        onp.testing.assert_allclose(fast_flat[key], g, rtol=rtol,
                                    atol=1e-12 if dtype == "float64" else 2e-5 * scale, err_msg=key)


def test_on_the_plain_layers_no_fast_kernel_runs(monkeypatch):
    from minicompacter.core import kernels

    def broken(*args, **kwargs):
        raise AssertionError("a fast kernel ran")
    for name in ("matmul_rows", "normalize", "gelu_parts", "attention_probs", "_phi_float32"):
        monkeypatch.setattr(kernels, name, broken)
    cfg = t5.TINY_T5
    params = with_hook_params(tiny_params(cfg), cfg)
    f = value_and_grad(loss_fn(cfg, adapter_hooks(cfg), tiny_batch(cfg)))
    with use_layers("plain"):
        f(params)
        t5.generate(params, cfg, tiny_batch(cfg)["input_ids"], None, 3)
    with pytest.raises(AssertionError, match="a fast kernel ran"):
        f(params)


def test_float32_parameters_give_float32_everywhere_forward_and_backward():
    cfg = t5.TINY_T5
    params = with_hook_params(tiny_params(cfg, onp.float32), cfg, onp.float32)
    loss = loss_fn(cfg, adapter_hooks(cfg), tiny_batch(cfg))
    assert loss(params).dtype == onp.float32
    grads = grad(loss)(params)
    assert {str(g.dtype) for _, g in leaves(grads)} == {"float32"}
    flowing = backward_dtypes(loss, params)
    assert len(flowing) > 100 and set(flowing) == {onp.dtype(onp.float32)}, set(flowing)
    logits = t5.seq2seq_logits(params, {**tiny_batch(cfg), "decoder_input_ids":
                                        t5.shift_right(tiny_batch(cfg)["labels"], cfg)}, cfg)
    assert logits.dtype == onp.float32 and logits.shape == (2, 4, cfg.vocab_size)


def test_loss_counts_label_tokens_only_and_shift_right_starts_with_the_start_token():
    cfg = TIED
    params = tiny_params(cfg)
    batch = tiny_batch(cfg)
    labels = batch["labels"]
    decoder_ids = t5.shift_right(labels, cfg)
    assert decoder_ids[:, 0].tolist() == [cfg.decoder_start_token_id] * 2
    assert (decoder_ids[:, 1:] == onp.where(labels[:, :-1] == -100, 0, labels[:, :-1])).all()
    logits = t5.seq2seq_logits(params, {**batch, "decoder_input_ids": decoder_ids}, cfg)
    logp = logits - onp.log(onp.exp(logits).sum(-1, keepdims=True))
    counted = [(b, t) for b in range(2) for t in range(4) if labels[b, t] != -100]
    expected = -onp.mean([logp[b, t, labels[b, t]] for b, t in counted])
    onp.testing.assert_allclose(t5.seq2seq_loss(params, batch, cfg), expected, rtol=1e-12)
    padded = {**batch, "labels": onp.where(labels == -100, cfg.pad_token_id, labels),
              "decoder_input_ids": decoder_ids}
    onp.testing.assert_allclose(t5.seq2seq_loss(params, padded, cfg), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="no token to learn"):
        t5.seq2seq_loss(params, {**batch, "labels": onp.full((2, 4), -100)}, cfg)


def test_a_slot_output_goes_through_dropout_before_the_residual_add():
    """The reference's placement, h + Dropout(A(f)): a slot that returns a constant c gives
    h + c / (1 - p) or h, entry by entry, never h + c."""
    cfg = dataclasses.replace(TIED, dropout_rate=0.5)
    h, f = onp.zeros((2, 3, cfg.d_model)), onp.ones((2, 3, cfg.d_model))
    seen = []

    def slot(params, i, f, h, norm):
        seen.append((i, f, h))
        return onp.full_like(f, 3.0)

    out = t5.residual({"layers": []}, 1, h, f, slot, cfg, onp.random.default_rng(0))
    assert seen[0][0] == 1 and seen[0][1] is f and seen[0][2] is h
    assert set(onp.unique(out)) == {0.0, 6.0}
    onp.testing.assert_array_equal(t5.residual({}, 0, h, f, None, cfg, None), h + f)


def test_dropout_only_with_an_rng():
    cfg = TIED
    params = tiny_params(cfg)
    batch = {**tiny_batch(cfg), "decoder_input_ids": t5.shift_right(tiny_batch(cfg)["labels"], cfg)}
    plain = t5.seq2seq_logits(params, batch, cfg)
    assert onp.array_equal(plain, t5.seq2seq_logits(params, batch, cfg))
    dropped = t5.seq2seq_logits(params, batch, cfg, rng=onp.random.default_rng(0))
    assert not onp.allclose(dropped, plain)
    off = dataclasses.replace(cfg, dropout_rate=0.0)
    onp.testing.assert_array_equal(t5.seq2seq_logits(params, batch, off,
                                                     rng=onp.random.default_rng(0)), plain)


# --- the slots ----------------------------------------------------------------------------------

def test_slots_see_every_block_of_both_stacks_and_every_projection(models):
    m = models["t5_v1_1"]
    seen = []

    def slot(kind):
        def fn(params, i, f, h, norm):
            stack = "encoder" if params["layers"] is m.params["encoder"]["layers"] else "decoder"
            seen.append((kind, stack, i))
            assert norm(f) is f and f.shape == h.shape
            return f
        return fn

    def projection(params, i, name, x, y):
        seen.append(("projection", name, i))
        return y

    hooks = Hooks(attention_output=slot("attention"), ffn_output=slot("ffn"),
                  attention_projection=projection)
    logits = t5.seq2seq_logits(m.params, fixture_batch(), m.config, hooks=hooks)
    onp.testing.assert_array_equal(logits, t5.seq2seq_logits(m.params, fixture_batch(), m.config))
    slots = [s for s in seen if s[0] != "projection"]
    assert slots == [(k, "encoder", i) for i in range(2) for k in ("attention", "ffn")] + \
        [(k, "decoder", i) for i in range(3) for k in ("attention", "ffn")]
    names = {(name, i) for kind, name, i in seen if kind == "projection"}
    self_names = {(n, i) for n in ("query", "key", "value", "output") for i in range(3)}
    cross = {("cross_" + n, i) for n, i in self_names}
    assert names == self_names | cross


def adapterhub_tree(directory, params):
    """The AdapterHub T5 adapter's tensors placed where a method's tree for T5 puts them
    (core/t5.py's docstring): encoder.layers[i] / decoder.layers[i], attention_adapter (the
    self-attention's slot, layer 0) and ffn_adapter (layer 1 of an encoder block, 2 of a
    decoder block), down / up with AdapterHub's PHM names W_left -> s, W_right -> t, b -> b;
    torch Linears (out, in) transposed; the shared phm_rule -> shared.A."""
    from safetensors.numpy import load_file

    meta = json.loads((directory / "adapter_config.json").read_text())
    flat = {}
    for key, value in load_file(directory / "adapter.safetensors").items():
        parts = key.split(".")
        if parts[1] == "shared_parameters":
            flat["shared.A"] = value
            continue
        stack, i, layer = parts[1], parts[3], int(parts[5])
        slot = "attention_adapter" if layer == 0 else "ffn_adapter"
        part = "down" if parts[8] == "adapter_down" else "up"
        leaf = {"W_left": "s", "W_right": "t", "b": "b", "weight": "w", "bias": "b"}[parts[-1]]
        flat[f"{stack}.layers.{i}.{slot}.{part}.{leaf}"] = value.T if leaf == "w" else value
    tree = unflatten({**flatten(params), **{k: v.astype(onp.float64) for k, v in flat.items()}})
    return meta, tree


@pytest.mark.parametrize("fixture", ["adapterhub_compacter", "adapterhub_compacterpp",
                                     "adapterhub_compacterpp_equivalent", "adapterhub_houlsby"])
def test_adapterhub_t5_adapters_run_in_the_slots_through_the_methods_own_hooks(models, fixture):
    """The methods' hooks (methods.py, written for the BERT encoder) on T5, with the slot
    contract above, give AdapterHub's outputs: h + f + A(f) (Houlsby, Compacter) and
    h + f + U(g(D(h + f))) (Compacter++ and Pfeiffer configs), after self-attention and the
    feed-forward of every block of both stacks, one phm_rule shared by both stacks."""
    from minicompacter.harness.formats.adapterhub import method_config

    m = models["t5_v1_0"]
    meta, params = adapterhub_tree(FIXTURES / fixture, cast(m.params, onp.float64))
    method = make_method(method_config(meta["config"], fixture))
    batch = fixture_batch()
    states = t5.t5_encoder(params, batch, m.config, hooks=method.hooks)
    logits = t5.seq2seq_logits(params, batch, m.config, hooks=method.hooks)
    onp.testing.assert_allclose(states, REF[f"{fixture}_encoder"], atol=2e-5)
    onp.testing.assert_allclose(logits, REF[f"{fixture}_logits"], atol=5e-5)
    assert onp.abs(logits - REF["t5_v1_0_logits_f64"]).max() > 0.1     # the adapter matters


def test_peft_lora_on_q_and_v_of_every_attention_through_the_projection_hook(models):
    from safetensors.numpy import load_file

    m = models["t5_v1_0"]
    config = json.loads((FIXTURES / "peft_lora" / "adapter_config.json").read_text())
    tensors = load_file(FIXTURES / "peft_lora" / "adapter_model.safetensors")
    lora = {}
    for key, value in tensors.items():              # base_model.model.{stack}.block.{i}.layer.{L}...
        parts = key.split(".")
        attention = "" if parts[7] == "SelfAttention" else "cross_"
        name = attention + {"q": "query", "v": "value"}[parts[8]]
        lora.setdefault((parts[2], int(parts[4]), name), {})[parts[9][-1]] = value.T
    scale = config["lora_alpha"] / config["r"]

    def projection(params, i, name, x, y):
        stack = "encoder" if params["layers"] is m.params["encoder"]["layers"] else "decoder"
        a = lora.get((stack, i, name))
        return y if a is None else y + x @ a["A"] @ a["B"] * scale

    assert sorted(config["target_modules"]) == ["q", "v"] and len(lora) == 2 * 2 + 3 * 4
    hooks = Hooks(attention_projection=projection)
    states = t5.t5_encoder(m.params, fixture_batch(), m.config, hooks=hooks)
    logits = t5.seq2seq_logits(m.params, fixture_batch(), m.config, hooks=hooks)
    onp.testing.assert_allclose(states, REF["peft_lora_encoder"], atol=2e-5)
    onp.testing.assert_allclose(logits, REF["peft_lora_logits"], atol=5e-5)


# --- loading --------------------------------------------------------------------------------------

def test_tokenizer_ids_equal_transformers_t5_tokenizer(models):
    from tokenizers import Tokenizer

    tok = INFO["tokenizer"]
    for name in MODELS:
        ours = models[name].tokenizer
        assert [ours.encode(text).ids for text in tok["texts"]] == tok["ids"]
        assert ours.padding["pad_id"] == 0 and ours.padding["pad_token"] == "<pad>"   # batches
        assert ours.encode(*tok["pair"]["texts"]).ids == tok["pair"]["ids"]
    fresh = Tokenizer.from_file(str(FIXTURES / "t5_v1_0" / "tokenizer.json"))
    assert fresh.encode(tok["texts"][0]).ids == tok["ids"][0]
    assert fresh.encode("").ids == [1]                     # EOS appended, no BOS


def test_the_bfloat16_shards_load_exactly(models):
    m = models["t5_v1_1"]
    index = json.loads((FIXTURES / "t5_v1_1" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3
    assert json.loads((FIXTURES / "t5_v1_1" / "config.json").read_text())["dtype"] == "bfloat16"
    for path, leaf in flatten(m.params).items():            # every value is a bfloat16
        assert leaf.dtype == onp.float32 and not (leaf.view(onp.uint32) & 0xFFFF).any(), path


def write_safetensors(path, tensors):
    """A safetensors file written byte by byte: {name: (dtype name, shape, raw bytes)}."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def test_bfloat16_and_float16_tensors_convert_exactly(tmp_path):
    from minicompacter.harness.formats.files import read_tensors

    values = onp.array([1.0, -2.5, 3.140625, 1e-30, -65280.0, 0.0, 2.0 ** -130], onp.float32)
    bf16 = (values.view(onp.uint32) & 0xFFFF0000).view(onp.float32)      # exactly bfloat16
    top = (bf16.view(onp.uint32) >> 16).astype("<u2")
    halves = onp.array([1.0, -2.5, 0.0009765625, 65504.0], onp.float16)
    write_safetensors(tmp_path / "x.safetensors", {
        "bf": ("BF16", (7,), top.tobytes()), "f16": ("F16", (2, 2), halves.tobytes())})
    read = read_tensors(tmp_path / "x.safetensors")
    assert read["bf"].dtype == onp.float32 and onp.array_equal(read["bf"], bf16)
    assert onp.array_equal(read["f16"], halves.astype(onp.float32).reshape(2, 2))


def copy_model(tmp_path, name="t5_v1_0"):
    out = tmp_path / name
    shutil.copytree(FIXTURES / name, out)
    return out


def rewrite_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


GOOD = json.loads((FIXTURES / "t5_v1_0" / "config.json").read_text())


@pytest.mark.parametrize("change,message", [
    ({"model_type": "mt5"}, "model_type 'mt5' is not 't5'"),
    ({"feed_forward_proj": "gated-relu"}, r"feed_forward_proj 'gated-relu' is not supported"),
    ({"architectures": ["T5EncoderModel"]}, "T5EncoderModel has no decoder"),
    ({"is_encoder_decoder": False}, "is_encoder_decoder must be true"),
    ({"pruned_heads": {"0": [1]}}, "pruned_heads"),
    ({"d_model": "32"}, "d_model is \"32\", not a positive integer"),
    ({"num_heads": 0}, "num_heads is 0, not a positive integer"),
    ({"num_layers": True}, "num_layers is true, not a positive integer"),
    ({"dropout_rate": 1.5}, r"dropout_rate must be in \[0, 1\)"),
    ({"layer_norm_epsilon": -1.0}, "layer_norm_epsilon must be positive"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings is \"yes\", not true or false"),
    ({"eos_token_id": 500}, r"eos_token_id must be a token id in \[0, 128\)"),
    ({"relative_attention_num_buckets": 2}, "leave no logarithmic buckets"),
    ({"d_ff": None}, "d_ff is null, not a positive integer"),
])
def test_config_fields_are_checked_and_unsupported_options_refused(change, message):
    with pytest.raises(LoadError, match=message):
        config_from_t5({**GOOD, **change})


def test_config_defaults_are_t5s():
    minimal = {k: GOOD[k] for k in ("model_type", "vocab_size", "d_model", "d_kv", "d_ff",
                                    "num_layers", "num_heads")}
    cfg = config_from_t5(minimal)
    assert (cfg.num_decoder_layers, cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance, cfg.feed_forward_proj, cfg.tie_word_embeddings,
            cfg.decoder_start_token_id) == (2, 32, 128, "relu", True, 0)
    with pytest.raises(LoadError, match="has no 'd_kv'"):
        config_from_t5({k: v for k, v in minimal.items() if k != "d_kv"})


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    directory = copy_model(tmp_path)
    original = load_file(directory / "model.safetensors")

    def refused(tensors, message, **config):
        save_file(tensors, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps({**GOOD, **config}))
        with pytest.raises(LoadError, match=message):
            load_t5_directory(directory)

    q = "encoder.block.1.layer.0.SelfAttention.q.weight"
    refused({**original, q: original[q].T.copy()}, r"'encoder.block.1.layer.0.SelfAttention.q"
            r".weight' has shape \(32, 24\), but config.json implies \(24, 32\)")
    bad = original[q].copy()
    bad[0, 0] = onp.nan
    refused({**original, q: bad}, "holds non-finite values")
    refused({k: v for k, v in original.items() if k != q}, "has no tensor .*q.weight")
    refused(original, "has no tensor .*wi_0.weight", feed_forward_proj="gated-gelu")
    refused(original, "has no tensor 'lm_head.weight'", tie_word_embeddings=False)
    refused(original, "has no tensor 'decoder.block.3", num_decoder_layers=4)
    refused({**original, "lm_head.weight": original["shared.weight"] * 2},
            "'lm_head.weight' differs from 'shared.weight'.*set tie_word_embeddings false")
    refused({**original, "encoder.embed_tokens.weight": original["shared.weight"] + 1},
            "'encoder.embed_tokens.weight' differs from 'shared.weight'")
    refused({**original, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight":
             original["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]},
            "holds tensors a T5 with this config.json does not have")
    # the copies that may be there, equal: loaded
    save_file({**original, "lm_head.weight": original["shared.weight"],
               "decoder.embed_tokens.weight": original["shared.weight"]},
              str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(GOOD))
    loaded = load_t5_directory(directory)
    assert onp.array_equal(loaded.params["embeddings"]["word"], original["shared.weight"])


def test_damaged_files_and_pickles_are_refused_before_any_tensor_is_read(tmp_path):
    directory = copy_model(tmp_path)
    weights = directory / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[:-100])                          # truncated: offsets past the end
    with pytest.raises(LoadError, match="lies outside the file or has the wrong size"):
        load_t5_directory(directory)
    weights.write_bytes(b"\xff" * 16)
    with pytest.raises(LoadError, match="header length is wrong"):
        load_t5_directory(directory)
    write_safetensors(weights, {"shared.weight": ("I64", (2,), bytes(16))})
    with pytest.raises(LoadError, match="'shared.weight' is stored as 'I64'; minicompacter reads "
                                        "floating-point weights only"):
        load_t5_directory(directory)
    weights.unlink()
    (directory / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(LoadError, match="pytorch_model.bin, a pickle file.*never loads pickle"):
        load_t5_directory(directory)
    shards = copy_model(tmp_path, "t5_v1_1")
    (shards / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(LoadError, match="model-00002-of-00003.safetensors is listed in "
                                        "model.safetensors.index.json but missing"):
        load_t5_directory(shards)


def test_tokenizer_is_optional_and_checked_against_the_config(tmp_path):
    directory = copy_model(tmp_path)
    rewrite_config(directory, eos_token_id=2)
    with pytest.raises(LoadError, match="tokenizer's </s> is id 1 but config.json's eos_token_id "
                                        "is 2"):
        load_t5_directory(directory)
    rewrite_config(directory, eos_token_id=1)
    small = dataclasses.replace(load_t5_directory(directory).config, vocab_size=64)
    with pytest.raises(LoadError, match="the tokenizer has 92 tokens but the model only 64"):
        read_t5_tokenizer(directory, small)
    (directory / "tokenizer.json").unlink()
    loaded = load_t5_directory(directory)
    assert loaded.tokenizer is None and loaded.config.vocab_size == 128
    assert loaded.path == str(directory.resolve())
