"""Adapter-only checkpoints, written atomically, loaded with every shape checked.

A checkpoint directory holds
  minicompacter_adapter.safetensors  the trainable tree (adapters, shared A, unfrozen
                              layer norms or biases, the head) and the method's own fixed
                              leaves (a PHM rule with learn_phm False, `Method.fixed`); keys
                              are dotted tree paths, such as layers.3.ffn_adapter.down.s
  minicompacter_adapter.json  the method and its config, the base model (its name, hub id,
                              directory and weights digest) and config (and, for a T5,
                              base_architecture "t5": the config is a T5Config), the task,
                              the number of labels, the pooling, the head's layers
  last/                       what --resume needs: trainable.safetensors,
                              optimizer.safetensors (m.* and v.*), state.json

The names are minicompacter's own, so that neither peft (adapter_config.json) nor
transformers (config.json) takes a directory for one of theirs. Version 0.1.0 wrote
adapter_model.safetensors and adapter_config.json; those still load. (Which format a
directory holds, and the one `load_adapter` for all of them, is dispatch.py's.)

Every file is written through files.atomic_write, so an interrupted run never leaves a
half-written file: the checkpoint on disk is always a whole one. Nothing is ever read with
pickle. DIR/last/ is replaced as a whole (`save_last`). Every file read back goes through
files.py's checked readers: each JSON field's type and range (state.json's step, epoch,
best, ...), each tensor's name, shape, dtype and values (finite in the compute dtype), and
the head's size against its tensors before the model is built.
"""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as onp

from ...core.encoder import EncoderConfig
from ...core.methods import method_config
from ...core.model import init_model, kept_fixed
from ...core.t5 import T5Config
from ...core.tree import flatten, merge, split, unflatten
from ..pretrained import weights_digest
from .files import (OBJECT, CheckpointError, array, as_kind, atomic_write, check_fields, check_tree,
                    integer, json_file, nullable, number, read_json_object, read_tensors, record,
                    text, tree_bytes)

WEIGHTS, CONFIG, LAST = "minicompacter_adapter.safetensors", "minicompacter_adapter.json", "last"
LEGACY_WEIGHTS, LEGACY_CONFIG = "adapter_model.safetensors", "adapter_config.json"   # 0.1.0


def config_dict(model, base, task_name, extra=None):
    """What CONFIG holds. base: the base model's identity (pretrained.base_identity)."""
    method = model.method.config
    architecture = {"base_architecture": "t5"} if model.seq2seq else {}
    return {"format": "minicompacter", "method": method.method,
            "method_config": dataclasses.asdict(method), "base_model": base,
            "base_config": dataclasses.asdict(model.encoder_config), **architecture,
            "task": task_name, "num_labels": model.num_labels, "pooling": model.pooling,
            "head_layers": model.head_layers, **(extra or {})}


def save_adapter(directory, trainable, model, base, task_name, extra=None, *, frozen=None):
    """WEIGHTS, then CONFIG, each written atomically. base: the base model's identity;
    `extra`: more settings to record (the evaluation's max_length and batch size); frozen:
    the model's frozen tree, whose leaves the method keeps fixed (model.kept_fixed: a PHM rule
    with learn_phm False) are written beside the trainable ones, so the checkpoint gives the
    same model back."""
    directory = Path(directory)
    kept = kept_fixed(model, frozen) if frozen is not None else {}
    atomic_write(directory / WEIGHTS, tree_bytes(merge(trainable, kept) if kept else trainable))
    atomic_write(directory / CONFIG, json.dumps(config_dict(model, base, task_name, extra),
                                                indent=2))


CONFIG_KEYS = {"method": text(), "method_config": OBJECT, "base_model": as_kind((str, dict)),
               "base_config": OBJECT, "task": text(), "num_labels": integer(0),
               "pooling": text("cls", "mean")}
CONFIG_OPTIONAL = {"head_layers": integer(1, 2), "max_length": integer(1),
                   "eval_batch_size": integer(1), "base_architecture": text("t5")}
DAMAGED = "the checkpoint is damaged: train it again (finetune --replace)."


def kind(directory):
    """"minicompacter" (this version's checkpoint), "minicompacter-0.1" (0.1.0's), or None."""
    directory = Path(directory)
    if (directory / CONFIG).exists():
        return "minicompacter"
    legacy = json_file(directory / LEGACY_CONFIG)       # peft's files have the same names
    if isinstance(legacy, dict) and "method" in legacy and "peft_type" not in legacy:
        return "minicompacter-0.1"
    return None


def read_config(directory):
    """The native checkpoint config of a directory (this version's, or 0.1.0's), checked to
    hold every key a checkpoint needs."""
    directory = Path(directory)
    which = kind(directory)
    if which is None:
        raise CheckpointError(f"{directory / CONFIG} does not exist; give the directory "
                              f"finetune --out wrote.")
    path = directory / (CONFIG if which == "minicompacter" else LEGACY_CONFIG)
    return read_json_object(path, CONFIG_KEYS, optional=CONFIG_OPTIONAL, error=CheckpointError,
                            fix=DAMAGED)


def base_of(config, source="the checkpoint's config"):
    """The base model's identity a native config records: {name, hub_id, path, digest}
    (0.1.0 recorded the name alone), every field checked."""
    base = config["base_model"]
    base = {"name": base} if isinstance(base, str) else base
    return check_fields(base, {"name": nullable(text())}, BASE_IDENTITY,
                        source=f"{source}: base_model", error=CheckpointError, fix=DAMAGED)


BASE_IDENTITY = {"hub_id": nullable(text()), "path": nullable(text()), "digest": nullable(text())}


