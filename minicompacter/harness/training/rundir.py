"""An output directory belongs to one run, and one rule says what becomes of one that exists.

`claimed(out, settings, resume=..., replace=...)` is what `finetune` enters before any
work: it checks --out (not empty, not a file, created if missing, writable), takes the
directory's lock (DIR/.lock, an fcntl lock that the system releases when the process
ends, however it ends) or refuses, naming the process that holds it, and decides by the
one rule below what the run will do. `finetune`, and so each run of `compare` and `demo`,
follows it:

  what DIR holds                           without flags        --resume           --replace
  nothing                                  a new run            refused            a new run
  a finished run, the same settings        reported, not        reported, not      trained again
                                           trained again        trained again
  a finished run, other settings           refused              refused            trained again
  an unfinished run (last/), same settings refused              resumed            trained again
  an unfinished run, other settings        refused              refused            trained again
  a checkpoint without last/               refused              refused            trained again

A refusal names what differs and the flag that would go on. "The same settings" are
what metrics.json's "config" records, but for NOT_COMPARED (progress bars and the layer
set change how a run goes, not what it computes). --replace removes the old
run's files only once every check has passed, just before the first step; any other file
in DIR is left alone. A finished run is one with metrics.json (written last).
"""

import fcntl
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Optional

from ..formats.dispatch import checkpoint_format
from ..formats.files import (OBJECT, CheckpointError, Kind, array, integer, read_json,
                             read_json_object, record)
from ..formats.native import CONFIG, LAST, WEIGHTS, last_dir, read_state
from .watch import CURVES, LOG

LOCK = ".lock"
METRICS, HISTORY = "metrics.json", "history.json"
# settings that change how a run goes but not what it computes: a run with other values
# of these is the same run
NOT_COMPARED = ("train.progress", "train.layer_set", "train.layers")   # train.layers: layer_set before 0.3
# what metrics.json holds (a split's score may be nan: a constant prediction has no correlation)
SCORE = Kind(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
METRICS_FIELDS = {"config": OBJECT, "validation": record({"score": SCORE}),
                  "test": record({"score": SCORE}), "best_epoch": integer(1), "epochs": integer(1)}
DAMAGED = "the run's record is damaged: --replace discards it and trains anew."


class RunDirError(ValueError):
    """An output directory that this run cannot use as asked; the message says what to do."""


class Decision(NamedTuple):
    """What a run does with its directory: "new", "resume" or "finished" (reported, not
    trained again); `replace`: the old run's files are to be removed before the first step."""
    path: Optional[Path]
    kind: str
    replace: bool = False


# --- the directory and its lock ---------------------------------------------------------------

def make_out(out):
    """(path, created) of --out, created if missing; a clear error if it cannot be."""
    if not str(out).strip():
        raise RunDirError("--out is empty; give the directory the run writes to, such as "
                          "--out runs/sst2.")
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory; give a directory (it is "
                          f"created if missing).")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"--out {out}: the directory cannot be created ({e.strerror}); give a "
                          f"directory you can write to.") from None
    return path, created


@contextmanager
def locked(path):
    """Hold DIR/.lock for the block (it records this process's id), or refuse at once."""
    unusable = "give as --out a directory you can write to"
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise RunDirError(f"{path} is not writable ({e.strerror}); {unusable}.") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise RunDirError(f"{path} is in use by another run ({owner}): an output directory "
                              f"belongs to one run. Wait for it to end, or give another "
                              f"--out.") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()}\n".encode(), 0)
        except OSError as e:
            raise RunDirError(f"{path} is not writable ({e.strerror}); {unusable}.") from None
        yield
    finally:
        os.close(fd)


TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")      # files.atomic_write's names


def remove_stale_temporaries(path):
    """The .NAME.RANDOM.tmp files of writes that a killed process left (only the lock's
    holder may call this: no write of another process can be under way)."""
    for tmp in path.glob(".*.tmp"):
        if TEMPORARY.match(tmp.name):
            tmp.unlink(missing_ok=True)


@contextmanager
def claimed(out, settings, *, resume=False, replace=False):
    """The Decision for a run into `out` (None: no directory, a new run), holding the
    directory's lock for the block. A directory this call created is removed again if the
    block fails before anything but the lock was written in it."""
    if out is None:
        yield Decision(None, "new")
        return
    path, created = make_out(out)
    try:
        with locked(path):
            remove_stale_temporaries(path)
            yield decide(path, settings, resume=resume, replace=replace)
    except BaseException:
        if created and [p.name for p in path.iterdir()] == [LOCK]:
            (path / LOCK).unlink()
            path.rmdir()
        raise


# --- what a directory holds, and the rule ----------------------------------------------------

