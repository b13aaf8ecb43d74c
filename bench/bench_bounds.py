"""What bounds minicompacter's Compacter++ step against AdapterHub's, shape by shape: each
side's whole step beside the same step's dense-layer matrix products alone.

The products are those one step really makes: every kernels.matmul_rows call of a
Compacter++ adapter-only step (bench_step.py's step) is recorded with its shapes and
memory layouts, then replayed on fresh arrays of the same layouts, alone, on
minicompacter's side (NumPy's BLAS on one thread per pool thread, inside
threads.parallel(), as in training) and on PyTorch's (torch.matmul with its default
threads, bench/peer_gemms.py). Whole steps: bench_step.py's worker and
peer_adapterhub.py with the exactly equivalent block and the default attention (SDPA).
Every measurement is its own process, alternated round after round. The step is also set
against its GEMM floor: bench_step.py's FLOP count (`step_gflop`) at the float32 GEMM rate
measured in this run (bench_step.py's gemm_rate, in a process of its own).

When the environment forces an OpenBLAS kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE),
minicompacter's step, its replayed products and the GEMM rate are measured both ways, as
forced and in processes without those variables (_common.kernel_variants); each row names
NumPy's kernel. Without such variables the rows name the kernel OpenBLAS picks.

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

from _common import (ROOT, append_section, blas_architecture, kernel_variants, machine,
                     parse_shapes, peer_arguments, peer_versions, start, step_setup)
from bench_step import measure_gemm_rate, run_json, step_gflop
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


def measure(args, B, T, calls_file, variants):
    """{side: median seconds over the alternated rounds} at one shape; minicompacter's
    sides once per kernel variant, named ("mc step", kernel) and ("mc GEMMs", kernel)."""
    here, bench = sys.executable, ROOT / "bench"
    steps = ["--repeats", str(args.repeats), "--warmup", "2"]
    sides = {}
    for kernel, env in variants:
        sides["mc step", kernel] = ([here, str(bench / "bench_step.py"), "--worker", METHOD,
                                     f"{B}x{T}", *steps], env)
        sides["mc GEMMs", kernel] = ([here, __file__, "--replay", calls_file,
                                      "--repeats", str(args.repeats)], env)
    sides["peer step", ""] = ([args.peer_python, str(bench / "peer_adapterhub.py"),
                               "compacter++-equivalent", f"{B}x{T}", "--attention", "sdpa", *steps], None)
    sides["peer GEMMs", ""] = ([args.peer_python, str(bench / "peer_gemms.py"), calls_file,
                                "--repeats", str(args.repeats)], None)
    got = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, (cmd, env) in sides.items():
            got[name].append(run_json(cmd, env=env)["median"])
            print(f"B{B}xT{T} round {r + 1}: {' '.join(name).strip()}: {got[name][-1]:.3f} s", flush=True)
    return {name: statistics.median(v) for name, v in got.items()}


def table(rows, variants, rates):
    """One row per shape and kernel variant; `rates`: {kernel: GEMM GFLOP/s}."""
    lines = ["| shape | NumPy's OpenBLAS kernel | GEMMs in a step (GFLOP) | mc step s | mc GEMMs alone s | "
             "peer step s | peer GEMMs alone s | mc step / peer step | mc GEMMs alone / peer step | "
             "mc step / mc GEMMs alone | GEMM floor s (step FLOP at the GEMM rate) | mc step / GEMM floor | "
             "mc step - mc GEMMs s | peer step - peer GEMMs s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for B, T, n, fl, m in rows:
        peer, peer_gemms = m["peer step", ""], m["peer GEMMs", ""]
        for kernel, _ in variants:
            step, gemms = m["mc step", kernel], m["mc GEMMs", kernel]
            floor = step_gflop(METHOD, B, T) / rates[kernel]
            lines.append(f"| B{B} x T{T} | {kernel or blas_architecture()} | {n} ({fl / 1e9:.1f}) | "
                         f"{step:.3f} | {gemms:.3f} | {peer:.3f} | {peer_gemms:.3f} | "
                         f"{step / peer:.2f} | {gemms / peer:.2f} | {step / gemms:.2f} | "
                         f"{floor:.3f} | {step / floor:.2f} | {step - gemms:.3f} | {peer - peer_gemms:.3f} |")
    return "\n".join(lines)


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
    notes = machine([peer_versions(args.peer_python)], peer_python=args.peer_python)
    print("\n".join(notes), flush=True)
    here = sys.executable
    variants = kernel_variants()
    gemm = {kernel: measure_gemm_rate(env) for kernel, env in variants}
    rows = []
    for B, T in parse_shapes(args.shapes):
        calls = run_json([here, __file__, "--record", f"{B}x{T}"])
        with tempfile.TemporaryDirectory() as tmp:           # the recorded products, for both replays
            calls_file = str(Path(tmp) / "calls.json")
            Path(calls_file).write_text(json.dumps(calls))
            med = measure(args, B, T, calls_file, variants)
        rows.append((B, T, len(calls), flops(calls), med))
    text = table(rows, variants, {kernel: rate for kernel, (rate, _) in gemm.items()})
    print("\n" + text)
    if args.append:
        rate_line = "; ".join(f"{kernel or 'GEMM rate'}: {rate:.0f} GFLOP/s, the best of "
                              + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
                              for kernel, (rate, rates) in gemm.items())
        append_section("What bounds the Compacter++ step: whole steps against their matrix products alone",
                       notes + [f"{args.rounds} rounds, the {len(variants) * 2 + 2} measurements "
                                f"alternated in each, medians of {args.repeats} repetitions per process",
                                "peer step: AdapterHub's exactly equivalent block, SDPA attention",
                                f"float32 GEMM (2048x384)@(384x1536), own process: {rate_line}; "
                                "GEMM floor = bench_step.step_gflop at that rate"],
                       text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
