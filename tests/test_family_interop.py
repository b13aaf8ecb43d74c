"""RoBERTa, XLM-RoBERTa, DistilBERT and ELECTRA through the harness, end to end, against the
files and outputs transformers, AdapterHub and peft made (tests/fixtures/families/, made by
make_family_fixtures.py there; no torch here):

  - `load_pretrained(DIR)` reads each family's directory: the tokenizer's ids (its pad token
    and id included) and the hidden states are transformers';
  - `load_adapter` imports each family's AdapterHub Compacter (with its head) and peft LoRA
    and gives the libraries' hidden states and logits;
  - exporting the imported weights writes the libraries' own files (tensor names, shapes,
    dtypes and values bit for bit, the config fields that matter);
  - a native checkpoint of every exportable method on each family, exported and imported
    again, is the same tree bit for bit, and `export --to transformers` is the family's model;
  - the command line: finetune, evaluate, predict and count on each family (slow).

The measured differences are printed with -s (pytest -s tests/test_family_interop.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as onp
import pytest
from safetensors.numpy import load_file

import minicompacter as mc
from minicompacter.core.model import hidden_states, predict
from minicompacter.core.paths import is_layer_norm
from minicompacter.core.tree import flatten, split, tree_map
from minicompacter.harness.formats import adapterhub, families
from minicompacter.harness.formats import peft as peft_lora
from minicompacter.harness.formats.dispatch import BASE, export_adapter
from minicompacter.harness.formats.head import HEAD_WEIGHTS
from minicompacter.harness.formats.native import save_adapter
from minicompacter.harness.pretrained import base_identity

HERE = Path(__file__).parent / "fixtures" / "families"
DIRS = {"roberta": "roberta", "xlm-roberta": "xlm_roberta", "distilbert": "distilbert",
        "electra": "electra"}
OUTPUTS = onp.load(HERE / "outputs.npz")
META = json.loads((HERE / "outputs.json").read_text())
TEXTS = {"single": (META["sentences"], None),
         "pair": ([a for a, _ in META["pairs"]], [b for _, b in META["pairs"]])}


@pytest.fixture(scope="module", params=list(DIRS))
def family(request):
    """(model_type, its Pretrained as load_pretrained reads its directory)."""
    return request.param, mc.load_pretrained(HERE / DIRS[request.param])


def fixture_batch(model_type, group):
    key = DIRS[model_type]
    return {k: OUTPUTS[f"{key}_{group}_{k}"] for k in ("input_ids", "token_type_ids",
                                                        "attention_mask")}


def test_load_pretrained_reads_each_family_as_transformers_does(family):
    model_type, base = family
    assert base.family == model_type
    f = families.FAMILIES[model_type]
    assert base.tokenizer.padding["pad_token"] == f.tokens.pad
    assert base.tokenizer.padding["pad_id"] == f.tokens.pad_id
    worst = 0.0
    for group, (texts, pairs) in TEXTS.items():
        want = fixture_batch(model_type, group)
        batch = mc.tokenize(base.tokenizer, texts, pairs)
        for k in want:                                   # the pad id in the padded places too
            onp.testing.assert_array_equal(batch[k], want[k], err_msg=f"{group} {k}")
        hidden, mask = mc.encode_texts(base, texts, pairs)
        worst = max(worst, float(onp.abs(hidden - OUTPUTS[f"{DIRS[model_type]}_{group}_hidden_float64"]).max()))
    assert worst < 1e-4
    print(f"\n{model_type}: load_pretrained + tokenize + encode_texts vs transformers: {worst:.1e}")


def test_encoded_batches_pad_with_the_familys_pad_id(family):
    model_type, base = family
    task = mc.harness.data.tasks.get_task("synthetic-sentiment")
    splits = mc.load_task("synthetic-sentiment")
    from minicompacter.harness.training.evaluate import encode_splits
    encoded = encode_splits({"validation": splits["validation"].select(range(20))}, base, task, 32)
    batch = encoded["validation"].batch(onp.arange(20))
    padded = batch["attention_mask"] == 0
    assert padded.any()
    assert (batch["input_ids"][padded] == families.FAMILIES[model_type].tokens.pad_id).all()


# --- importing the libraries' own files -----------------------------------------------------

def test_adapterhub_and_peft_files_import_with_the_librarys_outputs(family):
    model_type, base = family
    key = DIRS[model_type]
    worst = {}
    for kind in ("adapterhub", "peft"):
        model, trainable, frozen, info = mc.load_adapter(HERE / f"{key}_{kind}", base)
        assert info["format"] == kind
        diff = 0.0
        for group in ("single", "pair"):
            batch = fixture_batch(model_type, group)
            real = batch["attention_mask"].astype(bool)
            hidden = hidden_states(trainable, frozen, batch, model)
            diff = max(diff, float(onp.abs(hidden - OUTPUTS[f"{key}_{kind}_{group}_hidden"])[real].max()))
            if kind == "adapterhub":
                logits = predict(trainable, frozen, batch, model)
                diff = max(diff, float(onp.abs(logits - OUTPUTS[f"{key}_{kind}_{group}_logits"]).max()))
        worst[kind] = diff
        assert diff < 1e-5, (kind, diff)
    print(f"\n{model_type}: imported AdapterHub Compacter (hidden, logits) {worst['adapterhub']:.1e}, "
          f"peft LoRA (hidden) {worst['peft']:.1e}")


def same_tensors(ours, theirs):
    a, b = load_file(str(ours)), load_file(str(theirs))
    assert a.keys() == b.keys()
    for name in b:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        onp.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_exporting_imported_weights_writes_the_librarys_own_files(family, tmp_path):
    model_type, base = family
    key, f = DIRS[model_type], families.FAMILIES[model_type]
    model, trainable, _, info = mc.load_adapter(HERE / f"{key}_adapterhub", base)
    written = adapterhub.write(tmp_path / "ah", trainable, model, family=f,
                               name=info["adapter_name"], model_name=info["base_model"]["name"],
                               label_names=info["label_names"])
    for name in written:
        if name.endswith(".safetensors"):
            same_tensors(tmp_path / "ah" / name, HERE / f"{key}_adapterhub" / name)
        else:
            assert json.loads((tmp_path / "ah" / name).read_text()) == json.loads(
                (HERE / f"{key}_adapterhub" / name).read_text()), name
    model, trainable, _, info = mc.load_adapter(HERE / f"{key}_peft", base)
    peft_lora.write(tmp_path / "peft", trainable, model, family=f,
                    base_model_name_or_path=info["base_model"]["name"])
    same_tensors(tmp_path / "peft" / peft_lora.WEIGHTS, HERE / f"{key}_peft" / peft_lora.WEIGHTS)
    ours = json.loads((tmp_path / "peft" / peft_lora.CONFIG).read_text())
    theirs = json.loads((HERE / f"{key}_peft" / peft_lora.CONFIG).read_text())
    for field in ("peft_type", "r", "lora_alpha", "auto_mapping", "base_model_name_or_path",
                  "task_type", "bias", "lora_dropout"):
        assert ours[field] == theirs[field], field
    assert sorted(ours["target_modules"]) == sorted(theirs["target_modules"])


# --- native checkpoints on each family: export, then import ------------------------------------

EXPORTS = [("adapters", "compacter++"), ("adapters", "adapter"), ("peft", "lora"),
           ("transformers", "bitfit"), ("transformers", "lora")]


def native_checkpoint(base, out, method):
    """A native checkpoint on `base` whose every trained number is off its initial value."""
    small = {"reduction_factor": 8} if method not in ("bitfit", "lora") else {}
    model, trainable, frozen = mc.init_model(onp.random.default_rng(0), base,
                                             mc.method_config(method, **small), pooling="mean")
    rng = onp.random.default_rng(1)
    trainable = tree_map(lambda v: (v + 0.05 * rng.standard_normal(v.shape)).astype(v.dtype),
                         trainable)
    save_adapter(out, trainable, model, base_identity(base), "synthetic-sentiment",
                 {"max_length": 32})
    return model, trainable, frozen


@pytest.mark.parametrize("to,method", EXPORTS, ids=lambda x: str(x))
def test_export_then_import_on_each_family(family, tmp_path, to, method):
    model_type, base = family
    model, trainable, frozen = native_checkpoint(base, tmp_path / "native", method)
    out = tmp_path / "exported"
    summary = export_adapter(tmp_path / "native", to, out)
    batch = mc.tokenize(base.tokenizer, *TEXTS["pair"])
    want = hidden_states(trainable, frozen, batch, model)
    if to == "transformers":                   # the family's model with what was trained in it
        exported = mc.load_pretrained(out)
        assert exported.family == model_type
        assert json.loads((out / "config.json").read_text())["model_type"] == model_type
        got = mc.encoder(exported.params, batch, exported.config)
        assert onp.abs(got - want).max() < 1e-5
        head = load_file(str(out / HEAD_WEIGHTS))
        onp.testing.assert_array_equal(head["weight"], trainable["head"]["w"].T)
        return
    meta = json.loads((out / (adapterhub.CONFIG)).read_text())
    if to == "adapters":
        assert (meta["model_class"], meta["model_type"]) == (
            families.FAMILIES[model_type].adapterhub.model_class,
            families.FAMILIES[model_type].adapterhub.model_type)
        assert summary["needs_base"] and (out / BASE / "config.json").exists()
    imported_model, imported, imported_frozen, _ = mc.load_adapter(out)
    norms, adapter = split(trainable, is_layer_norm)
    for name, leaf in flatten(adapter).items():
        onp.testing.assert_array_equal(flatten(imported)[name], leaf, err_msg=name)
    got = hidden_states(imported, imported_frozen, batch, imported_model)
    assert onp.abs(got - want).max() < 1e-5
    onp.testing.assert_allclose(predict(imported, imported_frozen, batch, imported_model),
                                predict(trainable, frozen, batch, model), atol=1e-5)


# --- the command line, once per family -----------------------------------------------------------

def cli(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "minicompacter", *argv], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", list(DIRS))
def test_finetune_evaluate_predict_and_count_on_each_family(tmp_path, model_type):
    model = str(HERE / DIRS[model_type])
    run = str(tmp_path / "run")
    done = cli("finetune", "--task", "synthetic-paraphrase", "--method", "compacter++",
               "--reduction-factor", "8", "--model", model, "--train-size", "32", "--epochs", "1",
               "--max-length", "32", "--no-progress", "--out", run, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())
    done = cli("evaluate", "--checkpoint", run, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {k: recorded[k] for k in ("validation", "test")}
    done = cli("predict", "--checkpoint", run, "--text", "a man plays a guitar", "--pair",
               "someone plays music", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
    done = cli("count", "--model", model, "--method", "compacter++", "--reduction-factor", "8",
               cwd=tmp_path)
    assert done.returncode == 0 and "(agrees)" in done.stdout, done.stdout + done.stderr
