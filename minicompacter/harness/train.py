"""Fine-tuning and evaluation: the training loop, best-on-validation selection,
checkpoints that survive interruptions, and --resume.

One step: a length-bucketed batch -> loss(trainable, frozen, batch) with dropout ->
gradients with respect to the trainable tree -> clipped to a global norm -> AdamW with a
linear warm-up and decay. After each epoch (or every `eval_every` steps) the model is
evaluated on the validation split; the best trainable tree so far is kept and written to
the output directory (atomically), and DIR/last/ records everything --resume needs. At the
end the best tree is evaluated on validation and test and metrics.json is written.

`finetune` runs in phases: the checks (checks.py) and the output directory's rule
(rundir.py), `prepare` (data, model, schedule), `start` (a new run or the one in
DIR/last/), `train_epochs` (the loop), `final_metrics` (of the best tree in memory). The
loop runs on the layers `TrainConfig.layers` names and on every core
(`kernels.parallel`), both undone when it ends.

DIR/last/ is written before the first step, after every epoch and when the run is
interrupted (Ctrl-C or SIGTERM); the interrupt is held while a step's results, a
validation or a checkpoint are being recorded (interrupts.deferred), so what is saved is
always a whole step, and --resume goes on as if nothing had happened. A validation whose
outputs are not finite scores nan and is never the best.
"""

import dataclasses
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as onp

from ..core import model as model_lib
from ..core.kernels import parallel
from ..core.layers import LAYERS, use_layers
from ..core.methods import LEARNING_RATES, Method, make_method, option
from ..core.model import init_model, predict
from ..core.optim import adamw_update, clip_by_global_norm, init_adamw, linear_schedule
from ..core.tree import count
from . import checks, rundir
from .checkpoint import atomic_write, load_adapter, load_last, save_adapter, save_last
from .data import Encoded, Task, batch_order, encode, get_task, load_task
from .interrupts import deferred, handled
from .metrics import glue_metrics
from .pretrained import base_identity


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training arguments; each is also a flag of `finetune` and `compare` (--batch-size ...).
    The paper's value is named where ours differs."""
    epochs: int = option(10, "passes over the training set")
    lr: Optional[float] = option(None, "peak learning rate (default: the method's: 3e-3 for "
                                       "the parameter-efficient methods, 1e-4 for full)")
    batch_size: int = option(32, "rows per update (paper: 100)")
    max_length: int = option(128, "tokens per row after truncation")
    warmup_ratio: float = option(0.06, "warm-up steps as a fraction of all steps (paper: 500 steps)")
    weight_decay: float = option(0.0, "AdamW's decoupled weight decay (the reference: 0)")
    max_grad_norm: float = option(1.0, "global gradient-norm clipping")
    eval_every: Optional[int] = option(None, "evaluate every K steps (default: after each epoch)")
    eval_batch_size: int = option(64, "rows per evaluation batch")
    seed: int = option(0, "initialisation, data order, dropout and the training subset")
    pooling: str = option("mean", "[CLS] or mean over real tokens (MiniLM was trained with "
                                  "mean pooling)", choices=("cls", "mean"))
    dropout: bool = option(True, "the encoder's dropout while training")
    progress: bool = option(True, "progress bars")
    layers: str = option("fast", "fast (kernels.py) or plain (nn.py, the reference)",
                         choices=tuple(LAYERS))

    def __post_init__(self):
        checks.train_config(self)
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"Unknown pooling {self.pooling!r}; use 'cls' or 'mean'.")
        if self.layers not in LAYERS:
            raise ValueError(f"layers {self.layers!r} is unknown; use one of {sorted(LAYERS)}.")


class TrainingError(RuntimeError):
    """Training had to stop (a non-finite loss or gradient, or no validation with a finite
    score); the message says which checkpoint, if any, is on disk, intact."""


class NonFiniteError(ValueError):
    """A model whose outputs are not finite numbers (nan or inf): nothing to score."""


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
    """Predicted labels (argmax) or scores for every row of an Encoded split, in its order.
    Raises NonFiniteError if any row's logits (or score) are not finite: the argmax of nan
    is a label like any other, and would be scored as one."""
    out = onp.zeros(len(enc), onp.float64)
    bad = 0
    for idx in batch_order(enc.lengths, batch_size):
        y = predict(trainable, frozen, enc.batch(idx), model)                # (B, C)
        bad += int(onp.sum(~onp.isfinite(y).all(axis=1)))
        out[idx] = y[:, 0] if model.num_labels == 1 else onp.argmax(y, axis=1)
    if bad:
        raise NonFiniteError(f"the model gives non-finite outputs (nan or inf) for {bad} of "
                             f"{len(enc)} rows; its weights have diverged (train again with a "
                             f"smaller --lr) or are damaged.")
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


