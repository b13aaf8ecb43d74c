"""RESULTS.md, from a study's records (study.py), and its figures (plots.py).

One function per part of the report, each returning its lines; `write_report` puts them
together. Every fact in the text is computed from what it is given (the plan, the records,
the model, the machine) or read from where it is kept: the presets' learning rates
(core/methods.py), the training defaults (training/train.py's TrainConfig,
study.epochs_for), the splits (data/tasks.py), the paper's model (core/counting.py) and the
paper's figures and the verdicts' thresholds (study.py).

    figures = draw_figures(plan, glue_records, low_records, eff, "results", "RESULTS.md")
    write_report("RESULTS.md", plan, glue_records, low_records, eff, figures,
                 model=model_facts(pretrained, "minilm"), machine=study.machine_info(),
                 seconds=..., commands=["python -m minicompacter study --data-dir DIR"])
"""

import math
import os
import statistics
from pathlib import Path

from ...core.counting import base_total
from ...core.methods import PRESETS
from ...core.tree import count
from ..data.tasks import LARGE_TASK_HOLDOUT, get_task
from ..pretrained import BUILTIN
from ..training.train import TrainConfig
from .plots import efficiency as efficiency_plot
from .plots import low_resource, params_vs_score
from .study import (MEMORY_SAVED, PAPER_BITFIT_MEMORY_SAVED, PAPER_COMPACTER_TIME_SAVED,
                    PAPER_COMPACTERPP_COST, PAPER_GLUE_AVERAGE, PAPER_HARDWARE, PAPER_MODEL,
                    PAPER_TABLE1, BASELINES,
                    PAPER_TRAINING, PARITY_GAP, SMALL_SIZE, STUDY_TASKS, epochs_for,
                    gaps_by_task, leads_within_spread, machine_description, summarize,
                    time_spread, verdict_efficiency, verdict_low_resource, verdict_parity)

# How the report names each metric kind's score (metrics.glue_metrics).
METRIC_NAMES = {"matthews": "Matthews correlation", "accuracy": "accuracy",
                "accuracy_f1": "mean of accuracy and F1",
                "pearson_spearman": "mean of Pearson and Spearman"}
# What the report says of a model's own training, where it knows it ({paper}: the paper's model).
MODEL_NOTES = {"minilm": (
    "all-MiniLM-L6-v2 is a sentence-embedding model, distilled and then trained "
    "contrastively to put sentences of like meaning close together, not a plain "
    "masked-language model like {paper}. What it keeps suits SST-2 and STS-B; "
    "grammaticality (CoLA) is what such training cares least about, and every method "
    "starts from little there.")}


# --- small helpers --------------------------------------------------------------------------

def _fmt(row):
    """A summary row's score: mean ± standard deviation over seeds (the mean for one run)."""
    return f"{row['mean']:.3f} ± {row['std']:.3f}" if row["n"] > 1 else f"{row['mean']:.3f}"


def rate(lr):
    """A learning rate as the report writes it: 0.003 -> 3e-3."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def short_count(n):
    """A parameter count to three significant figures: 22.6M, 223M, 34.9k."""
    for unit, size in (("B", 10 ** 9), ("M", 10 ** 6), ("k", 10 ** 3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def words(items):
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def folders(tasks):
    """The tasks as GLUE's folders name them: cola -> CoLA."""
    return [get_task(t).folder or t for t in tasks]


def link(path, report):
    """A file's path from the report's folder, as the report links it."""
    return Path(os.path.relpath(Path(path), Path(report).resolve().parent)).as_posix()


def provisional(part, missing):
    """' (provisional)' for a part of the study with runs missing, else ''."""
    return " (provisional)" if part in missing else ""


# --- facts the sections use ---------------------------------------------------------------

def model_facts(pretrained, name=None):
    """What the report says of the model, from the model: its name, what the name stands
    for (a built-in model's description), its layers, width and parameters."""
    name = name or pretrained.name
    return {"name": name, "about": BUILTIN.get(name, ""), "layers": pretrained.config.num_layers,
            "width": pretrained.config.hidden_size, "params": count(pretrained.params)}


def bottleneck(width):
    """The adapters' bottleneck k at a model width (the adapter preset's reduction factor)."""
    return PRESETS["adapter"].config.bottleneck_size(width)


