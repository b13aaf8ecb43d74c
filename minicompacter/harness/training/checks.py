"""Checks made before any work is spent: a run that must fail fails in its first seconds,
with a message that names the problem and the fix, and changes nothing on disk.

Each check raises a ValueError (the command line prints it as `error: ...` and exits
with code 2). What is checked where:
  - the training settings (`train_config`, from TrainConfig itself): every number in its
    range and finite;
  - the arguments of a run together (`run_arguments`): --resume with --out, not with
    --replace;
  - the maximum length against the model's positions (`max_length_fits`);
  - a method's options against the model's widths (`method_fits`);
  - the output directory's room for the run's files (`room_for_run`): the largest file
    a process may write (ulimit -f) and the free space;
  - memory for what is about to be built (`memory_fits`): MemAvailable, where the system
    reports it;
  - the learning rate and the weight decay together (`decay_fits`);
  - a run's last/state.json against the run it is to continue (`resumable`).
The output directory itself (created, writable, whose run it holds) is `rundir`'s; the
data files are checked as they are read (data/tasks.py), the model as it is loaded
(formats/transformers.py), a checkpoint's files as they are read (formats/files.py).
"""

import math
import resource
import shutil

import numpy as onp

from ...core.layers import LAYERS
from ...core.methods import make_method
from ...core.t5 import T5Config
from ...core.tree import flatten
from ..data.batches import MIN_LENGTH


def flag(name):
    """The command-line flag of a TrainConfig or AdapterConfig field."""
    return "--" + name.replace("_", "-")


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def train_config(cfg):
    """Every TrainConfig value in its range; the message names the field and its flag."""
    def refuse(name, want):
        raise ValueError(f"{name} ({flag(name)}) must be {want}, got {getattr(cfg, name)!r}.")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(cfg, name) < 1:
            refuse(name, "at least 1")
    if cfg.max_length < MIN_LENGTH:
        refuse("max_length", f"at least {MIN_LENGTH} (the special tokens take 2 or 3 of a row)")
    if cfg.eval_every is not None and cfg.eval_every < 1:
        refuse("eval_every", "at least 1 (leave it out to evaluate after each epoch)")
    if cfg.patience is not None and cfg.patience < 1:
        refuse("patience", "at least 1 (leave it out to train every epoch)")
    if cfg.seed < 0:
        refuse("seed", "a non-negative integer")
    if cfg.lr is not None and not (_finite(cfg.lr) and cfg.lr > 0):
        refuse("lr", "a positive finite number")
    if not (_finite(cfg.warmup_ratio) and 0 <= cfg.warmup_ratio < 1):
        refuse("warmup_ratio", "in [0, 1)")
    if not (_finite(cfg.weight_decay) and cfg.weight_decay >= 0):
        refuse("weight_decay", "a non-negative finite number")
    if not (_finite(cfg.max_grad_norm) and cfg.max_grad_norm > 0):
        refuse("max_grad_norm", "a positive finite number")
    for name, allowed in (("pooling", ("cls", "mean")), ("layer_set", tuple(LAYERS))):
        if getattr(cfg, name) not in allowed:
            refuse(name, f"one of {list(allowed)}")


def decay_fits(lr, weight_decay):
    """AdamW's decoupled decay multiplies every weight by 1 - lr * weight_decay each step: at
    1 or more it zeroes or flips them, whatever the gradients say."""
    if lr * weight_decay >= 1:
        raise ValueError(f"weight_decay {weight_decay:g} (--weight-decay) with learning rate "
                         f"{lr:g} multiplies every weight by 1 - lr * weight_decay = "
                         f"{1 - lr * weight_decay:g} at each step; lr * weight_decay must be "
                         f"below 1 (such as --weight-decay 0.01).")


def resumable(state, opt_step, steps_per_epoch, epochs, source):
    """ValueError unless last/state.json (read and type-checked: native.read_state) describes
    a point of this run: an epoch of it, a batch of that epoch (or its end, when an interrupt
    came after its last update and before its closing validation), the step they make (and
    the optimiser's), as many steps in the history, and a best validation already passed."""
    damaged = f"{source} does not describe a point of this run"
    fix = "the run cannot be resumed: start it again with --replace."
    where = state["epoch"] * steps_per_epoch + state["batch_in_epoch"]
    steps = sum(1 for h in state["history"] if "loss" in h)
    within = (state["batch_in_epoch"] < steps_per_epoch
              or (state["batch_in_epoch"] == steps_per_epoch and state["epoch"] < epochs))
    if not (state["epoch"] <= epochs and within
            and state["step"] == where == opt_step == steps):
        raise ValueError(f"{damaged}: step {state['step']} (optimiser {opt_step}, history {steps}), "
                         f"but epoch {state['epoch']} of {epochs} and batch "
                         f"{state['batch_in_epoch']} of {steps_per_epoch} make step {where}; {fix}")
    best = state["best"]
    if best is not None and not (best["step"] <= state["step"] and best["epoch"] <= state["epoch"] + 1):
        raise ValueError(f"{damaged}: its best validation (epoch {best['epoch']}, step "
                         f"{best['step']}) lies after step {state['step']}; {fix}")


