"""The file layer every format is written and read through: atomic writes, and tensors and
JSON read with every check a file from outside needs. Every file that comes in, ours or
another library's, is read here, by one reader of each kind.

  atomic_write(path, data)     a temporary file beside `path`, flushed, fsync'ed and renamed
                               over it (os.replace is atomic): an interrupted write never
                               leaves half a file
  tree_bytes(tree)             a parameter tree as safetensors bytes, keys its dotted paths
  tensor_bytes(tensors)        {name: array} as safetensors bytes for another library, every
                               value finite (an export never writes nan or inf)
  read_tensors(path)           {name: array} from a safetensors file (never a pickle): the
                               header checked against the file before any tensor is read;
                               float64, float16 and bfloat16 converted to the compute dtype
                               (bfloat16 and float16 exactly); integers refused; every value
                               finite after the cast
  read_model_tensors(dir)      the same for model.safetensors or the shards its index lists
  check_tree(expected, ...)    tensors checked name by name and shape by shape against a tree
  read_json_object(path, ...)  a JSON object, every field of a schema checked for its type and
                               range (`integer`, `number`, `text`, ... below), the file named
                               in every message
  finite_outputs(outputs)      a model's outputs, or NonFiniteError: the one message that
                               predict, evaluate, encode and export give for nan or inf
  refuse_pickle(...)           the message for a directory that holds only a pickle file
  shard_files(directory, index)  the shards a model.safetensors.index.json lists, each a
                               file beside it

This module imports nothing else of the harness: the native checkpoint (native.py), each
foreign format (adapterhub.py, peft.py, transformers.py, t5.py), the families' data
(families.py) and the dispatcher above them (dispatch.py) all import it, and it imports none
of them.

For tests only: with MINICOMPACTER_PAUSE_WRITE=NAME (or NAME:N), the first (or N-th)
write of a file named NAME stops halfway for up to 60 s, after printing a line to stderr,
so that a test can signal the process in the middle of a checkpoint write. The pause ends
early once training/interrupts.py holds a signal; it asks that module through
sys.modules, so that this module stays free of imports from the rest of the harness.
MINICOMPACTER_PAUSE_READ=NAME does the same before a data file named NAME is read
(`read_bytes`), so that a test can interrupt the data load.
"""

import json
import math
import os
import secrets
import stat
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as onp
from safetensors.numpy import save

from ...core.tree import dotted, flatten, path_map


