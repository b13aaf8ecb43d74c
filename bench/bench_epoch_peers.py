"""One real training epoch plus a validation pass: minicompacter's `finetune` against a
PyTorch loop over AdapterHub (bench/peer_epoch_adapterhub.py) on the same examples.

Both sides: all-MiniLM-L6-v2, the Compacter++ block (AdapterHub: the equivalent
CompacterConfig), a one-layer head on [CLS], batch 32, the method's learning rate, the same
linear schedule and warm-up, clipping to norm 1, dropout 0.1, the same training subset and
validation split (minicompacter's data functions pick them on both sides). minicompacter
batches by length; AdapterHub runs in the same grouped order and in random order (the HF
Trainer's default). Layer norms frozen on both sides, and a second setting with them trained
on both. Each run is its own process, the sides alternated round after round; a row's
figure is the median over rounds, its peak the largest ru_maxrss of its processes. When the
environment forces an OpenBLAS kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE), minicompacter
runs both ways, as forced and in processes without those variables
(_common.kernel_variants), each row labelled, with a ratio column for each.

    python bench/bench_epoch_peers.py --peer-python peer-env/bin/python --data-dir "$GLUE_DIR"
"""

import argparse
import json
import os
import resource
import statistics
import sys

from _common import (ROOT, append_section, kernel_variants, machine, peer_versions, ratio_cells,
                     ratio_names, start)
from bench_step import run_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", help="a Python with torch + adapters (bench/peer_adapterhub.py)")
    p.add_argument("--data-dir", default=os.environ.get("GLUE_DIR"), help="GLUE directory (default: GLUE_DIR)")
    p.add_argument("--tasks", default="sst2,stsb")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--append", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--worker", nargs=2, metavar=("TASK", "LAYER_NORMS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("needs the GLUE files: --data-dir DIR or GLUE_DIR")
    if not args.worker and not args.peer_python:
        p.error("needs --peer-python")
    return args


def lr():
    from minicompacter.core.methods import LEARNING_RATES
    return LEARNING_RATES["compacter++"]


def worker(task, layer_norms, data_dir, train_size):
    """minicompacter's side: one epoch of `finetune` (its time includes the validation pass)."""
    import minicompacter
    from minicompacter.harness.training.train import TrainConfig, finetune

    start()
    method = minicompacter.method_config("compacter++", train_layer_norms=layer_norms == "trained")
    pre = minicompacter.load_pretrained("minilm")
    cfg = TrainConfig(epochs=1, progress=False, pooling="cls", lr=lr())
    m = finetune(pre, task, method, cfg, data_dir=data_dir, train_size=train_size)
    print(json.dumps({"seconds": m["train_seconds"], "trainable": m.get("trainable_params"),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


MC = "minicompacter finetune (grouped)"


def sides(args, task, layer_norms, variants, env):
    """(label, argv, env) of each run: minicompacter once per kernel variant, then the peer's
    two orders (with `env`, this process's environment plus the path)."""
    mine = [sys.executable, __file__, "--worker", task, layer_norms, "--data-dir", args.data_dir,
            "--train-size", str(args.train_size)]
    peer = [args.peer_python, str(ROOT / "bench" / "peer_epoch_adapterhub.py"), task, "--data-dir",
            args.data_dir, "--train-size", str(args.train_size), "--lr", str(lr())]
    peer += ["--train-layer-norms"] if layer_norms == "trained" else []
    return ([(MC + (f"; {kernel}" if kernel else ""), mine,
              env if kernel_env is None else dict(kernel_env, PYTHONPATH=env["PYTHONPATH"]))
             for kernel, kernel_env in variants]
            + [("AdapterHub loop, grouped like minicompacter", peer + ["--order", "grouped"], env),
               ("AdapterHub loop, random order", peer + ["--order", "random"], env)])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(*args.worker, args.data_dir, args.train_size)
    start()                                       # for machine()'s description of the workers' pool
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'bench'}")
    notes = machine([peer_versions(args.peer_python)], peer_python=args.peer_python)
    print("\n".join(notes), flush=True)
    variants = kernel_variants()
    names = ratio_names(variants)
    lines = ["| task | layer norms | side | seconds (median) | rounds | "
             + " | ".join(f"{n} / this" for n in names) + " | peak MB | "
             + " | ".join(f"{n} / this peak" for n in names) + " |",
             "|---|---|---|---|---|" + "---|" * (2 * len(names) + 1)]
    for task in args.tasks.split(","):
        for layer_norms in ("frozen", "trained"):
            rows = sides(args, task, layer_norms, variants, env)
            got = {label: [] for label, _, _ in rows}
            for r in range(args.rounds):
                for label, cmd, run_env in rows:
                    got[label].append(run_json(cmd, env=run_env))
                    print(f"{task} {layer_norms} round {r + 1}: {label}: {got[label][-1]['seconds']:.1f} s", flush=True)
            secs = {label: statistics.median(x["seconds"] for x in runs) for label, runs in got.items()}
            peaks = {label: max(x["peak_mb"] for x in runs) for label, runs in got.items()}
            mcs = [label for label, _, _ in rows[:len(variants)]]
            for label, runs in got.items():
                lines.append(f"| {task} | {layer_norms} | {label} | {secs[label]:.1f} | "
                             + ", ".join(f"{x['seconds']:.1f}" for x in runs)
                             + f" | {ratio_cells(secs, mcs, label)} | {peaks[label]:.0f} | "
                             f"{ratio_cells(peaks, mcs, label)} |")
    text = "\n".join(lines)
    print("\n" + text)
    if args.append:
        append_section(f"One epoch ({args.train_size} examples) + validation, minicompacter against AdapterHub",
                       notes + [f"{args.rounds} rounds, sides alternated; Compacter++ (equivalent block), "
                                f"lr {lr()}, batch 32, dropout 0.1, head on [CLS]"], text)


if __name__ == "__main__":
    main()
