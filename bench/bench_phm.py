"""Time the PHM layer forward + backward: W built (build_W=True) against the factored product (build_W=False).

For each width d and phm_dim n, three rank-1 (Compacter) PHM layers: an adapter's down
projection d -> k and up projection k -> d, k = max(n, n * round(d / 32 / n)), and a
square d -> d (PHM replacing a dense layer). n must divide the widths; other (d, n) are
skipped and listed. One step is autograd's gradient of sum(phm_linear(x) * g), g a fixed
random cotangent, with respect to A, s, t, b and x, float32, x of --tokens rows. The two
paths run interleaved repeat by repeat (same machine load); the table gives medians, the
ratio factored / built, the forward multiply-adds of each path as the code computes them,
the tracemalloc peak of one step above what was allocated before it (NumPy reports its
buffers to tracemalloc; a separate untimed run) and the relative max abs difference of
the outputs and gradients of the two paths. A ratio below 0.85 counts as a win beyond
the noise (about +-10%). The script scores candidate rules for build_W=None.
Run with the glibc allocator settings below (MALLOC_*_; docs/performance.md): without them,
fresh large buffers made some cases 2-8x slower depending on what ran before (both paths).
When the environment forces an OpenBLAS kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE), the
script runs twice, as forced and without those variables, each run appending its own
section (_common.each_kernel).

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=8589934592 \
        MALLOC_TOP_PAD_=268435456 python3 bench/bench_phm.py     # full sweep, appended
    python3 bench/bench_phm.py --widths 768 --phm-dims 4 --layers square --no-append
    python3 bench/bench_phm.py --widths 64,128 --tokens 256 --repeats 3 --no-append
"""

import argparse
import statistics
import time
import tracemalloc

import numpy as onp
from autograd import grad
import autograd.numpy as np

from _common import BENCHMARKS, append_section, each_kernel, machine, start
from minicompacter.core import phm                    # noqa: E402  (_common puts the checkout first)

WIN = 0.85                                       # factored/built below this: a real win


def parse_args(argv=None):
    ints = lambda s: [int(v) for v in s.split(",")]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=ints, default=[384, 768, 1024, 4096], help="d (default %(default)s)")
    p.add_argument("--phm-dims", type=ints, default=[2, 4, 8, 12], help="n (default %(default)s)")
    p.add_argument("--layers", default="down,up,square", help="subset of down,up,square (default %(default)s)")
    p.add_argument("--tokens", type=int, default=4096, help="rows N of x (default %(default)s = 32 x 128)")
    p.add_argument("--rank", type=int, default=1, help="rank of s_i t_i (default %(default)s)")
    p.add_argument("--repeats", type=int, default=7, help="timed steps per path (default %(default)s)")
    p.add_argument("--big-repeats", type=int, help="repeats when a width is >= 4096 (default: --repeats)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per path first (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the parameters and inputs (default %(default)s)")
    p.add_argument("--append", action=argparse.BooleanOptionalAction, default=True,
                   help=f"append the results to {BENCHMARKS.name} (default on)")
    args = p.parse_args(argv)
    args.big_repeats = args.big_repeats or args.repeats
    return args


def cases(widths, dims, layers):
    """(layer, d_in, d_out, n) for every requested shape; and the skipped (d, n) pairs."""
    out, skipped = [], []
    for d in widths:
        for n in dims:
            if d % n:
                skipped.append((d, n))
                continue
            k = max(n, n * int(d / 32 / n + 0.5))
            shapes = {"down": (d, k), "up": (k, d), "square": (d, d)}
            out += [(name, *shapes[name], n) for name in layers.split(",")]
    return out, skipped


def macs(N, d_in, d_out, n, r):
    """Forward multiply-adds of each path, matmul by matmul as phm.py computes them."""
    p, q = d_in // n, d_out // n
    built = n * p * r * q + n * n * n * p * q + N * d_in * d_out    # s@t, A with B -> W, x@W
    factored = N * n * p * n * r + n * n * n * N * r + N * n * n * r * q  # X@S, A, @t
    return built, factored


def step_fn(factored, g):
    loss = lambda P, x: np.sum(phm.phm_linear(P, x, build_W=not factored) * g)
    return grad(lambda Px: loss(*Px))            # gradients for every leaf of (params, x)


def peak_mib(f, arg):
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    f(arg)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


def rel(a, b):
    return float(onp.max(onp.abs(a - b)) / max(float(onp.max(onp.abs(b))), 1e-30))


def run_case(rng, N, d_in, d_out, n, r, repeats, warmup):
    P = phm.init_phm_linear(rng, n, d_in, d_out, rank=r, with_A=False)
    P["A"] = phm.init_phm_rule(rng, n, shared=True, phm_c_init="uniform")   # U(-1, 1)
    P["b"] = rng.standard_normal(d_out).astype(onp.float32)
    x = rng.standard_normal((N, d_in)).astype(onp.float32)
    g = rng.standard_normal((N, d_out)).astype(onp.float32)
    fns = [step_fn(False, g), step_fn(True, g)]
    for _ in range(warmup):
        for f in fns:
            f((P, x))
    times, last = [[], []], [None, None]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            start = time.perf_counter()
            last[i] = f((P, x))
            times[i].append(time.perf_counter() - start)
    ys = [phm.phm_linear(P, x, build_W=not fl) for fl in (False, True)]
    (gPb, gxb), (gPf, gxf) = last
    gdiff = max([rel(gPf[k], gPb[k]) for k in gPb] + [rel(gxf, gxb)])
    assert all(v.dtype == onp.float32 for v in [*ys, gxb, gxf, *gPb.values(), *gPf.values()])
    med = [statistics.median(t) * 1e3 for t in times]
    return {"ms": med, "ratio": med[1] / med[0], "macs": macs(N, d_in, d_out, n, r),
            "mib": [peak_mib(f, (P, x)) for f in fns], "ydiff": rel(ys[1], ys[0]), "gdiff": gdiff}