class LoadError(ValueError):
    """A model checkpoint that cannot be loaded; the message says why and what to do."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


class FormatError(ValueError):
    """Files of another library that minicompacter cannot read as they are; says why."""


class ExportError(ValueError):
    """A checkpoint the target cannot hold (a method, or an option, its files have no place
    for), or an --out an export cannot use; the message says what to do instead."""


class NonFiniteError(ValueError):
    """Numbers that are not finite (nan or inf) where a number is promised: a model's
    outputs, or a tensor an export would write."""


# --- writing ------------------------------------------------------------------------------

PAUSE_WRITE, PAUSE_READ = "MINICOMPACTER_PAUSE_WRITE", "MINICOMPACTER_PAUSE_READ"
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


def read_bytes(path):
    """The bytes of a file, pausing first for up to 60 s when PAUSE_READ names it (module
    docstring: for tests only)."""
    path = Path(path)
    if os.environ.get(PAUSE_READ) == path.name:
        print(f"minicompacter: paused reading {path} ({PAUSE_READ})", file=sys.stderr, flush=True)
        end = time.monotonic() + 60
        while time.monotonic() < end and not _interrupt_held():
            time.sleep(0.02)
    return path.read_bytes()


def _interrupt_held():
    interrupts = sys.modules.get("minicompacter.harness.training.interrupts")
    return interrupts is not None and interrupts.pending()


def tree_bytes(tree, prefix=""):
    """A tree as safetensors bytes, keys its dotted paths."""
    return save({prefix + k: onp.ascontiguousarray(v) for k, v in flatten(tree).items()})


def tensor_bytes(tensors, metadata=None, *, dtype=onp.float32):
    """{name: array} as safetensors bytes in `dtype` (PyTorch's float32 by default), for files
    another library reads. A value that is not finite in that dtype is refused, naming the
    tensor: an export never writes nan or inf."""
    out = {}
    for name, value in tensors.items():
        with onp.errstate(over="ignore"):                 # beyond dtype's range: inf, refused
            array = onp.ascontiguousarray(value, dtype=dtype)
        if not onp.isfinite(array).all():
            raise NonFiniteError(non_finite_tensor(name, "the export", dtype))
        out[name] = array
    return save(out, metadata=metadata)


# --- non-finite numbers: one message ----------------------------------------------------------

NON_FINITE_FIX = ("its weights have diverged (train again with a smaller --lr) or are damaged; "
                  "nothing was printed or written from them.")


def finite_outputs(outputs, unit="rows"):
    """`outputs` (one row per input), or NonFiniteError if any row holds nan or inf: the one
    message `predict`, `evaluate` and `encode` give (the argmax of nan is a label like any
    other, and would be printed or scored as one)."""
    array = onp.asarray(outputs)
    bad = int(onp.sum(~onp.isfinite(array.reshape(len(array), -1)).all(axis=1))) if array.size else 0
    if bad:
        raise NonFiniteError(f"the model gives non-finite outputs (nan or inf) for {bad} of "
                             f"{len(array)} {unit}; {NON_FINITE_FIX}")
    return outputs


def non_finite_tensor(name, where, dtype=onp.float32):
    """The message for a tensor that is not finite (in `dtype`) in a file or an export."""
    return (f"{where}: {name} holds non-finite values (nan, inf, or a number beyond "
            f"{onp.dtype(dtype).name}'s range); the model gives non-finite outputs from such "
            f"weights: {NON_FINITE_FIX}")


# --- reading tensors ------------------------------------------------------------------------

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")     # never opened
# safetensors dtype -> bytes per value (every dtype the format defines, so that the offsets of
# a tensor that is skipped can be checked too)
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
# the floating-point dtypes read, and the NumPy dtype of their bytes (BF16: the top 16 bits of
# a float32, read as integers and shifted)
FLOATS = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
MAX_HEADER = 100 << 20           # bytes; safetensors' own limit
CHECKPOINT_FIX = "the file is damaged: train again (finetune --replace), or use another checkpoint."


class Entry(NamedTuple):
    """One tensor of a safetensors header."""
    dtype: str
    shape: tuple
    begin: int                   # offsets in the file
    end: int


def regular_file(path, error, fix):
    """`path` if it is a regular file; `error` naming it otherwise (missing, a directory, a
    FIFO that would block the read, a device)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{path} does not exist; {fix}") from None
    except NotADirectoryError:
        raise error(f"{path} does not exist (a part of the path is a file); {fix}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise error(f"{path} is {kind}; {fix}")
    return path


def read_header(f, path, size, error=LoadError, fix="download it again."):
    """The header of an open safetensors file, every entry checked against the file's size
    before any tensor is read: {name: Entry}. Entries must tile the data exactly, as the
    safetensors library requires (no gap, no overlap)."""
    bad = f"{path} cannot be read as safetensors"
    raw = f.read(8)
    n = int.from_bytes(raw, "little") if len(raw) == 8 else -1
    if not 0 < n <= min(MAX_HEADER, size - 8):
        raise error(f"{bad} (its header length is wrong); {fix}")
    try:
        header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise error(f"{bad} (its header is not JSON); {fix}") from None
    if not isinstance(header, dict):
        raise error(f"{bad} (its header is not a JSON object); {fix}")
    header.pop("__metadata__", None)
    entries = {name: _entry(name, e, n, bad, error, fix) for name, e in header.items()}
    end = 0
    for name, e in sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end)):
        if e.begin - 8 - n != end:
            raise error(f"{bad} (the data of {name!r} overlaps another tensor's or leaves a "
                        f"gap); {fix}")
        end = e.end - 8 - n
    if end != size - 8 - n:
        raise error(f"{bad} (the data of its tensors lies outside the file or has the wrong "
                    f"size); {fix}")
    return entries


def _entry(name, e, n, bad, error, fix):
    """One header entry, checked: an Entry with offsets from the start of the file."""
    ok = (isinstance(e, dict) and isinstance(e.get("shape"), list)
          and all(_whole(s) and s >= 0 for s in e["shape"])
          and isinstance(e.get("data_offsets"), list) and len(e["data_offsets"]) == 2
          and all(_whole(o) for o in e["data_offsets"]))
    if not ok:
        raise error(f"{bad} (the entry of {name!r} is malformed); {fix}")
    if e.get("dtype") not in DTYPE_BYTES:
        raise error(f"{bad} ({name!r} has the unknown dtype {e.get('dtype')!r}); {fix}")
    begin, end = e["data_offsets"]
    if not 0 <= begin <= end or end - begin != math.prod(e["shape"]) * DTYPE_BYTES[e["dtype"]]:
        raise error(f"{bad} (the data of {name!r} lies outside the file or has the wrong "
                    f"size); {fix}")
    return Entry(e["dtype"], tuple(e["shape"]), 8 + n + begin, 8 + n + end)


