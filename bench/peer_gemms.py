"""The PyTorch side of bench/bench_bounds.py: a list of matrix products (recorded from one
minicompacter training step: shapes, and which operands are transposed views) timed with
torch.matmul at PyTorch's default number of threads, one per core. Runs in the peer's
interpreter (torch 2.13.0). Prints one JSON line: the median seconds of the whole list.

    peer-env/bin/python bench/peer_gemms.py calls.json --repeats 5
"""

import argparse
import json
import os
import statistics
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("calls", help="JSON list of {a, b, bias, a_f, b_f}")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    import torch
    torch.set_num_threads(os.cpu_count())
    g = torch.Generator().manual_seed(0)

    def operand(shape, fortran):
        x = torch.randn(*(shape[::-1] if fortran else shape), generator=g) * 0.05
        return x.T if fortran else x
    calls = json.loads(open(args.calls).read())
    operands = [(operand(c["a"], c["a_f"]), operand(c["b"], c["b_f"]),
                 torch.randn(c["b"][1], generator=g) if c["bias"] else None) for c in calls]
    times = []
    with torch.no_grad():
        for _ in range(args.repeats + 1):                   # the first is a warm-up
            t0 = time.perf_counter()
            for a, b, bias in operands:
                if bias is None:
                    torch.matmul(a, b)
                else:
                    torch.addmm(bias, a, b)
            times.append(time.perf_counter() - t0)
    print(json.dumps({"median": statistics.median(times[1:])}))


if __name__ == "__main__":
    main()
