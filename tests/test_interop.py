"""Adapters that move between minicompacter, AdapterHub and peft, checked against files and
outputs those libraries made themselves (tests/fixtures/interop, made by
make_interop_fixtures.py with torch 2.13, adapters 1.3.0 and peft 0.21.2; CI has no torch):
importing each gives the library's hidden states and logits; exporting the same weights gives
the library's own tensor names, shapes, dtypes, values and config fields; a native
checkpoint exported and imported again is the same tree, bit for bit."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as onp
import pytest
from autograd.test_util import check_grads
from safetensors.numpy import load_file

import minicompacter as mc
from minicompacter.core.model import hidden_states, predict
from minicompacter.core.paths import is_layer_norm
from minicompacter.core.tree import flatten, merge, split, tree_map
from minicompacter.harness.formats import adapterhub
from minicompacter.harness.formats import peft as peft_lora
from minicompacter.harness.formats.families import FAMILIES
from minicompacter.harness.formats.files import FormatError
from minicompacter.harness.formats.dispatch import checkpoint_format
from minicompacter.harness.formats.files import CheckpointError
from minicompacter.harness.formats.native import CONFIG, WEIGHTS, save_adapter
from minicompacter.harness.formats.dispatch import BASE, ExportError, export_adapter
from minicompacter.harness.formats.head import HEAD_INFO, HEAD_WEIGHTS
from minicompacter.harness.pretrained import base_identity, load_pretrained

from conftest import needs_minilm

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "interop"
ADAPTERHUB = ["adapterhub_compacter", "adapterhub_compacterpp_equivalent", "adapterhub_compacterpp",
              "adapterhub_phm_adapter", "adapterhub_houlsby", "adapterhub_pfeiffer",
              "adapterhub_pfeiffer_equivalent"]
PEFT = ["peft_lora", "peft_lora_key"]
BERT = FAMILIES["bert"]


@pytest.fixture(scope="module")
def outputs():
    return onp.load(FIXTURES / "outputs.npz")


def fixture_batch(outputs, group):
    return {k: outputs[f"{group}_{k}"] for k in ("input_ids", "token_type_ids", "attention_mask")}


# --- importing the libraries' own files -----------------------------------------------------

@needs_minilm
@pytest.mark.parametrize("fixture", ADAPTERHUB + PEFT)
def test_importing_gives_the_librarys_hidden_states_and_logits(minilm, outputs, fixture):
    model, trainable, frozen, info = mc.load_adapter(FIXTURES / fixture, minilm)
    assert info["format"] == ("peft" if fixture.startswith("peft") else "adapterhub")
    for group in ("single", "pair"):
        batch = fixture_batch(outputs, group)
        real = batch["attention_mask"].astype(bool)
        hidden = hidden_states(trainable, frozen, batch, model)
        want = outputs[f"{fixture}_{group}_hidden"]
        assert onp.abs(hidden - want)[real].max() < 1e-5
        # the adapter matters: the base model alone is far from the library's output
        assert onp.abs(outputs[f"base_{group}_hidden"] - want)[real].max() > 1e-2
        if f"{fixture}_{group}_logits" in outputs:
            logits = predict(trainable, frozen, batch, model)
            assert onp.abs(logits - outputs[f"{fixture}_{group}_logits"]).max() < 1e-5


@needs_minilm
def test_the_two_adapterhub_blocks_are_told_apart(minilm):
    """CompacterPlusPlusConfig (original_ln_before=True) is not minicompacter's Compacter++
    block; CompacterConfig(mh_adapter=False) is."""
    own = mc.load_adapter(FIXTURES / "adapterhub_compacterpp", minilm)[0].method.config
    equivalent = mc.load_adapter(FIXTURES / "adapterhub_compacterpp_equivalent", minilm)[0].method.config
    assert own.original_ln_before and not equivalent.original_ln_before
    assert equivalent == mc.method_config("compacter++", train_layer_norms=False)
    pfeiffer = mc.load_adapter(FIXTURES / "adapterhub_pfeiffer", minilm)[0].method.config
    assert pfeiffer.original_ln_before and pfeiffer.non_linearity == "relu"


@needs_minilm
def test_an_imported_base_is_found_from_the_hub_id_without_the_hub(outputs):
    model, trainable, frozen, _ = mc.load_adapter(FIXTURES / "adapterhub_compacter")
    batch = fixture_batch(outputs, "single")
    real = batch["attention_mask"].astype(bool)
    hidden = hidden_states(trainable, frozen, batch, model)
    assert onp.abs(hidden - outputs["adapterhub_compacter_single_hidden"])[real].max() < 1e-5


# --- exporting gives the libraries' own files -------------------------------------------------

def same_tensors(ours, theirs):
    a, b = load_file(str(ours)), load_file(str(theirs))
    assert a.keys() == b.keys()
    for name in b:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        onp.testing.assert_array_equal(a[name], b[name], err_msg=name)


@needs_minilm
@pytest.mark.parametrize("fixture", [f for f in ADAPTERHUB if not f.endswith("equivalent")])
def test_exporting_imported_weights_writes_adapterhubs_own_files(minilm, tmp_path, fixture):
    model, trainable, _, info = mc.load_adapter(FIXTURES / fixture, minilm)
    written = adapterhub.write(tmp_path, trainable, model, family=BERT, name=info["adapter_name"],
                               model_name=info["base_model"]["name"], label_names=info["label_names"])
    assert sorted(written) == sorted(p.name for p in (FIXTURES / fixture).iterdir())
    for name in written:
        if name.endswith(".safetensors"):
            same_tensors(tmp_path / name, FIXTURES / fixture / name)
        else:
            assert json.loads((tmp_path / name).read_text()) == json.loads(
                (FIXTURES / fixture / name).read_text()), name


@needs_minilm
@pytest.mark.parametrize("fixture", PEFT)
def test_exporting_imported_weights_writes_pefts_own_files(minilm, tmp_path, fixture):
    model, trainable, _, info = mc.load_adapter(FIXTURES / fixture, minilm)
    peft_lora.write(tmp_path, trainable, model, family=BERT,
                    base_model_name_or_path=info["base_model"]["name"])
    same_tensors(tmp_path / peft_lora.WEIGHTS, FIXTURES / fixture / peft_lora.WEIGHTS)
    ours = json.loads((tmp_path / peft_lora.CONFIG).read_text())
    theirs = json.loads((FIXTURES / fixture / peft_lora.CONFIG).read_text())
    for field in ("peft_type", "r", "lora_alpha", "lora_dropout", "bias", "base_model_name_or_path",
                  "fan_in_fan_out", "use_rslora", "use_dora", "modules_to_save", "task_type"):
        assert ours[field] == theirs[field], field
    assert set(ours["target_modules"]) == set(theirs["target_modules"])
    meta = subprocess.run([sys.executable, "-c", "import json, sys; from safetensors import safe_open;"
                           "print(json.dumps(safe_open(sys.argv[1], 'np').metadata()))",
                           str(tmp_path / peft_lora.WEIGHTS)], capture_output=True, text=True)
    assert json.loads(meta.stdout) == {"format": "pt"}


# --- native checkpoints: export, then import, is the same tree --------------------------------

EXPORTS = [("adapters", "compacter"), ("adapters", "compacter++"), ("adapters", "phm-adapter"),
           ("adapters", "adapter"), ("adapters", "pfeiffer"), ("adapters", "adapter-lowrank"),
           ("peft", "lora"), ("transformers", "full"), ("transformers", "bitfit"),
           ("transformers", "lora")]


def native_checkpoint(tiny, tmp_path, method, pooling="cls", **overrides):
    """A native checkpoint on tiny whose every trained number is off its initial value."""
    small = {"reduction_factor": 8} if method not in ("full", "bitfit", "lora") else {}
    if method == "phm-adapter":
        small["phm_dim"] = 4
    model, trainable, frozen = mc.init_model(onp.random.default_rng(0), tiny,
                                             mc.method_config(method, **small, **overrides),
                                             pooling=pooling)
    rng = onp.random.default_rng(1)
    trainable = tree_map(lambda v: (v + 0.05 * rng.standard_normal(v.shape)).astype(v.dtype),
                         trainable)
    out = tmp_path / "native"
    save_adapter(out, trainable, model, base_identity(tiny, "tiny"), "synthetic-sentiment",
                 {"max_length": 32})
    return out, model, trainable, frozen


@pytest.mark.parametrize("to,method", EXPORTS, ids=lambda x: str(x))
def test_export_then_import_returns_the_tree_bit_for_bit(tiny, tmp_path, to, method):
    native, model, trainable, frozen = native_checkpoint(tiny, tmp_path, method)
    out = tmp_path / "exported"
    summary = export_adapter(native, to, out)
    if to == "transformers":                   # a BertModel with what was trained in it
        base = load_pretrained(out)
        batch = mc.tokenize(base.tokenizer, ["a good film", "not bad at all"])
        want = hidden_states(trainable, frozen, batch, model)
        got = mc.encoder(base.params, batch, base.config)
        assert onp.abs(got - want).max() < (1e-5 if method == "lora" else 1e-6)
        assert onp.abs(got - mc.encoder(tiny.params, batch, tiny.config)).max() > 1e-3
        head = load_file(str(out / HEAD_WEIGHTS))
        onp.testing.assert_array_equal(head["weight"], trainable["head"]["w"].T)
        return
    imported_model, imported, imported_frozen, info = mc.load_adapter(out)
    norms, adapter = split(trainable, is_layer_norm)
    assert flatten(imported).keys() == flatten(adapter).keys()
    for name, leaf in flatten(adapter).items():
        onp.testing.assert_array_equal(flatten(imported)[name], leaf, err_msg=name)
    if flatten(norms):                         # the trained layer norms: in out/base/
        base = flatten(load_pretrained(out / BASE).params)
        for name, leaf in flatten(norms).items():
            onp.testing.assert_array_equal(base[name], leaf, err_msg=name)
        assert any("layer norms" in note for note in summary["notes"])
    assert imported_model.method.config.method == method


def test_a_mean_pooling_head_goes_beside_adapterhubs_files(tiny, tmp_path):
    native, model, trainable, _ = native_checkpoint(tiny, tmp_path, "compacter", pooling="mean")
    out = tmp_path / "exported"
    summary = export_adapter(native, "adapters", out)
    assert not (out / adapterhub.HEAD_CONFIG).exists()
    info = json.loads((out / HEAD_INFO).read_text())
    assert info["pooling"] == "mean" and info["num_labels"] == 2
    onp.testing.assert_array_equal(load_file(str(out / HEAD_WEIGHTS))["bias"], trainable["head"]["b"])
    assert any("[CLS]" in note for note in summary["notes"])


def test_a_target_without_the_method_is_refused_with_the_one_that_takes_it(tiny, tmp_path):
    native, *_ = native_checkpoint(tiny, tmp_path, "compacter")
    with pytest.raises(ExportError, match="compacter cannot be exported to peft.*--to adapters"):
        export_adapter(native, "peft", tmp_path / "x")
    with pytest.raises(ExportError, match="cannot be merged into the weights.*--to adapters"):
        export_adapter(native, "transformers", tmp_path / "x")
    full, *_ = native_checkpoint(tiny, tmp_path / "f", "full")
    with pytest.raises(ExportError, match="full cannot be exported to adapters.*--to transformers"):
        export_adapter(full, "adapters", tmp_path / "y")


# --- what is refused on import -----------------------------------------------------------------

def copy_fixture(name, tmp_path):
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def edit_config(directory, file, **changes):
    path = directory / file
    config = json.loads(path.read_text())
    target = config["config"] if "config" in config else config
    target.update(changes)
    path.write_text(json.dumps(config))


def test_pickle_files_are_refused_with_the_conversion_to_run(tiny):
    with pytest.raises(FormatError, match=r"pytorch_adapter\.bin, a pickle file.*save_file\(torch\.load"):
        mc.load_adapter(FIXTURES / "adapterhub_compacter_bin", tiny)


@pytest.mark.parametrize("change,message", [
    ({"ln_before": True}, "ln_before = True"),
    ({"scaling": "learned"}, "scaling = 'learned'"),
    ({"residual_before_ln": False, "original_ln_before": True}, "residual_before_ln = False"),
    ({"non_linearity": "leakyrelu"}, "non_linearity 'leakyrelu' is not one"),
    ({"reduction_factor": {"1": 16, "default": 32}}, "one whole number"),
    ({"shiny_new_option": 3}, "field shiny_new_option = 3 is unknown"),
])
def test_an_adapterhub_field_minicompacter_cannot_honour_is_named(tmp_path, tiny, change, message):
    d = copy_fixture("adapterhub_houlsby", tmp_path)
    edit_config(d, adapterhub.CONFIG, **change)
    with pytest.raises(FormatError, match=message):
        adapterhub.method_config(json.loads((d / adapterhub.CONFIG).read_text())["config"], d)


def test_an_unknown_field_left_at_nothing_is_accepted():
    bn = json.loads((FIXTURES / "adapterhub_houlsby" / adapterhub.CONFIG).read_text())["config"]
    assert adapterhub.method_config(dict(bn, future_option=None), "x") == \
        adapterhub.method_config(bn, "x")


@pytest.mark.parametrize("change,message", [
    ({"use_dora": True}, "use_dora = True"), ({"bias": "all"}, "bias = 'all'"),
    ({"target_modules": ["dense"]}, "target module 'dense'"),
    ({"task_type": "SEQ_CLS"}, "task_type 'SEQ_CLS'"), ({"peft_type": "IA3"}, "peft_type = 'IA3'"),
])
def test_a_peft_field_minicompacter_cannot_honour_is_named(tmp_path, change, message):
    config = json.loads((FIXTURES / "peft_lora" / peft_lora.CONFIG).read_text())
    with pytest.raises(FormatError, match=message):
        peft_lora.method_config(dict(config, **change), tmp_path, BERT)


def test_heads_minicompacter_does_not_compute_are_refused():
    head = json.loads((FIXTURES / "adapterhub_compacter" / adapterhub.HEAD_CONFIG).read_text())["config"]
    with pytest.raises(FormatError, match="use_pooler = True"):
        adapterhub.read_head_config(dict(head, use_pooler=True), "x")
    with pytest.raises(FormatError, match="head_type = 'tagging'"):
        adapterhub.read_head_config(dict(head, head_type="tagging"), "x")
    with pytest.raises(FormatError, match="activation_function 'relu'"):
        adapterhub.read_head_config(dict(head, layers=2, activation_function="relu"), "x")


# --- no clash, and the base model's identity ----------------------------------------------------

def test_a_native_checkpoint_is_named_so_neither_peft_nor_transformers_claims_it(tiny, tmp_path):
    native, *_ = native_checkpoint(tiny, tmp_path, "compacter")
    names = {p.name for p in native.iterdir()}
    assert names == {WEIGHTS, CONFIG}
    assert not names & {"adapter_config.json", "config.json", "adapter_model.safetensors"}
    assert checkpoint_format(native) == "minicompacter"
    assert checkpoint_format(FIXTURES / "peft_lora") == "peft"
    assert checkpoint_format(FIXTURES / "adapterhub_houlsby") == "adapterhub"
    assert checkpoint_format(ROOT / "tests" / "fixtures" / "checkpoint_0.1.0") == "minicompacter-0.1"


def test_a_checkpoint_records_its_base_and_refuses_another_with_the_same_shapes(tiny, tmp_path):
    native, *_ = native_checkpoint(tiny, tmp_path, "compacter")
    base = json.loads((native / CONFIG).read_text())["base_model"]
    assert base["name"] == "tiny" and base["digest"].startswith("sha256:") and base["hub_id"] is None
    other = tiny._replace(params=mc.init_encoder(onp.random.default_rng(5), tiny.config))
    with pytest.raises(CheckpointError, match="same shapes but other weights"):
        mc.load_adapter(native, other)
    mc.load_adapter(native)                                  # found by its name, no hub needed
    tiny64 = load_pretrained("tiny", dtype=onp.float64)
    assert base_identity(tiny64)["digest"] == base["digest"]   # the same weights, cast


@needs_minilm
def test_minilm_is_recorded_with_its_hub_id_and_directory(minilm):
    base = base_identity(minilm, "minilm")
    assert base["hub_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert Path(base["path"]).is_absolute() and (Path(base["path"]) / "model.safetensors").exists()


# --- the AdapterHub block with original_ln_before -------------------------------------------------

def test_original_ln_before_feeds_the_adapter_the_normed_sum(tiny64):
    """slot(f, h, LN) = f + U(g(D(LN(h + f)))), so that the block is LN(h + f + A(LN(h + f)))."""
    from minicompacter.core.methods import adapter_slot, bottleneck
    from minicompacter.core.nn import layer_norm

    cfg = mc.method_config("pfeiffer", reduction_factor=8, original_ln_before=True)
    _, trainable, frozen = mc.init_model(onp.random.default_rng(0), tiny64, cfg)
    trainable = tree_map(lambda v: v + 0.1, trainable)
    params = merge(frozen, trainable)
    rng = onp.random.default_rng(2)
    f, h = rng.standard_normal((2, 3, 32)), rng.standard_normal((2, 3, 32))
    ln = {"g": rng.standard_normal(32), "b": rng.standard_normal(32)}
    norm = lambda z: layer_norm(ln, z)
    p = params["layers"][1]["ffn_adapter"]
    want = f + bottleneck(cfg, p, norm(h + f))
    onp.testing.assert_allclose(adapter_slot(cfg, "ffn_adapter", params, 1, f, h, norm), want)
    assert onp.abs(want - (f + bottleneck(cfg, p, f))).max() > 1e-3
    check_grads(lambda f, h: adapter_slot(cfg, "ffn_adapter", params, 1, f, h, norm),
                modes=["rev"], order=1)(f, h)


# --- the command line ------------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "minicompacter", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_finetune_prints_pefts_line_counted_as_peft_counts(tmp_path):
    done = run_cli("finetune", "--task", "synthetic-sentiment", "--method", "lora", "--model", "tiny",
                   "--max-length", "32", "--train-size", "32", "--epochs", "1", "--no-progress",
                   "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    added = m["trainable_params"]                    # LoRA unfreezes nothing: all of it is added
    line = next(l for l in done.stdout.splitlines() if l.startswith("trainable params"))
    total = m["total_params"] + added
    assert line == (f"trainable params: {m['trainable_params']:,} || all params: {total:,} || "
                    f"trainable%: {100 * m['trainable_params'] / total:.4f}")


@pytest.mark.slow
def test_predict_and_export_on_the_command_line(tiny, tmp_path):
    native, *_ = native_checkpoint(tiny, tmp_path, "compacter")
    done = run_cli("predict", "--checkpoint", str(native), "--text", "a good film",
                   "--text", "a dull film", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(l) for l in done.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["a good film", "a dull film"]
    assert all(r["label"] in ("negative", "positive") and
               abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    done = run_cli("export", "--checkpoint", str(native), "--to", "adapters", "--out", str(tmp_path / "ah"))
    assert done.returncode == 0, done.stderr
    assert "carried: the trained layer norms" in done.stdout
    assert f"needs: {tmp_path / 'ah' / 'base'}: load the adapter on it" in done.stdout
    assert (tmp_path / "ah" / adapterhub.WEIGHTS).exists()
    done = run_cli("export", "--checkpoint", str(native), "--to", "peft", "--out", str(tmp_path / "p"))
    assert done.returncode == 2 and "--to adapters" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
@needs_minilm
def test_predict_and_evaluate_an_imported_adapterhub_adapter(tmp_path):
    done = run_cli("predict", "--checkpoint", str(FIXTURES / "adapterhub_compacter"),
                   "--text", "The movie was not good.")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(("LABEL_0\t", "LABEL_1\t"))
    done = run_cli("predict", "--checkpoint", str(FIXTURES / "peft_lora"), "--text", "x")
    assert done.returncode == 2 and "without a head" in done.stderr
    done = run_cli("evaluate", "--checkpoint", str(FIXTURES / "adapterhub_compacter"),
                   "--task", "synthetic-sentiment")
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout.splitlines()[-1])) == {"validation", "test"}
