"""Several runs side by side: `compare` and `demo` fine-tune each method in a process of its
own (jobs.py), after checking every method's options and directory, and print one table
and one plot.

    run_methods("sst2", ["full", "compacter"], "minilm", {}, TrainConfig(), "runs/cmp")
"""

import dataclasses
import json
from pathlib import Path

from ...core.methods import METHODS, method_config
from ..data.userdata import TaskData, as_source, resolve, task_name
from ..formats.files import atomic_write
from ..pretrained import load_pretrained
from ..study.plots import params_vs_score
from . import checks, rundir
from .jobs import run_in_process
from .process import say
from .train import TrainConfig, finetune, run_settings


def finetune_job(model, task, method, options, train, data_dir, train_size, out, resume=False,
                 replace=False):
    """One method's run inside `compare` or `demo`, in its own process (jobs.run_in_process):
    finetune with JSON-able arguments (the task: a name, or {"data": a TaskData's fields});
    prints the run's lines; returns metrics.json's contents."""
    task = TaskData(**task["data"]) if isinstance(task, dict) else task
    metrics = finetune(load_pretrained(model), task, method_config(method, **options),
                       TrainConfig(**train), data_dir=data_dir, train_size=train_size,
                       out=out, resume=resume, replace=replace, log=say)
    return {k: v for k, v in metrics.items() if k not in ("history", "trainable",
                                                          "finished_before")}


def method_names(text):
    """The methods of --methods: comma-separated names (or all), each once."""
    names = list(METHODS) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise ValueError(f"--methods {text!r} names no method; give comma-separated methods "
                         f"({', '.join(METHODS)}) or all.")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--methods names {twice} more than once; each method is one run in "
                         f"its own directory.")
    return names


def plan_runs(task, methods, pretrained, options, cfg, out, *, data_dir=None, train_size=None,
              resume=False, replace=False):
    """Before the first run of `compare` or `demo`: every method's options checked against
    the model, and what becomes of each method's directory decided by rundir's rule, so
    that nothing is trained when any run would be refused. [(name, options, Decision)];
    with --resume, a method whose directory holds no run yet starts one."""
    plans = []
    for name in methods:
        opts = {k: v for k, v in options.items()
                if k in {f.name for f in dataclasses.fields(method_config(name))}}
        config = method_config(name, **opts)
        checks.method_fits(config, pretrained.config)
        path = Path(out) / name
        settings = run_settings(task, config, cfg, pretrained.name, train_size=train_size,
                                data_dir=data_dir)
        started = path.is_dir() and rundir.existing_run(path)[0] is not None
        plans.append((name, opts, rundir.decide(path, settings, resume=resume and started,
                                                replace=replace)))
    return plans


def job_task(source):
    """A task as a job's JSON argument: a name, or {"data": a TaskData's fields} (data files:
    a DatasetDict in memory cannot travel to another process)."""
    if isinstance(source, str):
        return source
    if source.dataset is not None and not isinstance(source.dataset, (str, Path)):
        raise ValueError("compare runs each method in a process of its own, which a DatasetDict "
                         "in memory cannot reach: save it (save_to_disk) and give its directory, "
                         "or give data files.")
    return {"data": {k: str(v) if isinstance(v, Path) else v
                     for k, v in dataclasses.asdict(source).items()}}


def run_methods(task, methods, model, options, cfg, out, *, data_dir=None, train_size=None,
                resume=False, replace=False):
    """Each method's finetune in a process of its own, after plan_runs has checked them all;
    a finished run with the same settings is read, not trained again. Their metrics dicts.
    `task`: a name or the user's data, as finetune takes it."""
    task = as_source(task)
    job = job_task(task)
    if not isinstance(task, str):             # the user's data, checked before any directory
        resolve(task, train_size=train_size, seed=cfg.seed)
    pretrained = load_pretrained(model)
    path, _ = rundir.make_out(out)
    with rundir.locked(path):
        plans = plan_runs(task, methods, pretrained, options, cfg, out, data_dir=data_dir,
                          train_size=train_size, resume=resume, replace=replace)
        rows = []
        for name, opts, decision in plans:
            print(f"-- {name}", flush=True)
            if decision.kind == "finished":
                print(f"{decision.path} holds this run, finished, with the same settings: not "
                      f"trained again (--replace trains it again)", flush=True)
                rows.append(rundir.finished_metrics(decision.path)[0])
                continue
            rows.append(run_in_process(finetune_job, model=pretrained.name, task=job,
                                       method=name, options=opts, train=dataclasses.asdict(cfg),
                                       data_dir=data_dir, train_size=train_size,
                                       out=str(decision.path), resume=decision.kind == "resume",
                                       replace=decision.replace))
        print_comparison(rows, task_name(task), out)
    return rows


def print_comparison(rows, task, out):
    split = "test" if all(r["test"] is not None for r in rows) else "validation"
    print("\n| method | trainable params | % | score | best epoch | seconds | peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['trainable_params']:,} | {r['percent']:.3f} | "
              f"{r[split]['score']:.4f} | {r['best_epoch']}/{r['epochs']} | "
              f"{r['train_seconds']:.0f} | {r['peak_memory_mb']:.0f} |")
    plot = Path(out) / "params_vs_score.png"
    params_vs_score([{"method": r["method"], "percent": r["percent"], "score": r[split]["score"],
                      "n": r.get(f"{split}_examples") if is_accuracy(r[split]) else None}
                     for r in rows], plot,
                    title=f"{task}: {split} score against trainable parameters")
    atomic_write(Path(out) / "compare.json", json.dumps(rows, indent=2))
    which = ("the test split's" if split == "test" else
             "the validation split's (there is no test data: the score the epoch was chosen on, "
             "which flatters every method alike)")
    print(f"\nscore: {which}, at the best epoch on validation (a method whose best "
          f"epoch is its last may gain from more epochs); peak MB: each run's "
          f"process, from the start of training\nplot: {plot}\nall numbers: {Path(out) / 'compare.json'}")


DEMO_METHODS = ["full", "adapter", "compacter", "compacter++", "bitfit", "lora"]


def demo_settings(model, progress=True):
    """(TrainConfig, method options, training examples) of the demo: small enough for about
    five minutes on 2 cores, long enough that every method has switched on (Compacter's
    shared A starts at 1e-4 and needs updates before its adapters contribute): 1,000
    training sentences, 5 epochs (160 updates). The tiny encoder, with random weights, gets
    500 sentences, 10 epochs and a reduction factor of 8, as its width is 32."""
    if model == "tiny":
        return TrainConfig(epochs=10, max_length=64, progress=progress), {"reduction_factor": 8}, 500
    return TrainConfig(epochs=5, max_length=64, progress=progress), {}, 1000


def is_accuracy(scores):
    """Whether a metrics dict's score is a proportion of examples (accuracy alone)."""
    return set(scores) == {"accuracy", "score"}
