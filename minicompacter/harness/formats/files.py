"""The file layer every format is written and read through: atomic writes, and tensors and
JSON read with every check a file from outside needs.

  atomic_write(path, data)     a temporary file beside `path`, flushed, fsync'ed and renamed
                               over it (os.replace is atomic): an interrupted write never
                               leaves half a file
  tree_bytes(tree)             a parameter tree as safetensors bytes, keys its dotted paths
  read_tensors(path)           {name: array} from a safetensors file (never a pickle)
  check_tree(expected, ...)    tensors checked name by name and shape by shape against a tree
  read_json_object(path, ...)  a JSON object with the keys and types a caller requires
  refuse_pickle(...)           the message for a directory that holds only a pickle file
  shard_files(directory, index)  the shards a model.safetensors.index.json lists, each a
                               file beside it

This module imports nothing else of the harness: the native checkpoint (native.py), each
foreign format (adapterhub.py, peft.py, transformers.py) and the dispatcher above them
(dispatch.py) all import it, and it imports none of them.

For tests only: with MINICOMPACTER_PAUSE_WRITE=NAME (or NAME:N), the first (or N-th)
write of a file named NAME stops halfway for up to 60 s, after printing a line to stderr,
so that a test can signal the process in the middle of a checkpoint write. The pause ends
early once training/interrupts.py holds a signal; it asks that module through
sys.modules, so that this module stays free of imports from the rest of the harness.
"""

import json
import os
import secrets
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as onp
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from ...core.tree import dotted, flatten, path_map


class LoadError(ValueError):
    """A model checkpoint that cannot be loaded; the message says why and what to do."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


class FormatError(ValueError):
    """Files of another library that minicompacter cannot read as they are; says why."""


# --- writing ------------------------------------------------------------------------------

PAUSE_WRITE = "MINICOMPACTER_PAUSE_WRITE"
_writes = Counter()                      # writes per file name, for PAUSE_WRITE


def atomic_write(path, data):
    """Write bytes (or text) to path through a temporary file and a rename. The file gets
    the mode the umask gives, as open() would."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, data, path)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _create_temporary(path):
    """(descriptor, path) of a new file .NAME.RANDOM.tmp beside path, mode 0666 less the
    umask (tempfile.mkstemp would make it 0600 whatever the umask)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _write(f, data, path):
    """f.write(data), pausing halfway when PAUSE_WRITE names this write (module docstring)
    until 60 s have passed or an interrupt is being held."""
    name, _, nth = os.environ.get(PAUSE_WRITE, "").partition(":")
    if name == path.name:
        _writes[name] += 1
    if name != path.name or _writes[name] != int(nth or 1):
        f.write(data)
        return
    f.write(data[:len(data) // 2])
    f.flush()
    print(f"minicompacter: paused writing {path} ({PAUSE_WRITE})", file=sys.stderr, flush=True)
    end = time.monotonic() + 60
    while time.monotonic() < end and not _interrupt_held():
        time.sleep(0.02)
    f.write(data[len(data) // 2:])


def _interrupt_held():
    interrupts = sys.modules.get("minicompacter.harness.training.interrupts")
    return interrupts is not None and interrupts.pending()


def tree_bytes(tree, prefix=""):
    """A tree as safetensors bytes, keys its dotted paths."""
    return save({prefix + k: onp.ascontiguousarray(v) for k, v in flatten(tree).items()})


# --- reading ------------------------------------------------------------------------------

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")     # never opened

def read_tensors(path):
    """{name: array} from a safetensors file, with a clear error when it is corrupt."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; is this a minicompacter checkpoint "
                              f"directory (written by finetune --out)?")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be read as safetensors ({e}); the file is "
                              f"corrupt: train again, or use another checkpoint.") from None


def check_tree(expected, tensors, source):
    """The tree of `tensors` (dotted names), checked name by name and shape by shape
    against the tree `expected`, each leaf finite and cast to the dtype of its place."""
    want = flatten(expected)
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise CheckpointError(
            f"{source} does not fit this model: "
            + (f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}" if extra else "")
            + ". Was it saved for another method or model?")
    for name, leaf in want.items():
        if tensors[name].shape != leaf.shape:
            raise CheckpointError(f"{source}: {name} has shape {tensors[name].shape}, the model "
                                  f"needs {leaf.shape}. Was it saved with other method options "
                                  f"(phm_dim, reduction_factor) or another base model?")
        if not onp.isfinite(tensors[name]).all():
            raise CheckpointError(f"{source}: {name} holds non-finite values (nan or inf); the "
                                  f"file is damaged or the run diverged: train again "
                                  f"(--replace), with a smaller --lr if it diverged.")
    # the tree rebuilt in the shape of `expected`, so that its empty places (a block
    # without adapters: AdapterDrop) stay where they are
    return path_map(lambda path, leaf: onp.asarray(tensors[dotted(path)], leaf.dtype), expected)


def json_file(path):
    """The JSON a file holds, or None when it is missing or not JSON (for detecting a
    format; a file that must be read uses read_json_object)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_json_object(path, required=None, *, error=ValueError, fix=""):
    """The JSON object in `path`; `required`: {key: type} it must hold. A file that is not
    JSON, not an object, or lacks a key raises `error` naming the file, the problem and
    `fix`."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(value, dict):
        raise error(f"{path} holds {json.dumps(value)[:40]}, not a JSON object; {fix}")
    for key, kind in (required or {}).items():
        if key not in value:
            raise error(f"{path} has no {key!r}; {fix}")
        if not isinstance(value[key], kind):
            raise error(f"{path}: {key!r} is {json.dumps(value[key])[:40]}, not "
                        f"{_kind_name(kind)}; {fix}")
    return value


def _kind_name(kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def refuse_pickle(directory, pickle_name, safetensors_name):
    """FormatError when `directory` holds `pickle_name` and not `safetensors_name`."""
    directory = Path(directory)
    if (directory / pickle_name).exists() and not (directory / safetensors_name).exists():
        raise FormatError(
            f"{directory} holds {pickle_name}, a pickle file, and no {safetensors_name}. "
            f"minicompacter never loads pickle files (unpickling can run arbitrary code). "
            f"Convert it once where PyTorch is installed: python -c \"import torch; from "
            f"safetensors.torch import save_file; save_file(torch.load('{directory / pickle_name}'), "
            f"'{directory / safetensors_name}')\"")


def shard_files(directory, index):
    """The shards a model.safetensors.index.json lists, each a file inside `directory`
    (a name such as ../../etc/passwd, or an absolute path, is refused, not opened)."""
    fix = "download the checkpoint again."
    weight_map = read_json_object(index, {"weight_map": dict}, error=LoadError, fix=fix)["weight_map"]
    root = directory.resolve()
    files = []
    for shard in sorted(set(map(str, weight_map.values()))):
        path = (directory / shard).resolve()
        if path.parent != root:
            raise LoadError(f"{index} lists the shard {shard!r}, which is not a file of "
                            f"{directory}; shards must be file names beside the index: {fix}")
        files.append(directory / shard)
    return files