# --- one step ------------------------------------------------------------------------------

def train_step(trainable, opt, frozen, batch, model, lr, cfg, rng=None):
    """One update: the loss and its gradients with respect to the trainable tree (dropout
    when rng is given), clipped to cfg.max_grad_norm, then AdamW at learning rate lr.
    Returns (loss, gradient norm before clipping, (new trainable, new optimiser state));
    the inputs are not modified, so a caller can drop the update (a non-finite loss)."""
    value, grads = model_lib.loss_and_grad(trainable, frozen, batch, model, rng)
    grads, norm = clip_by_global_norm(grads, cfg.max_grad_norm)
    return value, norm, adamw_update(trainable, grads, opt, lr, weight_decay=cfg.weight_decay)


# --- the phases of a run --------------------------------------------------------------------

class Setup(NamedTuple):
    """What a run knows before its first step (nothing in here changes while it trains)."""
    task: Task
    task_name: str
    model: model_lib.TaskModel
    frozen: dict
    enc: dict                 # split name -> Encoded
    cfg: TrainConfig
    lr: float                 # the peak learning rate
    total_steps: int
    warmup: int
    settings: dict            # what metrics.json's "config" holds; --resume compares it
    out: Optional[Path]
    base_name: str            # the base model's name as the user gave it
    base: dict                # its identity as a checkpoint records it (name, hub id, path, digest)


def run_settings(task_name, method_config, cfg, base_name, *, train_size=None, data_dir=None):
    """What identifies a run, as metrics.json's "config" and state.json record it, known
    before any data are read (prepare adds the number of training examples)."""
    lr = cfg.lr if cfg.lr is not None else LEARNING_RATES[method_config.method]
    settings = {"method_config": dataclasses.asdict(method_config),
                "train": dataclasses.asdict(cfg), "lr": lr, "task": task_name,
                "model": base_name, "train_size": train_size,
                "data_dir": str(data_dir) if data_dir else None}
    return json.loads(json.dumps(settings))             # as state.json will hold them


def prepare(pretrained, task_name, method, cfg, *, data_dir=None, train_size=None, out=None,
            base_name=None):
    """(Setup, the initial trainable tree): the task's splits tokenised, the model
    initialised from (seed, 0), the learning-rate schedule."""
    task = get_task(task_name)
    method = method if isinstance(method, Method) else make_method(method)
    splits = load_task(task_name, data_dir=data_dir, train_size=train_size, seed=cfg.seed)
    enc = encode_splits(splits, pretrained, task, cfg.max_length)
    model, trainable, frozen = init_model(onp.random.default_rng([cfg.seed, 0]), pretrained,
                                          method, num_labels=task.num_labels, pooling=cfg.pooling)
    base_name = base_name or pretrained.name
    settings = run_settings(task_name, method.config, cfg, base_name, train_size=train_size,
                            data_dir=data_dir)
    settings = {**settings, "train_examples": len(enc["train"])}
    total_steps = cfg.epochs * math.ceil(len(enc["train"]) / cfg.batch_size)
    setup = Setup(task, task_name, model, frozen, enc, cfg, settings["lr"], total_steps,
                  round(cfg.warmup_ratio * total_steps), settings,
                  Path(out) if out is not None else None, base_name,
                  base_identity(pretrained, base_name))
    return setup, trainable


def start(setup, trainable, pretrained, resume=False):
    """The run's live state: {"trainable", "opt", "best_tree", "state"}; state is what
    state.json holds (step, epoch, batch_in_epoch, seed, history, best, train_seconds,
    settings). With resume, all of it comes from DIR/last/ and the best checkpoint."""
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "seed": setup.cfg.seed, "history": [],
             "best": None, "train_seconds": 0.0}
    live = {"trainable": trainable, "opt": init_adamw(trainable), "best_tree": None}
    if resume:
        live["trainable"], live["opt"], state = load_last(setup.out, trainable)
        differ = rundir.differences(state.get("settings"), setup.settings)
        if differ:
            raise ValueError(f"{setup.out} was started with other settings ({'; '.join(differ)}); "
                             f"resume it with the same arguments, or --replace to discard it.")
        if state["best"] is not None:
            live["best_tree"] = load_adapter(setup.out, pretrained)[1]
    state["settings"] = setup.settings
    live["state"] = state
    return live


