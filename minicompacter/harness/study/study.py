"""Studies: many fine-tuning runs over tasks, methods, training-set sizes and seeds, kept
in a results file so that an interrupted study continues where it stopped, and summed
up as the mean and spread over seeds.

    records = run_grid(pretrained, [Run("sst2", "compacter", 100, seed) for seed in (0, 1, 2)],
                       data_dir=glue_dir, results="runs/low_resource.jsonl")
    summary = summarize(records)          # one row per (task, method, train_size)

Each run is `train.finetune` with the paper's splits and a seeded, stratified training
subset of `train_size` examples (the seed also sets initialisation, data order and
dropout). The grids run in this process (the model is loaded once); a record keeps the
training loop's time and the whole run's. The efficiency runs, whose peak memory is the
point, each run in a process of their own (`efficiency`).

The study behind RESULTS.md (`python -m minicompacter study`; results.py runs it) is the
GLUE comparison, the low-resource study and the efficiency table, with the verdicts whose
rules are stated next to them in the report. Its plan, the verdicts and the paper's
figures they compare with are here; the report's text is report.py's, its figures plots.py's.
"""

import dataclasses
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Optional

from ...core.counting import T5_BASE
from ...core.methods import METHODS
from ..data.batches import MAX_LENGTH
from ..data.tasks import get_task
from ..pretrained import load_pretrained
from ..training.jobs import run_in_process
from ..training.train import TrainConfig, finetune


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
    lr: Optional[float] = None         # None: the method preset's (core/methods.py PRESETS)
    max_length: int = MAX_LENGTH

    def key(self, model):
        """What identifies the run in a results file (the model's name included)."""
        return json.dumps({"model": model, **dataclasses.asdict(self)}, sort_keys=True)


def read_results(path):
    """{key: record} from a results file (one JSON record per line); {} if there is none.
    A line cut short by an interruption is ignored; a line that is JSON but not a run's
    record (an object with a "key") is an error naming the file and the line."""
    records = {}
    path = Path(path)
    if not path.exists():
        return records
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("key"), str):
            raise ValueError(f"{path}, line {number}: {line[:40]!r} is not a run's record (a JSON "
                             f"object with a \"key\"); remove the line or restore the file.")
        records[record["key"]] = record
    return records


