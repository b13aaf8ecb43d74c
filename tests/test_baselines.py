"""The paper's other baselines: AdapterDrop (blocks left without adapters), prompt tuning
(virtual tokens before the input) and Intrinsic-SAID (the Walsh-Hadamard and Fastfood
transforms, theta_0 + lambda_i P_i(theta_d)). Each is checked against a formula written
independently here (a dense Hadamard matrix from SciPy, the encoder run by hand on the
longer sequence, the base model's blocks), with float64 gradient checks, and counted."""

from types import SimpleNamespace

import numpy as onp
import pytest
from autograd.test_util import check_grads
from scipy.linalg import hadamard

import minicompacter as mc
from minicompacter.core import intrinsic
from minicompacter.core.counting import T5_BASE, base_total, count_analytic, count_measured
from minicompacter.core.counting import shapes_from_config
from minicompacter.core.encoder import embed
from minicompacter.core.layers import use_layers
from minicompacter.core.model import init_model
from minicompacter.core.paths import FASTFOOD, INTRINSIC, PROMPT
from minicompacter.core.tree import flatten, leaves, merge, tree_map

LAYER_SETS = ("plain", "fast")


def batch_of(pretrained, pairs=False):
    texts = ["the film was very good", "not bad at all"]
    b = (mc.tokenize(pretrained.tokenizer, texts, ["a second text", "and another"]) if pairs
         else mc.tokenize(pretrained.tokenizer, texts))
    b["labels"] = onp.array([0, 1])
    return b


# --- the Walsh-Hadamard transform ------------------------------------------------------------

