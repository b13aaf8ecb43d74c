"""The PyTorch side of bench/bench_passes.py: the same elementwise passes, float32, timed with
PyTorch's own operations on 1 thread and on one thread per core. Runs in the peer's
interpreter (torch 2.13.0). Prints one JSON line: {row key: seconds per element}.

    peer-env/bin/python bench/peer_passes.py --block 65536 --repeats 5

bench_passes.py imports `best` and `STEP` from here (this file needs no more than the
standard library to import), so both sides time the same sizes the same way.
"""

import argparse
import json
import os
import timeit

STEP = (4096, 1536)                    # the FFN's intermediate at B32 x T128


def best(fn, repeats):
    """Seconds of one call of fn: the best of `repeats` timings of loops of at least 20 ms."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()                   # calls that take at least 0.2 s
    number = number // 10 if number > 10 else number
    return min(timer.repeat(repeats, number)) / number


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--block", type=int, default=1 << 16,
                   help="elements of the in-cache block (minicompacter's kernels._CHUNK)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    out = {}
    with torch.no_grad():
        for shape, threads in ((args.block, 1), (STEP, 1), (STEP, os.cpu_count())):
            torch.set_num_threads(threads)
            x = torch.randn(shape, generator=g)
            dy = torch.randn(shape, generator=g)
            y = torch.empty_like(x)
            n = x.numel()
            size = "cache" if shape == args.block else "step"
            fns = {"mul": lambda: torch.mul(x, 2.0, out=y),
                   "exp": lambda: torch.exp(x, out=y),
                   # GELU forward and backward as autograd runs them: gelu, gelu_backward
                   "gelu": lambda: (F.gelu(x), torch.ops.aten.gelu_backward(dy, x))}
            for op, fn in fns.items():
                fn()
                out[f"{op}/{size}/{threads}"] = best(fn, args.repeats) / n
    print(json.dumps(out))


if __name__ == "__main__":
    main()