# what the recorded base_config's fields that EncoderConfig does not check may be (its sizes
# and flags it checks itself)
BASE_CONFIG = {"layer_norm_eps": number(above=0), "hidden_dropout": number(0, 0.999),
               "attention_dropout": number(0, 0.999), "hidden_act": text(),
               "initializer_range": number(above=0)}


def encoder_config(recorded, source="the checkpoint's config", architecture=None):
    """The EncoderConfig a checkpoint recorded (a T5Config when architecture is "t5"), every
    field checked. Fields this version does not have are ignored (0.1.0 recorded
    pad_token_id, which the encoder never read)."""
    kind = T5Config if architecture == "t5" else EncoderConfig
    if kind is EncoderConfig:
        check_fields(recorded, optional=BASE_CONFIG, source=f"{source}: base_config",
                     error=CheckpointError, fix=DAMAGED)
    known = {f.name for f in dataclasses.fields(kind)}
    try:
        return kind(**{k: v for k, v in recorded.items() if k in known})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: base_config is damaged ({e}); {DAMAGED}") from None


# fields a method config was once recorded under: old name -> (new name, old value -> new)
RENAMED = {"factored": ("build_W", lambda factored: None if factored is None else not factored)}


def method_of(directory, config):
    """The method config a native checkpoint records (fields renamed since, translated)."""
    fields = {}
    for k, v in config["method_config"].items():
        if k in RENAMED:
            k, v = RENAMED[k][0], RENAMED[k][1](v)
        if k != "method":
            fields[k] = tuple(v) if isinstance(v, list) else v
    try:
        return method_config(config["method"], **fields)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{directory}'s config lacks or garbles {e}; the checkpoint is "
                              f"damaged.") from None


def parts(directory, config):
    """(base identity, method config, EncoderConfig) of a native checkpoint's config."""
    try:
        return (base_of(config, str(directory)), method_of(directory, config),
                encoder_config(config["base_config"], str(directory),
                               config.get("base_architecture")))
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{directory}'s config lacks or garbles {e}; the checkpoint is "
                              f"damaged.") from None


def check_base(directory, base, base_cfg, pretrained):
    """CheckpointError unless `pretrained` is the base model the checkpoint was trained on:
    the recorded config and (where recorded) the weights' digest."""
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


def leaf_dtype(params):
    """The floating-point dtype of a parameter tree (the compute dtype)."""
    return next(iter(flatten(params).values())).dtype


def check_head_size(tensors, num_labels, source):
    """CheckpointError unless the head's bias has num_labels entries: checked before the model
    is built, so a config naming a huge head allocates nothing."""
    bias = tensors.get("head.b")
    held = 0 if bias is None else bias.shape[0]
    if held != num_labels:
        raise CheckpointError(f"{source} holds a head of {held} labels, and its config says "
                              f"num_labels {num_labels}; {DAMAGED}")


def read(directory, pretrained):
    """(model, trainable, frozen, config) of a native checkpoint on its base model (found by
    dispatch.checkpoint_base, or given: it must be the one the checkpoint was trained on)."""
    directory = Path(directory)
    config = read_config(directory)
    base, method, base_cfg = parts(directory, config)
    check_base(directory, base, base_cfg, pretrained)
    weights = directory / (WEIGHTS if kind(directory) == "minicompacter" else LEGACY_WEIGHTS)
    tensors = read_tensors(weights, dtype=leaf_dtype(pretrained.params))
    t5 = config.get("base_architecture") == "t5"          # T5 answers in words: no head
    check_head_size(tensors, 0 if t5 else config["num_labels"], weights)
    model, skeleton, frozen = init_model(onp.random.default_rng(0), pretrained, method,
                                         num_labels=config["num_labels"],
                                         pooling=config["pooling"],
                                         head_layers=config.get("head_layers", 1))
    kept = flatten(kept_fixed(model, frozen))          # the method's fixed leaves, if any
    trainable = check_tree(skeleton, {k: v for k, v in tensors.items() if k not in kept}, weights)
    if kept:
        rest = split(frozen, model.method.fixed)[1]
        frozen = merge(rest, check_tree(unflatten(kept), {k: v for k, v in tensors.items()
                                                         if k in kept}, weights))
    return model, trainable, frozen, config


# --- what --resume needs ----------------------------------------------------------------------

STATE_KEYS = {"step": integer(0), "epoch": integer(0), "batch_in_epoch": integer(0),
              "seed": integer(0), "history": array(OBJECT),
              "best": nullable(record({"score": number(), "epoch": integer(1), "step": integer(0)})),
              "train_seconds": number(0), "opt_step": integer(0)}
STATE_OPTIONAL = {"settings": OBJECT}


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
    return read_json_object(path, STATE_KEYS, optional=STATE_OPTIONAL, error=CheckpointError,
                            fix="the run cannot be resumed: start it again with --replace.")


def load_last(directory, trainable_like):
    """(trainable, optimiser state, state dict) from DIR/last/, every tensor checked."""
    last = last_dir(directory)
    state = read_state(directory)
    if state is None:
        raise CheckpointError(f"{last / 'state.json'} does not exist: there is nothing to resume "
                              f"in {directory}. Run without --resume to start.")
    dtype = leaf_dtype(trainable_like)
    trainable = check_tree(trainable_like, read_tensors(last / "trainable.safetensors", dtype=dtype),
                           last / "trainable.safetensors")
    moments = check_tree({"m": trainable_like, "v": trainable_like},
                         read_tensors(last / "optimizer.safetensors", dtype=dtype),
                         last / "optimizer.safetensors")
    return trainable, {"step": state.pop("opt_step"), **moments}, state