def rates_by_value(methods, paper=False):
    """[(learning rate, [methods])] in the order the methods come: the presets' rates
    (paper=True: the paper's; methods the paper does not have are left out)."""
    groups = {}
    for m in methods:
        lr = PRESETS[m].paper_lr if paper else PRESETS[m].lr
        if lr is not None:
            groups.setdefault(lr, []).append(m)
    return list(groups.items())


def learning_rates(methods):
    """The presets' learning rates of `methods` as a phrase: 'R for every
    parameter-efficient method and F for full fine-tuning' when that is what they are,
    else each rate with its methods."""
    groups = rates_by_value(methods)
    efficient = [m for m in methods if m != "full"]
    shared = [lr for lr, ms in groups if ms == efficient]
    if "full" in methods and shared:
        return (f"{rate(shared[0])} for every parameter-efficient method and "
                f"{rate(PRESETS['full'].lr)} for full fine-tuning")
    return "; ".join(f"{rate(lr)} for {words(ms)}" for lr, ms in groups)


def updates_per_run(records, batch_size):
    """(fewest, most) updates among the runs of `records`: epochs times batches per epoch."""
    steps = [r["epochs"] * math.ceil(r["train_examples"] / batch_size) for r in records
             if "epochs" in r and "train_examples" in r]
    return (min(steps), max(steps)) if steps else None


# --- the report's parts ---------------------------------------------------------------------

def header(missing):
    """The title, and for an unfinished study what is missing."""
    lines = ["# Results: Compacter's claims at small scale", ""]
    if missing:
        lines += ["**Unfinished study: the verdicts of its unfinished parts are provisional.** Runs "
                  "not made yet: "
                  + ", ".join(f"{n} of the {part.replace('_', '-')} study" for part, n in missing.items())
                  + ". Running the command below again makes them (the finished runs are kept) "
                  "and rewrites this report.", ""]
    return lines


def model_sentence(model):
    """'Model: NAME, WHAT IT IS (L layers, width d, N parameters; the paper used ...)'."""
    about = f", {model['about']}" if model["about"] else ""
    return (f"Model: {model['name']}{about} ({model['layers']} layers, width {model['width']}, "
            f"{short_count(model['params'])} parameters; the paper used {PAPER_MODEL.name}, "
            f"{short_count(base_total(PAPER_MODEL))}).")


def splits_sentence(tasks):
    """Which split of each task the scores are on, as data.py makes them."""
    small = folders(t for t in tasks if not get_task(t).large)
    large = folders(t for t in tasks if get_task(t).large)
    parts = ([f"half of the dev file for the small tasks ({', '.join(small)}; the other half "
              "is for validation)"] if small else []) + \
            ([f"the whole dev file for the large ones ({', '.join(large)}; "
              f"{LARGE_TASK_HOLDOUT:,} training examples held out for validation)"]
             if large else [])
    return ("Scores are on the test splits the paper made (`minicompacter/harness/data/tasks.py`): "
            + ", ".join(parts) + "; the best epoch on validation is kept.")


def intro(plan, model, commands, results):
    """Where the report comes from, the model, the splits and the command."""
    return [f"Regenerated by one command (below) from the runs it records in `{results}/`. "
            + model_sentence(model) + " " + splits_sentence(plan.tasks), "",
            "```", *commands, "```", ""]


def budget_note(plan):
    """' (A and B: cola, seed 0 only; ...)' for the methods the plan runs on fewer tasks or
    seeds, else ''."""
    fewer = [m for m in plan.methods
             if plan.tasks_of(m) != tuple(plan.tasks) or plan.seeds_of(m) != tuple(plan.seeds)]
    if not fewer:
        return ""
    groups = {}
    for m in fewer:
        groups.setdefault((plan.tasks_of(m), plan.seeds_of(m)), []).append(m)
    parts = [f"{words(ms)}: {', '.join(tasks) or 'no task'}, seed{'s' if len(seeds) > 1 else ''} "
             f"{', '.join(map(str, seeds))} only" for (tasks, seeds), ms in groups.items()]
    return (f" ({'; '.join(parts)}: their steps cost several times full fine-tuning's, and this "
            f"is what fitted the study's added budget of about four hours on 2 shared cores)")


