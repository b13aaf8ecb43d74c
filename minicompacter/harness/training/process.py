"""The process a run lives in: its peak memory, its allocator, its progress bars, its printed
lines.

None of this is the training loop's business; train.py calls it.

  - peak memory: Linux's high-water mark (VmHWM in /proc/self/status), which
    `reset_peak_memory` sets back to the current size so that a run measures its own peak;
  - the allocator: `tune_malloc`, glibc's mallopt, which only the command line and the
    benchmark scripts call (its settings cannot be undone);
  - progress bars: tqdm bars without tqdm's monitor thread, drawn on a terminal or in a
    notebook only; elsewhere (output to a file or a pipe) a `NoBar` that draws nothing, so a
    log holds lines, not carriage returns;
  - `say(line)`: a line printed (and flushed) above any progress bar.
"""

import ctypes
import os
import resource
import sys
from pathlib import Path


_STATUS = Path("/proc/self/status")


def reset_peak_memory():
    """Count peak memory from now on: on Linux, writing 5 to /proc/self/clear_refs sets the
    process's high-water mark (VmHWM) back to its current resident size. Elsewhere the peak
    cannot be reset and counts from the process's start. Returns whether it was reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb():
    """This process's peak resident memory in MB: since the last `reset_peak_memory` where
    Linux can reset it (VmHWM), else since the process started (ru_maxrss)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0              # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def tune_malloc():
    """glibc's allocator, set as measured to pay (10-15% of a training step,
    docs/performance.md): blocks up to 32 MiB come from the heap instead of fresh mmaps,
    which the kernel zeroes and page-faults on every use, and freed memory is kept for the
    next step rather than returned to the system at once (M_TRIM_THRESHOLD 2 GiB, M_TOP_PAD
    256 MiB). These settings cannot be read back or undone, so the library never applies
    them: the command line (`python -m minicompacter`) and the benchmark scripts call this
    at their start, unless MINICOMPACTER_MALLOPT=0. A no-op without glibc. Returns whether
    it applied."""
    if os.environ.get("MINICOMPACTER_MALLOPT", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    return all(mallopt(option, value) == 1 for option, value in (
        (M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, (2 << 30) - 1), (M_TOP_PAD, 256 << 20)))


class NoBar:
    """What a progress bar is asked to do, doing nothing. (A disabled tqdm would still start
    tqdm's monitor thread, which outlives the run.)"""
    def update(self, n=1):
        pass

    def set_postfix(self, **values):
        pass

    def close(self):
        pass


def interactive():
    """Whether someone watches the output as it comes: stderr is a terminal, or the code runs
    in a Jupyter kernel (whose streams are not terminals but show bars as widgets)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress_bar(show, **kwargs):
    """A tqdm bar (a widget in notebooks, text in a terminal), or a NoBar when `show` is false
    or the output goes to a file or a pipe (interactive). The bar's class sets
    monitor_interval to 0, so that tqdm starts no monitor thread, which would outlive the run
    (tqdm's own default stays as it is)."""
    if not (show and interactive()):
        return NoBar()
    from tqdm.auto import tqdm          # (here: it picks a notebook widget or a terminal bar)
    return type("Bar", (tqdm,), {"monitor_interval": 0})(leave=False, **kwargs)


def say(line):
    """Print a line to stdout at once, above any progress bar drawn on the terminal."""
    if "tqdm" in sys.modules:
        from tqdm.auto import tqdm      # (imported already: a bar may be on the screen)
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
    else:
        print(line, flush=True)
