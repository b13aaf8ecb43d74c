"""The measurements that notebooks 02, 04 and 05 read instead of making them on every
build: each subcommand trains (or times) at full size and writes one JSON record beside
this file, with the command, the machine and the library versions in it.

    python notebooks/records/measure.py sharing      # 02: shared A against one A per layer, 3 seeds
    python notebooks/records/measure.py frozen       # 02, 04: layer norms + head alone, head alone
    python notebooks/records/measure.py frozen --tasks cola --methods head layer-norms+head \
        --name frozen_backbone_cola                  # 04: what the backbone gives CoLA
    python notebooks/records/measure.py rates        # 05: learning rates chosen on validation
    python notebooks/records/measure.py step         # 04: where a training step's time goes
    python notebooks/records/measure.py memory       # 04: RESULTS.md's efficiency runs, this code
    python notebooks/records/measure.py memory-compare   # 04: the same, started by `compare`

Run from the checkout's root, one at a time (each takes the machine's cores). SST-2 runs
need GLUE_DIR. The notebooks never run this script; they read the records.
"""

import argparse
import copy
import dataclasses
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

import minicompacter as mc
from minicompacter.core.encoder import NO_HOOKS
from minicompacter.core.methods import BitFitConfig, Method, init_nothing
from minicompacter.core.optim import adamw_update, clip_by_global_norm, init_adamw
from minicompacter.core.paths import is_layer_norm, train_nothing
from minicompacter.core.phm import low_rank_B
from minicompacter.core.tree import leaves
from minicompacter.harness.data.batches import batch_order
from minicompacter.harness.study.study import Run, efficiency_job
from minicompacter.harness.training.jobs import run_in_process
from minicompacter.harness.training.train import RunState, prepare, train

HERE = Path(__file__).resolve().parent
LOAD_AT_START = list(os.getloadavg()) if hasattr(os, "getloadavg") else None   # 1, 5, 15 min