def run_arguments(*, out, resume, replace):
    """The arguments of a run that only make sense together."""
    if resume and out is None:
        raise ValueError("--resume needs --out, the directory of the run to continue.")
    if resume and replace:
        raise ValueError("--resume continues the run in --out and --replace discards it; "
                         "give one of them.")


def token_limit(config):
    """The tokens per row a model's positions hold (EncoderConfig.max_length), or None for T5,
    whose relative positions take rows of any length."""
    return None if isinstance(config, T5Config) else config.max_length


def max_length_fits(max_length, encoder_config, reserved=0):
    """A row of max_length tokens needs as many positions, and `reserved` more for a method's
    virtual tokens before it (prompt tuning's prompt_length): at most cfg.max_length, the
    tokens the model's position embeddings hold (all of them in BERT; RoBERTa's first
    padding_idx + 1 rows are never used: 512 of 514). A model whose positions hold fewer than
    MIN_LENGTH tokens cannot be used at all. T5 takes any length (relative positions)."""
    most = token_limit(encoder_config)
    if most is None:
        return
    if most < MIN_LENGTH:
        raise ValueError(f"the model's {encoder_config.max_positions} position embeddings hold "
                         f"rows of at most {most} tokens, and minicompacter needs rows of at "
                         f"least {MIN_LENGTH} (the special tokens take 2 or 3 of a row); this "
                         f"model cannot be used here.")
    if max_length + reserved > most:
        held = (f"{encoder_config.max_positions} position embeddings" if most ==
                encoder_config.max_positions else f"{encoder_config.max_positions} position "
                f"embeddings, which hold {most} tokens")
        prompt = f" and the prompt's {reserved} virtual tokens exceed" if reserved else " exceeds"
        raise ValueError(f"max_length {max_length} (--max-length){prompt} the model's {held}; "
                         f"use --max-length {most - reserved} or less"
                         + (" (or a shorter --prompt-length)." if reserved else "."))


def method_fits(config, encoder_config):
    """A method's options against the model's widths (a PHM bottleneck that phm_dim must
    divide, a bottleneck that is not zero), by making its parameters once."""
    make_method(config).init(onp.random.default_rng(0), encoder_config)


# bytes a step adds to history.json; room for the small files (metrics.json, the config,
# state.json's other keys) and, on the disk, for what else may be written meanwhile
HISTORY_BYTES_PER_STEP, FILE_MARGIN, DISK_MARGIN = 200, 1 << 16, 1 << 20


def room_for_run(out, trainable, total_steps):
    """The largest file of the run (the optimiser's moments, twice the trainable tree, or
    the history) within the process's file-size limit, and the free space in `out` enough
    for the checkpoint (1 tree), last/ (3: the tree and two moments) and last/'s
    replacement while it is written (3)."""
    if out is None:
        return
    tree_bytes = sum(leaf.nbytes for leaf in flatten(trainable).values())
    largest = max(2 * tree_bytes, HISTORY_BYTES_PER_STEP * total_steps) + FILE_MARGIN
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < largest:
        raise ValueError(f"this process may write files of at most {limit:,} bytes (ulimit -f), "
                         f"and the run's largest file takes about {largest:,}; raise the limit "
                         f"(ulimit -f unlimited) before training into {out}.")
    needed, free = 7 * tree_bytes + DISK_MARGIN, shutil.disk_usage(out).free
    if free < needed:
        raise ValueError(f"{out} has {free / 2 ** 20:,.1f} MB free and the run's checkpoints "
                         f"need about {needed / 2 ** 20:,.1f} MB; free some space or choose "
                         f"another --out.")


def available_memory():
    """Bytes of memory available for new allocations (Linux's MemAvailable), or None where
    the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_fits(nbytes, what):
    """ValueError when `what` (its bytes: nbytes) would take more memory than is available,
    before anything is allocated (rather than a MemoryError, or the system's OOM killer)."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ValueError(f"{what} takes {nbytes / 2 ** 30:,.2f} GiB, more than the "
                         f"{available / 2 ** 30:,.2f} GiB of memory available; choose smaller "
                         f"sizes.")