@pytest.mark.parametrize("layers", LAYER_SETS)
@pytest.mark.parametrize("length", [1, 2, 8, 64, 128, 2 ** 10])
def test_walsh_hadamard_is_the_dense_hadamard_matrix(layers, length):
    x = onp.random.default_rng(length).standard_normal(length)
    with use_layers(layers):
        onp.testing.assert_allclose(intrinsic.walsh_hadamard(x), hadamard(length) @ x,
                                    rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("layers", LAYER_SETS)
def test_walsh_hadamard_gradients_float64(layers):
    x = onp.random.default_rng(0).standard_normal(256)
    with use_layers(layers):
        check_grads(intrinsic.walsh_hadamard, modes=["rev"], order=1)(x)


def test_a_length_that_is_not_a_power_of_two_is_refused():
    with pytest.raises(ValueError, match="power-of-two length, got 12"):
        intrinsic.walsh_hadamard_plain(onp.ones(12))


# --- the Fastfood transform -------------------------------------------------------------------

def dense_fastfood(n, B, Pi, G, D):
    """The projection as a D x n matrix, built from dense matrices (for small sizes only):
    [H diag(G) Perm H diag(B) Pad]_(1..D) / (||G|| sqrt D)."""
    L = G.shape[0]
    pad = onp.eye(L, n)                                          # (L, n): pads or cuts
    perm = onp.eye(L)[Pi]                                        # (L, L): (perm v)_j = v[Pi_j]
    H = hadamard(L)
    full = H @ onp.diag(G) @ perm @ H @ onp.diag(B.astype(float)) @ pad
    return full[:D] / (onp.linalg.norm(G) * onp.sqrt(D))


@pytest.mark.parametrize("layers", LAYER_SETS)
@pytest.mark.parametrize("n,D", [(20, 100), (300, 100), (64, 64), (7, 1)])
def test_fastfood_is_the_dense_projection_and_its_gradient_float64(layers, n, D):
    B, Pi, G = intrinsic.init_fastfood(onp.random.default_rng(D), D, onp.float64)
    assert G.shape[0] == max(1, 1 << (D - 1).bit_length()) >= D
    x = onp.random.default_rng(n).standard_normal(n)
    with use_layers(layers):
        onp.testing.assert_allclose(intrinsic.fastfood(x, B, Pi, G, D),
                                    dense_fastfood(n, B, Pi, G, D) @ x, rtol=1e-10, atol=1e-12)
        check_grads(lambda v: intrinsic.fastfood(v, B, Pi, G, D), modes=["rev"], order=1)(x)


def test_fastfood_nearly_keeps_the_norm():
    """The scale 1 / (||G|| sqrt D) makes ||P x|| close to ||x|| (a random projection)."""
    B, Pi, G = intrinsic.init_fastfood(onp.random.default_rng(1), 5000, onp.float64)
    x = onp.random.default_rng(2).standard_normal(3000)
    ratio = onp.linalg.norm(intrinsic.fastfood(x, B, Pi, G, 5000)) / onp.linalg.norm(x)
    assert 0.8 < ratio < 1.25


# --- Intrinsic-SAID ---------------------------------------------------------------------------

def said(pretrained, **options):
    return init_model(onp.random.default_rng(0), pretrained,
                      mc.method_config("intrinsic-said", **options))


@pytest.fixture(scope="module")
def small64():
    """An encoder small enough that each tensor's projection can be built as a dense matrix
    (the largest tensor, 48 x 8, has L = 512)."""
    cfg = mc.EncoderConfig(vocab_size=48, hidden_size=8, num_layers=2, num_heads=2,
                           intermediate_size=16, max_positions=16)
    params = mc.init_encoder(onp.random.default_rng(0), cfg, dtype=onp.float64)
    return SimpleNamespace(config=cfg, params=params)


def test_said_counts_its_lambdas_inside_d_and_starts_at_the_base(tiny64):
    model, trainable, frozen = said(tiny64)
    n = len(list(leaves(tiny64.params)))
    assert trainable[INTRINSIC]["lambda"].shape == (n,) and (trainable[INTRINSIC]["lambda"] == 1).all()
    assert trainable[INTRINSIC]["theta"].shape == (20000 - n,)
    assert not trainable[INTRINSIC]["theta"].any()
    batch = batch_of(tiny64)
    base = mc.encoder(tiny64.params, batch, tiny64.config)
    onp.testing.assert_array_equal(mc.hidden_states(trainable, frozen, batch, model), base)


def test_said_moves_every_tensor_by_lambda_times_its_own_projection(small64):
    model, trainable, frozen = said(small64, intrinsic_dim=600)
    rng = onp.random.default_rng(3)
    trainable = dict(trainable, **{INTRINSIC: {"theta": rng.standard_normal(trainable[INTRINSIC]["theta"].shape),
                                               "lambda": rng.uniform(0.5, 2.0, trainable[INTRINSIC]["lambda"].shape)}})
    moved = flatten(model.method.hooks.weights(merge(frozen, trainable)))
    theta, lam = trainable[INTRINSIC]["theta"], trainable[INTRINSIC]["lambda"]
    for i, (path, w0) in enumerate(leaves(small64.params)):
        name = ".".join(map(str, path))
        B, Pi, G = (flatten(frozen[FASTFOOD][part])[name] for part in ("B", "Pi", "G"))
        want = w0 + lam[i] * (dense_fastfood(theta.size, B, Pi, G, w0.size) @ theta).reshape(w0.shape)
        onp.testing.assert_allclose(moved[name], want, rtol=1e-9, atol=1e-12, err_msg=name)


def test_said_projections_come_from_the_config_not_the_run(tiny64):
    _, _, a = said(tiny64)
    _, _, b = init_model(onp.random.default_rng(99), tiny64, "intrinsic-said")
    _, _, c = said(tiny64, projection_seed=5)
    fa, fb, fc = flatten(a[FASTFOOD]), flatten(b[FASTFOOD]), flatten(c[FASTFOOD])
    assert all((fa[k] == fb[k]).all() for k in fa)
    assert any((fa[k] != fc[k]).any() for k in fa)


@pytest.mark.parametrize("layers", LAYER_SETS)
def test_said_loss_gradients_float64(tiny64, layers):
    model, trainable, frozen = said(tiny64, intrinsic_dim=200)
    trainable = tree_map(lambda v: v + 0.01, trainable)
    batch = batch_of(tiny64)
    with use_layers(layers):
        check_grads(lambda t: mc.loss(t, frozen, batch, model), modes=["rev"], order=1)(trainable)


def test_said_needs_room_for_theta(tiny64):
    n = len(list(leaves(tiny64.params)))
    with pytest.raises(ValueError, match=f"use an intrinsic_dim above {n}"):
        said(tiny64, intrinsic_dim=n)
    with pytest.raises(ValueError, match="intrinsic_dim must be an integer of at least 1"):
        mc.method_config("intrinsic-said", intrinsic_dim=0)


def test_said_counted_from_shapes_alone():
    """The paper's 0.009% of T5-base: d' = 20,000, lambdas included; no projection built."""
    counted = count_analytic(mc.method_config("intrinsic-said"), T5_BASE)
    assert sum(counted.values()) == 20000
    assert f"{100 * 20000 / base_total(T5_BASE):.3f}" == "0.009"


# --- prompt tuning ----------------------------------------------------------------------------

def prompt_model(pretrained, name="prompt-tuning-r", **options):
    options.setdefault("prompt_length", 4)
    return init_model(onp.random.default_rng(0), pretrained, mc.method_config(name, **options))


@pytest.mark.parametrize("pairs", [False, True])
def test_prompt_states_are_the_encoder_on_the_longer_sequence(tiny64, pairs):
    """(B, P + T, d), as peft gives them: the prompt before [CLS] in word-embedding space,
    positions 0 .. P+T-1 over both, the mask P ones longer, every token of type 0."""
    model, trainable, frozen = prompt_model(tiny64)
    batch = batch_of(tiny64, pairs)
    P, (B, T) = 4, batch["input_ids"].shape
    hidden = mc.encoder(merge(frozen, trainable), batch, tiny64.config, hooks=model.method.hooks)
    assert hidden.shape == (B, P + T, tiny64.config.hidden_size)
    assert (mc.hidden_states(trainable, frozen, batch, model) == hidden).all()
    # by hand: the same embeddings, layer norm and blocks, on [prompt; words] at positions 0..P+T-1
    p = tiny64.params["embeddings"]
    x = onp.concatenate([onp.broadcast_to(trainable[PROMPT], (B, P, p["word"].shape[1])),
                         p["word"][batch["input_ids"]]], axis=1)
    e = x + p["position"][onp.arange(P + T)] + p["token_type"][0]
    mu, var = e.mean(-1, keepdims=True), e.var(-1, keepdims=True)
    h = (e - mu) / onp.sqrt(var + tiny64.config.layer_norm_eps) * p["ln"]["g"] + p["ln"]["b"]
    mask = onp.concatenate([onp.ones((B, P)), batch["attention_mask"]], axis=1)
    bias = mc.core.nn.mask_bias(mask, h.dtype)
    for i in range(tiny64.config.num_layers):
        h = mc.core.encoder.block(tiny64.params, i, h, bias, tiny64.config)
    real = mask.astype(bool)
    onp.testing.assert_allclose(hidden[real], h[real], rtol=1e-10, atol=1e-12)


def test_pooling_reads_the_inputs_own_tokens(tiny64):
    """Mean pooling averages the input's real tokens only; [CLS] is the input's, at P."""
    model, trainable, frozen = prompt_model(tiny64)
    batch = batch_of(tiny64)
    hidden = mc.hidden_states(trainable, frozen, batch, model)
    own, mask = hidden[:, 4:], batch["attention_mask"]
    want = (own * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
    onp.testing.assert_allclose(mc.pool(hidden, mask, "mean"), want, rtol=1e-12)
    onp.testing.assert_array_equal(mc.pool(hidden, mask, "cls"), hidden[:, 4])


def test_prompt_init_random_and_from_the_vocabulary(tiny64):
    _, r, _ = prompt_model(tiny64, prompt_length=50)
    assert r[PROMPT].shape == (50, 32) and 0.45 < onp.abs(r[PROMPT]).max() <= 0.5
    word = tiny64.params["embeddings"]["word"]
    _, t, _ = prompt_model(tiny64, "prompt-tuning-t", prompt_length=5, init_token_ids=(7, 9))
    onp.testing.assert_array_equal(t[PROMPT], word[[7, 9, 7, 9, 7]])
    _, s, _ = prompt_model(tiny64, "prompt-tuning-t", prompt_length=5)
    assert all(any((row == w).all() for w in word) for row in s[PROMPT])   # rows of the table
    with pytest.raises(ValueError, match="below the vocabulary's size"):
        prompt_model(tiny64, "prompt-tuning-t", init_token_ids=(10 ** 6,))


@pytest.mark.parametrize("layers", LAYER_SETS)
def test_prompt_loss_gradients_float64(tiny64, layers):
    model, trainable, frozen = prompt_model(tiny64)
    batch = batch_of(tiny64, pairs=True)
    with use_layers(layers):
        check_grads(lambda t: mc.loss(t, frozen, batch, model), modes=["rev"], order=1)(trainable)


def test_a_prompt_longer_than_the_positions_is_refused(tiny64):
    model, trainable, frozen = prompt_model(tiny64, prompt_length=tiny64.config.max_positions)
    with pytest.raises(ValueError, match="use a shorter prompt"):
        mc.hidden_states(trainable, frozen, batch_of(tiny64), model)


def test_prompt_counted_as_the_papers_row():
    counted = count_analytic(mc.method_config("prompt-tuning-t"), T5_BASE)
    assert sum(counted.values()) == 76800                       # 100 x 768
    assert f"{100 * 76800 / base_total(T5_BASE):.3f}" == "0.034"


# --- AdapterDrop ------------------------------------------------------------------------------

@pytest.mark.parametrize("blocks,left_out", [(12, {0, 1, 2, 3, 4}), (6, {0, 1, 2}), (2, {0}),
                                             (24, set(range(10)))])
def test_adapterdrop_leaves_out_the_lower_five_twelfths_rounded_half_up(blocks, left_out):
    assert mc.method_config("adapterdrop").left_out(blocks) == left_out


def test_leave_out_names_blocks_as_adapterhub_does():
    cfg = mc.method_config("adapter", leave_out=[13, 0, 0])
    assert cfg.leave_out == (0, 13)
    assert cfg.left_out(12) == {0} and cfg.left_out(12, first=12) == {1}   # a decoder's block 1


def test_adapterdrop_counts_the_papers_row():
    assert sum(count_analytic(mc.method_config("adapterdrop"), T5_BASE).values()) == 1101984
    # the same blocks named as AdapterHub numbers them: the decoder's from 12
    named = mc.method_config("adapter", leave_out=list(range(5)) + list(range(12, 17)))
    assert sum(count_analytic(named, T5_BASE).values()) == 1101984


def test_a_left_out_block_is_the_base_block(tiny64):
    """With every adapter's up-projection zero the model is the base; with them moved, the
    blocks left out still compute the base block (their layer norms trained, not moved here)."""
    cfg = mc.method_config("adapter", reduction_factor=8, leave_out=(1,))
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, cfg)
    assert set(trainable["layers"][1]) == {"attention_ln", "ffn_ln"}
    params = merge(frozen, trainable)
    batch = batch_of(tiny64)
    h0, batch = embed(params, batch, tiny64.config)
    bias = mc.core.nn.mask_bias(batch["attention_mask"], h0.dtype)
    h1 = mc.core.encoder.block(params, 0, h0, bias, tiny64.config, model.method.hooks)
    onp.testing.assert_array_equal(
        mc.core.encoder.block(params, 1, h1, bias, tiny64.config, model.method.hooks),
        mc.core.encoder.block(params, 1, h1, bias, tiny64.config))


@pytest.mark.parametrize("options,message", [
    ({"leave_out": (2,)}, r"leave_out names blocks \[2\] of a model whose blocks are 0 .. 1"),
    ({"leave_out": (0, 1)}, "leave none of the 2 blocks an adapter"),
    ({"leave_out_lower": 0.9}, "leave none of the 2 blocks an adapter")])
def test_bad_leave_out_is_refused_before_any_work(tiny64, options, message):
    with pytest.raises(ValueError, match=message):
        init_model(onp.random.default_rng(0), tiny64,
                   mc.method_config("adapter", reduction_factor=8, **options))


@pytest.mark.parametrize("bad", [(-1,), ("a",), 3, (True,)])
def test_leave_out_must_be_block_indices(bad):
    with pytest.raises(ValueError, match="leave_out must be block indices"):
        mc.method_config("adapter", leave_out=bad)


def test_adapterdrop_gradients_float64(tiny64):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64,
                                          mc.method_config("adapterdrop", reduction_factor=8))
    trainable = tree_map(lambda v: v + 0.05, trainable)
    batch = batch_of(tiny64)
    check_grads(lambda t: mc.loss(t, frozen, batch, model), modes=["rev"], order=1)(trainable)


