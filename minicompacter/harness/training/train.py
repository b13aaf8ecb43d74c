"""Fine-tuning: the training loop, best-on-validation selection, checkpoints that survive
interruptions, and --resume.

One step: a length-bucketed batch -> loss(trainable, frozen, batch) with dropout ->
gradients with respect to the trainable tree -> clipped to a global norm -> AdamW with a
linear warm-up and decay. After each epoch (or every `eval_every` steps) the model is
scored on the validation split; the best trainable tree so far is kept and written to the
output directory (atomically), and DIR/last/ records everything --resume needs. At the end
the best tree is evaluated on validation and test and metrics.json is written.

A run reads top to bottom in `finetune`: the checks (checks.py) and the output directory's
rule (rundir.py), `prepare` (data, model, schedule: a `Run`, which never changes), a
`RunState` (new, or read back from DIR/last/), `train` (the loop, which moves the state
on), `final_metrics`. The loop runs on the layer set `TrainConfig.layer_set` names and on
every core (`threads.parallel`), both undone when it ends. The task is a name (GLUE, the
synthetic suite) or the user's data (data/userdata.py makes a Task of it either way); a
task without test data has no test metrics. What a run prints after each validation,
DIR/train.log and DIR/curves.png are watch.py's; with `patience`, the run stops once that
many validations in a row bring no improvement (counted from the history, so a resumed
run stops where the uninterrupted one did).

DIR/last/ is written before the first step, after every epoch and when the run is
interrupted (Ctrl-C or SIGTERM); the interrupt is held while a step's results, a
validation or a checkpoint are being recorded (interrupts.deferred), so what is saved is
always a whole step, and --resume goes on as if nothing had happened. A validation whose
outputs are not finite scores nan and is never the best.
"""

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as onp

from ...core import model as model_lib
from ...core.layers import LAYERS, use_layers
from ...core.methods import PRESETS, Method, make_method, option
from ...core.model import POOLING, init_model
from ...core.optim import adamw_update, clip_by_global_norm, init_adamw, linear_schedule
from ...core.threads import parallel
from ...core.tree import count
from ..data.batches import EVAL_BATCH_SIZE, MAX_LENGTH, batch_order
from ..data.tasks import Task
from ..data.userdata import as_source, describe, identity, resolve, task_name
from ..formats.dispatch import load_adapter
from ..formats.files import atomic_write
from ..formats.native import last_dir, load_last, save_adapter, save_last
from ..pretrained import base_identity, method_for_model
from . import checks, rundir
from .evaluate import NonFiniteError, encode_splits, evaluate, trainable_line
from .interrupts import deferred, handled
from .process import peak_memory_mb, progress_bar, reset_peak_memory
from .watch import Watch

RATES = ", ".join(f"{name} {preset.lr:g}" for name, preset in PRESETS.items())


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training arguments; each is also a flag of `finetune` and `compare` (--batch-size ...).
    The paper's value is named where ours differs. Every default of a run is here, once (the
    method's own defaults are its preset's, core/methods.py)."""
    epochs: int = option(10, "passes over the training set")
    lr: Optional[float] = option(None, f"peak learning rate (default: the method preset's: {RATES})")
    batch_size: int = option(32, "rows per update (paper: 100)")
    max_length: int = option(MAX_LENGTH, "tokens per row after truncation")
    warmup_ratio: float = option(0.06, "warm-up steps as a fraction of all steps (paper: 500 steps)")
    weight_decay: float = option(0.0, "AdamW's decoupled weight decay (the reference: 0)")
    max_grad_norm: float = option(1.0, "global gradient-norm clipping")
    eval_every: Optional[int] = option(None, "evaluate every K steps (default: after each epoch)")
    patience: Optional[int] = option(None, "stop once N validations in a row bring no improvement "
                                           "(default: train every epoch)")
    eval_batch_size: int = option(EVAL_BATCH_SIZE, "rows per evaluation batch")
    seed: int = option(0, "initialisation, data order, dropout and the training subset")
    pooling: str = option(POOLING, "[CLS] or mean over real tokens (MiniLM was trained with "
                                   "mean pooling)", choices=("cls", "mean"))
    dropout: bool = option(True, "the encoder's dropout while training")
    progress: bool = option(True, "progress bars")
    layer_set: str = option("fast", "the layers: fast (kernels.py) or plain (nn.py, the "
                                    "reference)", choices=tuple(LAYERS))

    def __post_init__(self):
        checks.train_config(self)


class TrainingError(RuntimeError):
    """Training had to stop (a non-finite loss or gradient, or no validation with a finite
    score); the message says which checkpoint, if any, is on disk, intact."""


class Run(NamedTuple):
    """What a run knows before its first step (nothing in here changes while it trains)."""
    task: Task
    task_name: str
    model: model_lib.TaskModel
    frozen: dict
    splits: dict              # split name -> data.batches.Encoded
    cfg: TrainConfig
    lr: float                 # the peak learning rate
    total_steps: int
    warmup: int
    settings: dict            # what metrics.json's "config" holds; --resume compares it
    out: Optional[Path]
    model_name: str           # the base model's name as the user gave it
    base: dict                # its identity as a checkpoint records it (name, hub id, path, digest)


@dataclasses.dataclass
class RunState:
    """Everything that changes while a run trains: the trees, where it stands, what it has
    seen. DIR/last/ holds all of it (`record()` is state.json, beside the trees)."""
    trainable: dict
    opt: dict                         # AdamW's state: step, m, v
    step: int = 0                     # updates made
    epoch: int = 0                    # the epoch under way (or the next one, between epochs)
    batch_in_epoch: int = 0           # batches of the epoch done
    history: list = dataclasses.field(default_factory=list)     # every step and validation
    best: Optional[dict] = None       # {"score", "epoch", "step"} of the best validation
    best_tree: Optional[dict] = None  # the trainable tree at that validation
    train_seconds: float = 0.0

    def record(self, run):
        """state.json's contents (the trees go beside it)."""
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "seed": run.cfg.seed, "history": self.history, "best": self.best,
                "train_seconds": self.train_seconds, "settings": run.settings}