def settings(plan, machine, seconds):
    """The machine, the time and the settings of each part of the study."""
    batch = TrainConfig().batch_size
    schedule = epochs_for.__kwdefaults__
    lines = [f"- Machine: {machine_description(machine)}",
             f"- Total time: {seconds / 3600:.2f} h of computation for the whole study, summed "
             "from the runs' records (`study.study_seconds`: each run's wall time, loading and "
             "evaluation included; its training time for records made before the wall time "
             "was kept), so it counts a study run over several sessions as one from scratch.",
             f"- GLUE comparison: tasks {', '.join(plan.tasks)}; methods {', '.join(plan.methods)}; "
             f"seeds {', '.join(map(str, plan.seeds))}{budget_note(plan)}; training sets capped at "
             f"{plan.train_cap or 'all'} examples (stratified, seeded); "
             f"{plan.epochs or epochs_for(plan.train_cap or 10 ** 9)} epochs; batch {batch}, "
             f"max length {plan.max_length}; learning rate {learning_rates(plan.methods)} "
             "(docs/training.md)."]
    if plan.epochs:
        return lines + [f"- Low-resource study: sizes {', '.join(map(str, plan.sizes))}, "
                        f"{plan.epochs} epoch(s).", ""]
    return lines + [f"- Low-resource study: {', '.join(plan.low_resource_tasks)}; sizes "
                    f"{', '.join(map(str, plan.sizes))}; methods "
                    f"{', '.join(plan.low_resource_methods)}; seeds "
                    f"{', '.join(map(str, plan.seeds))}; epochs by `study.epochs_for` (about "
                    f"{schedule['target_steps']} updates, {schedule['least']} to "
                    f"{schedule['most']} epochs).", ""]


# --- 1. GLUE ----------------------------------------------------------------------------------

def paper_scores(method, tasks):
    """The paper's row for a method (Table 1, T5-base) as the table shows it: the mean of its
    scores on `tasks` and its printed average, both on the study's 0-1 scale ("" where the
    paper has no such row or not every task)."""
    row = PAPER_TABLE1.get(method)
    if row is None or any(t not in row for t in tasks):
        return ""
    return f"{statistics.fmean(row[t] for t in tasks) / 100:.3f} / {row['average'] / 100:.3f}"


def glue_table(plan, glue, eff):
    """A row per method: trainable %, the score on each task (mean ± sd over seeds), the
    average, the paper's row, seconds per run and the peak memory of the method's
    efficiency run."""
    tasks = list(plan.tasks)
    lines = ["| method | trainable % | " + " | ".join(tasks) + " | average | the paper (T5-base): "
             "these tasks / its average | seconds per run | peak MB |",
             "|---|---|" + "---|" * len(tasks) + "---|---|---|---|"]
    for m in plan.methods:
        rows = {r["task"]: r for r in glue if r["method"] == m}
        if not rows:
            continue
        avg = (f"{statistics.fmean(r['mean'] for r in rows.values()):.3f}"
               if len(rows) == len(tasks) else "")
        pct = next(iter(rows.values()))["percent"]
        secs = statistics.fmean(r["train_seconds"] for r in rows.values())
        peak = f"{eff[m]['peak_memory_mb']:.0f}" if m in eff else ""
        lines.append(f"| {m} | {pct:.3f} | " + " | ".join(_fmt(rows[t]) if t in rows else ""
                                                        for t in tasks)
                     + f" | {avg} | {paper_scores(m, tasks)} | {secs:.0f} | {peak} |")
    return lines