# --- counted both ways ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["adapterdrop", "prompt-tuning-r", "prompt-tuning-t",
                                  "intrinsic-said"])
def test_analytic_and_measured_counts_agree_on_tiny(tiny, name):
    cfg = mc.method_config(name, **({"reduction_factor": 8} if name == "adapterdrop" else {}))
    _, trainable, _ = init_model(onp.random.default_rng(0), tiny, cfg, num_labels=3)
    assert count_measured(trainable, cfg) == count_analytic(cfg, shapes_from_config(tiny.config), 3)


# --- files of AdapterHub and peft (tests/fixtures/interop/make_baseline_fixtures.py) -----------

import json
import shutil
from pathlib import Path

from safetensors.numpy import load_file

from minicompacter.core.paths import is_layer_norm
from minicompacter.core.tree import split
from minicompacter.harness.formats import adapterhub
from minicompacter.harness.formats import peft as peft_files
from minicompacter.harness.formats.dispatch import ExportError, export_adapter
from minicompacter.harness.formats.families import FAMILIES
from minicompacter.harness.formats.files import FormatError
from minicompacter.harness.formats.native import save_adapter
from minicompacter.harness.pretrained import base_identity, load_pretrained

from conftest import needs_minilm

BERT = FAMILIES["bert"]

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "interop"