def machine():
    """What made a record: the command, the CPU, the cores, the versions."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"command": "python " + " ".join(sys.argv), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "minicompacter": mc.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_average_at_start": LOAD_AT_START,
            "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def write(name, record):
    path = HERE / f"{name}.json"
    path.write_text(json.dumps({"made_by": machine(), **record}, indent=1) + "\n")
    print(f"wrote {path}")


# --- 02: a shared A against one A per layer, over seeds --------------------------------------

def test_scores(run, tree, rows=None):
    """Mean cross-entropy and accuracy of a trainable tree on the test split."""
    enc = run.splits["test"]
    lengths = enc.lengths[:rows]
    losses, right = [], 0
    for idx in batch_order(lengths, 64):
        batch = enc.batch(idx)
        logits = np.asarray(mc.predict(tree, run.frozen, batch, run.model), np.float64)
        top = logits.max(1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
        labels = np.asarray(batch["labels"])
        losses.append(-logp[np.arange(len(idx)), labels])
        right += int(np.sum(logits.argmax(1) == labels))
    return float(np.mean(np.concatenate(losses))), right / len(lengths)


def projections(tree):
    """(layer, slot, 'down' | 'up') of every adapter projection, in a fixed order."""
    return [(i, key, proj) for i, layer in enumerate(tree["layers"])
            for key in sorted(layer) if key.endswith("_adapter") for proj in ("down", "up")]


def W_of(A, tree, i, key, proj):
    p = tree["layers"][i][key][proj]
    return np.asarray(mc.phm_weight(A, low_rank_B(p["s"], p["t"])), np.float64)


def trained(pretrained, config, cfg, train_size, start_A=None):
    """(initial tree, final tree, per-update losses, test (loss, accuracy)) of one run of
    the harness's loop (notebook 02's tracked_run without the per-update record)."""
    run, initial = prepare(pretrained, "synthetic-sentiment", mc.make_method(config), cfg,
                           train_size=train_size)
    if start_A is not None:
        for i, key, proj in projections(initial):
            initial["layers"][i][key][proj]["A"] = start_A.copy()
    start = copy.deepcopy(initial)
    state = RunState(start, init_adamw(start))
    with mc.use_layers("fast"), mc.parallel():
        train(run, state)
        test = test_scores(run, state.trainable)
    losses = [h["loss"] for h in state.history if "loss" in h]
    return initial, state.trainable, losses, test


def sharing(args):
    pretrained = mc.load_pretrained("minilm")
    shared_cfg = mc.method_config("compacter")
    per_layer_cfg = mc.method_config("compacter", shared_phm_rule=False)
    rng = np.random.default_rng(12345)
    runs = []
    for seed in args.seeds:
        cfg = mc.TrainConfig(epochs=3, max_length=64, progress=False, seed=seed)
        t0 = time.perf_counter()
        init, final, loss_s, test_s = trained(pretrained, shared_cfg, cfg, 2000)
        A0 = np.asarray(init["shared"]["A"])
        init_pl, final_pl, loss_pl, test_pl = trained(pretrained, per_layer_cfg, cfg, 2000, A0)
        same_start = all(np.array_equal(init["layers"][i][k][p][x], init_pl["layers"][i][k][p][x])
                         for i, k, p in projections(init) for x in ("s", "t", "b"))
        AT = np.asarray(final["shared"]["A"], np.float64)
        W_cos, W_null = [], []
        for i, key, proj in projections(final):
            A_l = np.asarray(final_pl["layers"][i][key][proj]["A"], np.float64)
            W_s, W_p = W_of(AT, final, i, key, proj), W_of(A_l, final_pl, i, key, proj)
            W_cos.append(cosine(W_s, W_p))
            # the same layer's trained s, t with a random A of the per-layer A's norm: how
            # alike two W of this structure are when their A have nothing in common
            for _ in range(args.null_draws):
                R = rng.standard_normal(A_l.shape) * np.linalg.norm(A_l) / 8.0
                W_null.append(cosine(W_s, W_of(R, final_pl, i, key, proj)))
        runs.append({
            "seed": seed, "same_start": bool(same_start), "seconds": time.perf_counter() - t0,
            "A0": A0.ravel().tolist(), "A_shared": AT.ravel().tolist(),
            "A_per_layer": [np.asarray(final_pl["layers"][i][k][p]["A"]).ravel().tolist()
                            for i, k, p in projections(final_pl)],
            "projections": [f"{i}{k[0]}{p[0]}" for i, k, p in projections(final)],
            "W_cosine": W_cos, "W_cosine_random_A": W_null,
            "train_loss_last20": {"shared": float(np.mean(loss_s[-20:])),
                                  "per_layer": float(np.mean(loss_pl[-20:]))},
            "updates": len(loss_s),
            "test": {"shared": test_s, "per_layer": test_pl}})
        print(f"seed {seed}: {runs[-1]['seconds']:.0f} s, test {test_s} / {test_pl}", flush=True)
    write("sharing", {"task": "synthetic-sentiment", "train_size": 2000, "epochs": 3,
                      "max_length": 64, "model": "minilm", "runs": runs})


def cosine(X, Y):
    return float(np.sum(X * Y) / (np.linalg.norm(X) * np.linalg.norm(Y)))


# --- 02 and 04: what the layer norms and the head reach alone ---------------------------------

def frozen_backbone_method(name):
    """A method that adds nothing: "layer-norms+head" unfreezes every layer norm (what
    every adapter method trains besides its adapters), "head" nothing (a linear probe)."""
    unfreezes = is_layer_norm if name == "layer-norms+head" else train_nothing
    return Method(BitFitConfig(method=name), init_nothing, unfreezes, NO_HOOKS)


def frozen(args):
    pretrained = mc.load_pretrained("minilm")
    settings = {"sst2": dict(train_size=1000, epochs=4, max_length=128),      # notebook 04's
                "synthetic-sentiment": dict(train_size=2000, epochs=3, max_length=64),  # 02's
                "cola": dict(train_size=2000, epochs=4, max_length=128)}      # the study's
    runs = []
    for task in args.tasks:
        s = settings[task]
        for seed in args.seeds:
            for name in args.methods:
                method = (mc.make_method(name) if name.startswith("compacter")
                          else frozen_backbone_method(name))
                cfg = mc.TrainConfig(epochs=s["epochs"], max_length=s["max_length"],
                                     progress=False, seed=seed, lr=3e-3)
                m = mc.finetune(pretrained, task, method, cfg, train_size=s["train_size"],
                                data_dir=None if task.startswith("synthetic") else os.environ.get("GLUE_DIR"))
                curve = [h["validation"]["score"] for h in m["history"] if "validation" in h]
                runs.append({"task": task, "method": name, "seed": seed, **s,
                             "lr": 3e-3, "trainable_params": m["trainable_params"],
                             "test": m["test"]["score"], "validation": curve,
                             "best_epoch": m["best_epoch"], "train_seconds": m["train_seconds"]})
                print(json.dumps(runs[-1]), flush=True)
    write(args.name, {"model": "minilm", "runs": runs})


# --- 05 / README: learning rates chosen on validation -----------------------------------------

def rates(args):
    pretrained = mc.load_pretrained("minilm")
    runs = []
    for seed in args.seeds:
        for method in args.methods:
            for lr in args.lrs:
                cfg = mc.TrainConfig(epochs=3, progress=False, seed=seed, lr=lr)
                m = mc.finetune(pretrained, "synthetic-sentiment", method, cfg, train_size=600)
                curve = [h["validation"]["score"] for h in m["history"] if "validation" in h]
                runs.append({"method": method, "lr": lr, "seed": seed,
                             "validation": max(curve), "validation_curve": curve,
                             "test": m["test"]["score"], "best_epoch": m["best_epoch"],
                             "updates": sum("loss" in h for h in m["history"])})
                print(json.dumps(runs[-1]), flush=True)
    write("learning_rates", {"task": "synthetic-sentiment", "train_size": 600, "epochs": 3,
                             "model": "minilm", "max_length": 128, "runs": runs})


# --- 04: where the time of a training step goes -----------------------------------------------

def step(args):
    """Forward alone, forward and backward, and the clipping + AdamW update, timed apart,
    for full fine-tuning and three parameter-efficient methods, on one batch of SST-2-like
    rows (random token ids: the time does not depend on the words)."""
    pretrained = mc.load_pretrained("minilm")
    B, T = args.batch, args.length
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(1000, 20000, (B, T)).astype(np.int64),
             "token_type_ids": np.zeros((B, T), np.int64),
             "attention_mask": np.ones((B, T), np.int64),
             "labels": rng.integers(0, 2, B).astype(np.int64)}
    methods = {"full": "full", "compacter": "compacter", "compacter++": "compacter++",
               "compacter++, layer norms frozen": mc.method_config("compacter++",
                                                                   train_layer_norms=False),
               "head only": frozen_backbone_method("head")}
    setups = {}
    for label, method in methods.items():
        model, trainable, frozen_tree = mc.init_model(np.random.default_rng(0), pretrained,
                                                      method, pooling="mean")
        setups[label] = (model, trainable, frozen_tree, init_adamw(trainable))
    times = {label: {"forward": [], "forward+backward": [], "update": []} for label in methods}
    with mc.use_layers("fast"), mc.parallel():
        for _ in range(args.repeats + 1):                   # the first round is a warm-up
            for label, (model, tr, fr, opt) in setups.items():
                t0 = time.perf_counter()
                mc.loss(tr, fr, batch, model, np.random.default_rng(1))
                t1 = time.perf_counter()
                _, g = mc.loss_and_grad(tr, fr, batch, model, np.random.default_rng(1))
                t2 = time.perf_counter()
                g, _ = clip_by_global_norm(g, 1.0)
                adamw_update(tr, g, opt, 1e-3)
                t3 = time.perf_counter()
                for part, dt in (("forward", t1 - t0), ("forward+backward", t2 - t1),
                                 ("update", t3 - t2)):
                    times[label][part].append(dt)
    rows = {label: {part: float(np.median(v[1:])) for part, v in parts.items()}
            for label, parts in times.items()}
    rows = {label: {**r, "trainable": int(sum(x.size for _, x in leaves(setups[label][1])))}
            for label, r in rows.items()}
    for label, r in rows.items():
        print(f"{label:<34} " + " ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    write("step_time", {"model": "minilm", "batch": B, "length": T, "repeats": args.repeats,
                        "dropout": True, "layers": "fast", "seconds": rows, "all": times})


# --- 04: the study's efficiency runs again, on the current code --------------------------------

def memory(args):
    """RESULTS.md's efficiency protocol (study.efficiency: one epoch of 2,000 SST-2 examples,
    each method in a process of its own, nothing written while it trains), on this code."""
    rows = []
    for method in args.methods:
        run = Run("sst2", method, 2000, 0, epochs=1, max_length=128)
        r = run_in_process(efficiency_job, run=dataclasses.asdict(run),
                           data_dir=os.environ["GLUE_DIR"], model="minilm")
        rows.append({k: r[k] for k in ("method", "train_seconds", "peak_memory_mb",
                                       "trainable_params", "train_examples", "epochs")})
        print(json.dumps(rows[-1]), flush=True)
    write("efficiency_now", {"task": "sst2", "train_size": 2000, "epochs": 1, "runs": rows})


def memory_compare(args):
    """The same runs as `memory`, but started as notebook 04 starts its own: `python -m
    minicompacter compare`, in a temporary directory; with --train-size and --epochs, the
    study's data (2,000 x 1) or notebook 04's (1,000 x 4)."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compare"
        subprocess.run([sys.executable, "-m", "minicompacter", "compare", "--task", "sst2",
                        "--methods", ",".join(args.methods), "--model", "minilm",
                        "--train-size", str(args.train_size), f"--epochs={args.epochs}",
                        "--no-progress", "--data-dir", os.environ["GLUE_DIR"], "--out", str(out)],
                       check=True)
        rows = [{k: r[k] for k in ("method", "train_seconds", "peak_memory_mb", "trainable_params",
                                   "epochs")} for r in json.loads((out / "compare.json").read_text())]
    for r in rows:
        print(json.dumps(r), flush=True)
    write(args.name, {"task": "sst2", "train_size": args.train_size, "epochs": args.epochs,
                      "via": "python -m minicompacter compare", "runs": rows})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("sharing")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--null-draws", type=int, default=5)
    q = sub.add_parser("frozen")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--tasks", nargs="+", default=["sst2", "synthetic-sentiment"])
    q.add_argument("--methods", nargs="+",
                   default=["head", "layer-norms+head", "compacter", "compacter++"])
    q.add_argument("--name", default="frozen_backbone", help="the record's file name")
    q = sub.add_parser("rates")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--methods", nargs="+", default=["adapter", "bitfit", "lora"])
    q.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    q = sub.add_parser("memory")
    q.add_argument("--methods", nargs="+", default=["full", "compacter", "compacter++", "bitfit"])
    q = sub.add_parser("memory-compare")
    q.add_argument("--methods", nargs="+", default=["full", "compacter++"])
    q.add_argument("--train-size", type=int, default=2000)
    q.add_argument("--epochs", type=int, default=1)
    q.add_argument("--name", default="efficiency_compare")
    q = sub.add_parser("step")
    q.add_argument("--batch", type=int, default=32)
    q.add_argument("--length", type=int, default=16)
    q.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    {"sharing": sharing, "frozen": frozen, "rates": rates, "step": step,
     "memory": memory, "memory-compare": memory_compare}[args.what](args)


if __name__ == "__main__":
    main()