def glue_notes(plan, glue_records, model, figures):
    """What the table's numbers are, and Figure 1."""
    scores = ", ".join(f"{METRIC_NAMES[get_task(t).metric]} ({folder})"
                       for t, folder in zip(plan.tasks, folders(plan.tasks)))
    lines = ["", f"Mean ± standard deviation over {len(plan.seeds)} seeds (a cell of a single run "
             f"shows its score alone; a row without every task has no average). Scores: {scores}, as "
             f"the paper averages them. The paper's column: its Table 1 row of the same method "
             f"(T5-base, whole training sets), the mean over these tasks and its printed average "
             f"over eight, on the same 0-1 scale. Trainable %: of {model['name']}'s parameters, the "
             "classification head included (so full fine-tuning is a little over 100). Seconds "
             "per run: training and the validation after each epoch, averaged over tasks and "
             "seeds; indicative only: the same work (one task and method, another seed) took up "
             f"to {time_spread(glue_records):.1f} times as long in one run as in another, as "
             "runs may be made over several sessions, on machines of the same kind that are not "
             "equally fast or busy with other work. Section 3 compares the methods' costs, "
             "measured in one go. Peak MB: the method's efficiency run (section 3), each in its "
             "own process.", ""]
    if "params_vs_score" in figures:
        lines += [f"![trainable parameters against average score]({figures['params_vs_score']})",
                  "", "*Figure 1: each method's average test score over the tasks against its "
                  f"trainable parameters (% of {model['name']}, log scale), the paper's Figure 1 "
                  "in small.*", ""]
    return lines


def parity_verdict(plan, glue, missing):
    """The parity verdict, the averages and gaps behind it, and its rule."""
    word, avg = verdict_parity(glue, list(plan.tasks))
    gaps = {m: gaps_by_task(glue, plan.tasks, m) for m in ("compacter", "compacter++")}
    by_task = "; ".join(f"{m} − full by task: " + ", ".join(f"{t} {g:+.3f}" for t, g in gap.items())
                        for m, gap in gaps.items() if gap)
    paper = PAPER_GLUE_AVERAGE
    holds, partly = (f"{100 * g:g}" for g in PARITY_GAP)
    return [f"**Verdict, parity{provisional('GLUE', missing)}: {word}.** Average over the tasks: "
            + ", ".join(f"{m} {v:.3f}" for m, v in avg.items())
            + (f". {by_task}" if by_task else "")
            + f". Rule: holds when Compacter and Compacter++ are within {holds} point of full "
            f"fine-tuning's average (the paper: {paper['compacter']} and {paper['compacter++']} "
            f"against {paper['full']}), partly within {partly} points.", ""]


def ordinal(k):
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def baselines_paragraph(plan, glue):
    """The paper's other baselines (AdapterDrop, prompt tuning, Intrinsic-SAID): each one's
    average and rank here against its average and rank in the paper, over the same tasks
    and the methods both have; a baseline run on fewer tasks, its score on each beside the
    paper's."""
    tasks = list(plan.tasks)
    ours = {m: statistics.fmean(r["mean"] for r in glue if r["method"] == m) for m in plan.methods
            if sum(r["method"] == m for r in glue) == len(tasks)}
    both = [m for m in ours if m in PAPER_TABLE1 and all(t in PAPER_TABLE1[m] for t in tasks)]
    paper = {m: statistics.fmean(PAPER_TABLE1[m][t] for t in tasks) / 100 for m in both}
    rank = lambda scores, m: 1 + sum(v > scores[m] for k, v in scores.items() if k in both)
    parts = [f"{m} {ours[m]:.3f}, {ordinal(rank(ours, m))} (the paper: {paper[m]:.3f}, "
             f"{ordinal(rank(paper, m))})" for m in BASELINES if m in both]
    partial = [f"{m} on {r['task']}: {_fmt(r)} (the paper: {PAPER_TABLE1[m][r['task']] / 100:.3f})"
               for m in BASELINES if m not in ours and m in PAPER_TABLE1
               for r in glue if r["method"] == m and r["task"] in PAPER_TABLE1[m]]
    if not parts and not partial:
        return []
    ranked = (f"Average over these tasks and rank among the {len(both)} methods that both this "
              f"study and the paper's Table 1 have: " + "; ".join(parts) + ". " if parts else "")
    fewer = ("On fewer tasks (the budget): " + "; ".join(partial) + ". " if partial else "")
    return [f"**The paper's other baselines.** {ranked}{fewer}AdapterDrop leaves the lower 5/12 "
            "of the blocks without adapters (here blocks 0-2 of 6; the paper: 0-4 of T5-base's "
            "12 in each stack); prompt tuning reads its virtual tokens before every input, so "
            "each block works on P + T positions instead of T; Intrinsic-SAID moves every weight "
            "through fixed random Fastfood projections of d' = 20,000 numbers, so a step runs them "
            "over all the weights (docs/methods.md times a step of each against full "
            "fine-tuning's).", ""]