@pytest.fixture(scope="module")
def library_outputs():
    return onp.load(FIXTURES / "baseline_outputs.npz")


def library_batch(outputs, group):
    return {k: outputs[f"{group}_{k}"] for k in ("input_ids", "token_type_ids", "attention_mask")}


@needs_minilm
def test_adapterhubs_adapterdrop_gives_its_states_and_logits(minilm, library_outputs):
    model, trainable, frozen, info = mc.load_adapter(FIXTURES / "adapterhub_adapterdrop", minilm)
    assert model.method.config.leave_out == (0, 1, 2) and info["method"] == "adapterdrop"
    assert [sorted(layer) for layer in trainable["layers"]][:3] == [[], [], []]
    for group in ("single", "pair"):
        batch = library_batch(library_outputs, group)
        real = batch["attention_mask"].astype(bool)
        want = library_outputs[f"adapterhub_adapterdrop_{group}_hidden"]
        assert onp.abs(mc.hidden_states(trainable, frozen, batch, model) - want)[real].max() < 1e-5
        assert onp.abs(library_outputs[f"base_{group}_hidden"] - want)[real].max() > 1e-2
        logits = mc.predict(trainable, frozen, batch, model)
        assert onp.abs(logits - library_outputs[f"adapterhub_adapterdrop_{group}_logits"]).max() < 1e-5


