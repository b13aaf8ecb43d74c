"""minicompacter's Compacter++ training step against AdapterHub's as a user runs it: the
attention transformers picks by default (SDPA) and eager attention, the exactly equivalent
block and AdapterHub's own CompacterPlusPlusConfig, each row labelled.

Both sides train the same set (the adapter and a one-layer 2-class head on [CLS]; layer
norms frozen, as AdapterHub's train_adapter leaves them), with dropout 0, on the same random
ids, at each shape B x T. Every measurement is its own process (bench/bench_step.py's
worker, bench/peer_adapterhub.py), the sides alternated round after round (A B C D, A B C
D, ...) so that a drift of the machine reaches them alike; a row's figure is the median over
rounds of each process's median step, its peak the largest ru_maxrss. When the environment
forces an OpenBLAS kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE), minicompacter is measured
both ways, as forced and in processes without those variables (_common.kernel_variants),
each row labelled with its kernel, and the table has a ratio column for each.

    python bench/bench_peers.py --peer-python peer-env/bin/python
    python bench/bench_peers.py --peer-python peer-env/bin/python --shapes 32x16 --rounds 1 --no-append
"""

import argparse
import statistics
import sys

from _common import (ROOT, append_section, kernel_variants, machine, parse_shapes, peer_arguments,
                     peer_versions, ratio_cells, ratio_names)
from bench_step import run_json

MC = ("minicompacter Compacter++ (layer norms frozen)", "compacter++:adapter-only")
# (label, peer_adapterhub.py method, attention)
PEERS = [
    ("AdapterHub, equivalent block, SDPA (default attention)", "compacter++-equivalent", "sdpa"),
    ("AdapterHub, equivalent block, eager attention", "compacter++-equivalent", "eager"),
    ("AdapterHub, CompacterPlusPlusConfig, SDPA", "compacter++", "sdpa"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peer_arguments(p)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default %(default)s)")
    return p.parse_args(argv)


def mc_label(kernel):
    """The row label of minicompacter's step run with NumPy's OpenBLAS on `kernel` ("" when
    the environment forces none)."""
    return MC[0] + (f"; {kernel}" if kernel else "")


def commands(args, B, T, variants):
    """(label, argv, env) for every row at shape B x T: minicompacter once per kernel variant
    (env None: this process's environment), then the peers."""
    steps = ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    mc = [sys.executable, str(ROOT / "bench" / "bench_step.py"), "--worker", MC[1], f"{B}x{T}", *steps]
    peer = str(ROOT / "bench" / "peer_adapterhub.py")
    return ([(mc_label(kernel), mc, env) for kernel, env in variants]
            + [(label, [args.peer_python, peer, method, f"{B}x{T}", "--attention", attention, *steps],
                None) for label, method, attention in PEERS])


def measure(args, B, T, variants):
    """{label: {"median", "peak_mb", "trainable", "rounds"}} at one shape, rounds alternated."""
    rows = commands(args, B, T, variants)
    runs = {label: [] for label, _, _ in rows}
    for r in range(args.rounds):
        for label, argv, env in rows:
            runs[label].append(run_json(argv, env=env))
            print(f"B{B}xT{T} round {r + 1}: {label}: {runs[label][-1]['median']:.3f} s", flush=True)
    return {label: {"median": statistics.median(x["median"] for x in got),
                    "rounds": [x["median"] for x in got],
                    "peak_mb": max(x["peak_mb"] for x in got),
                    "trainable": got[0]["trainable"]} for label, got in runs.items()}


def table(results, variants):
    """Every row with one "mc / this" ratio column (time and peak) per kernel variant."""
    mcs = [mc_label(kernel) for kernel, _ in variants]
    names = ratio_names(variants)
    lines = ["| shape | side | trainable | step s (median of rounds) | rounds | "
             + " | ".join(f"{n} / this" for n in names) + " | peak MB | "
             + " | ".join(f"{n} / this peak" for n in names) + " |",
             "|---|---|---|---|---|" + "---|" * (2 * len(names) + 1)]
    for (B, T), rows in results:
        times = {label: r["median"] for label, r in rows.items()}
        peaks = {label: r["peak_mb"] for label, r in rows.items()}
        for label, r in rows.items():
            lines.append(f"| B{B} x T{T} | {label} | {r['trainable']:,} | {r['median']:.3f} | "
                         + ", ".join(f"{t:.3f}" for t in r["rounds"])
                         + f" | {ratio_cells(times, mcs, label)} | {r['peak_mb']:.0f} | "
                         f"{ratio_cells(peaks, mcs, label)} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    notes = machine([peer_versions(args.peer_python)], peer_python=args.peer_python)
    print("\n".join(notes), flush=True)
    variants = kernel_variants()
    results = [((B, T), measure(args, B, T, variants)) for B, T in parse_shapes(args.shapes)]
    text = table(results, variants)
    print("\n" + text)
    if args.append:
        append_section("Compacter++ step against AdapterHub as a user runs it, all-MiniLM-L6-v2, float32", notes + [
            f"{args.rounds} rounds, the {len(variants) + len(PEERS)} sides alternated in each; per process {args.warmup} warm-up "
            f"and {args.repeats} timed steps (loss + gradients, no dropout, clipping, AdamW)",
            "equivalent block: CompacterConfig(mh_adapter=False, non_linearity=\"gelu_new\"), the "
            "block minicompacter's Compacter++ computes; CompacterPlusPlusConfig reads LN(h + f) "
            "(original_ln_before=True)"], text)


if __name__ == "__main__":
    main()
