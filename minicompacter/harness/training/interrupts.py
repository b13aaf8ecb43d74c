"""Ctrl-C and SIGTERM, handled alike, and never in the middle of a checkpoint's bookkeeping.

`handled()` makes SIGINT raise KeyboardInterrupt and SIGTERM (what `timeout`, `kill` and
job schedulers send) raise `Terminated`, a KeyboardInterrupt, for as long as the block
lasts; the handlers the process had are restored when it ends. The command line wraps
each command in it, and `finetune` wraps each run, so nothing is installed at import.

`deferred()` marks a short stretch (a step's results being recorded, a checkpoint being
written) that an interrupt must not cut in two: a signal that arrives inside it is held
and raised when the stretch ends, so the run's state on disk and in memory always
describes a whole step. Outside `handled()` (another thread, or a caller who installed
handlers of their own) `deferred()` changes nothing.

Once an interrupt has been raised, the process is on its way out (saving last/, printing
what is on disk): further signals are held, never raised inside that work (a burst of
Ctrl-C would otherwise raise KeyboardInterrupt inside an `except` or a `finally`, or while
the message is printed). The first signal decides the exit code.
"""

import signal
import threading
from contextlib import contextmanager

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}    # 128 + the signal's number


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: the run saves DIR/last/ and stops."""


_held = []            # signals that arrived inside deferred(), or after one was raised
_depth = [0]          # how many deferred() blocks are open
_raised = [False]     # an interrupt was raised in this handled() block: hold the rest


def _exception(signum):
    return Terminated("terminated (SIGTERM)") if signum == signal.SIGTERM else KeyboardInterrupt()


def _on_signal(signum, frame):
    if _depth[0] or _raised[0]:
        _held.append(signum)
        return
    _raised[0] = True
    raise _exception(signum)


@contextmanager
def handled():
    """SIGINT -> KeyboardInterrupt, SIGTERM -> Terminated while the block lasts (main thread
    only; elsewhere signals cannot be handled and the block changes nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in EXIT_CODES}
    outermost = before[signal.SIGINT] is not _on_signal
    if outermost:
        _raised[0] = False
        _held.clear()
    for s in EXIT_CODES:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        if outermost:
            _raised[0] = False
            _held.clear()


@contextmanager
def deferred():
    """Hold SIGINT and SIGTERM until the block ends, then raise the first that came."""
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        if not _depth[0] and _held and not _raised[0]:
            signum = _held[0]
            _held.clear()
            _raised[0] = True
            raise _exception(signum)


def pending():
    """Whether a signal is being held by deferred()."""
    return bool(_held)


def exit_code(interrupt):
    """130 for Ctrl-C, 143 for SIGTERM: what a shell reports for a process they stopped."""
    return EXIT_CODES[signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT]
