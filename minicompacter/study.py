"""Studies: many fine-tuning runs over tasks, methods, training-set sizes and seeds, kept
in a results file so that an interrupted study continues where it stopped, and summed
up as the mean and spread over seeds.

    records = run_grid(pretrained, [Run("sst2", "compacter", 100, seed) for seed in (0, 1, 2)],
                       data_dir=glue_dir, results="runs/low_resource.jsonl")
    summary = summarize(records)          # one row per (task, method, train_size)

Each run is `train.finetune` with the paper's splits and a seeded, stratified training
subset of `train_size` examples (the seed also sets initialisation, data order and
dropout). Runs are done in this process (the model is loaded once); their time is the
training loop's, their memory is not measured here (`compare` and bench/bench_step.py
measure memory, each run in its own process).
"""

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Optional

from .train import TrainConfig, finetune


def epochs_for(train_size, batch_size=32, *, target_steps=250, least=3, most=20):
    """Epochs for a training set of `train_size` examples: enough for about `target_steps`
    updates, between `least` and `most` epochs. The paper trains 20 epochs on its small
    GLUE tasks and 3 on the large ones; with 100 examples (4 batches) even 20 epochs are
    only 80 updates, with 4,000 examples 3 epochs are 375.
    100 -> 20, 500 -> 16, 1000 -> 8, 2000 -> 4, 4000 -> 3 at batch 32."""
    steps_per_epoch = math.ceil(train_size / batch_size)
    return max(least, min(most, math.ceil(target_steps / steps_per_epoch)))


@dataclasses.dataclass(frozen=True)
class Run:
    """One fine-tuning run of a study. epochs None: `epochs_for(train_size)`."""
    task: str
    method: str
    train_size: Optional[int]          # None: the whole training split
    seed: int = 0
    epochs: Optional[int] = None
    lr: Optional[float] = None         # None: train.LEARNING_RATES[method]
    max_length: int = 128

    def key(self, model):
        """What identifies the run in a results file (the model's name included)."""
        return json.dumps({"model": model, **dataclasses.asdict(self)}, sort_keys=True)


def read_results(path):
    """{key: record} from a results file (one JSON record per line); {} if there is none.
    A line cut short by an interruption is ignored."""
    records = {}
    path = Path(path)
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[record["key"]] = record
    return records


def run_one(pretrained, run, *, data_dir=None, model_name=None, progress=False):
    """Fine-tune one run; its record (the run's fields, scores, time, parameter counts)."""
    train_size = run.train_size
    epochs = run.epochs or epochs_for(train_size or 10 ** 9)
    cfg = TrainConfig(epochs=epochs, lr=run.lr, seed=run.seed, max_length=run.max_length,
                      progress=progress)
    metrics = finetune(pretrained, run.task, run.method, cfg, data_dir=data_dir,
                       train_size=train_size, base_name=model_name)
    return {"key": run.key(model_name or pretrained.name), "model": model_name or pretrained.name,
            **dataclasses.asdict(run), "epochs": epochs, "lr": metrics["config"]["lr"],
            "train_examples": metrics["config"]["train_examples"],
            "test": metrics["test"], "validation": metrics["validation"],
            "best_epoch": metrics["best_epoch"], "train_seconds": metrics["train_seconds"],
            "trainable_params": metrics["trainable_params"], "percent": metrics["percent"]}


def run_grid(pretrained, runs, *, data_dir=None, results=None, model_name=None, log=print):
    """Every run in `runs`, skipping those already in the `results` file (appending the
    others to it as they finish). Returns their records in the order of `runs`."""
    done = read_results(results) if results else {}
    name = model_name or pretrained.name
    records = []
    for i, run in enumerate(runs, 1):
        key = run.key(name)
        if key not in done:
            record = run_one(pretrained, run, data_dir=data_dir, model_name=name)
            if results:
                Path(results).parent.mkdir(parents=True, exist_ok=True)
                with open(results, "a") as f:
                    f.write(json.dumps(record) + "\n")
            done[key] = record
            if log:
                log(f"[{i}/{len(runs)}] {run.task} {run.method} n={run.train_size} "
                    f"seed={run.seed}: test {record['test']['score']:.4f} "
                    f"({record['train_seconds']:.0f} s)")
        records.append(done[key])
    return records


def summarize(records, by=("task", "method", "train_size")):
    """One row per group: the group's fields, n (runs), the test scores, their mean and
    sample standard deviation (0 for a single run), mean training seconds and the
    trainable percentage."""
    groups = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    rows = []
    for key, group in groups.items():
        scores = [g["test"]["score"] for g in group]
        rows.append({**dict(zip(by, key)), "n": len(group), "scores": scores,
                     "mean": statistics.fmean(scores),
                     "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                     "train_seconds": statistics.fmean(g["train_seconds"] for g in group),
                     "percent": group[0]["percent"]})
    return rows