def validate(setup, live, epoch):
    """Scores on the validation split; the best tree so far is kept (and saved to DIR).
    Outputs that are not finite score nan, and a score that is not finite is never the
    best. The checkpoint is written before the state says it exists."""
    try:
        scores = evaluate(live["trainable"], setup.frozen, setup.enc["validation"], setup.model,
                          setup.task, setup.cfg.eval_batch_size)
    except NonFiniteError:
        scores = {"score": float("nan"), "non_finite_outputs": True}
    state, best = live["state"], live["state"]["best"]
    better = math.isfinite(scores["score"]) and (
        best is None or not math.isfinite(best["score"]) or scores["score"] > best["score"])
    if better and setup.out is not None:
        save_adapter(setup.out, live["trainable"], setup.model, setup.base,
                     setup.task_name, {"max_length": setup.cfg.max_length,
                                       "eval_batch_size": setup.cfg.eval_batch_size})
    state["history"].append({"step": state["step"], "epoch": epoch, "validation": scores})
    if better:
        state["best"] = {"score": scores["score"], "epoch": epoch + 1, "step": state["step"]}
        live["best_tree"] = live["trainable"]
    return scores


def save_progress(setup, live):
    if setup.out is not None:
        with deferred():
            save_last(setup.out, live["trainable"], live["opt"], live["state"])


def stopped(setup, state, what):
    """The TrainingError of a run that cannot go on, saying what is on disk."""
    best = state["best"]
    kept = ("No checkpoint was kept (no validation had a finite score yet)." if best is None
            else f"The best checkpoint (epoch {best['epoch']}, validation score "
                 f"{best['score']:.4f}) is " + (f"intact in {setup.out}." if setup.out
                                               else "the one returned so far."))
    return TrainingError(f"{what}; training stopped. {kept} Try a smaller --lr (this run used "
                         f"{setup.lr}).")


def step_once(setup, live, batch, epoch, position):
    """One update of the live state (the batch at `position` of the epoch's order),
    recorded in its history; stops the run with TrainingError on a non-finite loss or
    gradient (the update is dropped). The update is computed first and recorded in one
    stretch that an interrupt does not cut."""
    state, cfg = live["state"], setup.cfg
    # the dropout masks of a step come from (seed, step) alone: a resumed run draws the same
    # ones without any generator state to restore
    rng = onp.random.default_rng([cfg.seed, 1, state["step"]]) if cfg.dropout else None
    step_lr = linear_schedule(state["step"] + 1, setup.total_steps, setup.warmup, setup.lr)
    value, norm, (trainable, opt) = train_step(live["trainable"], live["opt"], setup.frozen,
                                               batch, setup.model, step_lr, cfg, rng)
    if not (math.isfinite(float(value)) and math.isfinite(float(norm))):
        what = "loss" if not math.isfinite(float(value)) else "gradient norm"
        raise stopped(setup, state, f"the {what} became {float(value if what == 'loss' else norm)}"
                                    f" at step {state['step'] + 1} (epoch {epoch + 1})")
    with deferred():
        live["trainable"], live["opt"] = trainable, opt
        state["step"] += 1
        state["batch_in_epoch"] = position + 1
        state["history"].append({"step": state["step"], "epoch": epoch, "loss": float(value),
                                 "lr": step_lr, "grad_norm": norm})
    return float(value)


def train_epochs(setup, live, on_step=None):
    """The loop from where the live state stands to the last epoch. After every update,
    on_step(state) is called if given (a notebook can plot, a test can interrupt). A
    validation and what it records are one stretch that an interrupt does not cut, and so
    is the end of an epoch: a run interrupted anywhere resumes as if it had not been."""
    cfg, state = setup.cfg, live["state"]
    for epoch in range(state["epoch"], cfg.epochs):
        state["epoch"] = epoch
        order = batch_order(setup.enc["train"].lengths, cfg.batch_size, seed=[cfg.seed, epoch])
        bar = progress_bar(cfg.progress, total=len(order), initial=state["batch_in_epoch"],
                           desc=f"{setup.task_name} {setup.model.method.config.method} epoch "
                                f"{epoch + 1}/{cfg.epochs}")
        for i in range(state["batch_in_epoch"], len(order)):
            value = step_once(setup, live, setup.enc["train"].batch(order[i]), epoch, i)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if cfg.eval_every and state["step"] % cfg.eval_every == 0:
                with deferred():
                    validate(setup, live, epoch)
            if on_step is not None:
                on_step(state)
        bar.close()
        last_epoch = epoch == cfg.epochs - 1
        with deferred():
            if not cfg.eval_every or (last_epoch and state["step"] % cfg.eval_every):
                validate(setup, live, epoch)
            state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        yield epoch


