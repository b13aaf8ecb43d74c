"""Export, import and predict never give a silently wrong answer, and every file that comes
in is checked as carefully as minicompacter's own: one test (or more) per problem found by
a hostile probe of those commands, each named by the problem's number (1-20). The command
line cases of the same problems (exit code, message, files unchanged) are the battery's
export section, tests/test_bad_exports.py."""

import errno
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as onp
import pytest
from safetensors.numpy import load_file, save_file

import minicompacter as mc
from minicompacter.core.tree import flatten, tree_map
from minicompacter.harness import cli
from minicompacter.harness.data.tasks import DataError, get_task, parse_label, read_tsv
from minicompacter.harness.formats import adapterhub, dispatch, families
from minicompacter.harness.formats import peft as peft_lora
from minicompacter.harness.formats.dispatch import BASE, MANIFEST, README, ExportError, export_adapter
from minicompacter.harness.formats.files import (PAUSE_WRITE, CheckpointError, FormatError,
                                                 LoadError, NonFiniteError, read_tensors,
                                                 tensor_bytes)
from minicompacter.harness.formats.head import HEAD_INFO, HEAD_WEIGHTS
from minicompacter.harness.formats.native import CONFIG, LAST, WEIGHTS, load_last, save_adapter
from minicompacter.harness.pretrained import base_identity
from minicompacter.harness.training import checks, rundir
from minicompacter.harness.training.evaluate import predict_texts, task_fits
from minicompacter.harness.training.train import TrainConfig

from conftest import finished_and_unfinished, write_checkpoint, write_tsv

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT / "tests" / "fixtures" / "interop"
FAMILY_FIXTURES = ROOT / "tests" / "fixtures" / "families"
TASK = "synthetic-sentiment"


def native(tiny, out, method="compacter++", pooling="mean", task=TASK, seed=1, **options):
    """A native checkpoint on tiny whose every trained number is off its initial value."""
    if method in ("compacter++", "adapter", "pfeiffer", "compacter"):
        options = {"reduction_factor": 8, **options}
    model, trainable, _ = mc.init_model(onp.random.default_rng(0), tiny,
                                        mc.method_config(method, **options), pooling=pooling,
                                        num_labels=get_task(task).num_labels)
    rng = onp.random.default_rng(seed)
    trainable = tree_map(lambda v: (v + 0.05 * rng.standard_normal(v.shape)).astype(v.dtype),
                         trainable)
    save_adapter(out, trainable, model, base_identity(tiny, "tiny"), task, {"max_length": 32})
    return out