def to_float(raw, dtype, shape):
    """A tensor's bytes as float32 (F16, BF16, F32) or float64 (F64), exactly. BF16 is the top
    half of a float32: shifting its 16 bits up gives the float32 exactly."""
    stored = onp.frombuffer(raw, FLOATS[dtype])
    if dtype == "BF16":
        return (stored.astype(onp.uint32) << 16).view(onp.float32).reshape(shape)
    return stored.astype(onp.float64 if dtype == "F64" else onp.float32).reshape(shape)


def read_tensors(path, *, dtype=onp.float32, skip=None, error=CheckpointError, fix=CHECKPOINT_FIX):
    """{name: array of `dtype`} from a safetensors file, every check done here: the header
    against the file (read_header), a floating-point dtype (integers are refused), the cast
    to `dtype` (float64 rounds to float32; float16 and bfloat16 are exact), and every value
    finite after the cast (1e300 in a float64 file is inf in float32). skip(name) -> True:
    a tensor not read at all (buffers such as BERT's int64 position_ids); its entry is still
    checked. Errors are `error`, naming the file, the tensor and `fix`."""
    path = regular_file(path, error, fix)
    size = path.stat().st_size
    tensors = {}
    with open(path, "rb") as f:
        for name, e in read_header(f, path, size, error, fix).items():
            if skip is not None and skip(name):
                continue
            if e.dtype not in FLOATS:
                raise error(f"{path}: {name!r} is stored as {e.dtype!r}; minicompacter reads "
                            f"floating-point weights only ({', '.join(FLOATS)}): {fix}")
            f.seek(e.begin)
            with onp.errstate(over="ignore"):             # beyond dtype's range: inf, refused below
                value = onp.asarray(to_float(f.read(e.end - e.begin), e.dtype, e.shape), dtype=dtype)
            if not onp.isfinite(value).all():
                raise error(non_finite_tensor(name, str(path), dtype))
            tensors[name] = value
    return tensors


def read_model_tensors(directory, *, dtype=onp.float32, skip=None, convert=""):
    """{name: array} from model.safetensors, or the shards model.safetensors.index.json lists
    (each a file beside it, no tensor in two), read by read_tensors. Pickle files are refused,
    never opened; `convert`: the line that converts one (for the message)."""
    directory = Path(directory)
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    fix = "download or convert the checkpoint again."
    if single.exists():
        files = [single]
    elif index.exists():
        files = shard_files(directory, index)
    else:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise LoadError(
                f"{directory} holds {pickles[0]}, a pickle file, and no model.safetensors. "
                f"minicompacter never loads pickle files (unpickling can run arbitrary code). "
                f"Convert it once where PyTorch is installed{convert}.")
        raise LoadError(f"{directory} has no model.safetensors; a checkpoint directory needs "
                        f"config.json and model.safetensors (or its shards and their index).")
    tensors = {}
    for f in files:
        if not f.exists():
            raise LoadError(f"{f} is listed in model.safetensors.index.json but missing; {fix}")
        part = read_tensors(f, dtype=dtype, skip=skip, error=LoadError, fix=fix)
        twice = sorted(set(part) & set(tensors))
        if twice:
            raise LoadError(f"{f} holds {twice[0]!r}, which another shard holds too; {fix}")
        tensors.update(part)
    return tensors


def check_tree(expected, tensors, source):
    """The tree of `tensors` (dotted names), checked name by name and shape by shape
    against the tree `expected`, each leaf cast to the dtype of its place and finite after
    the cast."""
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
    out = {}
    for name, leaf in want.items():
        if tensors[name].shape != leaf.shape:
            raise CheckpointError(f"{source}: {name} has shape {tensors[name].shape}, the model "
                                  f"needs {leaf.shape}. Was it saved with other method options "
                                  f"(phm_dim, reduction_factor) or another base model?")
        with onp.errstate(over="ignore"):                 # beyond the dtype's range: inf, refused
            out[name] = onp.asarray(tensors[name], leaf.dtype)
        if not onp.isfinite(out[name]).all():
            raise CheckpointError(non_finite_tensor(name, str(source), leaf.dtype))
    # the tree rebuilt in the shape of `expected`, so that its empty places (a block
    # without adapters: AdapterDrop) stay where they are
    return path_map(lambda path, leaf: out[dotted(path)], expected)