@needs_minilm
def test_pefts_prompt_tuning_gives_its_states(minilm, library_outputs):
    """(B, 10 + T, 384), as peft's encoder gives them: the prompt's positions too."""
    model, trainable, frozen, info = mc.load_adapter(FIXTURES / "peft_prompt_tuning", minilm)
    assert model.method.config.prompt_length == 10 and info["method"] == "prompt-tuning-r"
    for group in ("single", "pair"):
        batch = library_batch(library_outputs, group)
        want = library_outputs[f"peft_prompt_tuning_{group}_hidden"]
        real = onp.concatenate([onp.ones((len(want), 10)), batch["attention_mask"]], 1).astype(bool)
        got = mc.encoder(merge(frozen, trainable), batch, minilm.config, hooks=model.method.hooks)
        assert got.shape == want.shape
        assert onp.abs(got - want)[real].max() < 1e-5
        assert onp.abs(library_outputs[f"base_{group}_hidden"] - want[:, 10:])[real[:, 10:]].max() > 1e-2


@needs_minilm
def test_exporting_imported_baselines_writes_the_librarys_own_files(minilm, tmp_path):
    model, trainable, _, info = mc.load_adapter(FIXTURES / "adapterhub_adapterdrop", minilm)
    written = adapterhub.write(tmp_path / "a", trainable, model, family=BERT, name=info["adapter_name"],
                               model_name=info["base_model"]["name"], label_names=info["label_names"])
    for name in written:
        ours, theirs = tmp_path / "a" / name, FIXTURES / "adapterhub_adapterdrop" / name
        if name.endswith(".safetensors"):
            a, b = load_file(str(ours)), load_file(str(theirs))
            assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in b)
        else:
            assert json.loads(ours.read_text()) == json.loads(theirs.read_text()), name
    model, trainable, _, info = mc.load_adapter(FIXTURES / "peft_prompt_tuning", minilm)
    peft_files.write(tmp_path / "p", trainable, model, family=BERT, base_model_name_or_path=info["base_model"]["name"])
    a, b = (load_file(str(d / peft_files.WEIGHTS)) for d in (tmp_path / "p", FIXTURES / "peft_prompt_tuning"))
    assert a.keys() == b.keys() and (a["prompt_embeddings"] == b["prompt_embeddings"]).all()
    ours = json.loads((tmp_path / "p" / peft_files.CONFIG).read_text())
    theirs = json.loads((FIXTURES / "peft_prompt_tuning" / peft_files.CONFIG).read_text())
    assert {k: v for k, v in theirs.items() if k != "peft_version"} == ours


