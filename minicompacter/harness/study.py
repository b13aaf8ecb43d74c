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

`run_study` is the study behind RESULTS.md (`python -m minicompacter study`): the GLUE
comparison, the low-resource study and the efficiency table, with the verdicts whose rules
are stated next to them in the report.
"""

import dataclasses
import json
import math
import os
import statistics
import time
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
                       train_size=train_size, base_name=model_name)
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

STUDY_METHODS = ("full", "adapter", "pfeiffer", "phm-adapter", "compacter", "compacter++",
                 "bitfit", "lora")
# GLUE as the paper averages it (WNLI left out, as usual), in the order of its tables.
STUDY_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")


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
    max_length: int = 128

    def glue_runs(self):
        return [Run(t, m, self.train_cap, s, epochs=self.epochs, max_length=self.max_length)
                for t in self.tasks for s in self.seeds for m in self.methods]

    def low_resource_runs(self):
        return [Run(t, m, n, s, epochs=self.epochs, max_length=self.max_length)
                for t in self.low_resource_tasks for n in self.sizes for s in self.seeds
                for m in self.low_resource_methods]


def available_tasks(data_dir, names=STUDY_TASKS):
    """The tasks of `names` whose train and dev files are in the GLUE directory."""
    from .data import get_task

    root = Path(data_dir)
    return tuple(n for n in names if (root / get_task(n).folder / "train.tsv").exists()
                 and (root / get_task(n).folder / get_task(n).dev_file).exists())


def full_plan(data_dir):
    """Every GLUE task found (CoLA, SST-2, STS-B here), 8 methods, 3 seeds, 2,000 training
    examples at most; the low-resource study on SST-2 and CoLA (those found)."""
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


# The paper's efficiency claim (PAPER.md): Compacter++ takes about 27% less time per epoch and 42%
# less memory than full fine-tuning, as (time, memory) relative to it.
PAPER_COMPACTERPP_COST = (0.73, 0.58)


def efficiency(plan, data_dir, out, model_name, train=True, log=print):
    """One epoch of each method, each in a process of its own so that its peak memory is
    its own: {method: record}, the records of `run_one` kept in out/efficiency.jsonl (a
    finished method is not run again; with train=False a missing one is left out).
    Nothing is written to disk while they train."""
    from .jobs import run_in_process

    results = Path(out) / "efficiency.jsonl"
    done = read_results(results)
    rows = {}
    for method in plan.methods:
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
    from .pretrained import load_pretrained

    return run_one(load_pretrained(model), Run(**run), data_dir=data_dir, model_name=model)


# --- RESULTS.md ----------------------------------------------------------------------------------

def _fmt(row):
    return f"{row['mean']:.3f} ± {row['std']:.3f}" if row["n"] > 1 else f"{row['mean']:.3f}"


def verdict_parity(summary, tasks):
    """Compacter and Compacter++ against full fine-tuning, averaged over the tasks: holds
    within 1 point (the paper: 86.6 and 86.5 against 86.5), partly within 3, else not."""
    avg = {m: statistics.fmean(r["mean"] for r in summary if r["method"] == m)
           for m in ("full", "compacter", "compacter++")
           if sum(1 for r in summary if r["method"] == m) == len(tasks)}
    if "full" not in avg:
        return "not measured", avg
    gap = min(avg.get("compacter", -1.0), avg.get("compacter++", -1.0)) - avg["full"]
    word = "holds" if gap >= -0.01 else "holds partly" if gap >= -0.03 else "does not hold"
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
    at every size up to 1,000 and on average over the sizes; partly if higher on average
    or at some of the small sizes; else not."""
    diff = {n: c["mean"] - f["mean"]
            for n, (c, f) in _pairs_by_size(summary, sizes, task, "compacter", "full").items()}
    if not diff:
        return "not measured", diff
    small = [d for n, d in diff.items() if n <= 1000]
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