def glue_section(plan, glue, glue_records, eff, model, figures, missing):
    """Section 1: the GLUE comparison."""
    return (["## 1. GLUE: parity with full fine-tuning", ""] + glue_table(plan, glue, eff)
            + glue_notes(plan, glue_records, model, figures) + parity_verdict(plan, glue, missing)
            + baselines_paragraph(plan, glue))


# --- 2. little data ---------------------------------------------------------------------------

def low_resource_table(plan, rows, methods):
    """A row per training-set size: each method's score and each one's lead over full."""
    others = [m for m in methods if m != "full"] if "full" in methods else []
    lines = ["| examples | " + " | ".join(methods) + "".join(f" | {m} − full" for m in others)
             + " |", "|---|" + "---|" * (len(methods) + len(others))]
    for n in plan.sizes:
        by = {r["method"]: r for r in rows if r["train_size"] == n}
        diffs = "".join(f" | {by[m]['mean'] - by['full']['mean']:+.3f}"
                        if m in by and "full" in by else " | " for m in others)
        lines.append(f"| {n} | " + " | ".join(_fmt(by[m]) if m in by else "" for m in methods)
                     + diffs + " |")
    return lines


def low_resource_verdict(plan, low, low_records, task):
    """A task's little-data verdict, the gaps by size, the leads the seed could make, the rule."""
    word, diff = verdict_low_resource(low, plan.sizes, task)
    weak = leads_within_spread(low, plan.sizes, task)
    caveat = (" " + "; ".join(f"The lead at {n} examples ({d:+.3f}) is within the spread "
                              f"over seeds (±{sd:.3f})" for n, d, sd in weak) + "."
              if weak else "")
    unfinished = (sum(r["task"] == task for r in low_records)
                  < len(plan.sizes) * len(plan.seeds) * len(plan.low_resource_methods))
    return ["", f"**Verdict, little data ({task}){' (provisional)' if unfinished else ''}: "
            f"{word}.** Compacter − full by size: "
            + ", ".join(f"{n}: {d:+.3f}" for n, d in diff.items()) + "." + caveat
            + f" Rule: holds when Compacter's mean is higher at every size up to {SMALL_SIZE:,} "
            "and on average; partly when higher on average or at some small sizes. "
            "(Compacter++ − full is in the table.)", ""]


def low_resource_section(plan, low, low_records, figures):
    """Section 2: a table, a figure and a verdict per low-resource task."""
    lines = ["## 2. Little data", ""]
    for task in plan.low_resource_tasks:
        rows = [r for r in low if r["task"] == task]
        if not rows:
            continue
        methods = [m for m in plan.low_resource_methods if any(r["method"] == m for r in rows)]
        lines += [f"### {task}", ""] + low_resource_table(plan, rows, methods)
        if f"low_resource_{task}" in figures:
            lines += ["", f"![{task}: score against training-set size]"
                      f"({figures[f'low_resource_{task}']})", "",
                      f"*Figure: {task}, test score against training examples (log scale); "
                      "lines are means over seeds, bands one standard deviation, dots single runs.*"]
        lines += low_resource_verdict(plan, low, low_records, task)
    return lines


# --- 3. efficiency ----------------------------------------------------------------------------

def efficiency_table(eff):
    """A row per method: seconds per epoch and peak memory, each also relative to full's."""
    full = eff.get("full")
    lines = ["| method | trainable % | seconds per epoch | relative to full | peak MB | "
             "relative to full |", "|---|---|---|---|---|---|"]
    for m, r in eff.items():
        rel_t = r["train_seconds"] / full["train_seconds"] if full else float("nan")
        rel_m = r["peak_memory_mb"] / full["peak_memory_mb"] if full else float("nan")
        lines.append(f"| {m} | {r['percent']:.3f} | {r['train_seconds']:.1f} | {rel_t:.2f} | "
                     f"{r['peak_memory_mb']:.0f} | {rel_m:.2f} |")
    return lines