def table(rows):
    lines = ["| layer | d_in -> d_out | n | built ms | factored ms | factored/built | fwd MMAC "
             "built / factored | peak MiB built / factored | rel diff y / grads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " **win**" if r["ratio"] < WIN else (" loss" if r["ratio"] > 1 / WIN else "")
        lines.append(f"| {r['layer']} | {r['d_in']} -> {r['d_out']} | {r['n']} | {r['ms'][0]:.2f} | "
                     f"{r['ms'][1]:.2f} | {r['ratio']:.2f}{mark} | {r['macs'][0] / 1e6:,.1f} / "
                     f"{r['macs'][1] / 1e6:,.1f} | {r['mib'][0]:.1f} / {r['mib'][1]:.1f} | "
                     f"{r['ydiff']:.0e} / {r['gdiff']:.0e} |")
    return "\n".join(lines)


def conclusion(rows, skipped):
    """Where the factored path wins, and how candidate rules for build_W=None would do."""
    says = lambda rs: ", ".join(f"{r['layer']} {r['d_in']}->{r['d_out']} n={r['n']} "
                                f"({r['ratio']:.2f})" for r in rs) or "none"
    wins = [r for r in rows if r["ratio"] < WIN]
    losses = [r for r in rows if r["ratio"] > 1 / WIN]
    out = [f"- factored wins by more than 15% (ratio < {WIN}) in {len(wins)} of {len(rows)} "
           f"cases: {says(wins)}",
           f"- factored loses by more than 15%: {says(losses)}",
           f"- the others are within noise: {says([r for r in rows if r not in wins + losses])}"]
    rules = {f"max(d_in, d_out) >= {T}": (lambda r, T=T: max(r["d_in"], r["d_out"]) >= T)
             for T in sorted({max(r["d_in"], r["d_out"]) for r in rows})}
    rules["always factored"] = lambda r: True
    rules["never factored"] = lambda r: False
    rules["factored MACs < built MACs"] = lambda r: r["macs"][1] < r["macs"][0]
    rules["factored MACs <= built MACs / 10"] = lambda r: 10 * r["macs"][1] <= r["macs"][0]
    rules["min(d_in, d_out) >= 10 n r"] = lambda r: min(r["d_in"], r["d_out"]) >= 10 * r["n"] * r["r"]
    best = sum(min(r["ms"]) for r in rows)
    out.append("- candidate rules for build_W=None (low-rank layers): time summed over the "
               "cases relative to always picking the faster path; cases where the rule picks "
               "a path more than 15% slower:")
    for name, pick in rules.items():
        chosen = [r["ms"][1] if pick(r) else r["ms"][0] for r in rows]
        bad = [r for r, c in zip(rows, chosen) if c > min(r["ms"]) / WIN]
        out.append(f"  - {name}: {sum(chosen) / best:.3f}x, {len(bad)} bad picks"
                   + (f" ({says(bad)})" if bad else ""))
    if skipped:
        out.append("- skipped, n does not divide d: " + ", ".join(f"d={d} n={n}" for d, n in skipped))
    return "\n".join(out)



def main(argv=None):
    args = parse_args(argv)
    if each_kernel():               # OpenBLAS's kernel forced: one run per kernel
        return
    start()
    machine_lines = machine()
    print("\n".join(machine_lines), flush=True)
    rng = onp.random.default_rng(args.seed)
    todo, skipped = cases(args.widths, args.phm_dims, args.layers)
    rows = []
    for layer, d_in, d_out, n in todo:
        reps = args.big_repeats if max(d_in, d_out) >= 4096 else args.repeats
        row = {"layer": layer, "d_in": d_in, "d_out": d_out, "n": n, "r": args.rank,
               **run_case(rng, args.tokens, d_in, d_out, n, args.rank, reps, args.warmup)}
        rows.append(row)
        print(f"{layer} {d_in}->{d_out} n={n}: built {row['ms'][0]:.2f} ms, factored "
              f"{row['ms'][1]:.2f} ms, ratio {row['ratio']:.2f}", flush=True)
    table_text, concl = table(rows), conclusion(rows, skipped)
    print(f"\n{table_text}\n\n{concl}")
    if args.append:
        append_section(f"PHM layer forward + backward, built W against factored, float32, "
                       f"rank {args.rank}, N = {args.tokens} rows", machine_lines + [
                           f"{args.warmup} warm-up step(s), then {args.repeats} timed steps per path"
                           + (f" ({args.big_repeats} when a width is >= 4096)"
                              if args.big_repeats != args.repeats else "")
                           + ", interleaved built / factored; medians. Peak memory: tracemalloc, "
                           "one step, above the inputs."], f"{table_text}\n\n{concl}")


if __name__ == "__main__":
    main()
