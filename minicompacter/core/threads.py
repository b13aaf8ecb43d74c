"""The work split over the cores: a pool of threads that the fast kernels (kernels.py) hand
their large products and elementwise loops to, while a `parallel()` block runs.

Inside a `parallel()` block, minicompacter runs NumPy's BLAS on one thread and splits its
own work over one thread per core, the calling thread and a pool of the others (the caller
runs one part itself rather than wait): large matrix products by rows, elementwise
loops by blocks, attention by batch. NumPy and SciPy release the GIL inside their loops, so
the threads run truly in parallel. Why not OpenBLAS's own threads: after each product its
idle workers spin for a while (about 2^28 cycles) before sleeping, which takes a core away
from the elementwise work between products; on a 2-core machine a training step took about
1.4 times longer so (docs/performance.md).

Outside a `parallel()` block the kernels run on the calling thread and BLAS keeps whatever
threads it has: importing this module changes nothing in the process. `finetune`,
`evaluate_checkpoint`, `encode_texts` and the benchmarks enter the block;
MINICOMPACTER_THREADS=N sets the number of threads, and 1 keeps the pool off and BLAS
untouched.

This is process plumbing, not math: the pool lives in this module's globals while a block
runs, and it reads one environment variable. It sits in the core because the kernels use it.
"""

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import threadpool_limits

def pool_size():
    """Threads for `parallel()`: MINICOMPACTER_THREADS if set, else one per core."""
    value = os.environ.get("MINICOMPACTER_THREADS", "")
    try:
        n = int(value) if value else (os.cpu_count() or 1)
    except ValueError:
        raise ValueError(f"MINICOMPACTER_THREADS must be a whole number of threads, got "
                         f"{value!r}; unset it to use every core.") from None
    if n < 1:
        raise ValueError(f"MINICOMPACTER_THREADS must be at least 1, got {n}; unset it to use "
                         f"every core.")
    return n


_pool = None                     # the ThreadPoolExecutor while a parallel() block runs
_pool_threads = 1                # its number of threads
_pool_pid = None                 # the process that started it (a forked child has no threads)
_depth = 0                       # parallel() blocks open (they nest)
_blas_limit = None               # threadpoolctl's limiter, to restore BLAS's threads
_lock = threading.Lock()


@contextlib.contextmanager
def parallel(threads=None):
    """Run the kernels on `threads` cores (default `pool_size()`) while the block runs: a pool
    of worker threads, and NumPy's BLAS on one thread (threadpoolctl). On exit the pool's
    threads end and BLAS gets its threads back. Blocks nest: the outermost one decides."""
    global _pool, _pool_threads, _pool_pid, _depth, _blas_limit
    with _lock:
        if _depth == 0:
            n = pool_size() if threads is None else threads
            if n > 1:
                _blas_limit = threadpool_limits(limits=1, user_api="blas")
                # n - 1 workers: in_parts runs one part on the calling thread
                _pool = ThreadPoolExecutor(n - 1, thread_name_prefix="minicompacter")
                _pool_threads, _pool_pid = n, os.getpid()
        _depth += 1
    try:
        yield active_threads()
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                if _pool is not None:
                    _pool.shutdown(wait=True)
                if _blas_limit is not None:
                    _blas_limit.restore_original_limits()
                _pool, _pool_threads, _pool_pid, _blas_limit = None, 1, None, None


def active_threads():
    """The threads the kernels split their work over now: the caller and the pool's, or 1."""
    return _pool_threads if _pool is not None and _pool_pid == os.getpid() else 1


_PARALLEL_MIN = 1 << 18          # elements (or multiply-adds / 16) below which one thread is faster


def in_parts(fn, n, size, chunk=None):
    """Call fn(rows) for contiguous slices covering range(n): one part per pool thread when
    the work (`size` elements) is large enough to pay for the threads, else one part; each
    part is handed to fn `chunk` rows at a time (all at once if None), so that a chain of
    elementwise passes works on a block that stays in the core's cache instead of
    streaming the whole array through memory once per pass. fn writes its results into
    preallocated arrays."""
    threads = active_threads()
    parts = min(threads, n) if threads > 1 and size >= _PARALLEL_MIN else 1
    bounds = [n * i // parts for i in range(parts + 1)]

    def run(lo, hi):
        step = hi - lo if chunk is None else max(1, chunk)
        for start in range(lo, hi, step):
            fn(slice(start, min(start + step, hi)))
    if parts <= 1:
        run(0, n)
        return
    # The last part runs on the calling thread, which would otherwise only wait: one
    # hand-over to a pool thread fewer per call, and that part's data stay in its cache.
    futures = [_pool.submit(run, lo, hi) for lo, hi in zip(bounds[:-2], bounds[1:-1])]
    try:
        run(bounds[-2], bounds[-1])
    finally:
        for future in futures:
            future.result()
