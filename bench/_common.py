"""What the benchmark scripts share: the machine description, the command as run, random
realistic batches, interleaved timing, and appending a section to BENCHMARKS.md."""

import argparse
import atexit
import contextlib
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))                    # benchmark this checkout, installed or not
import minicompacter                             # noqa: E402
from minicompacter.core import threads           # noqa: E402
from minicompacter.harness.training.process import tune_malloc  # noqa: E402

# A benchmark's process is its own: the allocator settings the command line uses too
# (training/process.py tune_malloc), and, from `start()`, every core for the kernels until
# it exits.
MALLOC_TUNED = tune_malloc()


def start():
    """Enter threads.parallel() for the rest of this process (what finetune does for a run):
    the kernels' thread pool, BLAS on one thread. Each script's main() calls it first."""
    stack = contextlib.ExitStack()
    stack.enter_context(threads.parallel())
    atexit.register(stack.close)

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
            "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MINICOMPACTER_MALLOPT")


def make_batch(rng, B, T):
    """Random ids in [1000, 30000), [CLS]=101 first and [SEP]=102 last, mask all ones."""
    ids = rng.integers(1000, 30000, size=(B, T), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
            "attention_mask": np.ones_like(ids)}


def step_setup(method, B, T):
    """What a timed training step needs, for a method spec such as "compacter++" (the preset)
    or "compacter++:adapter-only" (layer norms frozen, as AdapterHub trains): MiniLM with the
    method and a 2-class head on [CLS], a random B x T batch with labels, and a zero-argument
    `step()` running train.train_step without dropout (clipping and AdamW included), its
    state kept across calls. Returns (step, trainable tree)."""
    from minicompacter.core.optim import init_adamw
    from minicompacter.harness.training.train import TrainConfig, train_step

    name, _, variant = method.partition(":")
    config = minicompacter.method_config(name, **({"train_layer_norms": False}
                                                  if variant == "adapter-only" else {}))
    pre = minicompacter.load_pretrained("minilm")
    model, trainable, frozen = minicompacter.init_model(np.random.default_rng(0), pre, config,
                                                        num_labels=2, pooling="cls")
    batch = make_batch(np.random.default_rng(1), B, T)
    batch["labels"] = np.arange(B) % 2
    cfg = TrainConfig()
    state = {"trainable": trainable, "opt": init_adamw(trainable)}

    def step():
        loss, _, (state["trainable"], state["opt"]) = train_step(
            state["trainable"], state["opt"], frozen, batch, model, 1e-4, cfg, None)
        return loss
    return step, trainable


def peer_arguments(parser, *, peer_required=True, repeats_help="timed steps per process"):
    """The options every script against a peer shares: --peer-python, --shapes, --rounds,
    --repeats and --append."""
    parser.add_argument("--peer-python", required=peer_required,
                        help="a Python with torch + adapters (see bench/peer_adapterhub.py)")
    parser.add_argument("--shapes", default="32x16,32x32,32x128",
                        help="comma-separated BxT (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help=f"{repeats_help} (default %(default)s)")
    parser.add_argument("--append", action=argparse.BooleanOptionalAction, default=True,
                        help="append the table to BENCHMARKS.md (default on)")


def parse_shapes(text):
    """"32x128,16x64" -> [(32, 128), (16, 64)]"""
    return [tuple(int(n) for n in s.lower().split("x")) for s in text.split(",")]


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


def machine(extra=()):
    """One-line descriptions of the CPU and the libraries, plus any `extra` lines."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor() or "unknown")
    threads_used = threads.active_threads()
    return [f"CPU: {cpu}, {os.cpu_count()} cores", f"Python {platform.python_version()}, "
            f"numpy {np.__version__}, minicompacter {minicompacter.__version__}",
            f"NumPy BLAS: {blas_info()}",
            f"minicompacter: a pool of {threads_used} threads"
            + (", NumPy's BLAS set to 1 thread" if threads_used > 1 else "")
            + f"; glibc allocator settings {'applied' if MALLOC_TUNED else 'not applied'}",
            *extra]


def peer_versions(peer_python):
    """The PyTorch peer's library versions, one line (bench/peer_adapterhub.py --versions)."""
    import subprocess
    return subprocess.run([peer_python, str(ROOT / "bench" / "peer_adapterhub.py"), "--versions"],
                          stdout=subprocess.PIPE, text=True, check=True).stdout.strip()


def command():
    """The command line as run, with the performance-relevant environment variables."""
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in PERF_ENV if k in os.environ]
    line = shlex.join(["python", *sys.argv])
    return line if not env else " ".join(env) + " " + line


def append_section(title, notes, body, path=BENCHMARKS):
    """Append '## title (date)', the command, the machine and note lines, then `body`."""
    if not path.exists():
        path.write_text(HEADER)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    section = (f"\n## {title} ({stamp})\n\n```\n{command()}\n```\n\n"
               + "".join(f"- {line}\n" for line in notes) + f"\n{body}\n")
    with open(path, "a") as f:
        f.write(section)
    print(f"\nappended to {path}")
