"""Where the time of one training step goes: a Compacter++ adapter-only step (the
bench_step.py step) on MiniLM at B32 x T128 under cProfile, its wall time split by the
kernels.py functions that do the work.

The main thread waits while the pool threads compute, so a function's cumulative time
in the main thread is the wall time of its work on all cores. GEMM rows: the dense
layers' products (forward, dy W^T), everything run through kernels.matmul_rows.
"autograd and the rest": the step's time minus the listed parts (autograd's graph
building and backward bookkeeping, gradient accumulation, the small adapter products,
reshapes, clipping and AdamW).

When the environment forces an OpenBLAS kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE), the
script runs twice, as forced and without those variables, each run appending its own
section (_common.each_kernel).

    python bench/profile_step.py [--method compacter++:adapter-only] [--shape 32x128]
"""

import argparse
import cProfile
import inspect
import pstats

from _common import append_section, each_kernel, machine, parse_shapes, start, step_setup
from minicompacter.core import kernels                         # noqa: E402


def closure_line(maker):
    """The first line of the vjp closure that a vjp maker returns."""
    return next(c.co_firstlineno for c in maker.__code__.co_consts if inspect.iscode(c))


PARTS = [  # (label, function name, first line or None)
    ("dense layers' GEMMs (forward and backward)", "matmul_rows", None),
    ("attention core, forward (scores, softmax, context)", "attention_probs", None),
    ("", "_attend", None),
    ("attention core, backward", "vjp", closure_line(kernels._attend_dqkv)),
    ("GELU, forward (with its derivative)", "gelu_parts", None),
    ("GELU, backward", "vjp", closure_line(kernels._gelu_dx)),
    ("layer norm, forward", "normalize", None),
    ("layer norm, backward", "vjp", closure_line(kernels._layer_norm_dx)),
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="compacter++:adapter-only")
    p.add_argument("--shape", default="32x128")
    p.add_argument("--append", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    if each_kernel():               # OpenBLAS's kernel forced: one run per kernel
        return
    start()
    (B, T), = parse_shapes(args.shape)
    step, _ = step_setup(args.method, B, T)
    for _ in range(2):
        step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(3):
        step()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.items()) / 3
    rows, listed = [], 0.0
    for label, fn, line in PARTS:
        seconds = sum(ct for (path, ln, func), (_, _, _, ct, _) in stats.items()
                      if path.endswith("kernels.py") and func == fn
                      and (line is None or ln == line)) / 3
        listed += seconds
        if label:
            rows.append([label, seconds])
        else:
            rows[-1][1] += seconds
    rows.append(["autograd and the rest", total - listed])
    text = "\n".join([f"Step: {total:.3f} s (mean of 3 under cProfile).", "",
                      "| part | seconds per step | share |", "|---|---|---|"]
                     + [f"| {label} | {s:.3f} | {s / total:.0%} |" for label, s in rows])
    print(text)
    if args.append:
        append_section(f"Profile: where a {args.method} step goes, B{B} x T{T}",
                       machine([f"{args.method}, 2-class head on [CLS], no dropout"]), text)


if __name__ == "__main__":
    main()