def run_settings(task, method_config, cfg, model_name, *, train_size=None, data_dir=None):
    """What identifies a run, as metrics.json's "config" and state.json record it, known
    before any data are read (prepare adds the number of training examples). The user's
    data add "data": their files' paths and SHA-256 digests (userdata.identity)."""
    lr = cfg.lr if cfg.lr is not None else PRESETS[method_config.method].lr
    source = as_source(task)
    settings = {"method_config": dataclasses.asdict(method_config),
                "train": dataclasses.asdict(cfg), "lr": lr, "task": task_name(source),
                "model": model_name, "train_size": train_size,
                "data_dir": str(data_dir) if data_dir else None}
    if not isinstance(source, str):
        settings["data"] = identity(source)
    return json.loads(json.dumps(settings))             # as state.json will hold them


# --- a run, top to bottom ----------------------------------------------------------------------

def finetune(pretrained, task, method, cfg=TrainConfig(), *, data_dir=None, train_size=None,
             out=None, resume=False, replace=False, model_name=None, on_step=None, log=None):
    """Fine-tune `method` (a config or a name) on a task: a task name, or the user's data (a
    userdata.TaskData, a DatasetDict, the directory of a saved one, a data file's path).
    Returns the metrics dict that is also written to out/metrics.json, plus "history"
    (every step and evaluation) and "trainable" (the best tree). With `out`, the best
    checkpoint, DIR/last/, DIR/train.log and DIR/curves.png are written as training goes;
    `resume` continues from out/last/. `on_step(state)`, if given, is called with the
    RunState after every update; `log(line)`, if given, gets every line the run prints:
    peft's line of parameter counts (`trainable_line`), where the data came from, one line
    per validation (train.log's). `model_name`: the base model's name as recorded
    (default: pretrained.name).

    `out` follows rundir's rule: it belongs to this run while it lasts (a second writer is
    refused); a finished run there with the same settings is returned, not trained again
    (the dict then has "finished_before": True); any other run there is refused unless
    `resume` (to continue it) or `replace` (to discard it) says what to do. The arguments,
    the model's positions and the method's options are checked first, then the directory,
    then the data, all before the first step. SIGTERM is handled as Ctrl-C while the run lasts."""
    checks.run_arguments(out=out, resume=resume, replace=replace)
    source = as_source(task)
    method = ready_method(method, pretrained)
    checks.max_length_fits(cfg.max_length, pretrained.config,
                           reserved=getattr(method.config, "prompt_length", 0))
    checks.method_fits(method.config, pretrained.config)
    model_name = model_name or pretrained.name
    settings = run_settings(source, method.config, cfg, model_name, train_size=train_size,
                            data_dir=data_dir)
    checks.decay_fits(settings["lr"], cfg.weight_decay)
    with handled(), rundir.claimed(out, settings, resume=resume, replace=replace) as claim:
        if claim.kind == "finished":
            return finished_run(claim.path, pretrained)
        run, trainable = prepare(pretrained, source, method, cfg, data_dir=data_dir,
                                 train_size=train_size, out=claim.path, model_name=model_name,
                                 settings=settings)
        checks.room_for_run(run.out, trainable, run.total_steps)
        state = (resumed(run, trainable, pretrained) if claim.kind == "resume"
                 else RunState(trainable, init_adamw(trainable)))
        if claim.replace:
            rundir.discard(claim.path)
        watch = Watch(run.out, log, state.train_seconds)
        for line in start_lines(run, state, source, pretrained):
            watch.line(line)
        with use_layers(cfg.layer_set), parallel():
            # the peak memory reported is training's: the model, the encoded splits and what a
            # step needs, not the peak of reading and tokenizing a large training file before
            reset_peak_memory()
            train(run, state, on_step, functools.partial(watch.validated, run))
            metrics = final_metrics(run, state, pretrained)
        if metrics["stopped_early"]:
            watch.line(stopped_early_line(run, metrics["stopped_early"]))
        if run.out is not None:
            watch.curves(run, state, final=True)
            with deferred():                      # metrics.json last: it marks the run finished
                atomic_write(run.out / rundir.HISTORY, json.dumps(state.history))
                atomic_write(run.out / rundir.METRICS, json.dumps(metrics, indent=2))
        return {**metrics, "history": state.history, "trainable": state.best_tree}


