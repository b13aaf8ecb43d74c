"""What the rest of a training step is made of, pass by pass: NumPy's elementwise passes as
minicompacter's kernels run them, against PyTorch's, on 1 thread and on one per core.

bench_bounds.py splits a step into its matrix products and the rest; this script times the
rest's building blocks alone, float32: a multiplication (one pass over memory), exp (the
softmax's), and the exact GELU forward and backward (minicompacter: kernels.gelu_parts
with the derivative, then the backward's product, as a training step runs them; PyTorch:
gelu, then gelu_backward, as its autograd runs them). Each on a block of 65,536 elements
(minicompacter's cache block, kernels._CHUNK: the data stay in the core's cache) on one
thread, and on the FFN's intermediate at B32 x T128 (4096 x 1536, 25 MB: the data stream
from memory) on one thread and on every core (minicompacter: threads.parallel(), the
array split by threads.in_parts as the kernels split it).

A last table is a tried alternative, kept as evidence: the FFN's product, bias and GELU with
its derivative at B32 x T128 as a step computes them (kernels.matmul_rows, then
kernels.gelu_parts) against the GELU computed on each block of R rows right after that
block's product, while it is in cache.

Alternated rounds, each side's measurement its own process; each figure is the median over
the rounds of the best of 5 timings. When the environment forces an OpenBLAS kernel the
script runs once per kernel (_common.each_kernel).

    python bench/bench_passes.py --peer-python peer-env/bin/python
    python bench/bench_passes.py --rounds 1 --no-append           # NumPy's side alone
"""

import argparse
import json
import statistics
import sys

import numpy as np

from _common import ROOT, append_section, each_kernel, machine, peer_versions
from bench_step import run_json
from minicompacter.core import kernels, threads
from peer_passes import STEP, best

IN_CACHE = kernels._CHUNK
OPS = {"mul": "x * 2 (one pass)", "exp": "exp(x)",
       "gelu": "GELU forward + backward (minicompacter: with the derivative in the forward)"}
FUSION_ROWS = (64, 256)


def numpy_passes(repeats):
    """{op/size/threads: seconds per element} on minicompacter's side."""
    rng = np.random.default_rng(0)
    out = {}
    cores = threads.pool_size()
    for shape, n_threads in ((IN_CACHE, 1), (STEP, 1), (STEP, cores)):
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        y = np.empty_like(x)
        fx, fy = x.reshape(-1), y.reshape(-1)
        size = "cache" if shape == IN_CACHE else "step"

        def halves(fn):                       # one part per thread, as the kernels split
            return lambda: threads.in_parts(lambda r: fn(fx[r], fy[r]), fx.size, fx.size)

        def gelu():                           # forward, then the backward's vjp
            y, dydx = kernels.gelu_parts(x, slope=True)
            return kernels._gelu_dx(y, x, y, dydx)(dy)
        fns = {"mul": halves(lambda a, b: np.multiply(a, 2.0, out=b)),
               "exp": halves(lambda a, b: np.exp(a, out=b)),
               "gelu": gelu}
        with threads.parallel(n_threads):
            for op, fn in fns.items():
                fn()
                out[f"{op}/{size}/{n_threads}"] = best(fn, repeats) / x.size
    return out


