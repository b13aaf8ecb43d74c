"""Adapter-only checkpoints, written atomically, loaded with every shape checked.

A checkpoint directory holds
  adapter_model.safetensors   the trainable tree only (adapters, shared A, unfrozen layer
                              norms or biases, the head); keys are dotted tree paths,
                              such as layers.3.ffn_adapter.down.s
  adapter_config.json         the method and its config, the base model's name and
                              config, the task, the number of labels, the pooling
  last/                       what --resume needs: trainable.safetensors,
                              optimizer.safetensors (m.* and v.*), state.json

Every file is written to a temporary name in the same directory and renamed over the
old one (os.replace is atomic), so an interrupted run never leaves a half-written file:
the checkpoint on disk is always a whole one. Nothing is ever read with pickle.
"""

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import numpy as onp

from ..core.encoder import EncoderConfig
from ..core.tree import flatten, unflatten

WEIGHTS, CONFIG, LAST = "adapter_model.safetensors", "adapter_config.json", "last"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def atomic_write(path, data):
    """Write bytes (or text) to path through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def config_dict(model, base_name, task_name, extra=None):
    method = model.method.config
    return {"method": method.method, "method_config": dataclasses.asdict(method),
            "base_model": base_name, "base_config": dataclasses.asdict(model.encoder_config),
            "task": task_name, "num_labels": model.num_labels, "pooling": model.pooling,
            **(extra or {})}


def save_adapter(directory, trainable, model, base_name, task_name, extra=None):
    """adapter_model.safetensors, then adapter_config.json, each written atomically.
    `extra`: more settings to record (the evaluation's max_length and batch size)."""
    directory = Path(directory)
    atomic_write(directory / WEIGHTS, tree_bytes(trainable))
    atomic_write(directory / CONFIG, json.dumps(config_dict(model, base_name, task_name, extra),
                                                indent=2))


def read_config(directory):
    path = Path(directory) / CONFIG
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give the directory finetune --out wrote.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); the checkpoint is damaged.") from None


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
    return unflatten({k: onp.asarray(v, want[k].dtype) for k, v in tensors.items()})


def load_adapter(directory, pretrained=None):
    """(model, trainable, frozen, config) from a checkpoint directory. The base model is
    loaded by its recorded name unless given; it must have the recorded config."""
    from ..core.methods import method_config
    from ..core.model import init_model
    from .pretrained import load_pretrained

    directory = Path(directory)
    config = read_config(directory)
    try:
        base_name, base_cfg = config["base_model"], encoder_config(config["base_config"])
        method = method_config(config["method"], **{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in config["method_config"].items()
                                                    if k != "method"})
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{directory / CONFIG} lacks or garbles {e}; the checkpoint is "
                              f"damaged.") from None
    if pretrained is None:
        pretrained = load_pretrained(base_name)
    if pretrained.config != base_cfg:
        diff = {k: (v, getattr(pretrained.config, k)) for k, v in vars(base_cfg).items()
                if getattr(pretrained.config, k) != v}
        raise CheckpointError(f"{directory} was trained on base model {base_name!r}, whose config "
                              f"differs from the model given ({pretrained.name!r}): "
                              f"{ {k: f'{a} vs {b}' for k, (a, b) in diff.items()} }. Load it with "
                              f"the base model it was trained on.")
    model, skeleton, frozen = init_model(onp.random.default_rng(0), pretrained, method,
                                         num_labels=config["num_labels"],
                                         pooling=config["pooling"])
    trainable = check_tree(skeleton, read_tensors(directory / WEIGHTS), directory / WEIGHTS)
    return model, trainable, frozen, config


# --- what --resume needs ----------------------------------------------------------------------

def save_last(directory, trainable, opt_state, state):
    """DIR/last/: the latest trainable tree, the optimiser's moments, and state.json (step,
    epoch, position in the epoch, the seed, history, best). The data order of an epoch
    comes from (seed, epoch) and the dropout masks of a step from (seed, step), so the seed
    and the step are the whole random state."""
    last = Path(directory) / LAST
    atomic_write(last / "trainable.safetensors", tree_bytes(trainable))
    atomic_write(last / "optimizer.safetensors",
                 tree_bytes({"m": opt_state["m"], "v": opt_state["v"]}))
    atomic_write(last / "state.json", json.dumps(dict(state, opt_step=opt_state["step"])))


def load_last(directory, trainable_like):
    """(trainable, optimiser state, state dict) from DIR/last/, every tensor checked."""
    last = Path(directory) / LAST
    if not (last / "state.json").exists():
        raise CheckpointError(f"{last / 'state.json'} does not exist: there is nothing to resume "
                              f"in {directory}. Run without --resume to start.")
    state = json.loads((last / "state.json").read_text())
    trainable = check_tree(trainable_like, read_tensors(last / "trainable.safetensors"),
                           last / "trainable.safetensors")
    moments = check_tree({"m": trainable_like, "v": trainable_like},
                         read_tensors(last / "optimizer.safetensors"), last / "optimizer.safetensors")
    return trainable, {"step": state.pop("opt_step"), **moments}, state