def prepare(pretrained, task, method, cfg, *, data_dir=None, train_size=None, out=None,
            model_name=None, settings=None):
    """(Run, the initial trainable tree): the task's splits read, checked and tokenised, the
    model initialised from (seed, 0), the learning-rate schedule. `settings`: run_settings'
    (computed here if not given)."""
    method = ready_method(method, pretrained)
    task_spec, splits = resolve(task, data_dir=data_dir, train_size=train_size, seed=cfg.seed)
    splits = encode_splits(splits, pretrained, task_spec, cfg.max_length,
                           method.config)
    model, trainable, frozen = init_model(onp.random.default_rng([cfg.seed, 0]), pretrained,
                                          method, num_labels=task_spec.num_labels,
                                          pooling=cfg.pooling)
    model_name = model_name or pretrained.name
    settings = {**(settings or run_settings(task, method.config, cfg, model_name,
                                            train_size=train_size, data_dir=data_dir)),
                "train_examples": len(splits["train"])}
    total_steps = cfg.epochs * math.ceil(len(splits["train"]) / cfg.batch_size)
    run = Run(task_spec, settings["task"], model, frozen, splits, cfg, settings["lr"], total_steps,
              round(cfg.warmup_ratio * total_steps), settings,
              Path(out) if out is not None else None, model_name,
              base_identity(pretrained, model_name))
    return run, trainable


def ready_method(method, pretrained):
    """The Method of a config, a name or a Method, with what it takes from the model filled
    in (pretrained.method_for_model: Prompt Tuning-T's vocabulary tokens)."""
    method = method if isinstance(method, Method) else make_method(method)
    config = method_for_model(method.config, pretrained)
    return method if config == method.config else make_method(config)


def resumed(run, trainable_like, pretrained):
    """The RunState DIR/last/ records (and the best tree, from the checkpoint), after
    checking that it was started with the same settings."""
    trainable, opt, record = load_last(run.out, trainable_like)
    differ = rundir.differences(record.get("settings"), run.settings)
    if differ:
        raise ValueError(f"{run.out} was started with other settings ({'; '.join(differ)}); "
                         f"resume it with the same arguments, or --replace to discard it.")
    checks.resumable(record, opt["step"], run.total_steps // run.cfg.epochs, run.cfg.epochs,
                     last_dir(run.out) / "state.json")
    state = RunState(trainable, opt, record["step"], record["epoch"], record["batch_in_epoch"],
                     record["history"], record["best"], None, record["train_seconds"])
    if state.best is not None:
        state.best_tree = load_adapter(run.out, pretrained)[1]
    return state