def append_result(path, record):
    """Add one record to a results file as its own line, at once, so an interrupted study
    keeps every run it finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def run_one(pretrained, run, *, data_dir=None, model_name=None, progress=False):
    """Fine-tune one run; its record (the run's fields, scores, time, parameter counts).
    `train_seconds` is the training loop's time, `run_seconds` the whole run's (loading and
    tokenizing the task and the final evaluation included)."""
    start = time.perf_counter()
    train_size = run.train_size
    epochs = run.epochs or epochs_for(train_size or 10 ** 9)
    cfg = TrainConfig(epochs=epochs, lr=run.lr, seed=run.seed, max_length=run.max_length,
                      progress=progress)
    metrics = finetune(pretrained, run.task, run.method, cfg, data_dir=data_dir,
                       train_size=train_size, model_name=model_name)
    return {"key": run.key(model_name or pretrained.name), "model": model_name or pretrained.name,
            **dataclasses.asdict(run), "epochs": epochs, "lr": metrics["config"]["lr"],
            "train_examples": metrics["config"]["train_examples"],
            "test": metrics["test"], "validation": metrics["validation"],
            "best_epoch": metrics["best_epoch"], "train_seconds": metrics["train_seconds"],
            "trainable_params": metrics["trainable_params"], "percent": metrics["percent"],
            "peak_memory_mb": metrics["peak_memory_mb"],
            "run_seconds": round(time.perf_counter() - start, 2)}


def run_grid(pretrained, runs, *, data_dir=None, results=None, model_name=None, known=None,
             train=True, log=print):
    """Every run in `runs`, skipping those already in the `results` file (appending the
    others to it as they finish). A run whose key is in `known` ({key: record}, another
    study's results) is copied from there instead of trained again: the same key means the
    same task, method, size, seed, epochs and learning rate, so the same numbers.
    Returns the records in the order of `runs`; with train=False only those already
    recorded (or known), training nothing."""
    done = read_results(results) if results else {}
    known = known or {}
    name = model_name or pretrained.name
    records = []
    for i, run in enumerate(runs, 1):
        key = run.key(name)
        if key not in done and key not in known and not train:
            continue
        if key not in done:
            copied = key in known
            record = known[key] if copied else run_one(pretrained, run, data_dir=data_dir,
                                                       model_name=name)
            if results:
                append_result(results, record)
            done[key] = record
            if log:
                log(f"[{i}/{len(runs)}] {run.task} {run.method} n={run.train_size} "
                    f"seed={run.seed}: test {record['test']['score']:.4f} "
                    + ("(copied from the other study)" if copied
                       else f"({record['train_seconds']:.0f} s)"))
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


# --- the study of RESULTS.md ------------------------------------------------------------------

# Every method of the package, in its order (the tables'), but adapter-lowrank, left out to
# keep the study's time within about 4 hours, and the Kronecker family's new members, which
# notebook 08 trains on SST-2 and STS-B (results/kronecker.jsonl).
LEFT_OUT = ("adapter-lowrank", "quaternion-adapter", "lokr", "phm-lora")
STUDY_METHODS = tuple(m for m in METHODS if m not in LEFT_OUT)
# GLUE as the paper averages it (WNLI left out, as usual), in the order of its tables.
STUDY_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")
# The paper's baselines whose steps cost several times full fine-tuning's (100 virtual tokens
# lengthen every sequence; Intrinsic-SAID's projections run over all the weights at every
# step) run on the smallest task, CoLA (the shortest rows), with one seed: what fitted the
# study's added budget of about four hours on 2 shared cores (RESULTS.md says so).
BUDGET = {"prompt-tuning-r": (("cola",), (0,)), "prompt-tuning-t": (("cola",), (0,)),
          "intrinsic-said": (("cola",), (0,))}
# The paper's baselines besides the Compacter family (report.py's paragraph on them). The
# efficiency part times the other methods, in one go; the baselines' steps are timed against
# full fine-tuning's in one session by bench/bench_step.py (docs/methods.md).
BASELINES = ("adapterdrop", "prompt-tuning-r", "prompt-tuning-t", "intrinsic-said")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the study runs. `full_plan` and `quick_plan` make the two that are used."""
    tasks: tuple                       # the GLUE comparison's tasks
    methods: tuple = STUDY_METHODS
    seeds: tuple = (0, 1, 2)
    train_cap: Optional[int] = 2000    # training examples per task (None: all)
    epochs: Optional[int] = None       # None: epochs_for(train_cap)
    low_resource_tasks: tuple = ("sst2", "cola")
    low_resource_methods: tuple = ("compacter", "compacter++", "full")
    sizes: tuple = (100, 500, 1000, 2000, 4000)
    efficiency_task: str = "sst2"
    efficiency_size: int = 2000
    max_length: int = MAX_LENGTH
    budget: dict = dataclasses.field(default_factory=lambda: dict(BUDGET))   # method -> (tasks,
                                       # seeds) it runs in the GLUE comparison, if not all
    efficiency_methods: Optional[tuple] = None    # None: the methods but the BASELINES

    def tasks_of(self, method):
        """The tasks a method runs in the GLUE comparison (of `tasks`)."""
        return tuple(t for t in self.tasks if t in self.budget.get(method, (self.tasks,))[0])

    def seeds_of(self, method):
        """The seeds a method runs in the GLUE comparison (of `seeds`)."""
        return tuple(s for s in self.seeds if s in self.budget.get(method, (None, self.seeds))[1])

    def timed_methods(self):
        """The methods the efficiency part times."""
        if self.efficiency_methods is not None:
            return self.efficiency_methods
        return tuple(m for m in self.methods if m not in BASELINES)

    def glue_runs(self):
        return [Run(t, m, self.train_cap, s, epochs=self.epochs, max_length=self.max_length)
                for t in self.tasks for s in self.seeds for m in self.methods
                if t in self.tasks_of(m) and s in self.seeds_of(m)]

    def low_resource_runs(self):
        return [Run(t, m, n, s, epochs=self.epochs, max_length=self.max_length)
                for t in self.low_resource_tasks for n in self.sizes for s in self.seeds
                for m in self.low_resource_methods]


def available_tasks(data_dir, names=STUDY_TASKS):
    """The tasks of `names` whose train and dev files are in the GLUE directory."""
    root = Path(data_dir)
    return tuple(n for n in names if (root / get_task(n).folder / "train.tsv").exists()
                 and (root / get_task(n).folder / get_task(n).dev_file).exists())


def full_plan(data_dir):
    """Every GLUE task found, STUDY_METHODS, 3 seeds, 2,000 training examples at most; the
    low-resource study on SST-2 and CoLA (those found)."""
    tasks = available_tasks(data_dir)
    if not tasks:
        raise ValueError(f"No GLUE task with train.tsv and dev.tsv in {data_dir}; the study "
                         f"needs at least one (a folder such as SST-2/ or CoLA/).")
    low = tuple(t for t in ("sst2", "cola") if t in tasks) or tasks[:1]
    return Plan(tasks=tasks, low_resource_tasks=low,
                efficiency_task="sst2" if "sst2" in tasks else tasks[0])


def quick_plan(data_dir):
    """A few minutes' version that runs every part of the study: one task, two methods,
    two seeds, tiny training sets, one epoch, short rows."""
    plan = full_plan(data_dir)
    task = plan.efficiency_task
    return Plan(tasks=(task,), methods=("compacter", "full"), seeds=(0, 1), train_cap=64,
                epochs=1, low_resource_tasks=(task,), low_resource_methods=("compacter", "full"),
                sizes=(32, 64), efficiency_task=task, efficiency_size=64, max_length=32)


def efficiency(plan, data_dir, out, model_name, train=True, log=print):
    """One epoch of each method, each in a process of its own so that its peak memory is
    its own: {method: record}, the records of `run_one` kept in out/efficiency.jsonl (a
    finished method is not run again; with train=False a missing one is left out).
    Nothing is written to disk while they train."""
    results = Path(out) / "efficiency.jsonl"
    done = read_results(results)
    rows = {}
    for method in plan.timed_methods():
        run = Run(plan.efficiency_task, method, plan.efficiency_size, 0, epochs=1,
                  max_length=plan.max_length)
        key = run.key(model_name)
        if key not in done and not train:
            continue
        if key not in done:
            done[key] = run_in_process(efficiency_job, run=dataclasses.asdict(run),
                                       data_dir=str(data_dir), model=model_name)
            append_result(results, done[key])
        rows[method] = done[key]
        if log:
            log(f"efficiency {method}: {rows[method]['train_seconds']:.1f} s, "
                f"{rows[method]['peak_memory_mb']:.0f} MB")
    return rows


def efficiency_job(run, data_dir, model):
    """The efficiency run of one method, in the process `efficiency` starts for it
    (jobs.run_in_process): its record."""
    return run_one(load_pretrained(model), Run(**run), data_dir=data_dir, model_name=model)


# --- the paper's figures, which the verdicts compare with ----------------------------------
# Mahabadi, Henderson and Ruder, "Compacter: Efficient Low-Rank Hypercomplex Adapter Layers",
# NeurIPS 2021, arXiv 2106.04647. Its model, whose shapes core/counting.py knows:
PAPER_MODEL = T5_BASE
# Table 1 (GLUE on T5-base): the average test score over the eight tasks.
PAPER_GLUE_AVERAGE = {"full": 86.5, "compacter": 86.6, "compacter++": 86.5}
# Table 1 row by row, under the command-line names: the scores of the tasks this study runs
# (STS-B: the mean of Pearson and Spearman, as the study scores it) and the printed average
# (over the 11 numbers of its 8 tasks). Transcribed from arXiv 2106.04647v2.
PAPER_TABLE1 = {
    "full": {"cola": 61.76, "sst2": 94.61, "stsb": 89.825, "average": 86.50},
    "adapter": {"cola": 64.02, "sst2": 93.81, "stsb": 90.875, "average": 85.78},
    "pfeiffer": {"cola": 62.9, "sst2": 93.46, "stsb": 91.235, "average": 86.32},
    "adapterdrop": {"cola": 62.7, "sst2": 93.58, "stsb": 91.49, "average": 85.85},
    "adapter-lowrank": {"cola": 59.19, "sst2": 93.69, "stsb": 91.205, "average": 86.05},
    "prompt-tuning-r": {"cola": 0.47, "sst2": 87.61, "stsb": 90.42, "average": 74.68},
    "prompt-tuning-t": {"cola": 10.59, "sst2": 90.94, "stsb": 90.025, "average": 75.95},
    "intrinsic-said": {"cola": 58.69, "sst2": 94.15, "stsb": 90.255, "average": 85.45},
    "bitfit": {"cola": 58.16, "sst2": 94.15, "stsb": 91.07, "average": 84.97},
    "phm-adapter": {"cola": 57.35, "sst2": 94.50, "stsb": 90.645, "average": 86.40},
    "compacter": {"cola": 63.75, "sst2": 93.00, "stsb": 90.525, "average": 86.62},
    "compacter++": {"cola": 61.27, "sst2": 93.81, "stsb": 90.695, "average": 86.47}}
# The efficiency evaluation (Section 5.3, Table 3 of arXiv v2; Figure 1 draws the memory as
# circles): Compacter++ takes about 27% less time per epoch and 42% less memory than full
# fine-tuning, as (time, memory) relative to it; Compacter 13% less time; BitFit about 64%
# less memory; all measured with PyTorch on GPUs.
PAPER_COMPACTERPP_COST = (0.73, 0.58)
PAPER_COMPACTER_TIME_SAVED = 0.13
PAPER_BITFIT_MEMORY_SAVED = 0.64
PAPER_HARDWARE = "PyTorch on GPUs"
# Its experimental details (Section 4): how it trained.
PAPER_TRAINING = "whole GLUE tasks, batch 100, 3 to 20 epochs, 500 warm-up steps"

# The verdicts' thresholds, which the report states as their rules.
PARITY_GAP = (0.01, 0.03)     # in score (1 point = 0.01): holds within the first, partly the second
SMALL_SIZE = 1000             # little data: the sizes up to this many training examples
MEMORY_SAVED = 0.2            # efficiency holds when it saves time and more memory than this


# --- the verdicts ----------------------------------------------------------------------------

def verdict_parity(summary, tasks):
    """Compacter and Compacter++ against full fine-tuning, averaged over the tasks: holds
    within PARITY_GAP[0] (1 point; the paper: PAPER_GLUE_AVERAGE), partly within
    PARITY_GAP[1] (3), else not."""
    avg = {m: statistics.fmean(r["mean"] for r in summary if r["method"] == m)
           for m in ("full", "compacter", "compacter++")
           if sum(1 for r in summary if r["method"] == m) == len(tasks)}
    if "full" not in avg:
        return "not measured", avg
    gap = min(avg.get("compacter", -1.0), avg.get("compacter++", -1.0)) - avg["full"]
    word = ("holds" if gap >= -PARITY_GAP[0] else "holds partly" if gap >= -PARITY_GAP[1]
            else "does not hold")
    return word, avg


def _pairs_by_size(summary, sizes, task, method, baseline):
    """{size: (summary row of `method`, of `baseline`)} for the sizes where both ran."""
    pairs = {}
    for n in sizes:
        row = {r["method"]: r for r in summary if r["task"] == task and r["train_size"] == n}
        if method in row and baseline in row:
            pairs[n] = row[method], row[baseline]
    return pairs


def verdict_low_resource(summary, sizes, task):
    """Compacter against full fine-tuning at each size: holds if Compacter's mean is higher
    at every size up to SMALL_SIZE (1,000) and on average over the sizes; partly if higher
    on average or at some of the small sizes; else not."""
    diff = {n: c["mean"] - f["mean"]
            for n, (c, f) in _pairs_by_size(summary, sizes, task, "compacter", "full").items()}
    if not diff:
        return "not measured", diff
    small = [d for n, d in diff.items() if n <= SMALL_SIZE]
    mean = statistics.fmean(diff.values())
    if small and all(d > 0 for d in small) and mean > 0:
        return "holds", diff
    if mean > 0 or any(d > 0 for d in small):
        return "holds partly", diff
    return "does not hold", diff


def gaps_by_task(summary, tasks, method, baseline="full"):
    """{task: mean of `method` − mean of `baseline`} over the tasks where both ran."""
    means = {(r["task"], r["method"]): r["mean"] for r in summary}
    return {t: means[t, method] - means[t, baseline] for t in tasks
            if (t, method) in means and (t, baseline) in means}


def leads_within_spread(summary, sizes, task, method="compacter", baseline="full"):
    """[(size, lead, sd)] for the sizes where `method` leads `baseline` by no more than the
    larger of their two standard deviations over seeds: leads that the seed alone could
    make."""
    out = []
    for n, (m, b) in _pairs_by_size(summary, sizes, task, method, baseline).items():
        lead, sd = m["mean"] - b["mean"], max(m["std"], b["std"])
        if 0 < lead <= sd:
            out.append((n, lead, sd))
    return out


def verdict_efficiency(eff):
    """Compacter++ (else Compacter) against full fine-tuning, one epoch each ({method:
    record}): holds when it saves time and more than MEMORY_SAVED of the peak memory,
    partly when it saves either. (word, method, time saved, memory saved), the savings as
    fractions of full fine-tuning's; method None when either run is missing."""
    name = next((m for m in ("compacter++", "compacter") if m in eff), None)
    if "full" not in eff or name is None:
        return "not measured", None, None, None
    full, c = eff["full"], eff[name]
    less_t = 1 - c["train_seconds"] / full["train_seconds"]
    less_m = 1 - c["peak_memory_mb"] / full["peak_memory_mb"]
    word = ("holds" if less_t > 0 and less_m > MEMORY_SAVED
            else "holds partly" if less_t > 0 or less_m > 0 else "does not hold")
    return word, name, less_t, less_m


# --- time and machine ------------------------------------------------------------------------

def study_seconds(*record_lists):
    """The computation a study took, from its records: each distinct run once (a run copied
    from another results file is not counted twice), its `run_seconds`, or its
    `train_seconds` for records made before `run_seconds` was kept."""
    runs = {}
    for records in record_lists:
        for r in records:
            runs[r["key"]] = r.get("run_seconds", r["train_seconds"])
    return sum(runs.values())


def time_spread(records):
    """The largest ratio of the slowest to the fastest training time among runs that did the
    same work (one task, method and size; only the seed differs): how far the machine's speed
    varied while the records were made. 1.0 when no group has two runs."""
    groups = {}
    for r in records:
        groups.setdefault((r["task"], r["method"], r["train_size"]), []).append(r["train_seconds"])
    return max([max(t) / min(t) for t in groups.values() if len(t) > 1 and min(t) > 0],
               default=1.0)


def machine_info():
    """The machine: {"cpu": its processor's name, "cores": os.cpu_count(), "python": the
    Python version}."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def machine_description(info=None):
    """The processor, core count and Python version, as RESULTS.md names the machine."""
    info = info or machine_info()
    return f"{info['cpu']}, {info['cores']} cores, Python {info['python']}"