def efficiency_verdict(eff, missing):
    """The efficiency verdict, the savings behind it, the paper's and the rule; nothing
    without both runs."""
    word, name, less_t, less_m = verdict_efficiency(eff)
    if name is None:
        return []
    time, memory = (1 - c for c in PAPER_COMPACTERPP_COST)
    return ["", f"**Verdict, efficiency{provisional('efficiency', missing)}: {word}.** "
            f"{name.capitalize()} saves {less_t:.0%} of full fine-tuning's time per epoch and "
            f"{less_m:.0%} of its peak memory (the paper, Compacter++: {time:.0%} and "
            f"{memory:.0%}). Rule: holds when it saves time and more than {MEMORY_SAVED:.0%} of "
            "the memory."]


def efficiency_section(plan, eff, figures, missing):
    """Section 3: what was measured, the paper's savings, the table, the figure, the verdict."""
    time, memory = (1 - c for c in PAPER_COMPACTERPP_COST)
    lines = ["## 3. Efficiency", "",
             f"One epoch of {plan.efficiency_size} {plan.efficiency_task} examples per method, "
             "each in its own process, nothing written to disk (time: the training loop and one "
             "validation pass; memory: the process's peak resident memory from the start of "
             "training, so the model, the encoded data, the libraries and the steps). The paper, "
             f"{PAPER_MODEL.name}: Compacter++ about {memory:.0%} less memory than full "
             f"fine-tuning, {time:.0%} less time per epoch (Compacter "
             f"{PAPER_COMPACTER_TIME_SAVED:.0%}); BitFit about {PAPER_BITFIT_MEMORY_SAVED:.0%} "
             "less memory. The paper's other baselines are timed against full fine-tuning in "
             "docs/methods.md (one session, bench/bench_step.py), not here.",
             ""] + efficiency_table(eff)
    if "efficiency" in figures:
        lines += ["", f"![time and memory relative to full fine-tuning]({figures['efficiency']})",
                  "", "*Figure: each method's time per epoch against its peak memory, both as "
                  "fractions of full fine-tuning's (the dashed lines); the hollow circle is the "
                  f"paper's Compacter++ on {PAPER_MODEL.name}.*"]
    return lines + efficiency_verdict(eff, missing)


# --- 4. what differs from the paper -----------------------------------------------------------

def model_difference(model):
    """The model against the paper's: size, width, depth, bottleneck; its training if known."""
    paper = base_total(PAPER_MODEL)
    smaller = (f"With 1/{round(paper / model['params'])} of the weights, full fine-tuning has "
               "less room to overfit small data, and the adapters have"
               if model["params"] < paper / 2 else "The adapters have")
    lines = [f"- **Model**: {model['name']} ({short_count(model['params'])} parameters, width "
             f"{model['width']}, {model['layers']} layers) against {PAPER_MODEL.name} "
             f"({short_count(paper)}). {smaller} a bottleneck of {bottleneck(model['width'])} "
             f"(the paper's: {bottleneck(PAPER_MODEL.d)})."]
    if model["name"] in MODEL_NOTES:
        note = MODEL_NOTES[model["name"]].format(paper=PAPER_MODEL.name)
        lines.append(f"- **Backbone's training**: {note}")
    return lines


def training_difference(plan, glue_records, low_records):
    """Training sets, updates per run, batch and seeds against the paper's training."""
    batch = TrainConfig().batch_size
    updates = updates_per_run(list(glue_records) + list(low_records), batch)
    span = f" ({updates[0]} to {updates[1]})" if updates and updates[0] != updates[1] else ""
    amount = (f"{plan.epochs} epoch(s) per run" if plan.epochs else
              f"about {epochs_for.__kwdefaults__['target_steps']} updates per run{span}")
    return [f"- **Data and training**: training sets capped as stated, {amount} at batch "
            f"{batch} (the paper: {PAPER_TRAINING}); {len(plan.seeds)} seeds."]


def lr_difference(methods):
    """The presets' learning rates against the paper's."""
    paper = "; ".join(f"{rate(lr)} for {words(ms)}" for lr, ms in rates_by_value(methods, True))
    absent = [m for m in methods if PRESETS[m].paper_lr is None]
    return [f"- **Learning rates**: {learning_rates(methods)} (why: docs/training.md), not "
            f"tuned per task. The paper's, on {PAPER_MODEL.name}: {paper}"
            + (f"; {words(absent)} {'is' if len(absent) == 1 else 'are'} not in the paper"
               if absent else "") + "."]


