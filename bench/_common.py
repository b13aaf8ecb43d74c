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
# Environment variables that change the timings: these names, and every name that starts
# with one of the prefixes (OpenMP, Intel's OpenMP, MKL, OpenBLAS, GotoBLAS, BLIS, NVPL,
# glibc's allocator, minicompacter's own, NumPy's CPU dispatch). Shown in the recorded
# command when set, and in every machine record.
PERF_ENV = ("PYTHONPATH", "ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA",
            "VECLIB_MAXIMUM_THREADS", "LD_PRELOAD", "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MKL_NUM_THREADS",
            "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
            "MINICOMPACTER_MALLOPT", "MINICOMPACTER_THREADS")
PERF_ENV_PREFIXES = ("OMP_", "KMP_", "MKL_", "OPENBLAS_", "GOTO", "BLIS_", "NVPL_", "MALLOC_",
                     "MINICOMPACTER_", "NPY_")
# The variables that make OpenBLAS run another kernel than the one it picks for the CPU
# (OPENBLAS_CORETYPE names one; OPENBLAS_L2_SIZE changes its blocking).
FORCING_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# Set by each_kernel() in the child runs it starts: which kernel that run measures.
KERNEL_RUN = "MINICOMPACTER_BENCH_KERNEL"


def perf_env(environ=None):
    """{name: value} of the performance-relevant variables set in `environ` (default
    os.environ), sorted by name."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in sorted(environ)
            if (k in PERF_ENV or k.startswith(PERF_ENV_PREFIXES)) and k != KERNEL_RUN}


def forced_kernel(environ=None):
    """{name: value} of FORCING_ENV set in `environ` (default os.environ); empty if none."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in FORCING_ENV if k in environ}


def unforced_env(environ=None):
    """A copy of `environ` (default os.environ) without FORCING_ENV: the environment of a
    child process that runs the kernel OpenBLAS picks. `environ` itself is left as it is."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k not in FORCING_ENV}


def blas_architecture(env=None, python=None):
    """The kernel NumPy's OpenBLAS runs in a fresh process with environment `env` (threadpoolctl's
    `architecture` of each BLAS pool, joined by '/'), or '?' if it cannot tell."""
    import subprocess
    code = ("import numpy, threadpoolctl; print('/'.join(sorted({p.get('architecture') or '?' "
            "for p in threadpoolctl.threadpool_info() if p.get('user_api') == 'blas'})) or '?')")
    try:
        done = subprocess.run([python or sys.executable, "-c", code], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return "?"
    return (done.stdout.strip() or "?") if done.returncode == 0 else "?"


def kernel_variants(environ=None):
    """[(label, env)] for the processes that time NumPy. Without FORCING_ENV in `environ`
    (default os.environ): one, [("", None)] (the environment as it is). With it: the kernel
    as forced (env None) and the kernel OpenBLAS picks (env = unforced_env()), each label
    naming the variables and the kernel threadpoolctl reports in such a process."""
    forced = forced_kernel(environ)
    if not forced:
        return [("", None)]
    env = dict(os.environ if environ is None else environ)
    picks = unforced_env(env)
    how = ", ".join(f"{k}={v}" for k, v in forced.items())
    return [(f"OpenBLAS kernel as forced by {how}: {blas_architecture(env)}", None),
            (f"the kernel OpenBLAS picks: {blas_architecture(picks)}", picks)]


def ratio_names(variants):
    """The names of the "mc / this" ratio columns: one per kernel variant."""
    return ["mc"] if len(variants) == 1 else ["mc, forced kernel", "mc, picked kernel"]


def ratio_cells(values, mcs, label):
    """Table cells values[m] / values[label] for each minicompacter row m in `mcs` (blank
    where m is the row itself)."""
    return " | ".join("" if m == label else f"{values[m] / values[label]:.2f}" for m in mcs)


def kernel_runs(environ=None):
    """[(label, full environment)] of the runs each_kernel() starts: kernel_variants(environ)
    with KERNEL_RUN set to the label in each; [] when `environ` (default os.environ) forces
    no kernel or is already such a run."""
    environ = dict(os.environ if environ is None else environ)
    if KERNEL_RUN in environ or not forced_kernel(environ):
        return []
    return [(label, dict(environ if env is None else env, **{KERNEL_RUN: label}))
            for label, env in kernel_variants(environ)]


def each_kernel():
    """For the scripts that time NumPy in their own process: when FORCING_ENV is set, run this
    script again (same arguments) once per kernel_runs() entry, each its own process
    appending its own section, and return True (the caller returns); else return False and
    the caller measures here. In such a run, KERNEL_RUN holds its label."""
    import subprocess
    runs = kernel_runs()
    for label, env in runs:
        print(f"\n--- {label} ---", flush=True)
        if subprocess.run([sys.executable, *sys.argv], env=env).returncode != 0:
            raise SystemExit(f"the run with {label} failed")
    return bool(runs)


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
    """NumPy's BLAS pools: library, version, the kernel it runs (threadpoolctl's
    `architecture`), threads and file; from threadpoolctl when it is installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:                          # the build-time name only, no thread count
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        return (f"{blas.get('name', '?')} {blas.get('version', '')} (from numpy's build "
                f"config; threadpoolctl not installed, kernel and thread count not checked)")
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return "; ".join(f"{p['internal_api']} {p.get('version')}, kernel {p.get('architecture') or '?'}, "
                     f"{p['num_threads']} threads ({Path(p['filepath']).name})" for p in pools)