# --- reading JSON --------------------------------------------------------------------------

class Kind(NamedTuple):
    """What a JSON value may be: valid(value) -> bool, and `what` for the message."""
    valid: Callable
    what: str


def _whole(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(low=None, high=None):
    """A whole number (not a bool, not 2.0) in [low, high]."""
    where = _range(low, high)
    return Kind(lambda v: _whole(v) and (low is None or v >= low) and (high is None or v <= high),
                "an integer" + where)


def number(low=None, high=None, *, above=None):
    """A finite number (not a bool, not a string, not nan) in [low, high] (or > above)."""
    where = _range(low, high) if above is None else f" above {above:g}"
    return Kind(lambda v: _real(v) and (low is None or v >= low) and (high is None or v <= high)
                and (above is None or v > above), "a finite number" + where)


def _range(low, high):
    if low is not None and high is not None:
        return f" from {low:,} to {high:,}"
    if low is not None:
        return f" of at least {low:,}"
    return "" if high is None else f" of at most {high:,}"


def text(*choices):
    """A string (one of `choices`, if given)."""
    return Kind(lambda v: isinstance(v, str) and (not choices or v in choices),
                "a string" if not choices else "one of " + ", ".join(map(json.dumps, choices)))


FLAG = Kind(lambda v: isinstance(v, bool), "true or false")
OBJECT = Kind(lambda v: isinstance(v, dict), "an object")


def array(item=None):
    """A JSON array, each element of `item` (a Kind) if given."""
    return Kind(lambda v: isinstance(v, list) and (item is None or all(item.valid(x) for x in v)),
                "an array" + ("" if item is None else f" of {item.what.removeprefix('a ')}s"))


def record(fields):
    """An object holding every key of `fields` ({key: Kind}), each valid."""
    what = ", ".join(f"{k} ({kind.what})" for k, kind in fields.items())
    return Kind(lambda v: isinstance(v, dict) and all(k in v and kind.valid(v[k])
                                                      for k, kind in fields.items()),
                f"an object with {what}")


def nullable(kind):
    """`kind`, or null."""
    return Kind(lambda v: v is None or kind.valid(v), f"{kind.what} or null")


def as_kind(kind):
    """A Kind from a Kind, or from a Python type or tuple of types (int excludes bool)."""
    if isinstance(kind, Kind):
        return kind
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
    return Kind(lambda v: any(isinstance(v, k) and not (isinstance(v, bool) and k is not bool)
                              for k in kinds), names)


def shown(value):
    """A JSON value as a message shows it: JSON text, cut to 40 characters."""
    try:
        text_ = json.dumps(value)
    except (TypeError, ValueError):
        text_ = repr(value)
    return text_ if len(text_) <= 40 else text_[:37] + "..."


def check_fields(value, required=None, optional=None, *, source, error=ValueError, fix=""):
    """`value` (a dict) with every key of `required` present and valid, and every key of
    `optional` that is present valid: {key: Kind or type}. `error` names `source`, the key,
    the value and `fix`."""
    for key, kind in (required or {}).items():
        if key not in value:
            raise error(f"{source} has no {key!r}; {fix}")
    for key, kind in {**(optional or {}), **(required or {})}.items():
        if key in value and not as_kind(kind).valid(value[key]):
            raise error(f"{source}: {key!r} is {shown(value[key])}, not "
                        f"{as_kind(kind).what}; {fix}")
    return value


def read_json(path, *, error=ValueError, fix=""):
    """The JSON value a file holds; `error` naming the file when it is missing, not a regular
    file, not UTF-8 or not JSON."""
    path = regular_file(path, error, fix)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{path} is not valid JSON ({str(e)[:80]}); {fix}") from None


def read_json_object(path, required=None, *, optional=None, error=ValueError, fix=""):
    """The JSON object in `path`, checked by check_fields (required and optional fields:
    {key: Kind or type}). A file that is not JSON, not an object, lacks a key or holds one
    of the wrong type or range raises `error` naming the file, the problem and `fix`."""
    path = Path(path)
    value = read_json(path, error=error, fix=fix)
    if not isinstance(value, dict):
        raise error(f"{path} holds {shown(value)}, not a JSON object; {fix}")
    return check_fields(value, required, optional, source=path, error=error, fix=fix)


def json_file(path):
    """The JSON a file holds, or None when it is missing or not JSON (for detecting a
    format; a file that must be read uses read_json_object)."""
    try:
        path = Path(path)
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


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