def train(run, state, on_step=None, on_validation=None):
    """The loop, from where `state` stands to the end of the last epoch, or until the
    patience is spent. DIR/last/ is saved before the first step, after every epoch and on
    an interrupt. A validation and what it records are one stretch that an interrupt does
    not cut, and so is the end of an epoch: a run interrupted anywhere resumes as if it had
    not been. After every update, on_step(state) is called if given (a notebook can plot, a
    test can interrupt); after every validation, on_validation(state, scores)."""
    cfg, train_split = run.cfg, run.splits["train"]
    clock = time.perf_counter() - state.train_seconds
    try:
        if state.step == 0:
            save_progress(run, state)                 # from now on there is always a last/
        for epoch in range(state.epoch, cfg.epochs):
            if patience_spent(run, state):
                break
            state.epoch = epoch
            order = batch_order(train_split.lengths, cfg.batch_size, seed=[cfg.seed, epoch])
            bar = progress_bar(cfg.progress, total=len(order), initial=state.batch_in_epoch,
                               desc=f"{run.task_name} {run.model.method.config.method} "
                                    f"epoch {epoch + 1}/{cfg.epochs}")
            for i in range(state.batch_in_epoch, len(order)):
                loss = step(run, state, train_split.batch(order[i]), i)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                validated = cfg.eval_every and state.step % cfg.eval_every == 0
                if validated:
                    with deferred():
                        validate(run, state, on_validation)
                if on_step is not None:
                    on_step(state)
                if validated and patience_spent(run, state):
                    break                             # the epoch stays unfinished, and saved
            bar.close()
            with deferred():
                if not cfg.eval_every or (epoch == cfg.epochs - 1 and state.step % cfg.eval_every):
                    validate(run, state, on_validation)
                if state.batch_in_epoch == len(order):
                    state.epoch, state.batch_in_epoch = epoch + 1, 0
            state.train_seconds = time.perf_counter() - clock
            save_progress(run, state)
    except KeyboardInterrupt:
        state.train_seconds = time.perf_counter() - clock
        save_progress(run, state)
        raise


def step(run, state, batch, position):
    """One update of the state with the batch at `position` of the epoch's order, recorded
    in its history; TrainingError on a non-finite loss or gradient (the update is dropped).
    The update is computed first and recorded in one stretch that an interrupt does not cut.
    Returns the loss."""
    cfg = run.cfg
    # the dropout masks of a step come from (seed, step) alone: a resumed run draws the same
    # ones without any generator state to restore
    rng = onp.random.default_rng([cfg.seed, 1, state.step]) if cfg.dropout else None
    lr = linear_schedule(state.step + 1, run.total_steps, run.warmup, run.lr)
    loss, norm, (trainable, opt) = train_step(state.trainable, state.opt, run.frozen, batch,
                                              run.model, lr, cfg, rng)
    loss, norm = float(loss), float(norm)
    if not (math.isfinite(loss) and math.isfinite(norm)):
        what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
        raise stopped(run, state, f"the {what} became {value} at step {state.step + 1} "
                                  f"(epoch {state.epoch + 1})")
    with deferred():
        state.trainable, state.opt = trainable, opt
        state.step += 1
        state.batch_in_epoch = position + 1
        state.history.append({"step": state.step, "epoch": state.epoch, "loss": loss,
                              "lr": lr, "grad_norm": norm})
    return loss


def train_step(trainable, opt, frozen, batch, model, lr, cfg, rng=None):
    """One update: the loss and its gradients with respect to the trainable tree (dropout
    when rng is given), clipped to cfg.max_grad_norm, then AdamW at learning rate lr.
    Returns (loss, gradient norm before clipping, (new trainable, new optimiser state));
    the inputs are not modified, so a caller can drop the update (a non-finite loss)."""
    value, grads = model_lib.loss_and_grad(trainable, frozen, batch, model, rng)
    grads, norm = clip_by_global_norm(grads, cfg.max_grad_norm)
    return value, norm, adamw_update(trainable, grads, opt, lr, weight_decay=cfg.weight_decay)


def validate(run, state, on_validation=None):
    """Scores on the validation split; the best tree so far is kept (and saved to DIR).
    Outputs that are not finite score nan, and a score that is not finite is never the
    best. The checkpoint is written before the state says it exists. Then
    on_validation(state, scores), if given."""
    try:
        scores = evaluate(state.trainable, run.frozen, run.splits["validation"], run.model,
                          run.task, run.cfg.eval_batch_size)
    except NonFiniteError:
        scores = {"score": float("nan"), "non_finite_outputs": True}
    better = improves(scores["score"], None if state.best is None else state.best["score"])
    if better and run.out is not None:
        save_adapter(run.out, state.trainable, run.model, run.base, run.task_name,
                     checkpoint_extra(run), frozen=run.frozen)
    state.history.append({"step": state.step, "epoch": state.epoch, "validation": scores})
    if better:
        state.best = {"score": scores["score"], "epoch": state.epoch + 1, "step": state.step}
        state.best_tree = state.trainable
    if on_validation is not None:
        on_validation(state, scores)
    return scores


def improves(score, best):
    """Whether a validation score is a new best: finite, and above the best so far (None:
    there is none yet)."""
    return math.isfinite(score) and (best is None or score > best)


def without_improvement(history):
    """How many validations in a row, up to now, brought no improvement."""
    best, since = None, 0
    for record in history:
        if "validation" in record:
            score = record["validation"]["score"]
            best, since = (score, 0) if improves(score, best) else (best, since + 1)
    return since


