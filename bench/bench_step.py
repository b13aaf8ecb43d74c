"""Time one training step and its peak memory, per method, on all-MiniLM-L6-v2: adapter-only
steps for each method, full fine-tuning, and the same steps in PyTorch + AdapterHub.

A step is what `finetune` does per batch, without dropout (rng=None, as PyTorch's side
with dropout probabilities 0): loss and gradients with respect to the trainable tree
(a 2-class head on [CLS], cross-entropy), clipping to global norm 1, one AdamW update.
Inputs are random realistic ids (bench/_common.make_batch) at each shape B x T, no padding.

Each (method, shape) runs in a fresh subprocess, so its peak resident memory (ru_maxrss,
which includes the interpreter, the libraries and the loaded model) is its own. Given
`--peer-python` (an interpreter with torch, transformers 4.57 and adapters 1.3, see
bench/peer_adapterhub.py), the same steps run in PyTorch in the same benchmark run:
AdapterHub's CompacterPlusPlusConfig and CompacterConfig, and full fine-tuning of
transformers' BertForSequenceClassification. The GEMM floor of a step is its matrix-product
FLOP count (`step_gflop`) divided by the float32 GEMM rate measured in this run on
(2048 x 384) @ (384 x 1536), in a process of its own. When the environment forces an
OpenBLAS kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE), minicompacter's steps and the GEMM
rate are measured both ways, as forced and in processes without those variables
(_common.kernel_variants): one table per kernel, the PyTorch side measured once.

    python bench/bench_step.py                                   # minicompacter only
    python bench/bench_step.py --peer-python peer-env/bin/python
    python bench/bench_step.py --methods compacter++,full --shapes 16x64 --no-append
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

from _common import (ROOT, append_section, kernel_variants, machine, parse_shapes, peer_versions,
                     start, step_setup, time_interleaved)

# The presets train every layer norm, as the paper does; ":adapter-only" freezes them, as
# AdapterHub's train_adapter does, so that the two sides train the same weights.
METHODS = ["compacter++:adapter-only", "compacter:adapter-only", "compacter++", "compacter",
           "phm-adapter", "adapter", "pfeiffer", "lora", "bitfit", "full"]
PEERS = {"compacter++:adapter-only": "CompacterPlusPlusConfig",
         "compacter:adapter-only": "CompacterConfig", "full": "full fine-tuning"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    p.add_argument("--shapes", default="16x64,32x128", help="comma-separated BxT (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default %(default)s)")
    p.add_argument("--peer-python", help="a Python with torch + adapters (bench/peer_adapterhub.py)")
    p.add_argument("--append", action=argparse.BooleanOptionalAction, default=True,
                   help="append the results to BENCHMARKS.md (default on)")
    p.add_argument("--worker", nargs=2, metavar=("METHOD", "BxT"), help=argparse.SUPPRESS)
    p.add_argument("--gemm-worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- the FLOP count of a step ------------------------------------------------------------

def step_gflop(method, B, T, L=6, d=384, k_ff=1536, heads=12):
    """Matrix-product GFLOP of one training step of MiniLM (the adapters' own products are
    below 0.5% and left out). Forward: every projection and both attention products. The
    backward pass computes input gradients (dy @ W^T, and the attention products' two
    gradients each) wherever something below is trainable, and weight gradients (x^T @ dy)
    only for trained weights:
      - full fine-tuning, BitFit and the adapter presets (they train the embeddings' layer
        norm): input gradients through every layer; full fine-tuning adds every weight
        gradient;
      - adapter-only after the FFN (Compacter++ with frozen layer norms): every layer but
        the first;
      - adapter-only after attention too (Compacter): the first layer's FFN as well;
      - LoRA on query and value: the first layer from its attention scores up."""
    N = B * T
    proj = 2 * N * (4 * d * d)                      # query, key, value, output
    ffn = 2 * N * (2 * d * k_ff)
    att = 2 * 2 * B * heads * T * T * (d // heads)  # scores and context
    layer = proj + ffn + att
    forward = L * layer
    data = {"compacter++:adapter-only": (L - 1) * layer,
            "compacter:adapter-only": (L - 1) * layer + ffn,
            "lora": (L - 1) * layer + ffn + 2 * N * d * d + 2 * att}.get(method, L * layer)
    weights = L * (proj + ffn) if method == "full" else 0
    return (forward + data + weights) / 1e9


def gemm_rate(repeats=20):
    """The best float32 GFLOP/s on both cores for (2048 x 384) @ (384 x 1536), the FFN's
    shape at B16 x T128: OpenBLAS's own threads, or minicompacter's split of the rows over
    its pool (kernels.matmul_rows, OpenBLAS single-threaded); returns (best, both rates)."""
    from threadpoolctl import threadpool_limits

    from minicompacter.core import kernels

    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 384), dtype=np.float32)
    b = rng.standard_normal((384, 1536), dtype=np.float32)

    def rate(f):
        for _ in range(3):
            f()
        t = []
        for _ in range(repeats):
            start = time.perf_counter()
            f()
            t.append(time.perf_counter() - start)
        return 2 * 2048 * 384 * 1536 / statistics.median(t) / 1e9
    rates = {"minicompacter's row split": rate(lambda: kernels.matmul_rows(a, b))}
    with threadpool_limits(limits=os.cpu_count(), user_api="blas"):
        rates[f"OpenBLAS, {os.cpu_count()} threads"] = rate(lambda: a @ b)
    return max(rates.values()), rates


# --- one process per (method, shape) ------------------------------------------------------

def worker(method, shape, repeats, warmup):
    """Time `repeats` steps of `method` at shape BxT; print a JSON line."""
    from minicompacter.core.tree import count

    B, T = parse_shapes(shape)[0]
    step, trainable = step_setup(method, B, T)
    loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    times = time_interleaved([step], warmup, repeats)[0]
    print(json.dumps({"median": statistics.median(times), "min": min(times),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "loaded_mb": loaded_mb, "trainable": count(trainable)}))


def run_json(cmd, env=None):
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT / "bench", env=env)
    if done.returncode != 0:
        raise SystemExit(f"benchmark worker failed: {' '.join(cmd)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args, method, B, T, env=None):
    return run_json([sys.executable, __file__, "--worker", method, f"{B}x{T}",
                     "--repeats", str(args.repeats), "--warmup", str(args.warmup)], env=env)


def measure_gemm_rate(env=None):
    """(best GFLOP/s, {way: GFLOP/s}) of gemm_rate() in a process of its own with `env`."""
    got = run_json([sys.executable, __file__, "--gemm-worker"], env=env)
    return got["best"], got["rates"]


def measure_peer(args, method, B, T):
    return run_json([args.peer_python, str(ROOT / "bench" / "peer_adapterhub.py"),
                     method.partition(":")[0],
                     f"{B}x{T}", "--repeats", str(args.repeats), "--warmup", str(args.warmup)])


def table(rows, rate, rates, kernel=""):
    lines = ([f"**{kernel[0].upper() + kernel[1:]}**", ""] if kernel else []) + [
             f"GEMM rate in this run: {rate:.0f} GFLOP/s, the best of "
             + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
             + " (float32, (2048x384)@(384x1536)).", "",
             "| shape | method | trainable | step s (min) | / full step | / GEMM floor | peak MB "
             "| / full peak | PyTorch step s | mc / PyTorch | PyTorch peak MB | mc / PyTorch peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        full = next((x for x in rows if x["shape"] == r["shape"] and x["method"] == "full"), None)
        rel = lambda key: f"{r['mc'][key] / full['mc'][key]:.2f}" if full else "n/a"
        p = r.get("peer")
        lines.append(
            f"| B{r['shape'][0]} x T{r['shape'][1]} | {r['method']} | {r['mc']['trainable']:,} | "
            f"{r['mc']['median']:.3f} ({r['mc']['min']:.3f}) | {rel('median')} | "
            f"{r['mc']['median'] / r['floor']:.2f} | {r['mc']['peak_mb']:.0f} | {rel('peak_mb')} | "
            + (f"{p['median']:.3f} | {r['mc']['median'] / p['median']:.2f} | {p['peak_mb']:.0f} | "
               f"{r['mc']['peak_mb'] / p['peak_mb']:.2f} |" if p else "n/a | n/a | n/a | n/a |"))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    start()
    if args.worker:
        return worker(*args.worker, args.repeats, args.warmup)
    if args.gemm_worker:
        best, rates = gemm_rate()
        return print(json.dumps({"best": best, "rates": rates}))
    methods = args.methods.split(",")
    peer_line = []
    if args.peer_python:
        peer_line = [peer_versions(args.peer_python)]
    notes = machine(peer_line, peer_python=args.peer_python)
    print("\n".join(notes), flush=True)
    variants = kernel_variants()
    gemm = {kernel: measure_gemm_rate(env) for kernel, env in variants}
    for kernel, (rate, _) in gemm.items():
        print(f"GEMM rate {rate:.0f} GFLOP/s {kernel}", flush=True)
    rows, peers = {kernel: [] for kernel, _ in variants}, {}
    for B, T in parse_shapes(args.shapes):
        for method in methods:
            if args.peer_python and method in PEERS:
                peers[B, T, method] = measure_peer(args, method, B, T)
            for kernel, env in variants:
                row = {"shape": (B, T), "method": method, "mc": measure(args, method, B, T, env),
                       "floor": step_gflop(method, B, T) / gemm[kernel][0]}
                if (B, T, method) in peers:
                    row["peer"] = peers[B, T, method]
                rows[kernel].append(row)
                print(f"B{B}xT{T} {method} {kernel}: {row['mc']['median']:.3f} s, "
                      f"{row['mc']['peak_mb']:.0f} MB"
                      + (f"; PyTorch {row['peer']['median']:.3f} s, {row['peer']['peak_mb']:.0f} MB"
                         if "peer" in row else ""), flush=True)
    text = "\n\n".join(table(rows[kernel], *gemm[kernel], kernel) for kernel, _ in variants)
    print("\n" + text)
    if args.append:
        notes += [f"{args.warmup} warm-up steps, then {args.repeats} timed steps, each "
                  "(method, shape) in its own process; medians (min); peak = ru_maxrss of that "
                  "process (interpreter, libraries and model included)",
                  "step = loss + gradients (no dropout) + clipping + AdamW; 2-class head on "
                  "[CLS]; PyTorch side: " + ", ".join(f"{k}: {v}" for k, v in PEERS.items()),
                  "GEMM floor = step_gflop(method) / the GEMM rate above (bench/bench_step.py)"]
        append_section("Training step time and peak memory per method, all-MiniLM-L6-v2, float32",
                       notes, text)


if __name__ == "__main__":
    main()