def setting_differences(plan, machine):
    """The tasks, and where the efficiency runs ran."""
    norms = [m for m in plan.methods if getattr(PRESETS[m].config, "train_layer_norms", False)]
    lines = [f"- **Tasks**: the GLUE tasks whose files are in the directory (here "
             f"{', '.join(folders(plan.tasks))}); the paper averages {len(STUDY_TASKS)}.",
             f"- **Efficiency**: NumPy + autograd on {machine['cores']} CPU cores against "
             f"{PAPER_HARDWARE}; the savings come from the same source (no weight gradients or "
             "optimiser state for frozen weights), but their size depends on the implementation "
             "(docs/performance.md)."]
    if norms:
        lines[-1] += (f" The adapter methods ({', '.join(norms)}) train every layer norm, as "
                      "the paper's do, the embeddings' included, so the backward pass still runs "
                      "through every layer; docs/performance.md times a step with them frozen "
                      "(adapter-only).")
    return lines


def differences(plan, model, machine, glue_records, low_records):
    """Section 4: what differs from the paper's setting."""
    return (["", "## 4. What differs from the paper's setting", ""] + model_difference(model)
            + training_difference(plan, glue_records, low_records) + lr_difference(plan.methods)
            + setting_differences(plan, machine))


# --- the whole ----------------------------------------------------------------------------------

def write_report(path, plan, glue_records, low_records, eff, figures, *, model, machine,
                 seconds, commands, results="results", missing=None):
    """RESULTS.md from the records: settings, tables, figures and verdicts. model:
    `model_facts`; machine: `study.machine_info`; figures: {name: link} (`draw_figures`);
    results: the folder of the records. `missing` ({part: runs not yet made}) marks an
    unfinished study: the report says so at the top and calls its verdicts provisional."""
    glue, low = summarize(glue_records), summarize(low_records)
    missing = {part: n for part, n in (missing or {}).items() if n}
    lines = (header(missing) + intro(plan, model, commands, link(results, path))
             + settings(plan, machine, seconds)
             + glue_section(plan, glue, glue_records, eff, model, figures, missing)
             + low_resource_section(plan, low, low_records, figures)
             + efficiency_section(plan, eff, figures, missing)
             + differences(plan, model, machine, glue_records, low_records))
    Path(path).write_text("\n".join(lines) + "\n")


def draw_figures(plan, glue_records, low_records, eff, out, report):
    """The report's figures, drawn into `out`: {name: its link from the report's folder}.
    Score against parameters, one per low-resource task, and time and memory relative to
    full fine-tuning (when it ran) beside the paper's Compacter++."""
    out, figures = Path(out), {}
    tasks_of = {}
    for r in glue_records:
        tasks_of.setdefault(r["method"], set()).add(r["task"])
    everywhere = [r for r in glue_records if tasks_of[r["method"]] >= set(plan.tasks)]
    params_vs_score([{"method": r["method"], "percent": r["percent"], "score": r["mean"]}
                     for r in summarize(everywhere, by=("method",))], out / "params_vs_score.png",
                    title="average test score against trainable parameters")
    figures["params_vs_score"] = link(out / "params_vs_score.png", report)
    for task in plan.low_resource_tasks:
        rows = [r for r in low_records if r["task"] == task]
        low_resource(summarize(rows), out / f"low_resource_{task}.png", records=rows,
                     title=f"{task}: test score against training-set size")
        figures[f"low_resource_{task}"] = link(out / f"low_resource_{task}.png", report)
    if "full" in eff:
        full = eff["full"]
        efficiency_plot([{"method": m, "time": r["train_seconds"] / full["train_seconds"],
                          "memory": r["peak_memory_mb"] / full["peak_memory_mb"]}
                         for m, r in eff.items() if m != "full"], out / "efficiency.png",
                        title="cost of an epoch, relative to full fine-tuning",
                        paper={f"paper, Compacter++ on {PAPER_MODEL.name}": PAPER_COMPACTERPP_COST})
        figures["efficiency"] = link(out / "efficiency.png", report)
    return figures
