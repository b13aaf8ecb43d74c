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

    python bench/bench_forward.py                      # minicompacter only if no torch
    /work/refvenv/bin/python bench/bench_forward.py --repeats 5
    python bench/bench_forward.py --shapes 8x32 --no-append
"""

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))                    # benchmark this checkout, installed or not
import minicompacter                             # noqa: E402
from minicompacter.pretrained import minilm_dir  # noqa: E402

BENCHMARKS = ROOT / "BENCHMARKS.md"
HEADER = """# Benchmarks

This file collects benchmark tables appended by the scripts under `bench/`, one section
per run, with the date, the exact command and the machine. The machine is noisy (about
+-10% between runs, occasional larger outliers), so compare the ratios measured within
one run (minicompacter against PyTorch on the same inputs, interleaved), never absolute
times from different runs.
"""
# Environment variables that change the timings; shown in the recorded command when set.
PERF_ENV = ("PYTHONPATH", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE", "MKL_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="32x128,16x64", help="comma-separated BxT (default %(default)s)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per shape (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the token ids (default %(default)s)")
    p.add_argument("--append", action=argparse.BooleanOptionalAction, default=True,
                   help=f"append the results to {BENCHMARKS.name} (default on)")
    args = p.parse_args(argv)
    args.shapes = [tuple(int(n) for n in s.lower().split("x")) for s in args.shapes.split(",")]
    return args


def make_batch(rng, B, T):
    """Random ids in [1000, 30000), [CLS] first and [SEP] last, mask all ones."""
    ids = rng.integers(1000, 30000, size=(B, T), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
            "attention_mask": np.ones_like(ids)}


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
        return minicompacter.encoder(mc.params, batch, mc.config)

    if torch is None:
        return mc_forward, None
    inputs = {k: torch.from_numpy(v) for k, v in batch.items()}

    def pt_forward():
        with torch.inference_mode():
            return model(**inputs).last_hidden_state.numpy()
    return mc_forward, pt_forward


def time_interleaved(fns, warmup, repeats):
    """Warm each function up, then time them in turn `repeats` times; seconds per function."""
    for _ in range(warmup):
        for f in fns:
            f()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for f, t in zip(fns, times):
            start = time.perf_counter()
            f()
            t.append(time.perf_counter() - start)
    return times


def blas_info():
    """NumPy's BLAS library and thread count, from threadpoolctl when it is installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:                          # the build-time name only, no thread count
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        return (f"{blas.get('name', '?')} {blas.get('version', '')} (from numpy's build "
                f"config; threadpoolctl not installed, thread count not checked)")
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return "; ".join(f"{p['internal_api']} {p.get('version')} {p.get('architecture', '')}, "
                     f"{p['num_threads']} threads ({Path(p['filepath']).name})" for p in pools)


def machine(torch):
    """One-line descriptions of the CPU, the libraries and their threads."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or "unknown")
    torch_line = (f"torch {torch.__version__}, {torch.get_num_threads()} threads "
                  f"(interop {torch.get_num_interop_threads()})" if torch else "torch not installed")
    return [f"CPU: {cpu}, {os.cpu_count()} cores", f"Python {platform.python_version()}, "
            f"numpy {np.__version__}, minicompacter {minicompacter.__version__}",
            f"NumPy BLAS: {blas_info()}", torch_line]


def command():
    """The command line as run, with the performance-relevant environment variables."""
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in PERF_ENV if k in os.environ]
    return shlex.join([sys.executable, *sys.argv]) if not env else \
        " ".join(env) + " " + shlex.join([sys.executable, *sys.argv])


def table(rows):
    fmt = lambda x, spec: "n/a" if x is None else format(x, spec)
    lines = ["| shape | minicompacter median (min) s | PyTorch median (min) s | ratio mc/PyTorch "
             "| max abs diff |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| B{r['B']} x T{r['T']} | {r['mc'][0]:.3f} ({r['mc'][1]:.3f}) | "
                     + ("n/a" if r["pt"] is None else f"{r['pt'][0]:.3f} ({r['pt'][1]:.3f})")
                     + f" | {fmt(r['ratio'], '.2f')} | {fmt(r['diff'], '.1e')} |")
    return "\n".join(lines)


def append_section(path, cmd, machine_lines, table_text, repeats, warmup):
    if not path.exists():
        path.write_text(HEADER)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    section = (f"\n## Forward pass, all-MiniLM-L6-v2, float32 ({stamp})\n\n"
               f"```\n{cmd}\n```\n\n" + "".join(f"- {m}\n" for m in machine_lines)
               + f"- {warmup} warm-up runs, then {repeats} timed runs per shape, "
               f"interleaved minicompacter / PyTorch; ratio of medians\n\n{table_text}\n")
    with open(path, "a") as f:
        f.write(section)


def main(argv=None):
    args = parse_args(argv)
    cores = os.cpu_count()
    mc = minicompacter.load_pretrained("minilm")
    torch, model = load_torch_model(minilm_dir(), cores)
    machine_lines = machine(torch)
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
        append_section(BENCHMARKS, command(), machine_lines, table_text, args.repeats, args.warmup)
        print(f"\nappended to {BENCHMARKS}")


if __name__ == "__main__":
    main()