def patience_spent(run, state):
    """Whether --patience validations in a row have brought no improvement."""
    return run.cfg.patience is not None and without_improvement(state.history) >= run.cfg.patience


def checkpoint_extra(run):
    """What a checkpoint records besides the model: the evaluation's length and batch, the
    labels' names (predict prints them), the text columns, and the user's data (evaluate
    reads them again)."""
    extra = {"max_length": run.cfg.max_length, "eval_batch_size": run.cfg.eval_batch_size,
             "label_names": list(run.task.label_names), "text_columns": list(run.task.columns)}
    if "data" in run.settings:
        extra["data"] = run.settings["data"]
    return extra


def save_progress(run, state):
    """DIR/last/ from the state, in one stretch that an interrupt does not cut."""
    if run.out is not None:
        with deferred():
            save_last(run.out, state.trainable, state.opt, state.record(run))


def stopped(run, state, what):
    """The TrainingError of a run that cannot go on, saying what is on disk."""
    best = state.best
    kept = ("No checkpoint was kept (no validation had a finite score yet)." if best is None
            else f"The best checkpoint (epoch {best['epoch']}, validation score "
                 f"{best['score']:.4f}) is " + (f"intact in {run.out}." if run.out
                                               else "the one returned so far."))
    decay = f" and --weight-decay {run.cfg.weight_decay:g}" if run.cfg.weight_decay else ""
    return TrainingError(f"{what}; training stopped. {kept} Try a smaller --lr (this run used "
                         f"{run.lr}{decay}).")


# --- what a run reports --------------------------------------------------------------------------

def final_metrics(run, state, pretrained):
    """The best tree on validation and test (None without test data), with what
    metrics.json records."""
    best = state.best_tree
    if best is None:
        raise stopped(run, state, "no validation gave a finite score")
    results = {split: evaluate(best, run.frozen, run.splits[split], run.model, run.task,
                               run.cfg.eval_batch_size) if split in run.splits else None
               for split in ("validation", "test")}
    trainable_params, total = count(best), count(pretrained.params)
    return {"task": run.task_name, "method": run.model.method.config.method,
            "model": run.model_name, "seed": run.cfg.seed,
            "trainable_params": trainable_params, "total_params": total,
            "percent": round(100.0 * trainable_params / total, 4),
            "validation": results["validation"], "test": results["test"],
            "validation_examples": len(run.splits["validation"]),
            "test_examples": len(run.splits["test"]) if "test" in run.splits else None,
            "best_epoch": state.best["epoch"], "epochs": run.cfg.epochs,
            "stopped_early": stopped_early(run, state),
            "train_seconds": round(state.train_seconds, 2),
            "peak_memory_mb": round(peak_memory_mb(), 1), "config": run.settings}


def finished_run(path, pretrained):
    """What finetune returns for the finished run in `path`, read from its files."""
    metrics, history = rundir.finished_metrics(path)
    return {**metrics, "history": history, "trainable": load_adapter(path, pretrained)[1],
            "finished_before": True}


def stopped_early(run, state):
    """Where the patience stopped the run ({"epoch", "step", "patience"}), or None."""
    if not patience_spent(run, state) or state.step >= run.total_steps:
        return None
    last = next(r for r in reversed(state.history) if "validation" in r)
    return {"epoch": last["epoch"] + 1, "step": last["step"], "patience": run.cfg.patience}


def stopped_early_line(run, where):
    return (f"stopped early at epoch {where['epoch']} of {run.cfg.epochs}, step {where['step']} of "
            f"{run.total_steps}: {where['patience']} validation{'s' * (where['patience'] > 1)} in "
            f"a row brought no improvement (--patience {where['patience']}).")


def start_lines(run, state, source, pretrained):
    """What a run prints before its first step: peft's line of parameter counts, the run, where
    its data came from (and that there is no test split, if none), a resume."""
    cfg = run.cfg
    lines = [trainable_line(state.trainable, run.model, pretrained),
             f"{run.task_name} {run.model.method.config.method} on {run.model_name}: "
             f"{len(run.splits['train']):,} training examples, {cfg.epochs} epochs, "
             f"{run.total_steps:,} steps of {cfg.batch_size}, peak learning rate {run.lr:g}"
             + (f", patience {cfg.patience}" if cfg.patience else "")]
    lines += [f"data: {line}" for line in describe(source, run.splits)]
    if state.step:
        lines.append(f"resumed at step {state.step} of {run.total_steps} (epoch {state.epoch + 1})")
    return lines
