"""Fine-tuning and evaluation: the training loop, best-on-validation selection,
checkpoints that survive interruptions, and --resume.

One step: a length-bucketed batch -> loss(trainable, frozen, batch) with dropout ->
gradients with respect to the trainable tree -> clipped to a global norm -> AdamW with a
linear warm-up and decay. After each epoch (or every `eval_every` steps) the model is
evaluated on the validation split; the best trainable tree so far is written to the
output directory (atomically), and DIR/last/ records everything --resume needs. At the
end the best tree is evaluated on validation and test and metrics.json is written.
"""

import dataclasses
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as onp
from autograd import value_and_grad

from . import model as model_lib
from .checkpoint import atomic_write, load_adapter, load_last, save_adapter, save_last
from .data import Encoded, batch_order, encode, get_task, load_task
from .metrics import glue_metrics
from .methods import make_method
from .model import init_model, predict
from .optim import adamw_update, clip_by_global_norm, init_adamw, linear_schedule
from .tree import count

# Peak learning rates. The paper (T5-base, batch 100, thousands of steps): 3e-3 for
# Compacter, Compacter++, PHM-Adapter and Adapter-LowRank; 3e-4 for Adapter,
# Pfeiffer-Adapter, BitFit and full fine-tuning. Ours (MiniLM, batch 32, a few hundred
# steps on small training sets): 3e-3 for every parameter-efficient method (at 1e-3,
# Adapter, BitFit and LoRA reached 0.72, 0.67, 0.67 on the synthetic sentiment task (600
# examples, 57 steps); at 3e-3 0.99, 0.84, 0.92), and 1e-4, the usual rate for BERT-size
# models, for full fine-tuning (not tuned here). README, "Training".
LEARNING_RATES = {"full": 1e-4, "adapter": 3e-3, "pfeiffer": 3e-3, "adapter-lowrank": 3e-3,
                  "phm-adapter": 3e-3, "compacter": 3e-3, "compacter++": 3e-3,
                  "bitfit": 3e-3, "lora": 3e-3}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training arguments (the paper's value in brackets where ours differs)."""
    epochs: int = 10                   # passes over the training set
    lr: Optional[float] = None         # peak learning rate; None: LEARNING_RATES[method]
    batch_size: int = 32               # [100]
    max_length: int = 128              # tokens per row after truncation
    warmup_ratio: float = 0.06         # warm-up steps as a fraction of all steps [500 steps]
    weight_decay: float = 0.0          # as the reference (the HF Trainer's default)
    max_grad_norm: float = 1.0         # global gradient-norm clipping
    eval_every: Optional[int] = None   # evaluate every K steps; None: after each epoch
    eval_batch_size: int = 64
    seed: int = 0                      # initialisation, data order, dropout, train subset
    pooling: str = "mean"              # [CLS] or mean; MiniLM was trained with mean pooling
    dropout: bool = True               # the encoder's dropout while training
    progress: bool = True              # tqdm progress bars

    def __post_init__(self):
        for name in ("epochs", "batch_size", "max_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")


class TrainingError(RuntimeError):
    """Training had to stop (a non-finite loss); the best checkpoint on disk is intact."""


_STATUS = Path("/proc/self/status")


def reset_peak_memory():
    """Count peak memory from now on: on Linux, writing 5 to /proc/self/clear_refs sets the
    process's high-water mark (VmHWM) back to its current resident size. Elsewhere the peak
    cannot be reset and counts from the process's start. Returns whether it was reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb():
    """This process's peak resident memory in MB: since the last `reset_peak_memory` where
    Linux can reset it (VmHWM), else since the process started (ru_maxrss)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0              # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


# --- evaluation ----------------------------------------------------------------------------

def predictions(trainable, frozen, enc, model, batch_size=64):
    """Predicted labels (argmax) or scores for every row of an Encoded split, in its order."""
    out = onp.zeros(len(enc), onp.float64)
    for idx in batch_order(enc.lengths, batch_size):
        y = predict(trainable, frozen, enc.batch(idx), model)                # (B, C)
        out[idx] = y[:, 0] if model.num_labels == 1 else onp.argmax(y, axis=1)
    return out


def evaluate(trainable, frozen, enc, model, task, batch_size=64):
    """The task's metrics (Hugging Face glue keys and `score`) on an Encoded split."""
    preds = predictions(trainable, frozen, enc, model, batch_size)
    labels = enc.labels.astype(onp.float64)
    return glue_metrics(task.metric, preds if task.is_regression else preds.astype(int),
                        labels if task.is_regression else labels.astype(int))


def encode_splits(splits, pretrained, task, max_length):
    pad = pretrained.tokenizer.token_to_id("[PAD]")
    return {name: Encoded(encode(ds, pretrained.tokenizer, task, max_length=max_length), pad,
                          task.is_regression)
            for name, ds in splits.items()}


# --- the loop -------------------------------------------------------------------------------

def train_step(trainable, opt, frozen, batch, model, lr, cfg, rng=None):
    """One update: the loss and its gradients with respect to the trainable tree (dropout
    when rng is given), clipped to cfg.max_grad_norm, then AdamW at learning rate lr.
    Returns (loss, gradient norm before clipping, (new trainable, new optimiser state));
    the inputs are not modified, so a caller can drop the update (a non-finite loss)."""
    value, grads = value_and_grad(model_lib.loss)(trainable, frozen, batch, model, rng)
    grads, norm = clip_by_global_norm(grads, cfg.max_grad_norm)
    return value, norm, adamw_update(trainable, grads, opt, lr, weight_decay=cfg.weight_decay)

def finetune(pretrained, task_name, method, cfg=TrainConfig(), *, data_dir=None, train_size=None,
             out=None, resume=False, base_name=None, _stop_after_step=None):
    """Fine-tune `method` (a config or a name) on a task; returns the metrics dict that is
    also written to out/metrics.json, plus "history" (every step and evaluation) and
    "trainable" (the best tree). With `out`, the best checkpoint and DIR/last/ are written
    as training goes; `resume` continues from out/last/."""
    if cfg.progress:
        from tqdm.auto import tqdm         # a widget in notebooks, text in a terminal
    else:
        from tqdm import tqdm              # disabled below; no widget warning in notebooks

    task = get_task(task_name)
    method = make_method(method)
    base_name = base_name or pretrained.name
    out = Path(out) if out is not None else None
    if resume and out is None:
        raise ValueError("--resume needs --out, the directory of the run to continue.")
    splits = load_task(task_name, data_dir=data_dir, train_size=train_size, seed=cfg.seed)
    enc = encode_splits(splits, pretrained, task, cfg.max_length)

    model, trainable, frozen = init_model(onp.random.default_rng([cfg.seed, 0]), pretrained,
                                          method, num_labels=task.num_labels, pooling=cfg.pooling)
    lr = cfg.lr if cfg.lr is not None else LEARNING_RATES[method.config.method]
    steps_per_epoch = math.ceil(len(enc["train"]) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_ratio * total_steps)
    opt = init_adamw(trainable)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "seed": cfg.seed, "history": [],
             "best": None, "train_seconds": 0.0}
    settings = {"method_config": dataclasses.asdict(method.config), "train": dataclasses.asdict(cfg),
                "lr": lr, "task": task_name, "model": base_name, "train_size": train_size,
                "train_examples": len(enc["train"]), "data_dir": str(data_dir) if data_dir else None}
    settings = json.loads(json.dumps(settings))             # as state.json will hold them
    if resume:
        trainable, opt, state = load_last(out, trainable)
        same = lambda s: {**s, "train": {k: v for k, v in s["train"].items() if k != "progress"}}
        if same(state.get("settings", settings)) != same(settings):
            raise ValueError(f"{out} was started with other settings; resume it with the same "
                             f"arguments, or start a new run in another --out directory.")
    state["settings"] = settings

    def checkpoint_last():
        if out is not None:
            save_last(out, trainable, opt, state)

    def validate(epoch):
        scores = evaluate(trainable, frozen, enc["validation"], model, task, cfg.eval_batch_size)
        state["history"].append({"step": state["step"], "epoch": epoch, "validation": scores})
        best = state["best"]
        if best is None or scores["score"] > best["score"] or not math.isfinite(best["score"]):
            state["best"] = {"score": scores["score"], "epoch": epoch + 1, "step": state["step"]}
            if out is not None:
                save_adapter(out, trainable, model, base_name, task_name,
                             {"max_length": cfg.max_length, "eval_batch_size": cfg.eval_batch_size})
            else:
                state["best_tree"] = trainable
        return scores

    # the peak memory reported is training's: the model, the encoded splits and what a step
    # needs, not the peak of reading and tokenizing a large training file before
    reset_peak_memory()
    t0 = time.perf_counter() - state["train_seconds"]
    try:
        for epoch in range(state["epoch"], cfg.epochs):
            state["epoch"] = epoch
            order = batch_order(enc["train"].lengths, cfg.batch_size, seed=[cfg.seed, epoch])
            bar = tqdm(total=len(order), initial=state["batch_in_epoch"], disable=not cfg.progress,
                       desc=f"{task_name} {method.config.method} epoch {epoch + 1}/{cfg.epochs}",
                       leave=False)
            for i in range(state["batch_in_epoch"], len(order)):
                if _stop_after_step is not None and state["step"] >= _stop_after_step:
                    raise KeyboardInterrupt
                batch = enc["train"].batch(order[i])
                # the dropout masks of a step come from (seed, step) alone: a resumed run
                # draws the same ones without any generator state to restore
                dropout_rng = onp.random.default_rng([cfg.seed, 1, state["step"]])
                step_lr = linear_schedule(state["step"] + 1, total_steps, warmup, lr)
                value, norm, new = train_step(trainable, opt, frozen, batch, model, step_lr, cfg,
                                              dropout_rng if cfg.dropout else None)
                if not math.isfinite(float(value)):
                    raise TrainingError(
                        f"the loss became {float(value)} at step {state['step'] + 1} (epoch "
                        f"{epoch + 1}); training stopped. The best checkpoint so far"
                        f"{' in ' + str(out) if out is not None else ''} is intact. Try a "
                        f"smaller --lr (this run used {lr}).")
                trainable, opt = new
                state["step"] += 1
                state["batch_in_epoch"] = i + 1
                state["history"].append({"step": state["step"], "epoch": epoch,
                                         "loss": float(value), "lr": step_lr, "grad_norm": norm})
                bar.update(1)
                bar.set_postfix(loss=f"{float(value):.4f}")
                if cfg.eval_every and state["step"] % cfg.eval_every == 0:
                    validate(epoch)
            bar.close()
            last_epoch = epoch == cfg.epochs - 1
            if not cfg.eval_every or (last_epoch and state["step"] % cfg.eval_every):
                validate(epoch)
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
            state["train_seconds"] = time.perf_counter() - t0
            checkpoint_last()
    except KeyboardInterrupt:
        state["train_seconds"] = time.perf_counter() - t0
        checkpoint_last()
        raise
    train_seconds = time.perf_counter() - t0

    # the best tree, on validation and test
    if out is not None:
        _, best_tree, _, _ = load_adapter(out, pretrained)
    else:
        best_tree = state["best_tree"]
    results = {split: evaluate(best_tree, frozen, enc[split], model, task, cfg.eval_batch_size)
               for split in ("validation", "test")}
    trainable_params = count(best_tree)
    total = count(pretrained.params)
    metrics = {"task": task_name, "method": method.config.method, "model": base_name,
               "seed": cfg.seed, "trainable_params": trainable_params, "total_params": total,
               "percent": round(100.0 * trainable_params / total, 4),
               "validation": results["validation"], "test": results["test"],
               "best_epoch": state["best"]["epoch"], "epochs": cfg.epochs,
               "train_seconds": round(train_seconds, 2),
               "peak_memory_mb": round(peak_memory_mb(), 1), "config": settings}
    if out is not None:
        atomic_write(out / "metrics.json", json.dumps(metrics, indent=2))
        atomic_write(out / "history.json", json.dumps(state["history"]))
    metrics["history"] = state["history"]     # these two are returned, not written
    metrics["trainable"] = best_tree
    return metrics


def evaluate_checkpoint(directory, task_name=None, *, data_dir=None, pretrained=None):
    """{"validation": ..., "test": ...} of a saved checkpoint, computed as finetune reported
    them (same splits, maximum length and batches). The task defaults to the checkpoint's."""
    from .checkpoint import read_config
    from .pretrained import load_pretrained

    config = read_config(directory)
    task_name = task_name or config["task"]
    task = get_task(task_name)
    if task.num_labels != config["num_labels"]:
        raise ValueError(f"{directory} holds a head with {config['num_labels']} outputs, trained "
                         f"on {config['task']}; {task_name} needs {task.num_labels}.")
    pretrained = pretrained or load_pretrained(config["base_model"])
    model, trainable, frozen, config = load_adapter(directory, pretrained)
    splits = load_task(task_name, data_dir=data_dir)
    enc = encode_splits({s: splits[s] for s in ("validation", "test")}, pretrained, task,
                        config.get("max_length", 128))
    return {s: evaluate(trainable, frozen, enc[s], model, task, config.get("eval_batch_size", 64))
            for s in ("validation", "test")}
