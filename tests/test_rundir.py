"""An output directory and what becomes of it: the one rule for an existing --out, the lock,
last/ replaced as a whole, files with the umask's mode, interrupts held while a step is
recorded; and a failed write reported as one clear line."""

import dataclasses
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as onp
import pytest

import minicompacter as mc
from minicompacter.core.tree import flatten
from minicompacter.harness.formats import files
from minicompacter.harness.formats.files import atomic_write
from minicompacter.harness.formats.native import CONFIG, LAST, WEIGHTS, last_dir, load_last, save_last
from minicompacter.harness.training import interrupts, rundir
from minicompacter.harness.training.train import TrainConfig, finetune, run_settings

from conftest import finished_and_unfinished

TASK = "synthetic-sentiment"
METHOD = mc.method_config("compacter++", reduction_factor=8)
CFG = TrainConfig(epochs=2, batch_size=16, max_length=32, progress=False)


def settings(**train):
    return run_settings(TASK, METHOD, dataclasses.replace(CFG, **train), "tiny", train_size=64)


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    """A finished run, an unfinished one (stopped after 3 steps) and a bare checkpoint."""
    root = tmp_path_factory.mktemp("runs")
    finished_and_unfinished(root, tiny, TASK, METHOD, CFG, 64, stop_at=3)
    bare = root / "bare"
    bare.mkdir()
    for name in (WEIGHTS, CONFIG):
        (bare / name).write_bytes((root / "finished" / name).read_bytes())
    return root


RULE = [   # (what the directory holds, the settings' seed, resume, replace, the outcome)
    ("nothing", 0, False, False, "new"),
    ("nothing", 0, True, False, "nothing to resume"),
    ("nothing", 0, False, True, "new"),
    ("finished", 0, False, False, "finished"),
    ("finished", 0, True, False, "finished"),
    ("finished", 1, False, False, r"finished run with other settings \(train.seed: 0 in the run, 1 now\)"),
    ("finished", 1, True, False, "finished run with other settings"),
    ("finished", 1, False, True, "new"),
    ("unfinished", 0, False, False, r"unfinished run \(stopped at step 3, in epoch 1\) with these settings: continue it with --resume"),
    ("unfinished", 0, True, False, "resume"),
    ("unfinished", 1, True, False, "unfinished run .* with other settings .*resume it with the arguments"),
    ("unfinished", 0, False, True, "new"),
    ("bare", 0, False, False, "holds a minicompacter checkpoint without last/"),
    ("bare", 0, True, False, "no run to resume"),
]


@pytest.mark.parametrize("held,seed,resume,replace,outcome", RULE)
def test_the_one_rule_for_an_existing_output_directory(runs, tmp_path, held, seed, resume,
                                                       replace, outcome):
    path = tmp_path / "empty" if held == "nothing" else runs / held
    path.mkdir(exist_ok=True)
    if outcome in ("new", "finished", "resume"):
        decision = rundir.decide(path, settings(seed=seed), resume=resume, replace=replace)
        assert decision.kind == outcome and decision.replace == replace
    else:
        with pytest.raises(rundir.RunDirError, match=outcome):
            rundir.decide(path, settings(seed=seed), resume=resume, replace=replace)


def test_settings_that_do_not_change_the_run_are_not_compared(runs):
    assert rundir.decide(runs / "finished", settings(progress=True, layer_set="plain")).kind == "finished"


def test_a_finished_run_is_returned_not_trained_again(runs, tiny, monkeypatch):
    from minicompacter.harness.training import train
    before = {p: p.read_bytes() for p in (runs / "finished").rglob("*") if p.is_file()}
    monkeypatch.setattr(train, "train", None)          # training would fail
    again = finetune(tiny, TASK, METHOD, CFG, train_size=64, out=runs / "finished")
    recorded = json.loads((runs / "finished" / rundir.METRICS).read_text())
    assert again["finished_before"] and again["test"] == recorded["test"]
    assert again["history"] == json.loads((runs / "finished" / rundir.HISTORY).read_text())
    saved = files.read_tensors(runs / "finished" / WEIGHTS)
    assert {k: v.tolist() for k, v in flatten(again["trainable"]).items()} == \
        {k: v.tolist() for k, v in saved.items()}
    assert before == {p: p.read_bytes() for p in (runs / "finished").rglob("*") if p.is_file()}


def test_replace_discards_only_the_runs_files_and_only_once_the_checks_pass(runs, tiny, tmp_path):
    import shutil
    out = shutil.copytree(runs / "finished", tmp_path / "out")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="Unknown task"):
        finetune(tiny, "nope", METHOD, CFG, train_size=64, out=out, replace=True)
    assert (out / WEIGHTS).exists() and (out / rundir.METRICS).exists()
    m = finetune(tiny, TASK, METHOD, dataclasses.replace(CFG, seed=1), train_size=64, out=out,
                 replace=True)
    assert m["seed"] == 1 and json.loads((out / rundir.METRICS).read_text())["seed"] == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_the_lock_refuses_a_second_holder_names_the_first_and_is_released(tmp_path):
    path, created = rundir.make_out(tmp_path / "a" / "b")
    assert created and path.is_dir()
    with rundir.locked(path):
        with pytest.raises(rundir.RunDirError, match=f"in use by another run \\(process {os.getpid()}\\)"):
            with rundir.locked(path):
                pass
        other = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                                "from minicompacter.harness.training.rundir import locked\n"
                                f"with locked(Path({str(path)!r})): pass"],
                               capture_output=True, text=True, timeout=120)
        assert other.returncode != 0 and "in use by another run" in other.stderr
    with rundir.locked(path):                                  # released
        pass