def native(tiny, tmp_path, name, **options):
    """A native checkpoint on tiny, every trained number moved off its start."""
    small = {"reduction_factor": 8} if name == "adapterdrop" else {}
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny,
                                          mc.method_config(name, **small, **options), pooling="cls")
    rng = onp.random.default_rng(1)
    trainable = tree_map(lambda v: (v + 0.05 * rng.standard_normal(v.shape)).astype(v.dtype), trainable)
    out = tmp_path / "native"
    save_adapter(out, trainable, model, base_identity(tiny, "tiny"), "synthetic-sentiment",
                 {"max_length": 32})
    return out, model, trainable, frozen


@pytest.mark.parametrize("name,to,options", [("adapterdrop", "adapters", {}),
                                             ("adapterdrop", "adapters", {"train_layer_norms": False}),
                                             ("prompt-tuning-r", "peft", {"prompt_length": 6}),
                                             ("prompt-tuning-t", "peft", {"prompt_length": 6})])
def test_export_then_import_is_the_same_tree(tiny, tmp_path, name, to, options):
    path, model, trainable, _ = native(tiny, tmp_path, name, **options)
    export_adapter(path, to, tmp_path / "out")
    imported_model, imported, _, _ = mc.load_adapter(tmp_path / "out")
    assert imported_model.method.config.method == name
    _, moved = split(trainable, is_layer_norm)
    assert flatten(imported).keys() == flatten(moved).keys()
    for key, leaf in flatten(moved).items():
        onp.testing.assert_array_equal(flatten(imported)[key], leaf, err_msg=key)


def test_said_exported_as_the_weights_it_computes_with(tiny, tmp_path):
    path, model, trainable, frozen = native(tiny, tmp_path, "intrinsic-said", intrinsic_dim=500)
    summary = export_adapter(path, "transformers", tmp_path / "out")
    assert any("theta_0 + lambda_i P_i(theta_d)" in note for note in summary["notes"])
    base = load_pretrained(tmp_path / "out")
    batch = mc.tokenize(base.tokenizer, ["a good film", "not bad at all"])
    want = mc.hidden_states(trainable, frozen, batch, model)
    assert onp.abs(mc.encoder(base.params, batch, base.config) - want).max() < 1e-5
    assert onp.abs(mc.encoder(tiny.params, batch, tiny.config) - want).max() > 1e-3


@pytest.mark.parametrize("name,to,message", [
    ("prompt-tuning-r", "adapters", "puts the prompt after the embedding layer.*--to peft"),
    ("prompt-tuning-t", "transformers", "a prompt is extra input.*--to peft"),
    ("intrinsic-said", "peft", "neither AdapterHub nor peft has Intrinsic-SAID.*--to transformers"),
    ("intrinsic-said", "adapters", "neither AdapterHub nor peft has Intrinsic-SAID.*--to transformers")])
