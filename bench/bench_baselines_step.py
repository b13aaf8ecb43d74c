"""What a training step of the paper's other baselines costs against full fine-tuning's, on
all-MiniLM-L6-v2: one process, every method's step set up once (bench/_common.step_setup,
the head on [CLS]), then timed in turn, round after round, so that a change in the
machine's load falls on every method alike; the table gives each method's median step and
its ratio to full fine-tuning's.

    python bench/bench_baselines_step.py                       # B32 x T32, appends to BENCHMARKS.md
    python bench/bench_baselines_step.py --shapes 32x16,32x64 --repeats 7 --no-append
"""

import argparse
import statistics

from _common import append_section, each_kernel, machine, parse_shapes, start, step_setup, time_interleaved

METHODS = ("full", "compacter++", "adapterdrop", "prompt-tuning-r", "intrinsic-said")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default %(default)s)")
    p.add_argument("--shapes", default="32x32", help="comma-separated BxT (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (default %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default %(default)s)")
    p.add_argument("--append", action=argparse.BooleanOptionalAction, default=True,
                   help="append the table to BENCHMARKS.md (default on)")
    args = p.parse_args(argv)
    if each_kernel():
        return
    start()
    methods = args.methods.split(",")
    rows = ["| shape | method | median step (s) | relative to full |", "|---|---|---:|---:|"]
    for B, T in parse_shapes(args.shapes):
        steps = [step_setup(m, B, T)[0] for m in methods]
        times = time_interleaved(steps, args.warmup, args.repeats)
        median = {m: statistics.median(t) for m, t in zip(methods, times)}
        base = median.get("full")
        for m in methods:
            ratio = f"{median[m] / base:.2f}" if base else ""
            rows.append(f"| B{B} x T{T} | {m} | {median[m]:.3f} | {ratio} |")
            print(rows[-1], flush=True)
    body = "\n".join(rows)
    notes = machine() + [f"{args.repeats} timed rounds after {args.warmup} untimed, every method "
                         f"in turn within a round; prompt tuning's step reads its 100 virtual "
                         f"tokens too (B x (100 + T) positions)"]
    print("\n".join(notes))
    if args.append:
        append_section("The paper's other baselines: a training step against full fine-tuning's",
                       notes, body)


if __name__ == "__main__":
    main()