class NoBar:
    """What a progress bar is asked to do, doing nothing. (A disabled tqdm would still start
    tqdm's monitor thread, which outlives the run.)"""
    def update(self, n=1):
        pass

    def set_postfix(self, **values):
        pass

    def close(self):
        pass


def progress_bar(show, **kwargs):
    """A tqdm bar (a widget in notebooks, text in a terminal), or a NoBar. The bar's class sets
    monitor_interval to 0, so that tqdm starts no monitor thread, which would outlive the run
    (tqdm's own default stays as it is)."""
    if not show:
        return NoBar()
    from tqdm.auto import tqdm
    return type("Bar", (tqdm,), {"monitor_interval": 0})(leave=False, **kwargs)


def trainable_line(trainable, model, pretrained):
    """peft's print_trainable_parameters line: "trainable params: T || all params: A ||
    trainable%: T / A", A being the base model's parameters plus what the method and the
    head add (the paper's percentage divides by the base model's alone: metrics.json's)."""
    from ..core.counting import count_measured, peft_line, summary
    return peft_line(summary(count_measured(trainable, model.method.config), count(pretrained.params)))


def final_metrics(setup, live, pretrained, train_seconds):
    """The best tree on validation and test, with what metrics.json records."""
    best = live["best_tree"]
    if best is None:
        raise stopped(setup, live["state"], "no validation gave a finite score")
    results = {split: evaluate(best, setup.frozen, setup.enc[split], setup.model, setup.task,
                               setup.cfg.eval_batch_size) for split in ("validation", "test")}
    trainable_params, total = count(best), count(pretrained.params)
    return {"task": setup.task_name, "method": setup.model.method.config.method,
            "model": setup.base_name, "seed": setup.cfg.seed,
            "trainable_params": trainable_params, "total_params": total,
            "percent": round(100.0 * trainable_params / total, 4),
            "validation": results["validation"], "test": results["test"],
            "best_epoch": live["state"]["best"]["epoch"], "epochs": setup.cfg.epochs,
            "train_seconds": round(train_seconds, 2),
            "peak_memory_mb": round(peak_memory_mb(), 1), "config": setup.settings}


# --- fine-tuning and evaluation ---------------------------------------------------------------

def finetune(pretrained, task_name, method, cfg=TrainConfig(), *, data_dir=None, train_size=None,
             out=None, resume=False, replace=False, base_name=None, on_step=None,
             log=None):
    """Fine-tune `method` (a config or a name) on a task; returns the metrics dict that is
    also written to out/metrics.json, plus "history" (every step and evaluation) and
    "trainable" (the best tree). With `out`, the best checkpoint and DIR/last/ are written
    as training goes; `resume` continues from out/last/. `on_step(state)`, if given, is
    called after every update; `log(line)`, if given, gets peft's line of parameter counts
    (`trainable_line`) before the first step.

    `out` follows rundir's rule: it belongs to this run while it lasts (a second writer is
    refused); a finished run there with the same settings is returned, not trained again
    (the dict then has "finished_before": True); any other run there is refused unless
    `resume` (to continue it) or `replace` (to discard it) says what to do. The arguments,
    the model's positions and the method's options are checked first, then the directory,
    then the data, all before the first step. SIGTERM is handled as Ctrl-C while the run lasts."""
    checks.run_arguments(out=out, resume=resume, replace=replace)
    get_task(task_name)
    method = method if isinstance(method, Method) else make_method(method)
    checks.max_length_fits(cfg.max_length, pretrained.config)
    checks.method_fits(method.config, pretrained.config)
    base_name = base_name or pretrained.name
    settings = run_settings(task_name, method.config, cfg, base_name, train_size=train_size,
                            data_dir=data_dir)
    with handled(), rundir.claimed(out, settings, resume=resume, replace=replace) as claim:
        if claim.kind == "finished":
            return finished_run(claim.path, pretrained)
        setup, trainable = prepare(pretrained, task_name, method, cfg, data_dir=data_dir,
                                   train_size=train_size, out=claim.path, base_name=base_name)
        checks.room_for_run(setup.out, trainable, setup.total_steps)
        live = start(setup, trainable, pretrained, claim.kind == "resume")
        if claim.replace:
            rundir.discard(claim.path)
        if log is not None:
            log(trainable_line(live["trainable"], setup.model, pretrained))
        return train_and_report(setup, live, pretrained, on_step)


def finished_run(path, pretrained):
    """What finetune returns for the finished run in `path`, read from its files."""
    metrics, history = rundir.finished_metrics(path)
    return {**metrics, "history": history, "trainable": load_adapter(path, pretrained)[1],
            "finished_before": True}