def test_a_target_that_cannot_hold_a_baseline_says_why(tiny, tmp_path, name, to, message):
    path, *_ = native(tiny, tmp_path, name, **({"intrinsic_dim": 500} if name == "intrinsic-said"
                                               else {"prompt_length": 3}))
    with pytest.raises(ExportError, match=message):
        export_adapter(path, to, tmp_path / "x")


def edited(name, tmp_path, file, **changes):
    directory = Path(shutil.copytree(FIXTURES / name, tmp_path / name))
    config = json.loads((directory / file).read_text())
    (config["config"] if "config" in config else config).update(changes)
    (directory / file).write_text(json.dumps(config))
    return directory


@needs_minilm
@pytest.mark.parametrize("change,message", [
    ({"task_type": "SEQ_CLS"}, "task_type = 'SEQ_CLS'.*'FEATURE_EXTRACTION' only"),
    ({"num_transformer_submodules": 2}, "num_transformer_submodules = 2"),
    ({"token_dim": 768}, "token_dim = 768, the base model's is 384"),
    ({"num_virtual_tokens": 0}, "num_virtual_tokens = 0"),
    ({"num_virtual_tokens": 11}, r"prompt_embeddings has shape \(10, 384\), and 11 virtual tokens on a model of width 384 need \(11, 384\)"),
    ({"prompt_tuning_init": "MAGIC"}, "prompt_tuning_init = 'MAGIC'")])
def test_a_peft_prompt_minicompacter_cannot_compute_is_refused(minilm, tmp_path, change, message):
    with pytest.raises(Exception, match=message):
        mc.load_adapter(edited("peft_prompt_tuning", tmp_path, peft_files.CONFIG, **change), minilm)


@needs_minilm
@pytest.mark.parametrize("leave_out,message", [([6], r"leave_out names blocks \[6\]"),
                                               ("0", "must be a list of block indices"),
                                               ([0, -1], "must be a list of block indices")])
def test_an_adapterhub_leave_out_that_does_not_fit_is_refused(minilm, tmp_path, leave_out, message):
    directory = edited("adapterhub_adapterdrop", tmp_path, adapterhub.CONFIG, leave_out=leave_out)
    with pytest.raises(FormatError, match=message):
        mc.load_adapter(directory, minilm)


# --- what a run takes from the model ----------------------------------------------------------

def test_a_run_starts_prompt_tuning_t_from_the_common_words_of_its_tokenizer(tiny):
    from minicompacter.harness.pretrained import COMMON_WORDS, common_token_ids
    from minicompacter.harness.training.train import ready_method

    method = ready_method("prompt-tuning-t", tiny)
    ids = method.config.init_token_ids
    assert len(ids) == 100 and ids[0] == tiny.tokenizer.token_to_id("the") == common_token_ids(tiny.tokenizer, 1)[0]
    assert all(tiny.tokenizer.id_to_token(i) in COMMON_WORDS or tiny.tokenizer.id_to_token(i).isalpha()
               for i in set(ids))
    _, trainable, _ = init_model(onp.random.default_rng(0), tiny, method)
    onp.testing.assert_array_equal(trainable[PROMPT], tiny.params["embeddings"]["word"][list(ids)])
    assert ready_method("prompt-tuning-r", tiny).config.init_token_ids == ()


def test_a_prompt_that_leaves_no_room_for_the_text_is_refused_before_any_work(tiny):
    with pytest.raises(ValueError, match="and the prompt's 100 virtual tokens exceed the model's "
                                         "128 position embeddings; use --max-length 28 or less"):
        mc.finetune(tiny, "synthetic-sentiment", "prompt-tuning-r", mc.TrainConfig(max_length=64))


def test_evaluation_moves_the_weights_once_and_predicts_the_same(tiny):
    from minicompacter.harness.training.evaluate import weights_made_once

    model, trainable, frozen = said(tiny, intrinsic_dim=500)
    trainable = tree_map(lambda v: v + 0.01, trainable)
    batch = batch_of(tiny)
    once = weights_made_once(trainable, frozen, model)
    assert once[2].method.hooks.weights is None
    onp.testing.assert_array_equal(mc.predict(*once[:2], batch, once[2]),
                                   mc.predict(trainable, frozen, batch, model))
