"""Training you can watch: a line per validation (printed and in DIR/train.log), DIR/curves.png,
--patience (stopping, recorded, resumed exactly), progress bars only where someone watches."""

import io
import json
import re
import struct
import sys
import types

import pytest

import minicompacter as mc
from minicompacter.harness.training import process, watch
from minicompacter.harness.training.rundir import differences
from minicompacter.harness.training.train import TrainConfig, finetune

from conftest import stop_after

TASK = "synthetic-sentiment"
METHOD = mc.method_config("compacter++", reduction_factor=8)
CFG = TrainConfig(epochs=2, batch_size=16, max_length=32, progress=False)
LINE = re.compile(r"epoch (\d+)/(\d+) step (\d+): training loss ([0-9.]+); validation "
                  r"accuracy ([0-9.]+), score ([0-9.]+) \((new best|best ([0-9.]+) at epoch (\d+))\); "
                  r"\d+ s")


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    out = tmp_path_factory.mktemp("watched")
    lines = []
    m = finetune(mc.load_pretrained("tiny"), TASK, METHOD, CFG, train_size=64, out=out,
                 log=lines.append)
    return out, m, lines


def png_size_and_dpi(data):
    """(width, height, dots per inch) of a PNG, from its IHDR and pHYs chunks."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = {}, 8
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        chunks[kind] = data[i + 8:i + 8 + n]
        i += 12 + n
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    per_metre = struct.unpack(">I", chunks[b"pHYs"][:4])[0]
    return width, height, per_metre * 0.0254


def test_a_line_per_validation_with_what_it_found(watched):
    out, m, lines = watched
    history = m["history"]
    validations = [(i, h) for i, h in enumerate(history) if "validation" in h]
    found = [LINE.fullmatch(line) for line in lines if line.startswith("epoch ")]
    assert len(found) == len(validations) == 2 and all(found), lines
    best, previous = None, -1
    for match, (i, h) in zip(found, validations):
        losses = [r["loss"] for r in history[previous + 1:i] if "loss" in r]
        previous = i
        assert int(match[1]) == h["epoch"] + 1 and int(match[2]) == 2 and int(match[3]) == h["step"]
        assert float(match[4]) == pytest.approx(sum(losses) / len(losses), abs=5e-5)
        assert float(match[5]) == pytest.approx(h["validation"]["accuracy"], abs=5e-5)
        new = best is None or h["validation"]["score"] > best
        best = h["validation"]["score"] if new else best
        assert (match[7] == "new best") == new and (new or float(match[8]) == pytest.approx(best, abs=5e-5))
    assert lines[0].startswith("trainable params: ")
    assert lines[1].startswith(f"{TASK} compacter++ on tiny: 64 training examples, 2 epochs, 8 steps")


def test_train_log_holds_the_same_lines_and_the_curves_are_drawn(watched):
    out, m, lines = watched
    assert (out / watch.LOG).read_text() == "".join(line + "\n" for line in lines)
    width, height, dpi = png_size_and_dpi((out / watch.CURVES).read_bytes())
    assert (width, height) == (1200, 432) and dpi == pytest.approx(120, abs=0.1)
    assert m["stopped_early"] is None


def test_curves_are_not_redrawn_more_often_than_a_tenth_of_the_time(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(watch, "curves_png", lambda run, history: drawn.append(len(history)) or b"png")
    w, state = watch.Watch(tmp_path), types.SimpleNamespace(history=[{"step": 1, "loss": 1.0}])
    w.curves(None, state)
    state.history.append({"step": 2, "loss": 0.5})
    w.draw_seconds = 100.0                              # as if drawing took 100 s
    w.curves(None, state)                               # too soon: not drawn
    w.curves(None, state, final=True)                   # the end: drawn
    w.curves(None, state, final=True)                   # the same history: not again
    assert drawn == [1, 2] and (tmp_path / watch.CURVES).read_bytes() == b"png"


# --- patience ----------------------------------------------------------------------------

PATIENT = TrainConfig(epochs=4, batch_size=16, max_length=32, progress=False, eval_every=2,
                      patience=2, lr=1e-2)


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    out = tmp_path_factory.mktemp("patient")
    lines = []
    m = finetune(mc.load_pretrained("tiny"), TASK, METHOD, PATIENT, train_size=64, out=out,
                 log=lines.append)
    return out, m, lines


def first_exhausted(scores, patience):
    """The index of the validation at which `patience` in a row brought no improvement."""
    best, since = None, 0
    for i, s in enumerate(scores):
        best, since = (s, 0) if best is None or s > best else (best, since + 1)
        if since == patience:
            return i
    return None


def test_patience_stops_the_run_where_it_should(patient):
    out, m, lines = patient
    history = m["history"]
    scores = [h["validation"]["score"] for h in history if "validation" in h]
    stop = first_exhausted(scores, 2)
    assert stop is not None and stop == len(scores) - 1          # stopped at once, not later
    last = [h for h in history if "validation" in h][-1]
    steps = [h["step"] for h in history if "loss" in h]
    assert steps == list(range(1, last["step"] + 1)) and last["step"] < 16   # 4 epochs of 4 steps
    assert m["stopped_early"] == {"epoch": last["epoch"] + 1, "step": last["step"], "patience": 2}
    assert json.loads((out / "metrics.json").read_text())["stopped_early"] == m["stopped_early"]
    assert lines[-1] == (f"stopped early at epoch {last['epoch'] + 1} of 4, step {last['step']} of "
                         f"16: 2 validations in a row brought no improvement (--patience 2).")
    assert m["best_epoch"] == next(h["epoch"] + 1 for h in history
                                   if "validation" in h and h["validation"]["score"] == max(scores))


@pytest.mark.slow
@pytest.mark.parametrize("at", ["before", "at the stop"])
def test_a_patient_run_resumes_to_exactly_the_same_end(patient, tmp_path, at):
    _, reference, _ = patient
    stop_step = reference["stopped_early"]["step"]
    out = tmp_path / "run"
    tiny = mc.load_pretrained("tiny")
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny, TASK, METHOD, PATIENT, train_size=64, out=out,
                 on_step=stop_after(stop_step - 3 if at == "before" else stop_step))
    resumed = finetune(tiny, TASK, METHOD, PATIENT, train_size=64, out=out, resume=True)
    for key in ("validation", "test", "best_epoch", "stopped_early", "history"):
        assert resumed[key] == reference[key], key


# --- where the output goes -----------------------------------------------------------------

def test_no_progress_bars_when_the_output_is_not_a_terminal(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(process.progress_bar(True, total=3), process.NoBar)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = process.progress_bar(True, total=3)
    assert not isinstance(bar, process.NoBar)
    bar.close()
    assert isinstance(process.progress_bar(False, total=3), process.NoBar)


def test_a_setting_added_since_a_run_was_recorded_is_no_difference_when_off():
    recorded = {"train": {"epochs": 3}}
    assert differences(recorded, {"train": {"epochs": 3, "patience": None}}) == []
    assert differences(recorded, {"train": {"epochs": 3, "patience": 2}}) == [
        'train.patience: "<not recorded>" in the run, 2 now']