def train_and_report(setup, live, pretrained, on_step=None):
    """The training loop from the live state, DIR/last/ saved at the start, after every
    epoch and on an interrupt; then the final metrics of the best tree in memory."""
    state, cfg = live["state"], setup.cfg
    with use_layers(cfg.layers), parallel():
        # the peak memory reported is training's: the model, the encoded splits and what a
        # step needs, not the peak of reading and tokenizing a large training file before
        reset_peak_memory()
        t0 = time.perf_counter() - state["train_seconds"]
        try:
            if state["step"] == 0:
                save_progress(setup, live)        # from now on there is always a last/
            for _ in train_epochs(setup, live, on_step):
                state["train_seconds"] = time.perf_counter() - t0
                save_progress(setup, live)
        except KeyboardInterrupt:
            state["train_seconds"] = time.perf_counter() - t0
            save_progress(setup, live)
            raise
        metrics = final_metrics(setup, live, pretrained, time.perf_counter() - t0)
    if setup.out is not None:
        with deferred():                          # metrics.json last: it marks the run finished
            atomic_write(setup.out / rundir.HISTORY, json.dumps(state["history"]))
            atomic_write(setup.out / rundir.METRICS, json.dumps(metrics, indent=2))
    metrics["history"] = state["history"]     # these two are returned, not written
    metrics["trainable"] = live["best_tree"]
    return metrics


def evaluate_checkpoint(directory, task_name=None, *, data_dir=None, pretrained=None):
    """{"validation": ..., "test": ...} of a saved checkpoint, computed as finetune reported
    them (same splits, maximum length and batches). The task defaults to the checkpoint's."""
    from .checkpoint import checkpoint_base

    pretrained = pretrained or checkpoint_base(directory)
    model, trainable, frozen, config = load_adapter(directory, pretrained)
    task_name = task_name or config.get("task")
    if task_name is None:
        raise ValueError(f"{directory} holds a {config['format']} adapter, which records no task; "
                         f"name the task to evaluate it on (--task).")
    task = get_task(task_name)
    if task.num_labels != config["num_labels"]:
        held = (f"a head with {config['num_labels']} outputs" if config["num_labels"]
                else "no head")
        raise ValueError(f"{directory} holds {held}" + (f", trained on {config['task']}"
                         if config.get("task") else "") + f"; {task_name} needs "
                         f"{task.num_labels} output{'s' if task.num_labels > 1 else ''}.")
    splits = load_task(task_name, data_dir=data_dir)
    enc = encode_splits({s: splits[s] for s in ("validation", "test")}, pretrained, task,
                        config.get("max_length", 128))
    with parallel():
        return {s: evaluate(trainable, frozen, enc[s], model, task,
                            config.get("eval_batch_size", 64)) for s in ("validation", "test")}


def predict_texts(directory, texts, pairs=None, *, pretrained=None, batch_size=64):
    """Each text's (or pair's) prediction by a checkpoint (any format load_adapter reads, with
    a head): [{"label": name, "probabilities": {name: p}} ...] for classification,
    [{"score": s} ...] for regression."""
    from .checkpoint import checkpoint_base
    from .data import tokenize

    pretrained = pretrained or checkpoint_base(directory)
    model, trainable, frozen, config = load_adapter(directory, pretrained)
    if not model.num_labels:
        raise ValueError(f"{directory} holds an adapter without a head: it gives hidden states, "
                         f"not predictions. Export or train it with a head to predict.")
    names = predict_label_names(config, model.num_labels)
    max_length = min(config.get("max_length", 128), pretrained.config.max_positions)
    out = []
    with parallel():
        for i in range(0, len(texts), batch_size):
            batch = tokenize(pretrained.tokenizer, texts[i:i + batch_size],
                             None if pairs is None else pairs[i:i + batch_size],
                             max_length=max_length)
            out += [_prediction(row, names) for row in onp.asarray(predict(trainable, frozen, batch, model))]
    return out


def predict_label_names(config, num_labels):
    """The names of a head's outputs: the task's, an imported head's, or LABEL_i."""
    from .export import label_names
    names = label_names(config)
    return names if len(names) == num_labels else [f"LABEL_{i}" for i in range(num_labels)]


def _prediction(logits, names):
    if len(logits) == 1:
        return {"score": float(logits[0])}
    p = onp.exp(logits - logits.max())
    p /= p.sum()
    return {"label": names[int(onp.argmax(logits))],
            "probabilities": {n: round(float(v), 6) for n, v in zip(names, p)}}