def fused_ffn(x, w, b, rows):
    """gelu_parts(x @ w + b, slope=True), the GELU computed on each block of `rows` rows right
    after that block's product (the tried alternative)."""
    h = np.empty((x.shape[0], w.shape[1]), np.float32)
    y, dydx = np.empty_like(h), np.empty_like(h)

    def work(r):
        block = h[r]
        np.matmul(x[r], w, out=block)
        block += b
        kernels.gelu_block(block.reshape(-1), y[r].reshape(-1), dydx[r].reshape(-1))
    threads.in_parts(work, x.shape[0], x.size * w.shape[1] // 16, chunk=rows)
    return y, dydx


def fusion(repeats):
    """{variant: seconds} for the FFN's product, bias and GELU at B32 x T128, every core."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((STEP[0], 384), dtype=np.float32)
    w = rng.standard_normal((384, STEP[1]), dtype=np.float32) * 0.05
    b = rng.standard_normal(STEP[1], dtype=np.float32) * 0.1
    fns = {"as the step": lambda: kernels.gelu_parts(kernels.matmul_rows(x, w, b), slope=True),
           **{f"R={r}": (lambda r=r: fused_ffn(x, w, b, r)) for r in FUSION_ROWS}}
    with threads.parallel():
        ref = fns["as the step"]()
        for name, fn in fns.items():             # the same values, to float32 rounding
            got = fn()
            for a, c in zip(ref, got):
                np.testing.assert_allclose(c, a, rtol=1e-4, atol=1e-4)
        return {name: best(fn, repeats) for name, fn in fns.items()}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-python", help="a Python with torch (see bench/peer_adapterhub.py)")
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timings per figure (default %(default)s)")
    p.add_argument("--append", action=argparse.BooleanOptionalAction, default=True,
                   help="append the tables to BENCHMARKS.md (default on)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def table(mc, peer, cores):
    cols = [("cache", 1), ("step", 1), ("step", cores)]
    names = {"cache": "65,536 (in cache)", "step": f"{STEP[0]} x {STEP[1]}"}
    head = ("| pass | " + " | ".join(f"{names[s]}, {t} thread{'s' * (t > 1)}: NumPy / PyTorch"
                                       for s, t in cols) + " |")
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for op, label in OPS.items():
        cells = []
        for s, t in cols:
            key = f"{op}/{s}/{t}"
            a = mc[key] * 1e9
            if peer:
                c = peer[key] * 1e9
                cells.append(f"{a:.2f} / {c:.2f} ns = {a / c:.1f}x")
            else:
                cells.append(f"{a:.2f} ns")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fusion_table(f):
    ref = f["as the step"]
    lines = ["| FFN product + bias + GELU with derivative, B32 x T128, every core | seconds | / as the step |",
             "|---|---|---|"]
    for name, t in f.items():
        label = ("kernels.matmul_rows, then kernels.gelu_parts (as the step)" if name == "as the step"
                 else f"the GELU on each block of {name[2:]} rows after its product")
        lines.append(f"| {label} | {t * 1e3:.1f} ms | {t / ref:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return print(json.dumps({"passes": numpy_passes(args.repeats),
                                 "fusion": fusion(args.repeats)}))
    if each_kernel():
        return
    notes = machine([peer_versions(args.peer_python)] if args.peer_python else [],
                    peer_python=args.peer_python)
    print("\n".join(notes), flush=True)
    me = [sys.executable, str(ROOT / "bench" / "bench_passes.py"), "--worker",
          "--repeats", str(args.repeats)]
    peer = [args.peer_python, str(ROOT / "bench" / "peer_passes.py"), "--block", str(IN_CACHE),
            "--repeats", str(args.repeats)] if args.peer_python else None
    mcs, peers = [], []
    for i in range(args.rounds):
        mcs.append(run_json(me))
        if peer:
            peers.append(run_json(peer))
        print(f"round {i + 1}/{args.rounds} done", flush=True)
    mc = {k: statistics.median(r["passes"][k] for r in mcs) for k in mcs[0]["passes"]}
    fu = {k: statistics.median(r["fusion"][k] for r in mcs) for k in mcs[0]["fusion"]}
    pe = {k: statistics.median(r[k] for r in peers) for k in peers[0]} if peers else None
    text = table(mc, pe, threads.pool_size()) + "\n\n" + fusion_table(fu)
    print("\n" + text)
    if args.append:
        notes += [f"{args.rounds} alternated rounds, each side's measurement its own process; "
                  f"each figure: the median over the rounds of the best of {args.repeats} timings, "
                  "in ns an element",
                  "NumPy on every core: the array split into one part per thread "
                  "(threads.in_parts inside threads.parallel()); the GELU split and blocked as "
                  "kernels.gelu_parts does it; PyTorch: torch.set_num_threads"]
        append_section("What the rest of the step is made of: elementwise passes, NumPy against "
                       "PyTorch, float32", notes, text)


if __name__ == "__main__":
    main()
