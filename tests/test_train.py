"""The training loop, checkpoints and the command line on the tiny model and the
synthetic suite (fast), plus one real run of MiniLM with Compacter++ against the
majority-class baseline."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as onp
import pytest

import minicompacter as mc
from minicompacter.core import model as model_lib
from minicompacter.harness.data import tasks as data_lib
from minicompacter.harness.formats.dispatch import load_adapter
from minicompacter.harness.formats.files import CheckpointError, read_tensors
from minicompacter.harness.formats.native import CONFIG, WEIGHTS
from minicompacter.harness.data.metrics import majority_baseline
from minicompacter.harness.training.evaluate import evaluate_checkpoint
from minicompacter.harness.training.train import TrainConfig, TrainingError, finetune

from conftest import needs_minilm, stop_after

ROOT = Path(__file__).resolve().parents[1]
TASK = "synthetic-sentiment"
METHOD = mc.method_config("compacter++", reduction_factor=8)
CFG = TrainConfig(epochs=2, batch_size=16, max_length=32, progress=False)
METRICS_KEYS = {"task", "method", "model", "seed", "trainable_params", "total_params", "percent",
                "validation", "test", "validation_examples", "test_examples", "best_epoch", "epochs",
                "stopped_early", "train_seconds", "peak_memory_mb", "config"}


@pytest.fixture(scope="module")
def tiny():
    return mc.load_pretrained("tiny")


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, finetune(tiny, TASK, METHOD, CFG, train_size=160, out=out)


def test_metrics_json_schema_and_files(run):
    out, m = run
    written = json.loads((out / "metrics.json").read_text())
    assert set(written) == METRICS_KEYS
    assert written["task"] == TASK and written["method"] == "compacter++" and written["model"] == "tiny"
    assert set(written["validation"]) == {"accuracy", "score"} == set(written["test"])
    assert written["percent"] == pytest.approx(100 * written["trainable_params"] / written["total_params"], abs=1e-4)
    assert 1 <= written["best_epoch"] <= 2 and written["peak_memory_mb"] > 50
    for f in (WEIGHTS, CONFIG, "last/state.json",
              "last/trainable.safetensors", "last/optimizer.safetensors", "history.json"):
        assert (out / f).exists(), f
    assert not list(out.glob(".*.tmp"))                       # no temporary file left behind


def test_history_has_every_step_and_each_epoch(run):
    _, m = run
    steps = [h for h in m["history"] if "loss" in h]
    assert [h["step"] for h in steps] == list(range(1, 21))     # 160 / 16 = 10 steps per epoch
    assert all(onp.isfinite(h["loss"]) and h["lr"] >= 0 for h in steps)
    assert [h["epoch"] for h in m["history"] if "validation" in h] == [0, 1]


def test_checkpoint_holds_only_the_trainable_tree(run, tiny):
    out, m = run
    names = set(read_tensors(out / WEIGHTS))
    assert "layers.1.ffn_adapter.down.s" in names and "shared.A" in names and "head.w" in names
    assert not any(n.startswith(("embeddings.word", "layers.0.attention.")) for n in names)
    assert sum(read_tensors(out / WEIGHTS)[n].size for n in names) == m["trainable_params"]


@pytest.mark.slow
def test_evaluate_gives_the_same_numbers(run):
    out, m = run
    assert evaluate_checkpoint(out) == {"validation": m["validation"], "test": m["test"]}
    cli = subprocess.run([sys.executable, "-m", "minicompacter", "evaluate", "--checkpoint", str(out),
                          "--task", TASK], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout.splitlines()[-1]) == {"validation": m["validation"], "test": m["test"]}
    assert f"test: accuracy {m['test']['accuracy']:.4f}, score" in cli.stdout     # the human lines
    assert cli.stdout.startswith("trainable params: ")


def test_training_lowers_the_loss(tiny):
    m = finetune(tiny, TASK, METHOD, TrainConfig(epochs=4, batch_size=16, lr=1e-2, progress=False,
                                                  max_length=32), train_size=96)
    losses = [h["loss"] for h in m["history"] if "loss" in h]
    assert onp.mean(losses[-6:]) < onp.mean(losses[:6])


needs_linux_peak = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                                      reason="resetting the peak needs Linux's /proc/self/clear_refs")


def in_fresh_process(code):
    """Run `code` in a new interpreter (a peak reached by earlier tests, or memory they left
    resident, would hide what is measured here) and return what it prints as JSON."""
    prelude = ("import json, numpy as onp\n"
               "from minicompacter.harness.training.process import peak_memory_mb, reset_peak_memory\n"
               "touch_mb = lambda mb: onp.ones(mb * 2 ** 20 // 8)   # every page written\n")
    done = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_linux_peak
def test_peak_memory_counts_from_its_reset():
    got = in_fresh_process(
        "big = touch_mb(400); high = peak_memory_mb(); del big\n"
        "reset = reset_peak_memory(); low = peak_memory_mb()\n"
        "again = touch_mb(200); later = peak_memory_mb()\n"
        "print(json.dumps(dict(high=high, reset=reset, low=low, later=later)))")
    assert got["reset"]
    assert got["high"] - got["low"] > 300                     # the 400 MB are forgotten
    assert got["later"] - got["low"] > 150                    # and a new peak is counted


@pytest.mark.slow
@needs_linux_peak
def test_finetune_peak_leaves_out_what_came_before_training():
    got = in_fresh_process(
        "import minicompacter as mc\n"
        "from minicompacter.harness.training.train import TrainConfig, finetune\n"
        "tiny = mc.load_pretrained('tiny')\n"
        "big = touch_mb(800); high = peak_memory_mb(); del big   # as reading a large file would\n"
        "m = finetune(tiny, 'synthetic-sentiment', mc.method_config('compacter++', reduction_factor=8),\n"
        "             TrainConfig(epochs=1, batch_size=16, max_length=32, progress=False), train_size=64)\n"
        "print(json.dumps(dict(high=high, peak=m['peak_memory_mb'])))")
    assert got["peak"] < got["high"] - 600                    # the 800 MB are not in it


@pytest.mark.slow
def test_resume_after_an_interrupt_gives_the_same_result(tiny, run, tmp_path):
    _, reference = run
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny, TASK, METHOD, CFG, train_size=160, out=out, on_step=stop_after(13))
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["step"] == 13 and state["epoch"] == 1 and state["batch_in_epoch"] == 3
    resumed = finetune(tiny, TASK, METHOD, CFG, train_size=160, out=out, resume=True)
    for key in ("validation", "test", "best_epoch", "trainable_params"):
        assert resumed[key] == reference[key], key
    strip = lambda h: [{k: v for k, v in x.items()} for x in h]
    assert strip(resumed["history"]) == strip(reference["history"])


@pytest.mark.slow
def test_resume_works_for_lora_and_ignores_progress_bars(tiny, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=16, max_length=32, progress=False)
    out = tmp_path / "lora"
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny, TASK, "lora", cfg, train_size=64, out=out, on_step=stop_after(3))
    import dataclasses
    m = finetune(tiny, TASK, "lora", dataclasses.replace(cfg, progress=True), train_size=64,
                 out=out, resume=True)
    assert len([h for h in m["history"] if "loss" in h]) == 8


def test_resume_needs_the_same_settings_and_a_last_checkpoint(tiny, run, tmp_path):
    out, _ = run
    with pytest.raises(ValueError, match="other settings"):
        finetune(tiny, TASK, METHOD, CFG, train_size=100, out=out, resume=True)
    with pytest.raises(ValueError, match="nothing to resume"):
        finetune(tiny, TASK, METHOD, CFG, train_size=160, out=tmp_path / "new", resume=True)


def test_non_finite_loss_stops_and_the_best_checkpoint_stays_whole(tiny, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = model_lib.loss_and_grad
    def failing_loss_and_grad(*args, **kw):
        calls["n"] += 1
        value, grads = real(*args, **kw)
        return (value * onp.nan if calls["n"] > 14 else value), grads   # step 15 is in epoch 2
    monkeypatch.setattr(model_lib, "loss_and_grad", failing_loss_and_grad)
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"loss became nan at step 15 \(epoch 2\); training stopped.*intact"):
        finetune(tiny, TASK, METHOD, CFG, train_size=160, out=out)
    monkeypatch.undo()
    best, last = read_tensors(out / WEIGHTS), read_tensors(out / "last" / "trainable.safetensors")
    assert best.keys() == last.keys() and all((best[k] == last[k]).all() for k in best)
    assert not (out / "metrics.json").exists()
    load_adapter(out, tiny)                                     # whole and loadable


def test_the_final_metrics_come_from_the_tree_in_memory(tiny, run, tmp_path, monkeypatch):
    from minicompacter.harness.training import train
    def no_reading(*args, **kw):
        raise AssertionError("a run that was not resumed read a checkpoint back")
    monkeypatch.setattr(train, "load_adapter", no_reading)
    m = finetune(tiny, TASK, METHOD, CFG, train_size=160, out=tmp_path / "again")
    assert m["test"] == run[1]["test"] and m["validation"] == run[1]["validation"]


def nan_validations(monkeypatch, which):
    """The model's outputs are nan in the evaluations numbered in `which` (1: the validation
    after epoch 1, 2: after epoch 2; the final ones come after)."""
    from minicompacter.harness.training import evaluate
    real, calls = evaluate.predictions, {"n": 0}
    def nan_outputs(trainable, frozen, batch, model, rng=None):
        return onp.full((len(batch["input_ids"]), model.num_labels), onp.nan)
    def predictions(*args, **kw):
        calls["n"] += 1
        with monkeypatch.context() as patch:
            if calls["n"] in which:
                patch.setattr(evaluate, "predict", nan_outputs)
            return real(*args, **kw)
    monkeypatch.setattr(evaluate, "predictions", predictions)


def test_a_validation_with_non_finite_outputs_scores_nan_and_is_never_the_best(tiny, tmp_path,
                                                                                monkeypatch):
    nan_validations(monkeypatch, {1})
    m = finetune(tiny, TASK, METHOD, CFG, train_size=160, out=tmp_path / "run")
    first, second = [h["validation"] for h in m["history"] if "validation" in h]
    assert onp.isnan(first["score"]) and first["non_finite_outputs"]
    assert m["best_epoch"] == 2 and m["validation"]["score"] == second["score"]


def test_a_run_whose_validations_are_all_non_finite_keeps_no_checkpoint(tiny, tmp_path,
                                                                         monkeypatch):
    nan_validations(monkeypatch, {1, 2})
    with pytest.raises(TrainingError, match="no validation gave a finite score; training stopped. "
                                            r"No checkpoint was kept"):
        finetune(tiny, TASK, METHOD, CFG, train_size=160, out=tmp_path / "run")
    assert not (tmp_path / "run" / CONFIG).exists()


def test_a_loss_that_is_non_finite_at_once_claims_no_checkpoint(tiny, tmp_path, monkeypatch):
    real = model_lib.loss_and_grad
    monkeypatch.setattr(model_lib, "loss_and_grad",
                        lambda *a, **k: (onp.inf, real(*a, **k)[1]))
    with pytest.raises(TrainingError) as caught:
        finetune(tiny, TASK, METHOD, CFG, train_size=160, out=tmp_path / "run")
    assert "the loss became inf at step 1 (epoch 1)" in str(caught.value)
    assert "No checkpoint was kept" in str(caught.value) and "intact" not in str(caught.value)


def test_checkpoint_errors(run, tiny, tmp_path):
    out, _ = run
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    tensors = read_tensors(bad / WEIGHTS)
    from safetensors.numpy import save_file
    save_file({k: v for k, v in tensors.items() if k != "shared.A"}, str(bad / WEIGHTS))
    with pytest.raises(CheckpointError, match=r"missing tensors \['shared.A'\]"):
        load_adapter(bad, tiny)
    tensors["shared.A"] = onp.zeros((2, 2, 2), onp.float32)
    save_file(tensors, str(bad / WEIGHTS))
    with pytest.raises(CheckpointError, match=r"shared.A has shape \(2, 2, 2\), the model needs \(4, 4, 4\)"):
        load_adapter(bad, tiny)
    (bad / WEIGHTS).write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="cannot be read as safetensors"):
        load_adapter(bad, tiny)
    other = tiny._replace(config=tiny.config.__class__(**{**vars(tiny.config), "num_layers": 3}))
    with pytest.raises(CheckpointError, match=r"trained on base model 'tiny'.*num_layers"):
        load_adapter(out, other)
    with pytest.raises(CheckpointError, match=f"{CONFIG} does not exist"):
        load_adapter(tmp_path, tiny)


def test_a_failed_run_overwrites_nothing(run, tiny, tmp_path):
    out, _ = run
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="Unknown task"):
        finetune(tiny, "no-such-task", METHOD, CFG, out=out)
    with pytest.raises(ValueError, match="phm_dim 4 does not divide"):
        finetune(tiny, TASK, "compacter", CFG, out=out)
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


# --- the command line ---------------------------------------------------------------------

def cli(*args, cwd=ROOT, **kw):
    return subprocess.run([sys.executable, "-m", "minicompacter", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600, **kw)


@pytest.mark.slow
def test_cli_finetune_and_clear_errors(tmp_path):
    out = cli("finetune", "--task", TASK, "--method", "lora", "--model", "tiny", "--train-size", "64",
              "--epochs", "1", "--no-progress", "--out", str(tmp_path / "lora"))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "lora" / "metrics.json").read_text())["method"] == "lora"
    bad = cli("finetune", "--task", "sst3", "--method", "lora", "--model", "tiny", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "Unknown task 'sst3'" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli("finetune", "--task", TASK, "--method", "loraa", "--model", "tiny", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "Unknown method 'loraa'" in bad.stderr
    bad = cli("finetune", "--task", TASK, "--method", "lora", "--model", "tiny", "--out",
              str(tmp_path / "y"), "--resume")
    assert bad.returncode == 2 and "nothing to resume" in bad.stderr


def wait_for(path, proc, timeout=120):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.time() - start < timeout
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_run_leaves_a_whole_checkpoint_and_resumes(tiny, tmp_path, sig):
    out = tmp_path / "run"
    args = ["finetune", "--task", TASK, "--method", "compacter++", "--reduction-factor", "8",
            "--model", "tiny", "--train-size", "320", "--epochs", "12", "--batch-size", "16",
            "--max-length", "32", "--no-progress", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "minicompacter", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / CONFIG, proc)                              # the first best checkpoint
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "continue with the same command and --resume" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    load_adapter(out, tiny)                                    # the best checkpoint is whole
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == 12 and len([h for h in json.loads((out / "history.json").read_text())
                                      if "loss" in h]) == 240


@pytest.mark.slow
def test_compare_and_demo_on_tiny(tmp_path):
    out = cli("compare", "--task", TASK, "--methods", "bitfit,lora", "--model", "tiny",
              "--train-size", "64", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "cmp"))
    assert out.returncode == 0, out.stderr
    assert "| bitfit |" in out.stdout and "| lora |" in out.stdout
    assert (tmp_path / "cmp" / "params_vs_score.png").stat().st_size > 1000
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["method"] for r in rows] == ["bitfit", "lora"]
    bad = cli("compare", "--task", TASK, "--methods", "bitfit,nope", "--model", "tiny")
    assert bad.returncode == 2 and "Unknown method 'nope'" in bad.stderr


@pytest.mark.slow
def test_demo_on_tiny(tmp_path):
    out = cli("demo", "--model", "tiny", "--no-progress", "--out", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr
    for name in ("full", "adapter", "compacter", "compacter++", "bitfit", "lora"):
        assert f"| {name} |" in out.stdout
    assert (tmp_path / "demo" / "params_vs_score.png").exists()
    table = out.stdout[out.stdout.index("| method |"):out.stdout.index("score: the test split")]
    assert "| best epoch |" in table and table.count("/10 |") == 6    # the tiny demo: 10 epochs
    again = cli("demo", "--model", "tiny", "--no-progress", "--out", str(tmp_path / "demo"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("not trained again") == 6 and table in again.stdout


@pytest.mark.slow
def test_a_relative_model_path_is_recorded_absolute_and_evaluate_can_name_the_model(tiny, tmp_path):
    from conftest import write_checkpoint
    (tmp_path / "a").mkdir()
    write_checkpoint(tmp_path / "a" / "base", tiny)
    run = cli("finetune", "--task", TASK, "--method", "bitfit", "--model", "base", "--train-size",
              "32", "--epochs", "1", "--max-length", "32", "--no-progress", "--out", "run",
              cwd=tmp_path / "a")
    assert run.returncode == 0, run.stderr
    config = json.loads((tmp_path / "a" / "run" / CONFIG).read_text())
    assert config["base_model"]["path"] == str((tmp_path / "a" / "base").resolve())
    elsewhere = cli("evaluate", "--checkpoint", str(tmp_path / "a" / "run"), cwd=tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr
    (tmp_path / "a" / "base").rename(tmp_path / "moved")
    lost = cli("evaluate", "--checkpoint", "a/run", cwd=tmp_path)
    assert lost.returncode == 2 and "could not be found here" in lost.stderr and "--model" in lost.stderr
    assert "Traceback" not in lost.stderr
    named = cli("evaluate", "--checkpoint", "a/run", "--model", "moved", cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert named.stdout.splitlines()[-1] == elsewhere.stdout.splitlines()[-1]


# --- a real run ---------------------------------------------------------------------------

@pytest.mark.slow
@needs_minilm
def test_minilm_compacterpp_beats_the_majority_class_by_far(minilm):
    m = finetune(minilm, TASK, "compacter++", TrainConfig(epochs=3, max_length=64, progress=False),
                 train_size=600)
    d = data_lib.load_task(TASK, train_size=600)
    base = majority_baseline("accuracy", d["train"]["label"], d["test"]["label"])
    assert base["accuracy"] <= 0.6 and m["test"]["accuracy"] >= base["accuracy"] + 0.2