def files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def write_raw(path, tensors):
    """A safetensors file written byte by byte: {name: (dtype, shape, raw bytes)}."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header).encode()
    Path(path).write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def as_bfloat16(value):
    """(the float32 values a bfloat16 holds, their BF16 bytes): the top 16 bits of each."""
    bits = onp.ascontiguousarray(value, onp.float32).view(onp.uint32) & 0xFFFF0000
    return bits.view(onp.float32), (bits >> 16).astype("<u2").tobytes()


def rewrite(path, dtype):
    """A safetensors file rewritten with every tensor in `dtype` ("BF16", "F16", "F64");
    returns the float32 values it now holds."""
    tensors, raw, held = load_file(str(path)), {}, {}
    for name, value in tensors.items():
        if dtype == "BF16":
            held[name], data = as_bfloat16(value)
        else:
            stored = value.astype({"F16": onp.float16, "F64": onp.float64}[dtype])
            held[name], data = stored.astype(onp.float32), stored.tobytes()
        raw[name] = (dtype, value.shape, data)
    write_raw(path, raw)
    return held


def stale_siblings(out):
    return sorted(p.name for p in Path(out).parent.glob(f".{Path(out).name}.*"))


# --- 1. an export directory belongs to one export --------------------------------------------

def test_1_a_second_export_into_an_export_is_refused_and_replace_leaves_only_its_own_files(tiny, tmp_path):
    a = native(tiny, tmp_path / "A", pooling="mean")
    b = native(tiny, tmp_path / "B", pooling="cls", seed=3, train_layer_norms=False)
    x = tmp_path / "X"
    export_adapter(b, "adapters", x)
    before = files(x)
    with pytest.raises(ExportError, match="holds an earlier export.*--replace replaces it"):
        export_adapter(a, "adapters", x)
    assert files(x) == before
    export_adapter(a, "adapters", x, replace=True)
    alone = tmp_path / "alone"
    export_adapter(a, "adapters", alone)
    assert sorted(files(x)) == sorted(files(alone))           # none of B's files are left
    assert not (x / adapterhub.HEAD_CONFIG).exists() and (x / HEAD_WEIGHTS).exists()
    assert predict_texts(x, ["a good movie"]) == predict_texts(a, ["a good movie"])
    (x / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="holds files no export of minicompacter wrote: notes.txt"):
        export_adapter(a, "adapters", x, replace=True)


# --- 2. an export never writes into the base model or the checkpoint ---------------------------

def test_2_an_export_into_the_base_model_or_the_checkpoint_is_refused_and_changes_nothing(tiny, tmp_path):
    model_dir = write_checkpoint(tmp_path / "D", tiny)
    base = mc.load_pretrained(model_dir)
    run = native(base, tmp_path / "r", method="bitfit")
    before = files(model_dir), files(run)
    for out, what in ((model_dir, "is the base model"), (run, "is the checkpoint"),
                      (model_dir / "sub", "is inside the base model"), (tmp_path, "holds")):
        with pytest.raises(ExportError, match=what):
            export_adapter(run, "transformers", out, pretrained=base)
    assert (files(model_dir), files(run)) == before
    mc.load_adapter(run, base)                                 # still the base it was trained on


# --- 3. float64 beyond float32's range ---------------------------------------------------------

def test_3_float64_values_beyond_float32_are_refused_after_the_cast(tiny, tmp_path):
    path = tmp_path / "x.safetensors"
    write_raw(path, {"w": ("F64", (2,), onp.array([1.0, 1e300]).tobytes())})
    with pytest.raises(CheckpointError, match="w holds non-finite values .*beyond float32's range"):
        read_tensors(path)
    assert read_tensors(path, dtype=onp.float64)["w"][1] == 1e300          # finite in float64
    write_raw(path, {"w": ("F64", (2,), onp.array([1.0, 1e-3]).tobytes())})
    assert read_tensors(path)["w"].dtype == onp.float32
    model_dir = write_checkpoint(tmp_path / "model", tiny)
    tensors = load_file(str(model_dir / "model.safetensors"))
    raw = {k: (("I64" if v.dtype == onp.int64 else "F64"), v.shape,
               (v if v.dtype == onp.int64 else v.astype(onp.float64) * (1e300 if "LayerNorm.weight" in k else 1)).tobytes())
           for k, v in tensors.items()}
    write_raw(model_dir / "model.safetensors", raw)
    with pytest.raises(LoadError, match="holds non-finite values"):
        mc.load_pretrained(model_dir)


def test_3_an_optimiser_state_beyond_float32_is_refused_on_resume(tiny, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=16, max_length=32, progress=False)
    method = mc.method_config("compacter++", reduction_factor=8)
    _, unfinished = finished_and_unfinished(tmp_path, tiny, TASK, method, cfg, 32, stop_at=1)
    opt = unfinished / LAST / "optimizer.safetensors"
    tensors = load_file(str(opt))
    name = sorted(tensors)[0]
    write_raw(opt, {k: ("F64", v.shape, (v.astype(onp.float64) * (1e300 if k == name else 1)).tobytes())
                    for k, v in tensors.items()})
    like = mc.load_adapter(tmp_path / "finished", tiny)[1]
    with pytest.raises(CheckpointError, match=f"{re.escape(name)} holds non-finite values"):
        load_last(unfinished, like)


# --- 4. outputs are finite or refused -------------------------------------------------------------

def overflowing_head(directory):
    path = directory / WEIGHTS
    tensors = load_file(str(path))
    save_file({k: (onp.full_like(v, 3e38) if k.startswith("head.") else v) for k, v in tensors.items()},
              str(path))


def test_4_predict_evaluate_and_encode_refuse_non_finite_outputs_with_one_message(tiny, tmp_path):
    run = native(tiny, tmp_path / "r")
    overflowing_head(run)
    message = r"the model gives non-finite outputs \(nan or inf\) for 2 of 2"
    with pytest.raises(NonFiniteError, match=message + " texts"):
        predict_texts(run, ["a good film", "a bad one"])
    params = dict(tiny.params, embeddings=dict(tiny.params["embeddings"],
                                               word=onp.full_like(tiny.params["embeddings"]["word"], 3e38)))
    huge = tiny._replace(params=params)                        # the embedding layer norm overflows
    with pytest.raises(NonFiniteError, match=message + " texts"):
        mc.encode_texts(huge, ["a good film", "a bad one"])
    with pytest.raises(NonFiniteError, match="the model gives non-finite outputs \\(nan or inf\\) for"):
        mc.evaluate_checkpoint(run)


# --- 5. the head beside an export is checked ------------------------------------------------------

@pytest.mark.parametrize("edit,message", [
    (lambda d: (d / HEAD_INFO).write_text("{"), "minicompacter_head.json is not valid JSON"),
    (lambda d: json_edit(d / HEAD_INFO, num_labels=7, label_names=[]), r"describes \(1 layer\(s\), 7 labels"),
    (lambda d: json_edit(d / HEAD_INFO, layers=2), r"describes \(2 layer\(s\)"),
    (lambda d: json_edit(d / HEAD_INFO, num_labels="two"), "'num_labels' is \"two\", not an integer"),
    (lambda d: save_file({"weight": onp.full((2, 32), onp.nan, onp.float32),
                          "bias": onp.zeros(2, onp.float32)}, str(d / HEAD_WEIGHTS)),
     "weight holds non-finite values"),
    (lambda d: save_file({"weight": onp.zeros((2, 32), onp.float32)}, str(d / HEAD_WEIGHTS)),
     r"holds \{'weight': \(2, 32\)\}"),
    (lambda d: (d / HEAD_WEIGHTS).write_bytes(b"\x08\x00garbage"), "cannot be read as safetensors"),
])
def test_5_the_head_beside_an_export_is_read_checked(tiny, tmp_path, edit, message):
    out = tmp_path / "x"
    export_adapter(native(tiny, tmp_path / "r"), "adapters", out)
    edit(out)
    with pytest.raises(FormatError, match=message):
        mc.load_adapter(out)


def json_edit(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# --- 6. export is atomic; an export that needs base/ says so ------------------------------------

def test_6_a_failed_export_leaves_the_earlier_one_whole_and_nothing_beside_it(tiny, tmp_path, monkeypatch):
    a = native(tiny, tmp_path / "A")
    x = tmp_path / "X"
    export_adapter(a, "adapters", x)
    before = files(x)
    real = dispatch.write_head

    def failing(*args):
        real(*args)
        raise OSError(errno.ENOSPC, "No space left on device", "somewhere")
    monkeypatch.setattr(dispatch, "write_head", failing)
    with pytest.raises(OSError):
        export_adapter(native(tiny, tmp_path / "B", seed=4), "adapters", x, replace=True)
    with pytest.raises(OSError):
        export_adapter(a, "adapters", tmp_path / "new")
    assert files(x) == before and not (tmp_path / "new").exists()
    assert not stale_siblings(x) and not stale_siblings(tmp_path / "new")


def test_6_an_export_that_needs_base_says_so_and_is_refused_on_another_base(tiny, tmp_path):
    out = tmp_path / "x"
    summary = export_adapter(native(tiny, tmp_path / "r"), "adapters", out)
    assert summary["needs_base"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["needs_base"]["dir"] == BASE and manifest["needs_base"]["digest"].startswith("sha256:")
    assert "base/ (and only it)" in (out / README).read_text()
    assert set(manifest["files"]) == {str(Path(p).relative_to(out)) for p in summary["written"]}
    mc.load_adapter(out)                                       # on its base/
    with pytest.raises(CheckpointError, match="trained together with its base model's layer norms"):
        mc.load_adapter(out, tiny)
    shutil.rmtree(out / BASE)
    with pytest.raises(LoadError, match="base is missing"):
        mc.load_adapter(out)
    no_norms = export_adapter(native(tiny, tmp_path / "n", train_layer_norms=False), "adapters",
                              tmp_path / "y")
    assert not no_norms["needs_base"] and not (tmp_path / "y" / BASE).exists()
    mc.load_adapter(tmp_path / "y", tiny)


@pytest.mark.slow
def test_6_an_interrupted_re_export_leaves_the_earlier_export(tiny, tmp_path):
    a, b = native(tiny, tmp_path / "A"), native(tiny, tmp_path / "B", seed=5)
    x = tmp_path / "X"
    export_adapter(a, "adapters", x)
    before = files(x)
    proc = subprocess.Popen([sys.executable, "-m", "minicompacter", "export", "--checkpoint", str(b),
                             "--to", "adapters", "--out", str(x), "--replace"], cwd=tmp_path,
                            env=dict(os.environ, **{PAUSE_WRITE: "model.safetensors"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "paused writing" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert f"{x} is as it was" in err
    assert files(x) == before and not stale_siblings(x)


# --- 7. a NaN lora_alpha, and an export never writes nan ---------------------------------------------

def test_7_a_nan_lora_alpha_is_refused_and_an_export_never_writes_a_non_finite_tensor(tmp_path):
    config = json.loads((INTEROP / "peft_lora" / peft_lora.CONFIG).read_text())
    with pytest.raises(FormatError, match="'lora_alpha' is NaN, not a finite number"):
        peft_lora.method_config(dict(config, lora_alpha=math.nan), tmp_path, families.FAMILIES["bert"])
    with pytest.raises(NonFiniteError, match="w holds non-finite values"):
        tensor_bytes({"w": onp.array([1.0, onp.inf])})
    with pytest.raises(NonFiniteError, match="beyond float32's range"):
        tensor_bytes({"w": onp.array([1e300])})                  # float64 in, float32 out


# --- 8. a damaged last/state.json cannot change a result -------------------------------------------

@pytest.fixture
def unfinished(tiny, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=16, max_length=32, progress=False)
    method = mc.method_config("compacter++", reduction_factor=8)
    finished_and_unfinished(tmp_path, tiny, TASK, method, cfg, 64, stop_at=5)
    return tmp_path / "unfinished", cfg, method


def resume(tiny, run, cfg, method):
    return mc.finetune(tiny, TASK, method, cfg, train_size=64, out=run, resume=True)


def edit_state(run, **changes):
    path = run / LAST / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.slow
@pytest.mark.parametrize("changes,message", [
    ({"epoch": 99}, "does not describe a point of this run: step 5"),
    ({"step": 3}, "does not describe a point of this run"),
    ({"best": {"score": float("nan"), "epoch": 1, "step": 4}}, "'best' is"),
    ({"best": {}}, "'best' is {}, not an object with score"),
    ({"opt_step": -1}, "'opt_step' is -1, not an integer of at least 0"),
    ({"step": -5}, "state.json: 'step' is -5, not an integer of at least 0"),
    ({"best": {"score": 0.5, "epoch": 3, "step": 12}}, "lies after step 5"),
])
def test_8_13_a_damaged_state_json_is_refused_naming_the_file(tiny, unfinished, changes, message):
    run, cfg, method = unfinished
    edit_state(run, **changes)
    with pytest.raises(ValueError, match=re.escape(message) if "'" in message else message):
        resume(tiny, run, cfg, method)


# --- 9. foreign configs: a clear error, never a traceback --------------------------------------------

def test_9_foreign_configs_of_the_wrong_shape_are_refused_by_field(tmp_path, minilm):
    d = Path(shutil.copytree(INTEROP / "adapterhub_compacter", tmp_path / "a"))
    head = json.loads((d / adapterhub.HEAD_CONFIG).read_text())
    for changed, message in ((({k: v for k, v in head.items() if k != "config"}), "has no 'config'"),
                             ({**head, "config": {**head["config"], "label2id": ["a", "b"]}},
                              "'label2id' is"),
                             ({**head, "config": {**head["config"], "label2id": {"a": 0, "b": "1"}}},
                              "does not give each of the 2 labels one id")):
        (d / adapterhub.HEAD_CONFIG).write_text(json.dumps(changed))
        with pytest.raises(FormatError, match=message):
            mc.load_adapter(d, minilm)
    config = json.loads((INTEROP / "peft_lora" / peft_lora.CONFIG).read_text())
    bert = families.FAMILIES["bert"]
    with pytest.raises(FormatError, match="has no 'r'"):
        peft_lora.method_config({k: v for k, v in config.items() if k != "r"}, "x", bert)
    with pytest.raises(FormatError, match="'target_modules' is 5, not an array of strings"):
        peft_lora.method_config(dict(config, target_modules=5), "x", bert)


# --- 10. bfloat16 (and float16) read exactly everywhere ------------------------------------------

def test_10_bfloat16_adapters_checkpoints_heads_and_models_read_exactly(tiny, tmp_path, minilm):
    d = Path(shutil.copytree(INTEROP / "adapterhub_compacter", tmp_path / "a"))
    held = rewrite(d / adapterhub.WEIGHTS, "BF16")
    held.update(rewrite(d / adapterhub.HEAD_WEIGHTS, "F16"))
    model, trainable, frozen, info = mc.load_adapter(d, minilm)
    name = info["adapter_name"]
    names = adapterhub.adapter_names(trainable, model.method.config, name,
                                     families.FAMILIES["bert"])
    names.update(adapterhub.head_names(trainable["head"], name))
    flat = flatten(trainable)
    for theirs, (ours, transpose) in names.items():
        onp.testing.assert_array_equal(flat[ours], held[theirs].T if transpose else held[theirs])
    run = native(tiny, tmp_path / "r")
    held = rewrite(run / WEIGHTS, "BF16")
    flat = flatten(mc.load_adapter(run, tiny)[1])
    for name, value in held.items():
        onp.testing.assert_array_equal(flat[name], value)
    out = tmp_path / "x"
    export_adapter(run, "adapters", out)
    held = rewrite(out / HEAD_WEIGHTS, "BF16")
    head = mc.load_adapter(out)[1]["head"]
    onp.testing.assert_array_equal(head["w"], held["weight"].T)
    model_dir = write_checkpoint(tmp_path / "model", tiny)
    tensors = load_file(str(model_dir / "model.safetensors"))
    raw = {}
    for k, v in tensors.items():
        raw[k] = ("I64", v.shape, v.tobytes()) if v.dtype == onp.int64 else ("BF16", v.shape, as_bfloat16(v)[1])
    write_raw(model_dir / "model.safetensors", raw)
    loaded = mc.load_pretrained(model_dir)
    want = as_bfloat16(tiny.params["embeddings"]["word"])[0]
    onp.testing.assert_array_equal(loaded.params["embeddings"]["word"], want)


# --- 11. sizes that would exhaust memory are checked first ------------------------------------------

def test_11_memory_fits_refuses_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(checks, "available_memory", lambda: 2 ** 30)
    with pytest.raises(ValueError, match="takes 2.00 GiB, more than the 1.00 GiB of memory available"):
        checks.memory_fits(2 ** 31, "the tree")
    checks.memory_fits(2 ** 29, "the tree")


# --- 12. a model's config.json and tokenizer files ---------------------------------------------------

@pytest.mark.parametrize("changes,message", [
    ({"hidden_dropout_prob": "0.1"}, "hidden_dropout_prob = '0.1' is not valid"),
    ({"hidden_dropout_prob": None}, "hidden_dropout_prob = None is not valid"),
    ({"layer_norm_eps": "1e-12"}, "layer_norm_eps = '1e-12' is not valid"),
    ({"layer_norm_eps": -1e-12}, "layer_norm_eps = -1e-12 is not valid"),
    ({"hidden_size": "32"}, "hidden_size = '32' is not valid"),
])
def test_12_a_models_config_values_are_checked_before_any_work(tiny, tmp_path, changes, message):
    d = write_checkpoint(tmp_path / "model", tiny)
    json_edit(d / "config.json", **changes)
    with pytest.raises(LoadError, match=f"config.json: {message}"):
        mc.load_pretrained(d)


def test_12_17_damaged_tokenizer_files_are_named(tiny, tmp_path):
    d = write_checkpoint(tmp_path / "model", tiny)
    (d / "tokenizer_config.json").write_text("{'pad_token': ")
    with pytest.raises(LoadError, match="tokenizer_config.json is not valid JSON"):
        mc.load_pretrained(d)
    (d / "tokenizer_config.json").unlink()
    (d / "tokenizer.json").write_text('{"version": "1.0", "model": 5}')
    with pytest.raises(LoadError, match="tokenizer.json cannot be read as a tokenizer"):
        mc.load_pretrained(d)


# --- 13, 17. metrics.json and history.json ------------------------------------------------------------

def test_13_17_damaged_metrics_and_history_are_named(tiny, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=16, max_length=32, progress=False)
    run = tmp_path / "run"
    mc.finetune(tiny, TASK, "bitfit", cfg, train_size=32, out=run)
    metrics = json.loads((run / rundir.METRICS).read_text())
    (run / rundir.METRICS).write_text(json.dumps({k: v for k, v in metrics.items() if k != "validation"}))
    with pytest.raises(rundir.RunDirError, match="metrics.json has no 'validation'"):
        rundir.existing_run(run)
    (run / rundir.METRICS).write_text(json.dumps(metrics))
    (run / rundir.HISTORY).write_text('[{"step": 1}, 5]')
    with pytest.raises(rundir.RunDirError, match="history.json is not a list of steps"):
        rundir.finished_metrics(run)
    (run / rundir.HISTORY).write_text("[{")
    with pytest.raises(rundir.RunDirError, match="history.json is not valid JSON"):
        mc.finetune(tiny, TASK, "bitfit", cfg, train_size=32, out=run)


# --- 14. a long field -------------------------------------------------------------------------------

def test_14_a_field_over_csvs_limit_is_read(tmp_path):
    long = "word " * 40000                                       # 200,000 characters
    write_tsv(tmp_path / "train.tsv", ["sentence", "label"], [[long, "1"], ["short", "0"]])
    assert read_tsv(tmp_path / "train.tsv", get_task("sst2"))["sentence"][0] == long


# --- 15. a burst of Ctrl-C -----------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("gap", [0.005, 0.01, 0.02])
def test_15_a_burst_of_interrupts_ends_the_run_with_no_traceback(tmp_path, gap):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "minicompacter", "finetune", "--task", TASK,
                             "--method", "bitfit", "--model", "tiny", "--train-size", "64",
                             "--epochs", "3", "--batch-size", "16", "--max-length", "32",
                             "--no-progress", "--out", str(out)], cwd=tmp_path,
                            env=dict(os.environ, **{PAUSE_WRITE: "state.json:2"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "paused writing" in line:
            break
    for _ in range(4):
        proc.send_signal(signal.SIGINT)
        time.sleep(gap)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "lost sys.stderr" not in err, err
    assert "holds the run stopped at step" in err
    mc.load_adapter(out, mc.load_pretrained("tiny"))


# --- 16. error classes ----------------------------------------------------------------------------------

def test_16_the_disk_space_advice_is_for_a_full_disk_only():
    full = cli.environment_message(OSError(errno.ENOSPC, "No space left on device", "/x/a"))
    assert full.startswith("/x/a: No space left on device.") and "free the space" in full
    for code, cause in ((errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system"),
                        (errno.EIO, "Input/output error")):
        line = cli.environment_message(OSError(code, cause, "/x/b"))
        assert line.startswith(f"/x/b: {cause}.") and "free the space" not in line


def test_16_19_a_data_file_that_is_a_directory_or_a_fifo_is_named_and_not_waited_on(tmp_path):
    (tmp_path / "train.tsv").mkdir()
    with pytest.raises(DataError, match="train.tsv is a directory; it must be a file"):
        read_tsv(tmp_path / "train.tsv", get_task("sst2"))
    os.mkfifo(tmp_path / "dev.tsv")
    start = time.monotonic()
    with pytest.raises(DataError, match="dev.tsv is not a regular file"):
        read_tsv(tmp_path / "dev.tsv", get_task("sst2"))
    assert time.monotonic() - start < 5


# --- 18. messages that say what is wrong ----------------------------------------------------------------

def test_18_a_model_with_too_few_positions_is_told_it_cannot_be_used():
    cfg = mc.EncoderConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2,
                           intermediate_size=8, max_positions=4)
    with pytest.raises(ValueError, match="hold rows of at most 4 tokens.*this model cannot be used"):
        checks.max_length_fits(8, cfg)


def test_18_a_data_dir_that_is_a_file_is_called_a_file(tmp_path):
    (tmp_path / "glue").write_text("x")
    with pytest.raises(DataError, match="glue is a file, not a directory"):
        mc.load_task("rte", data_dir=tmp_path / "glue")


def test_18_a_weight_decay_that_flips_the_weights_is_refused_by_name(tiny):
    with pytest.raises(ValueError, match="weight_decay 1000 \\(--weight-decay\\) with learning rate 0.003"):
        mc.finetune(tiny, TASK, "bitfit", TrainConfig(weight_decay=1000.0, lr=0.003), train_size=8)


# --- 19. accepted though wrong ---------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["\u0967", "0_5", " 1", "+1", "1.0"])
def test_19_labels_are_ascii_digits_only(label):
    with pytest.raises(DataError, match="unknown label"):
        parse_label(label, get_task("sst2"), "here")
    assert parse_label("1", get_task("sst2"), "here") == 1
    assert parse_label("4e-1", get_task("stsb"), "here") == 0.4
    with pytest.raises(DataError):
        parse_label("\u0967.5", get_task("stsb"), "here")


def test_19_int_weights_are_refused_but_an_int_buffer_is_skipped(tiny, tmp_path):
    d = write_checkpoint(tmp_path / "model", tiny)          # its position_ids are int64: skipped
    mc.load_pretrained(d)
    tensors = load_file(str(d / "model.safetensors"))
    tensors["embeddings.word_embeddings.weight"] = tensors["embeddings.word_embeddings.weight"].astype(onp.int64)
    save_file(tensors, str(d / "model.safetensors"))
    with pytest.raises(LoadError, match="'embeddings.word_embeddings.weight' is stored as 'I64'"):
        mc.load_pretrained(d)


def test_19_a_head_is_scored_only_on_its_tasks_labels():
    config = {"task": "cola", "num_labels": 2}
    with pytest.raises(ValueError, match="was trained on cola.*wnli is sentence pairs"):
        task_fits("run", config, get_task("wnli"))
    task_fits("run", {"task": "sst2", "num_labels": 2}, get_task("synthetic-sentiment"))   # same labels


def test_19_a_directory_with_two_formats_is_refused(tiny, tmp_path):
    run = native(tiny, tmp_path / "r")
    shutil.copy(INTEROP / "peft_lora" / peft_lora.CONFIG, run)
    with pytest.raises(CheckpointError, match="holds the files of minicompacter and peft checkpoints"):
        mc.load_adapter(run, tiny)


@pytest.mark.slow
def test_19_an_unfinished_run_is_noticed_when_evaluated(tiny, tmp_path, capsys):
    cfg = TrainConfig(epochs=2, batch_size=16, max_length=32, progress=False)
    method = mc.method_config("compacter++", reduction_factor=8)
    finished_and_unfinished(tmp_path, tiny, TASK, method, cfg, 32, stop_at=3)
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "unfinished")]) == 0
    err = capsys.readouterr().err
    assert "notice:" in err and "holds an unfinished run (stopped at step 3" in err
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "finished")]) == 0
    assert "notice:" not in capsys.readouterr().err


# --- 20. the documented way out works on the default run ----------------------------------------------

def test_20_the_interop_commands_use_only_runs_made_before_them_and_flags_that_exist():
    text = (ROOT / "docs" / "interop.md").read_text()
    commands = [l for l in re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines() if l]
    made, parser = set(), cli.build_parser()
    for line in commands:
        argv = shlex.split(line)[3:]
        for flag in ("--checkpoint",):
            if flag in argv:
                assert argv[argv.index(flag) + 1] in made, line
        parser.parse_args([a if a != "$GLUE_DIR" else "glue" for a in argv])   # every flag exists
        if "--out" in argv:
            made.add(argv[argv.index("--out") + 1])
    assert "runs/sst2" in made and "runs/sst2-adapterhub" in made
    code = re.search(r"<!-- default-run: python -->\n```py\n(.*?)```", text, re.S).group(1)
    for needed in ("AutoTokenizer", "/base", "minicompacter_head.safetensors", "attention_mask",
                   "logits ="):
        assert needed in code, needed
    compile(code, "docs/interop.md", "exec")                    # it is Python
