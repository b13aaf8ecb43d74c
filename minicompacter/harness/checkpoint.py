"""Adapter-only checkpoints, written atomically, loaded with every shape checked.

A checkpoint directory holds
  minicompacter_adapter.safetensors  the trainable tree only (adapters, shared A, unfrozen
                              layer norms or biases, the head); keys are dotted tree paths,
                              such as layers.3.ffn_adapter.down.s
  minicompacter_adapter.json  the method and its config, the base model (its name, hub id,
                              directory and weights digest) and config, the task, the number
                              of labels, the pooling, the head's layers
  last/                       what --resume needs: trainable.safetensors,
                              optimizer.safetensors (m.* and v.*), state.json

The names are minicompacter's own, so that neither peft (adapter_config.json) nor
transformers (config.json) takes a directory for one of theirs. Version 0.1.0 wrote
adapter_model.safetensors and adapter_config.json; those still load. `load_adapter` also
reads AdapterHub's and peft's adapter directories (adapterhub.py, peft_lora.py).

Every file is written to a temporary name in the same directory and renamed over the
old one (os.replace is atomic), so an interrupted run never leaves a half-written file:
the checkpoint on disk is always a whole one. Nothing is ever read with pickle. DIR/last/
is replaced as a whole (`save_last`). Every tensor read back is checked: its name, its
shape and that it is finite.

For tests only: with MINICOMPACTER_PAUSE_WRITE=NAME (or NAME:N), the first (or N-th)
write of a file named NAME stops halfway for up to 60 s, after printing a line to stderr,
so that a test can signal the process in the middle of a checkpoint write.
"""

import dataclasses
import json
import os
import secrets
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as onp

from ..core.encoder import EncoderConfig
from ..core.tree import flatten, unflatten
from .checks import read_json_object