# The flags of /proc/cpuinfo that name vector extensions a BLAS dispatches on.
VECTOR_FLAGS = ("sse4_2", "avx", "fma", "f16c", "amx")


def cpu_info(lscpu_text=None, cpuinfo_text=None):
    """(model name, [vector extensions]) from lscpu's output (its "Model name", "CPU family"
    and "Model") and /proc/cpuinfo's flags; either text is read when not given."""
    import subprocess
    if lscpu_text is None:
        try:
            lscpu_text = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True).stdout
        except OSError:
            lscpu_text = ""
    if cpuinfo_text is None:
        cpuinfo_text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in lscpu_text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    cpuinfo = dict(line.split(":", 1) for line in cpuinfo_text.splitlines() if ":" in line)
    cpuinfo = {k.strip(): v.strip() for k, v in cpuinfo.items()}
    model = fields.get("Model name") or cpuinfo.get("model name") or platform.processor() or "unknown"
    if "CPU family" in fields:
        model += f" (family {fields['CPU family']}, model {fields.get('Model', '?')})"
    flags = (fields.get("Flags") or cpuinfo.get("flags", "")).split()
    return model, [f for f in flags if f.startswith(VECTOR_FLAGS)]


def describe_cpu(model, extensions):
    """One line: the model, its cores and vector extensions, and whether AVX-512 is there."""
    avx512 = any(f.startswith("avx512") for f in extensions)
    return (f"CPU: {model}, {os.cpu_count()} cores; vector extensions: "
            f"{' '.join(extensions) or 'none found'}" + ("" if avx512 else " (no AVX-512)"))


# Run by the peer's interpreter: torch's version, threads (as the peer scripts set them),
# CPU capability and the BLAS of its build, one JSON line.
TORCH_PROBE = """
import json, os, re, torch
torch.set_num_threads(os.cpu_count())
show = torch.__config__.show()
blas = re.search(r"BLAS_INFO=([^,\\s]+)", show)
lib = [l.strip(" -") for l in show.splitlines() if "Math Kernel Library" in l or "OpenBLAS" in l]
dnn = [l.strip(" -") for l in show.splitlines() if "MKL-DNN" in l or "oneDNN" in l]
print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads(),
                  "interop": torch.get_num_interop_threads(),
                  "capability": torch.backends.cpu.get_cpu_capability(),
                  "blas": blas.group(1) if blas else "?", "blas_lib": lib[:1], "dnn": dnn[:1]}))
"""


def torch_info(python):
    """One line on PyTorch as `python` runs it: version, threads, CPU capability, BLAS."""
    import json
    import subprocess
    done = subprocess.run([python, "-c", TORCH_PROBE], stdout=subprocess.PIPE, text=True,
                          stderr=subprocess.PIPE)
    if done.returncode != 0:
        return f"PyTorch ({python}): could not be described ({done.stderr.strip().splitlines()[-1:]})"
    t = json.loads(done.stdout.strip().splitlines()[-1])
    return (f"PyTorch {t['version']}: {t['threads']} threads (interop {t['interop']}), CPU "
            f"capability {t['capability']}, BLAS {t['blas']}"
            + "".join(f" ({x})" for x in t["blas_lib"]) + "".join(f", {x}" for x in t["dnn"]))


def machine(extra=(), peer_python=None):
    """The machine record every table carries, one line each: the CPU and its vector
    extensions; the libraries; NumPy's BLAS and its kernel; minicompacter's threads; the
    PyTorch peer (`peer_python`: its CPU capability, BLAS and threads), if any; the
    performance-relevant environment; then any `extra` lines."""
    env = perf_env()
    return [describe_cpu(*cpu_info()),
            f"Python {platform.python_version()}, numpy {np.__version__}, "
            f"minicompacter {minicompacter.__version__}",
            f"NumPy BLAS: {blas_info()}",
            f"minicompacter's processes: a pool of {threads.pool_size()} threads for the kernels, "
            f"NumPy's BLAS on 1 thread while it runs (threads.parallel()); glibc allocator "
            f"settings {'applied' if MALLOC_TUNED else 'not applied'}",
            *([torch_info(peer_python)] if peer_python else []),
            "environment: " + (" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                               or "none of the performance variables set"),
            *([f"this run: {os.environ[KERNEL_RUN]}"] if KERNEL_RUN in os.environ else []),
            *extra]


def peer_versions(peer_python):
    """The PyTorch peer's library versions, one line (bench/peer_adapterhub.py --versions)."""
    import subprocess
    return subprocess.run([peer_python, str(ROOT / "bench" / "peer_adapterhub.py"), "--versions"],
                          stdout=subprocess.PIPE, text=True, check=True).stdout.strip()


def command():
    """The command line as run, with the performance-relevant environment variables."""
    env = [f"{k}={shlex.quote(v)}" for k, v in perf_env().items()]
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