def test_a_directory_the_run_created_is_removed_when_it_fails_before_writing(tmp_path):
    with pytest.raises(KeyError):
        with rundir.claimed(tmp_path / "new", settings()):
            raise KeyError("a failure before the first step")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyError):
        with rundir.claimed(tmp_path / "kept", settings()):
            raise KeyError
    assert (tmp_path / "kept").is_dir()


def test_stale_temporary_files_of_a_killed_writer_are_removed_by_the_next_holder(tmp_path):
    (tmp_path / f".{WEIGHTS}.1234abcd.tmp").write_bytes(b"half")
    (tmp_path / "keep.tmp").write_bytes(b"not ours")
    (tmp_path / ".notes.tmp").write_bytes(b"not ours either")
    with rundir.claimed(tmp_path, settings()) as decision:
        assert decision.kind == "new"
    assert sorted(p.name for p in tmp_path.glob("*.tmp")) == [".notes.tmp", "keep.tmp"]


# --- last/ as a whole, and the files' mode ---------------------------------------------------------

def small_state(step):
    tree = {"w": onp.full(3, float(step), onp.float32)}
    opt = {"step": step, "m": {"w": onp.zeros(3, onp.float32)}, "v": {"w": onp.ones(3, onp.float32)}}
    state = {"step": step, "epoch": 0, "batch_in_epoch": step, "seed": 0, "history": [],
             "best": None, "train_seconds": 0.0}
    return tree, opt, state


def test_last_is_replaced_as_a_whole_even_when_killed_between_its_renames(tmp_path):
    save_last(tmp_path, *small_state(1))
    like = {"w": onp.zeros(3, onp.float32)}
    # killed after last/ became last.old/ and before last.new/ became last/
    save_last(tmp_path, *small_state(2))
    os.replace(tmp_path / LAST, tmp_path / (LAST + ".new"))
    assert last_dir(tmp_path) == tmp_path / (LAST + ".new")
    trainable, opt, state = load_last(tmp_path, like)
    assert state["step"] == 2 and opt["step"] == 2 and (trainable["w"] == 2).all()
    save_last(tmp_path, *small_state(3))                       # settles, then writes
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST]
    assert load_last(tmp_path, like)[2]["step"] == 3
    # killed while last.new/ was being written: last/ is the whole state before
    (tmp_path / (LAST + ".new")).mkdir()
    (tmp_path / (LAST + ".new") / "trainable.safetensors").write_bytes(b"half")
    assert load_last(tmp_path, like)[2]["step"] == 3


def test_files_are_created_with_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.json", "{}")
        save_last(tmp_path, *small_state(1))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / LAST / "state.json").stat().st_mode) == 0o640


def test_a_write_interrupted_in_the_middle_leaves_the_old_file(tmp_path, monkeypatch):
    atomic_write(tmp_path / WEIGHTS, b"old")
    monkeypatch.setenv(files.PAUSE_WRITE, WEIGHTS)
    monkeypatch.setattr(files, "_writes", files.Counter())
    monkeypatch.setattr(interrupts, "pending", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / WEIGHTS, b"new bytes")
    assert (tmp_path / WEIGHTS).read_bytes() == b"old" and not list(tmp_path.glob(".*.tmp"))


# --- interrupts ------------------------------------------------------------------------------------

def test_sigterm_is_ctrl_c_while_handled_held_while_deferred_and_restored_after():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with interrupts.handled():
        with pytest.raises(interrupts.Terminated) as caught:
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                done = "the deferred block ran to its end"
        assert done and interrupts.exit_code(caught.value) == 143
    with interrupts.handled():
        with pytest.raises(KeyboardInterrupt) as caught:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)                                      # the handler raises first
        assert not isinstance(caught.value, interrupts.Terminated)
        assert interrupts.exit_code(caught.value) == 130 and not interrupts.pending()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_once_an_interrupt_is_raised_the_next_ones_are_held_not_raised():
    """A burst of Ctrl-C: the first raises, the rest arrive while the process is on its way
    out (saving last/, printing what is on disk) and are held, never raised inside that
    work; the next handled() block raises again."""
    with interrupts.handled():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        for _ in range(3):                                     # the rest of the burst
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        with interrupts.deferred():
            pass                                               # held, and not raised here either
        assert interrupts.pending()
    with interrupts.handled():
        assert not interrupts.pending()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)


def test_a_failed_write_is_one_clear_line_and_the_checkpoint_stays(tmp_path, monkeypatch, capsys):
    from minicompacter.harness import cli
    from minicompacter.harness.training import train
    out = tmp_path / "run"
    calls = {"n": 0}
    real = train.save_last

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.EFBIG, "File too large", str(out / LAST / "trainable.safetensors"))
        return real(*args)
    monkeypatch.setattr(train, "save_last", failing)
    code = cli.main(["finetune", "--task", TASK, "--method", "compacter++", "--reduction-factor", "8",
                     "--model", "tiny", "--train-size", "64", "--epochs", "3", "--batch-size", "16",
                     "--max-length", "32", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "trainable.safetensors: File too large" in err and "--resume" in err
    mc.load_adapter(out, mc.load_pretrained("tiny"))           # the best checkpoint is whole