def machine_description():
    """The processor, core count and Python version, as RESULTS.md names the machine."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_report(path, plan, glue_records, low_records, eff, figures, *, machine, seconds,
                 commands, missing=None):
    """RESULTS.md from the records: settings, tables, figures and verdicts. `missing`
    ({part: runs not yet made}) marks an unfinished study: the report says so at the top
    and calls its verdicts provisional."""
    glue = summarize(glue_records)
    low = summarize(low_records)
    full_eff = eff.get("full")
    missing = {part: n for part, n in (missing or {}).items() if n}
    tag = lambda part: " (provisional)" if part in missing else ""
    lines = ["# Results: Compacter's claims at small scale", ""]
    if missing:
        lines += ["**Unfinished study: the verdicts of its unfinished parts are provisional.** Runs "
                  "not made yet: "
                  + ", ".join(f"{n} of the {part.replace('_', '-')} study" for part, n in missing.items())
                  + ". Running the command below again makes them (the finished runs are kept) "
                  "and rewrites this report.", ""]
    lines += [
             "Regenerated by one command (below) from the runs it records in `results/`. "
             "Model: all-MiniLM-L6-v2 (6 layers, width 384, 22.7M parameters; the paper used "
             "T5-base, 220M). Scores are on the test splits the paper made (DESIGN.md): half "
             "of the dev file for tasks under 10,000 training examples, the dev file for "
             "SST-2 and the other large ones; the best epoch on validation is kept.", "",
             "```", *commands, "```", "",
             f"- Machine: {machine}",
             f"- Total time: {seconds / 3600:.2f} h of computation for the whole study, summed "
             "from the runs' records (`study.study_seconds`: each run's wall time, loading and "
             "evaluation included; its training time for records made before the wall time "
             "was kept), so it counts a study run over several sessions as one from scratch.",
             f"- GLUE comparison: tasks {', '.join(plan.tasks)}; methods {', '.join(plan.methods)}; "
             f"seeds {', '.join(map(str, plan.seeds))}; training sets capped at "
             f"{plan.train_cap or 'all'} examples (stratified, seeded); "
             f"{plan.epochs or epochs_for(plan.train_cap or 10 ** 9)} epochs; batch 32, "
             f"max length {plan.max_length}; learning rate 3e-3 for every parameter-efficient "
             "method and 1e-4 for full fine-tuning (README, \"Training\").",
             f"- Low-resource study: {', '.join(plan.low_resource_tasks)}; sizes "
             f"{', '.join(map(str, plan.sizes))}; methods {', '.join(plan.low_resource_methods)}; "
             f"seeds {', '.join(map(str, plan.seeds))}; epochs by `study.epochs_for` "
             "(about 250 updates, 3 to 20 epochs)." if not plan.epochs else
             f"- Low-resource study: sizes {', '.join(map(str, plan.sizes))}, {plan.epochs} epoch(s).",
             "", "## 1. GLUE: parity with full fine-tuning", ""]
    tasks = list(plan.tasks)
    lines += ["| method | trainable % | " + " | ".join(tasks) + " | average | seconds per run | "
              "peak MB |", "|---|---|" + "---|" * len(tasks) + "---|---|---|"]
    for m in plan.methods:
        rows = {r["task"]: r for r in glue if r["method"] == m}
        if not rows:
            continue
        avg = statistics.fmean(r["mean"] for r in rows.values())
        pct = next(iter(rows.values()))["percent"]
        secs = statistics.fmean(r["train_seconds"] for r in rows.values())
        peak = f"{eff[m]['peak_memory_mb']:.0f}" if m in eff else ""
        lines.append(f"| {m} | {pct:.3f} | " + " | ".join(_fmt(rows[t]) if t in rows else "" for t in tasks)
                     + f" | {avg:.3f} | {secs:.0f} | {peak} |")
    lines += ["", f"Mean ± standard deviation over {len(plan.seeds)} seeds. Scores: Matthews "
              "correlation (CoLA), mean of Pearson and Spearman (STS-B), accuracy (SST-2), as the "
              "paper averages them. Trainable %: of MiniLM's parameters, the classification "
              "head included (so full fine-tuning is a little over 100). Seconds per run: "
              "training and the validation after each epoch, averaged over tasks and seeds; "
              f"indicative only: the same work (one task and method, another seed) took up to "
              f"{time_spread(glue_records):.1f} times as long in one run as in another, as runs "
              "may be made over several sessions, on machines of the same kind that are not "
              "equally fast or busy with other work. Section 3 compares the methods' costs, "
              "measured in one go. "
              "Peak MB: the method's efficiency run (section 3), each in its own process.", ""]
    if "params_vs_score" in figures:
        lines += [f"![trainable parameters against average score]({figures['params_vs_score']})",
                  "", "*Figure 1: each method's average test score over the tasks against its "
                  "trainable parameters (% of MiniLM, log scale), the paper's Figure 1 in small.*", ""]
    word, avg = verdict_parity(glue, tasks)
    gaps = {m: gaps_by_task(glue, tasks, m) for m in ("compacter", "compacter++")}
    by_task = "; ".join(f"{m} − full by task: " + ", ".join(f"{t} {g:+.3f}" for t, g in gap.items())
                        for m, gap in gaps.items() if gap)
    lines += [f"**Verdict, parity{tag('GLUE')}: {word}.** Average over the tasks: " + ", ".join(
        f"{m} {v:.3f}" for m, v in avg.items()) + (f". {by_task}" if by_task else "")
        + ". Rule: holds when Compacter and Compacter++ are within 1 point of full fine-tuning's "
        "average (the paper: 86.6 and 86.5 against 86.5), partly within 3 points.", "",
        "## 2. Little data", ""]
    for task in plan.low_resource_tasks:
        rows = [r for r in low if r["task"] == task]
        if not rows:
            continue
        methods = [m for m in plan.low_resource_methods if any(r["method"] == m for r in rows)]
        others = [m for m in methods if m != "full"] if "full" in methods else []
        lines += [f"### {task}", "", "| examples | " + " | ".join(methods) + "".join(
                      f" | {m} − full" for m in others) + " |",
                  "|---|" + "---|" * (len(methods) + len(others))]
        for n in plan.sizes:
            by = {r["method"]: r for r in rows if r["train_size"] == n}
            diffs = "".join(f" | {by[m]['mean'] - by['full']['mean']:+.3f}"
                            if m in by and "full" in by else " | " for m in others)
            lines.append(f"| {n} | " + " | ".join(_fmt(by[m]) if m in by else "" for m in methods)
                         + diffs + " |")
        if f"low_resource_{task}" in figures:
            lines += ["", f"![{task}: score against training-set size]({figures[f'low_resource_{task}']})",
                      "", f"*Figure: {task}, test score against training examples (log scale); "
                      "lines are means over seeds, bands one standard deviation, dots single runs.*"]
        word, diff = verdict_low_resource(low, plan.sizes, task)
        weak = leads_within_spread(low, plan.sizes, task)
        caveat = (" " + "; ".join(f"The lead at {n} examples ({d:+.3f}) is within the spread "
                                  f"over seeds (±{sd:.3f})" for n, d, sd in weak) + "."
                  if weak else "")
        unfinished = (sum(r["task"] == task for r in low_records)
                      < len(plan.sizes) * len(plan.seeds) * len(plan.low_resource_methods))
        lines += ["", f"**Verdict, little data ({task}){' (provisional)' if unfinished else ''}: "
                  f"{word}.** Compacter − full by size: "
                  + ", ".join(f"{n}: {d:+.3f}" for n, d in diff.items()) + "." + caveat
                  + " Rule: holds when Compacter's mean is higher at every size up to 1,000 and "
                  "on average; partly when higher on average or at some small sizes. "
                  "(Compacter++ − full is in the table.)", ""]
    lines += ["## 3. Efficiency", "",
              f"One epoch of {plan.efficiency_size} {plan.efficiency_task} examples per method, "
              "each in its own process, nothing written to disk (time: the training loop and one "
              "validation pass; memory: the process's peak resident memory from the start of "
              "training, so the model, the encoded data, the libraries and the steps). The paper, "
              "T5-base: Compacter++ about 42% less memory than full fine-tuning, 27% less time "
              "per epoch (Compacter 13%); BitFit about 64% less memory.", "",
              "| method | trainable % | seconds per epoch | relative to full | peak MB | relative to full |",
              "|---|---|---|---|---|---|"]
    for m, r in eff.items():
        rel_t = r["train_seconds"] / full_eff["train_seconds"] if full_eff else float("nan")
        rel_m = r["peak_memory_mb"] / full_eff["peak_memory_mb"] if full_eff else float("nan")
        lines.append(f"| {m} | {r['percent']:.3f} | {r['train_seconds']:.1f} | {rel_t:.2f} | "
                     f"{r['peak_memory_mb']:.0f} | {rel_m:.2f} |")
    if "efficiency" in figures:
        lines += ["", f"![time and memory relative to full fine-tuning]({figures['efficiency']})",
                  "", "*Figure: each method's time per epoch against its peak memory, both as "
                  "fractions of full fine-tuning's (the dashed lines); the hollow circle is the "
                  "paper's Compacter++ on T5-base.*"]
    name = next((m for m in ("compacter++", "compacter") if m in eff), None)
    if full_eff and name:
        c = eff[name]
        less_t = 1 - c["train_seconds"] / full_eff["train_seconds"]
        less_m = 1 - c["peak_memory_mb"] / full_eff["peak_memory_mb"]
        word = ("holds" if less_t > 0 and less_m > 0.2 else "holds partly" if less_t > 0 or less_m > 0
                else "does not hold")
        lines += ["", f"**Verdict, efficiency{tag('efficiency')}: {word}.** {name.capitalize()} saves {less_t:.0%} of "
                  f"full fine-tuning's time per epoch and {less_m:.0%} of its peak memory (the "
                  "paper, Compacter++: 27% and 42%). Rule: holds when it saves time and more than "
                  "20% of the memory."]
    lines += ["", "## 4. What differs from the paper's setting", "",
              "- **Model**: MiniLM-L6 (22.7M parameters, width 384, 6 layers) against T5-base "
              "(220M). With a tenth of the weights, full fine-tuning has less room to overfit "
              "small data, and the adapters have a bottleneck of 12 (the paper's: 24).",
              "- **Backbone's training**: all-MiniLM-L6-v2 is a sentence-embedding model, "
              "distilled and then trained contrastively to put sentences of like meaning close "
              "together, not a plain masked-language model like T5-base. What it keeps suits "
              "SST-2 and STS-B; grammaticality (CoLA) is what such training cares least about, "
              "and every method starts from little there.",
              "- **Data and training**: training sets capped as stated, about 250 updates per "
              "run at batch 32 (the paper: whole GLUE tasks, batch 100, 3 to 20 epochs, 500 "
              "warm-up steps); 3 seeds.",
              "- **Learning rates**: 3e-3 for every parameter-efficient method (the paper used "
              "3e-4 for Adapter, Pfeiffer and BitFit; at 1e-3 and below they lag far behind here, "
              "README \"Training\"), 1e-4 for full fine-tuning (the paper: 3e-4 on T5); not tuned "
              "per task.",
              "- **Tasks**: the GLUE tasks whose files are in the directory (here CoLA, SST-2, "
              "STS-B); the paper averages eight.",
              "- **Efficiency**: NumPy + autograd on 2 CPU cores against PyTorch on GPUs; the "
              "savings come from the same source (no weight gradients or optimiser state for "
              "frozen weights), but their size depends on the implementation (BENCHMARKS.md). "
              "The methods train every layer norm, as the paper's do, the embeddings' included, "
              "so the backward pass still runs through every layer; freezing them saves more "
              "time (BENCHMARKS.md, the \"adapter-only\" rows)."]
    Path(path).write_text("\n".join(lines) + "\n")


def run_study(pretrained, data_dir, *, out="results", report="RESULTS.md", quick=False,
              model_name="minilm", train=True, log=print):
    """The whole study: the GLUE comparison, the low-resource study, the efficiency table,
    the figures and the report. Finished runs in `out` are reused. train=False writes the
    report and figures from the runs recorded so far, training nothing (an unfinished
    study's report says what is missing)."""
    from .plots import efficiency as efficiency_plot, low_resource, params_vs_score

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # a figure's link in the report: its path from the report's folder
    link = lambda name: Path(os.path.relpath(out / name, Path(report).resolve().parent)).as_posix()
    plan = quick_plan(data_dir) if quick else full_plan(data_dir)
    glue = run_grid(pretrained, plan.glue_runs(), data_dir=data_dir, results=out / "glue.jsonl",
                    model_name=model_name, train=train, log=log)
    low = run_grid(pretrained, plan.low_resource_runs(), data_dir=data_dir,
                   results=out / "low_resource.jsonl", model_name=model_name,
                   known={r["key"]: r for r in glue}, train=train, log=log)
    eff = efficiency(plan, data_dir, out, model_name, train=train, log=log)
    missing = {"GLUE": len(plan.glue_runs()) - len(glue),
               "low_resource": len(plan.low_resource_runs()) - len(low),
               "efficiency": len(plan.methods) - len(eff)}
    figures = {}
    summary = summarize(glue, by=("method",))
    params_vs_score([{"method": r["method"], "percent": r["percent"], "score": r["mean"]}
                     for r in summary], out / "params_vs_score.png",
                    title="average test score against trainable parameters")
    figures["params_vs_score"] = link("params_vs_score.png")
    for task in plan.low_resource_tasks:
        rows = [r for r in low if r["task"] == task]
        low_resource(summarize(rows), out / f"low_resource_{task}.png", records=rows,
                     title=f"{task}: test score against training-set size")
        figures[f"low_resource_{task}"] = link(f"low_resource_{task}.png")
    if "full" in eff:
        full = eff["full"]
        efficiency_plot([{"method": m, "time": r["train_seconds"] / full["train_seconds"],
                          "memory": r["peak_memory_mb"] / full["peak_memory_mb"]}
                         for m, r in eff.items() if m != "full"], out / "efficiency.png",
                        title="cost of an epoch, relative to full fine-tuning",
                        paper={"paper, Compacter++ on T5-base": PAPER_COMPACTERPP_COST})
        figures["efficiency"] = link("efficiency.png")
    seconds = study_seconds(glue, low, eff.values())
    command = "python -m minicompacter study --data-dir DIR" + (" --quick" if quick else "")
    write_report(report, plan, glue, low, eff, figures, machine=machine_description(),
                 seconds=seconds, commands=[command], missing=missing)
    return {"glue": glue, "low_resource": low, "efficiency": eff, "seconds": seconds,
            "missing": {part: n for part, n in missing.items() if n}}