WEIGHTS, CONFIG, LAST = "minicompacter_adapter.safetensors", "minicompacter_adapter.json", "last"
LEGACY_WEIGHTS, LEGACY_CONFIG = "adapter_model.safetensors", "adapter_config.json"   # 0.1.0


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


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
    from .interrupts import pending
    f.write(data[:len(data) // 2])
    f.flush()
    print(f"minicompacter: paused writing {path} ({PAUSE_WRITE})", file=sys.stderr, flush=True)
    end = time.monotonic() + 60
    while time.monotonic() < end and not pending():
        time.sleep(0.02)
    f.write(data[len(data) // 2:])


def tree_bytes(tree, prefix=""):
    """A tree as safetensors bytes, keys its dotted paths."""
    from safetensors.numpy import save
    return save({prefix + k: onp.ascontiguousarray(v) for k, v in flatten(tree).items()})


def read_tensors(path):
    """{name: array} from a safetensors file, with a clear error when it is corrupt."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; is this a minicompacter checkpoint "
                              f"directory (written by finetune --out)?")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} cannot be read as safetensors ({e}); the file is "
                              f"corrupt: train again, or use another checkpoint.") from None


def config_dict(model, base, task_name, extra=None):
    """What CONFIG holds. base: the base model's identity (pretrained.base_identity)."""
    method = model.method.config
    return {"format": "minicompacter", "method": method.method,
            "method_config": dataclasses.asdict(method), "base_model": base,
            "base_config": dataclasses.asdict(model.encoder_config), "task": task_name,
            "num_labels": model.num_labels, "pooling": model.pooling,
            "head_layers": model.head_layers, **(extra or {})}


def save_adapter(directory, trainable, model, base, task_name, extra=None):
    """WEIGHTS, then CONFIG, each written atomically. base: the base model's identity;
    `extra`: more settings to record (the evaluation's max_length and batch size)."""
    directory = Path(directory)
    atomic_write(directory / WEIGHTS, tree_bytes(trainable))
    atomic_write(directory / CONFIG, json.dumps(config_dict(model, base, task_name, extra),
                                                indent=2))


def json_file(path):
    """The JSON a file holds, or None when it is missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def checkpoint_format(directory):
    """"minicompacter", "minicompacter-0.1", "adapterhub", "peft", or None (nothing here)."""
    from .adapterhub import is_adapterhub
    from .peft_lora import is_peft

    directory = Path(directory)
    if (directory / CONFIG).exists():
        return "minicompacter"
    if is_adapterhub(directory):
        return "adapterhub"
    if is_peft(directory):
        return "peft"
    if (directory / LEGACY_CONFIG).exists():
        return "minicompacter-0.1"
    return None


CONFIG_KEYS = {"method": str, "method_config": dict, "base_model": (str, dict),
               "base_config": dict, "task": str, "num_labels": int, "pooling": str}


def read_config(directory):
    """The native checkpoint config of a directory (this version's, or 0.1.0's), checked to
    hold every key a checkpoint needs."""
    directory = Path(directory)
    kind = checkpoint_format(directory)
    if kind not in ("minicompacter", "minicompacter-0.1"):
        what = {"adapterhub": "an AdapterHub adapter", "peft": "a peft adapter"}.get(kind)
        raise CheckpointError(
            f"{directory / CONFIG} does not exist; give the directory finetune --out wrote"
            + (f" ({directory} holds {what}: minicompacter.load_adapter reads it, with the task "
               f"given separately)." if what else "."))
    path = directory / (CONFIG if kind == "minicompacter" else LEGACY_CONFIG)
    return read_json_object(path, CONFIG_KEYS, error=CheckpointError,
                            fix="the checkpoint is damaged: train it again (finetune --replace).")


def base_of(config):
    """The base model's identity a native config records: {name, hub_id, path, digest}
    (0.1.0 recorded the name alone)."""
    base = config["base_model"]
    return {"name": base} if isinstance(base, str) else base


def encoder_config(recorded):
    """The EncoderConfig a checkpoint recorded. Fields this version does not have are
    ignored (0.1.0 recorded pad_token_id, which the encoder never read)."""
    known = {f.name for f in dataclasses.fields(EncoderConfig)}
    return EncoderConfig(**{k: v for k, v in recorded.items() if k in known})


def check_tree(expected, tensors, source):
    """The tree of `tensors` (dotted names), checked name by name and shape by shape
    against the tree `expected`."""
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
    return unflatten({k: onp.asarray(v, want[k].dtype) for k, v in tensors.items()})


def load_adapter(directory, pretrained=None):
    """(model, trainable, frozen, config) from a checkpoint directory: minicompacter's own
    (this version's or 0.1.0's), AdapterHub's or peft's. The base model is found from what
    the checkpoint records (pretrained.load_base) unless given; it must be the one the
    checkpoint was trained on. For another library's adapter, config says what was read
    (its "format", "num_labels" and "label_names" of the head it carried, none: 0)."""
    directory = Path(directory)
    kind = checkpoint_format(directory)
    if kind in ("adapterhub", "peft"):
        return _load_foreign(directory, kind, pretrained)
    config = read_config(directory)
    base, method, base_cfg = _native_parts(directory, config)
    pretrained = _check_base(directory, base, base_cfg, pretrained)
    from ..core.model import init_model
    model, skeleton, frozen = init_model(onp.random.default_rng(0), pretrained, method,
                                         num_labels=config["num_labels"],
                                         pooling=config["pooling"],
                                         head_layers=config.get("head_layers", 1))
    weights = directory / (WEIGHTS if kind == "minicompacter" else LEGACY_WEIGHTS)
    trainable = check_tree(skeleton, read_tensors(weights), weights)
    return model, trainable, frozen, config


def _native_parts(directory, config):
    """(base identity, method config, EncoderConfig) of a native checkpoint's config."""
    from ..core.methods import method_config
    try:
        method = method_config(config["method"], **{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in config["method_config"].items()
                                                    if k != "method"})
        return base_of(config), method, encoder_config(config["base_config"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{directory}'s config lacks or garbles {e}; the checkpoint is "
                              f"damaged.") from None


def checkpoint_base(directory):
    """The pretrained model a checkpoint directory names (any of the formats load_adapter
    reads), found as pretrained.load_base finds it."""
    from . import adapterhub, peft_lora
    from .pretrained import load_base

    directory = Path(directory)
    kind = checkpoint_format(directory)
    if kind in ("adapterhub", "peft"):
        if (directory / "base" / "config.json").exists():     # written beside it by export
            from .pretrained import load_pretrained
            return load_pretrained(directory / "base")
        module = adapterhub if kind == "adapterhub" else peft_lora
        config = json.loads((directory / module.CONFIG).read_text())
        name = config.get("model_name" if kind == "adapterhub" else "base_model_name_or_path")
        return load_base({"name": name, "hub_id": name}, source=str(directory))
    base, _, _ = _native_parts(directory, read_config(directory))
    return load_base(base, source=str(directory))


def _check_base(directory, base, base_cfg, pretrained):
    """The base model to load the checkpoint on: the one given, or the one it records; in
    either case with the recorded config and (where recorded) the weights' digest."""
    from .pretrained import weights_digest

    if pretrained is None:
        pretrained = checkpoint_base(directory)
    if pretrained.config != base_cfg:
        diff = {k: (v, getattr(pretrained.config, k)) for k, v in vars(base_cfg).items()
                if getattr(pretrained.config, k) != v}
        raise CheckpointError(f"{directory} was trained on base model {base['name']!r}, whose "
                              f"config differs from the model given ({pretrained.name!r}): "
                              f"{ {k: f'{a} vs {b}' for k, (a, b) in diff.items()} }. Load it "
                              f"with the base model it was trained on.")
    if base.get("digest") and weights_digest(pretrained.params) != base["digest"]:
        raise CheckpointError(f"{directory} was trained on base model {base['name']!r}; the model "
                              f"given ({pretrained.name!r}) has the same shapes but other "
                              f"weights. Load it with the base model it was trained on.")
    return pretrained


def _load_foreign(directory, kind, pretrained):
    """An AdapterHub or peft adapter directory, on the base model it names (or the one given)."""
    from . import adapterhub, peft_lora

    from .export import read_head_beside

    module = adapterhub if kind == "adapterhub" else peft_lora
    return read_head_beside(directory, *module.read(directory, pretrained or checkpoint_base(directory)))


# --- what --resume needs ----------------------------------------------------------------------

STATE_KEYS = {"step": int, "epoch": int, "batch_in_epoch": int, "seed": int, "history": list,
              "best": (dict, type(None)), "train_seconds": (int, float), "opt_step": int}


def _last_dirs(directory):
    """last/, and the two names save_last uses on the way: last.new/ and last.old/."""
    last = Path(directory) / LAST
    return last, last.with_name(LAST + ".new"), last.with_name(LAST + ".old")


def last_dir(directory):
    """The directory that holds the latest whole last/ state: last/, or last.new/ when a
    process was killed between save_last's two renames (last/ is then missing)."""
    last, new, _ = _last_dirs(directory)
    if not last.exists() and (new / "state.json").exists():
        return new
    return last


def settle_last(directory):
    """Put the latest whole state in last/ (see last_dir) and remove what an interrupted
    save_last left half-written."""
    last, new, old = _last_dirs(directory)
    whole = last_dir(directory)
    if whole != last:
        os.replace(whole, last)
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def save_last(directory, trainable, opt_state, state):
    """DIR/last/: the latest trainable tree, the optimiser's moments, and state.json (step,
    epoch, position in the epoch, the seed, history, best). The data order of an epoch
    comes from (seed, epoch) and the dropout masks of a step from (seed, step), so the seed
    and the step are the whole random state.

    The three files are replaced together: they are written into last.new/, then last/
    becomes last.old/, last.new/ becomes last/ and last.old/ is removed. A process killed
    at any moment leaves one whole state (last_dir finds it), never files of two steps."""
    last, new, old = _last_dirs(directory)
    settle_last(directory)
    atomic_write(new / "trainable.safetensors", tree_bytes(trainable))
    atomic_write(new / "optimizer.safetensors",
                 tree_bytes({"m": opt_state["m"], "v": opt_state["v"]}))
    atomic_write(new / "state.json", json.dumps(dict(state, opt_step=opt_state["step"])))
    if last.exists():
        os.replace(last, old)
    os.replace(new, last)
    shutil.rmtree(old, ignore_errors=True)


def read_state(directory):
    """last/state.json (or last.new/'s, see last_dir), every key checked; None if there is none."""
    path = last_dir(directory) / "state.json"
    if not path.exists():
        return None
    return read_json_object(path, STATE_KEYS, error=CheckpointError,
                            fix="the run cannot be resumed: start it again with --replace.")


def load_last(directory, trainable_like):
    """(trainable, optimiser state, state dict) from DIR/last/, every tensor checked."""
    last = last_dir(directory)
    state = read_state(directory)
    if state is None:
        raise CheckpointError(f"{last / 'state.json'} does not exist: there is nothing to resume "
                              f"in {directory}. Run without --resume to start.")
    trainable = check_tree(trainable_like, read_tensors(last / "trainable.safetensors"),
                           last / "trainable.safetensors")
    moments = check_tree({"m": trainable_like, "v": trainable_like},
                         read_tensors(last / "optimizer.safetensors"), last / "optimizer.safetensors")
    return trainable, {"step": state.pop("opt_step"), **moments}, state
