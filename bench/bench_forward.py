"""Time the encoder's forward pass: minicompacter against PyTorch + transformers.

Measures the forward pass of all-MiniLM-L6-v2 (6 layers, d = 384), float32, no dropout
(rng=None), on random realistic token ids ([CLS]=101 first, [SEP]=102 last, ids in
[1000, 30000) between, attention mask all ones, fixed seed), at each shape B x T given
(default B32 x T128 and B16 x T64). When torch and transformers are importable, the same
forward runs in PyTorch (BertModel without pooler, eager attention, eval mode, under
torch.inference_mode(), torch threads = cores) in the same run, interleaved repeat by
repeat with minicompacter so both see the same machine load; the script prints the
ratio minicompacter / PyTorch and the max abs difference of the hidden states.

Compare ratios from one run, never absolute times from different runs (the machine is
noisy, about +-10%). Each run appends its table to BENCHMARKS.md unless --no-append.

When the environment forces an OpenBLAS kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE), the
script runs twice, as forced and without those variables, each run appending its own
section (_common.each_kernel).

    python bench/bench_forward.py                      # minicompacter only if no torch
    ref-env/bin/python bench/bench_forward.py --repeats 5  # ref-env: torch + transformers
    python bench/bench_forward.py --shapes 8x32 --no-append
"""

import argparse
import os
import statistics
import sys

import numpy as np

from _common import (BENCHMARKS, append_section, each_kernel, machine, make_batch, parse_shapes, start,
                     time_interleaved)
import minicompacter                             # noqa: E402  (_common puts the checkout first)
from minicompacter.harness.pretrained import minilm_dir  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="32x128,16x64", help="comma-separated BxT (default %(default)s)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per shape (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the token ids (default %(default)s)")
    p.add_argument("--append", action=argparse.BooleanOptionalAction, default=True,
                   help=f"append the results to {BENCHMARKS.name} (default on)")
    args = p.parse_args(argv)
    args.shapes = parse_shapes(args.shapes)
    return args


def load_torch_model(directory, cores):
    """(torch, BertModel) in eval mode with `cores` threads, or (None, None) without torch."""
    try:
        import torch
        import transformers
    except ImportError:
        return None, None
    torch.set_num_threads(cores)
    transformers.logging.set_verbosity_error()   # no load report for the skipped pooler
    transformers.logging.disable_progress_bar()
    model = transformers.BertModel.from_pretrained(
        str(directory), add_pooling_layer=False, attn_implementation="eager")
    return torch, model.float().eval()


def forward_fns(mc, torch, model, batch):
    """Zero-argument functions running each forward on `batch`, returning (B, T, d) arrays."""
    def mc_forward():
        return minicompacter.core.encoder(mc.params, batch, mc.config)

    if torch is None:
        return mc_forward, None
    inputs = {k: torch.from_numpy(v) for k, v in batch.items()}

    def pt_forward():
        with torch.inference_mode():
            return model(**inputs).last_hidden_state.numpy()
    return mc_forward, pt_forward






def table(rows):
    fmt = lambda x, spec: "n/a" if x is None else format(x, spec)
    lines = ["| shape | minicompacter median (min) s | PyTorch median (min) s | ratio mc/PyTorch "
             "| max abs diff |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| B{r['B']} x T{r['T']} | {r['mc'][0]:.3f} ({r['mc'][1]:.3f}) | "
                     + ("n/a" if r["pt"] is None else f"{r['pt'][0]:.3f} ({r['pt'][1]:.3f})")
                     + f" | {fmt(r['ratio'], '.2f')} | {fmt(r['diff'], '.1e')} |")
    return "\n".join(lines)



def main(argv=None):
    args = parse_args(argv)
    if each_kernel():               # OpenBLAS's kernel forced: one run per kernel
        return
    start()
    cores = os.cpu_count()
    mc = minicompacter.load_pretrained("minilm")
    torch, model = load_torch_model(minilm_dir(), cores)
    machine_lines = machine([f"torch {torch.__version__}, {torch.get_num_threads()} threads "
                             f"(interop {torch.get_num_interop_threads()})" if torch else
                             "torch not installed"], peer_python=sys.executable if torch else None)
    print("\n".join(machine_lines), flush=True)
    rng = np.random.default_rng(args.seed)
    rows = []
    for B, T in args.shapes:
        batch = make_batch(rng, B, T)
        fns = [f for f in forward_fns(mc, torch, model, batch) if f is not None]
        times = time_interleaved(fns, args.warmup, args.repeats)
        stats = [(statistics.median(t), min(t)) for t in times]
        row = {"B": B, "T": T, "mc": stats[0], "pt": None, "ratio": None, "diff": None}
        if torch is not None:
            diff = float(np.max(np.abs(fns[0]() - fns[1]())))
            row.update(pt=stats[1], ratio=stats[0][0] / stats[1][0], diff=diff)
            if diff > 1e-4:
                print(f"WARNING: outputs differ by {diff:.1e}; the forwards do not match.")
        rows.append(row)
        print(f"B{B} x T{T}: medians " + ", ".join(f"{s[0]:.3f} s" for s in stats), flush=True)
    table_text = table(rows)
    print("\n" + table_text)
    if args.append:
        append_section("Forward pass, all-MiniLM-L6-v2, float32", machine_lines + [
            f"{args.warmup} warm-up runs, then {args.repeats} timed runs per shape, interleaved "
            "minicompacter / PyTorch; ratio of medians"], table_text)


if __name__ == "__main__":
    main()