def existing_run(path):
    """(kind, settings, what) of the run in `path`: kind None (nothing), "finished",
    "unfinished" or "checkpoint"; settings as recorded (None if not recorded); what: a
    few words on where it stands."""
    path = Path(path)
    if (path / METRICS).exists():
        metrics = read_json_object(path / METRICS, METRICS_FIELDS, error=RunDirError, fix=DAMAGED)
        return "finished", metrics["config"], "finished"
    try:
        state = read_state(path)
    except CheckpointError as e:
        raise RunDirError(f"{e} (--replace discards the run)") from None
    if state is not None:
        where = (f"after epoch {state['epoch']}" if state["batch_in_epoch"] == 0
                 else f"in epoch {state['epoch'] + 1}")
        return "unfinished", state.get("settings"), f"stopped at step {state['step']}, {where}"
    kind = checkpoint_format(path)
    if kind is not None or (path / WEIGHTS).exists():
        return "checkpoint", None, f"a {kind or 'minicompacter'} checkpoint without {LAST}/"
    return None, None, ""


def flat(settings, prefix=""):
    """{dotted key: value} of nested settings."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def differences(recorded, wanted):
    """What differs between a run's recorded settings and the wanted ones, as
    "key: recorded in the run, wanted now" strings. Keys the wanted settings lack (the
    number of training examples, known once the data are read) and NOT_COMPARED are
    left out; a run that recorded no settings (0.1.0) differs in nothing, and a setting a
    run did not record (one added since, such as train.patience) differs only if it is
    wanted other than null (off)."""
    if recorded is None:
        return []
    have, want = flat(recorded), flat(wanted)
    keys = sorted(k for k in want if k not in NOT_COMPARED
                  and not (k not in have and want[k] is None)
                  and json.dumps(have.get(k, "<not recorded>")) != json.dumps(want[k]))
    return [f"{k}: {json.dumps(have.get(k, '<not recorded>'))} in the run, "
            f"{json.dumps(want[k])} now" for k in keys]


def decide(path, settings, *, resume=False, replace=False):
    """The rule of the module docstring for a run with `settings` into `path`; reads only."""
    path = Path(path)
    if replace:
        return Decision(path, "new", replace=True)
    kind, recorded, where = existing_run(path)
    if kind is None:
        if resume:
            raise RunDirError(f"{path / LAST / 'state.json'} does not exist: there is nothing "
                              f"to resume in {path}. Run without --resume to start.")
        return Decision(path, "new")
    diff = differences(recorded, settings)
    other = f"with other settings ({'; '.join(diff)})" if diff else "with these settings"
    if kind == "finished" and not diff:
        return Decision(path, "finished")
    if kind == "unfinished" and resume and not diff:
        return Decision(path, "resume")
    if kind == "unfinished" and not diff:
        raise RunDirError(f"{path} holds an unfinished run ({where}) {other}: continue it "
                          f"with --resume, or --replace to discard it and start over.")
    if kind == "checkpoint":
        raise RunDirError(f"{path} holds {where}, so there is no run to "
                          f"{'resume' if resume else 'add to'}: --replace to discard it and "
                          f"start over, or give another --out.")
    held = "a finished run" if kind == "finished" else f"an unfinished run ({where})"
    raise RunDirError(f"{path} holds {held} {other}: "
                      + ("resume it with the arguments it was started with, "
                         if kind == "unfinished" else "")
                      + "give another --out, or --replace to discard it and train anew.")


def discard(path):
    """Remove a run's files from `path` (the checkpoint, last/, metrics, history, its log and
    curves); any other file stays."""
    path = Path(path)
    for name in (WEIGHTS, CONFIG, METRICS, HISTORY, LOG, CURVES):
        (path / name).unlink(missing_ok=True)
    for name in (LAST, LAST + ".new", LAST + ".old"):
        shutil.rmtree(path / name, ignore_errors=True)


def finished_metrics(path):
    """metrics.json and history.json of a finished run, each checked (RunDirError naming the
    file that is damaged)."""
    path = Path(path)
    metrics = read_json_object(path / METRICS, METRICS_FIELDS, error=RunDirError, fix=DAMAGED)
    if not (path / HISTORY).exists():
        return metrics, []
    history = read_json(path / HISTORY, error=RunDirError, fix=DAMAGED)
    if not array(OBJECT).valid(history):
        raise RunDirError(f"{path / HISTORY} is not a list of steps and validations (JSON "
                          f"objects); {DAMAGED}")
    return metrics, history


# --- after an interruption --------------------------------------------------------------------

def interrupted_message(out):
    """What an interrupted command leaves in `out` (a run's directory, or one holding a
    run per method), read from disk, so that it never claims a file that is not there."""
    if out is None:
        return "interrupted."
    out = Path(out)
    saved, finished = [], []
    for path in ([out] + sorted(p for p in out.iterdir() if p.is_dir())) if out.is_dir() else []:
        try:
            kind, _, where = existing_run(path)
        except RunDirError:
            continue
        if kind == "unfinished":
            saved.append(f"{last_dir(path)} holds the run {where}")
        elif kind == "finished":
            finished.append(str(path))
    if saved:
        return ("interrupted. " + "; ".join(saved) + "; continue with the same command and "
                "--resume.")
    if finished:
        return f"interrupted once the run had finished: {', '.join(finished)} holds it whole."
    return (f"interrupted before a run was saved in {out}: there is nothing to resume; run the "
            f"command again.")
