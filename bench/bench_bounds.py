"""What bounds minicompacter's Compacter++ step against AdapterHub's, shape by shape: each
side's whole step beside the same step's dense-layer matrix products alone.

The products are those one step really makes: every kernels.matmul_rows call of a
Compacter++ adapter-only step (bench_step.py's step) is recorded with its shapes and
memory layouts, then replayed on fresh arrays of the same layouts, alone, on
minicompacter's side (NumPy's BLAS on one thread per pool thread, inside
threads.parallel(), as in training) and on PyTorch's (torch.matmul with its default
threads, bench/peer_gemms.py). Whole steps: bench_step.py's worker and
peer_adapterhub.py with the exactly equivalent block and the default attention (SDPA).
Every measurement is its own process, the four alternated round after round.

What the columns say: if minicompacter's products alone take most of AdapterHub's whole
step, no change to the rest of minicompacter's step (autograd, elementwise passes,
attention core, optimiser) can bring the ratio to 1 at that shape.

    python bench/bench_bounds.py --peer-python peer-env/bin/python
    python bench/bench_bounds.py --peer-python peer-env/bin/python --shapes 32x16 --rounds 1 --no-append
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import (ROOT, append_section, machine, parse_shapes, peer_arguments, peer_versions,
                     start, step_setup)
from bench_step import run_json
from minicompacter.core import kernels

METHOD = "compacter++:adapter-only"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peer_arguments(p, peer_required=False, repeats_help="timed repetitions per process")
    p.add_argument("--record", metavar="BxT", help=argparse.SUPPRESS)
    p.add_argument("--replay", metavar="FILE", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def record(B, T):
    """The matmul_rows calls of one training step: [{"a", "b", "bias", "a_f", "b_f"}] with
    the shapes and whether each operand is a transposed (Fortran-ordered) view."""
    step, _ = step_setup(METHOD, B, T)
    step()                                                  # warm: the first step allocates
    calls, plain = [], kernels.matmul_rows

    def recording(a, b, bias=None):
        calls.append({"a": a.shape, "b": b.shape, "bias": bias is not None,
                      "a_f": not a.flags.c_contiguous, "b_f": not b.flags.c_contiguous})
        return plain(a, b, bias)
    kernels.matmul_rows = recording
    try:
        step()
    finally:
        kernels.matmul_rows = plain
    return calls


def operand(rng, shape, fortran):
    x = rng.standard_normal(shape[::-1] if fortran else shape, dtype=np.float32) * 0.05
    return x.T if fortran else x


def replay(calls, repeats):
    """Median seconds of all the recorded products, replayed through matmul_rows."""
    rng = np.random.default_rng(0)
    args = [(operand(rng, c["a"], c["a_f"]), operand(rng, c["b"], c["b_f"]),
             rng.standard_normal(c["b"][1], dtype=np.float32) if c["bias"] else None)
            for c in calls]
    times = []
    for _ in range(repeats + 1):                            # the first is a warm-up
        t0 = time.perf_counter()
        for a, b, bias in args:
            kernels.matmul_rows(a, b, bias)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def flops(calls):
    return sum(2 * c["a"][0] * c["a"][1] * c["b"][1] for c in calls)


def measure(args, B, T, calls_file):
    """{side: median seconds over the alternated rounds} at one shape."""
    here, bench = sys.executable, ROOT / "bench"
    steps = ["--repeats", str(args.repeats), "--warmup", "2"]
    sides = {
        "mc step": [here, str(bench / "bench_step.py"), "--worker", METHOD, f"{B}x{T}", *steps],
        "mc GEMMs": [here, __file__, "--replay", calls_file, "--repeats", str(args.repeats)],
        "peer step": [args.peer_python, str(bench / "peer_adapterhub.py"), "compacter++-equivalent",
                      f"{B}x{T}", "--attention", "sdpa", *steps],
        "peer GEMMs": [args.peer_python, str(bench / "peer_gemms.py"), calls_file,
                       "--repeats", str(args.repeats)],
    }
    got = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, cmd in sides.items():
            got[name].append(run_json(cmd)["median"])
            print(f"B{B}xT{T} round {r + 1}: {name}: {got[name][-1]:.3f} s", flush=True)
    return {name: statistics.median(v) for name, v in got.items()}


def main(argv=None):
    args = parse_args(argv)
    if args.record:
        start()
        (B, T), = parse_shapes(args.record)
        print(json.dumps(record(B, T)))
        return 0
    if args.replay:
        start()
        calls = json.loads(open(args.replay).read())
        print(json.dumps({"median": replay(calls, args.repeats)}))
        return 0
    if not args.peer_python:
        raise SystemExit("--peer-python is required: a Python with torch + adapters")
    notes = machine([peer_versions(args.peer_python)])
    print("\n".join(notes), flush=True)
    here = sys.executable
    rows = []
    for B, T in parse_shapes(args.shapes):
        calls = run_json([here, __file__, "--record", f"{B}x{T}"])
        with tempfile.TemporaryDirectory() as tmp:           # the recorded products, for both replays
            calls_file = str(Path(tmp) / "calls.json")
            Path(calls_file).write_text(json.dumps(calls))
            med = measure(args, B, T, calls_file)
        rows.append((B, T, len(calls), flops(calls), med))
    lines = ["| shape | GEMMs in a step (GFLOP) | mc step s | mc GEMMs alone s | peer step s | "
             "peer GEMMs alone s | mc step / peer step | mc GEMMs alone / peer step | "
             "mc step - mc GEMMs s | peer step - peer GEMMs s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for B, T, n, fl, m in rows:
        lines.append(f"| B{B} x T{T} | {n} ({fl / 1e9:.1f}) | {m['mc step']:.3f} | {m['mc GEMMs']:.3f} | "
                     f"{m['peer step']:.3f} | {m['peer GEMMs']:.3f} | "
                     f"{m['mc step'] / m['peer step']:.2f} | {m['mc GEMMs'] / m['peer step']:.2f} | "
                     f"{m['mc step'] - m['mc GEMMs']:.3f} | {m['peer step'] - m['peer GEMMs']:.3f} |")
    text = "\n".join(lines)
    print("\n" + text)
    if args.append:
        append_section("What bounds the Compacter++ step: whole steps against their matrix products alone",
                       notes + [f"{args.rounds} rounds, the four measurements alternated in each, "
                                f"medians of {args.repeats} repetitions per process",
                                "peer step: AdapterHub's exactly equivalent block, SDPA attention"],
                       text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
