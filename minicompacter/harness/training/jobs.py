"""Running a job in a process of its own.

`compare` and `demo` fine-tune each method in a process of its own, and so do the study's
efficiency runs: each run's peak memory is then its own, and what one run leaves in memory
cannot slow the next. `run_in_process(fn, **kwargs)` calls `fn(**kwargs)` in a fresh Python
interpreter (`python -m minicompacter.harness.training.jobs`): the function travels as its
module and name, the arguments and the result as JSON, and the child writes to this
process's terminal.

    rows = [run_in_process(finetune_job, task="sst2", method=m, ...) for m in methods]
"""

import importlib
import json
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from .interrupts import Terminated, exit_code, handled


class JobError(RuntimeError):
    """A job failed in its process; the message is the child's error."""


def run_in_process(fn, /, **kwargs):
    """fn(**kwargs), computed in a new Python process; its JSON result. A ValueError in the
    child (bad input) comes back as a ValueError with the child's message, anything else as
    a JobError. On Ctrl-C (which a terminal sends to the child too) this process waits for
    the child to stop, passing the interrupt on if it has not stopped within 2 s, so that a
    fine-tuning run saves DIR/last/ first; then raises KeyboardInterrupt. SIGTERM (raised
    here as interrupts.Terminated, where interrupts.handled() is in force) is passed on to
    the child at once, and raised again once the child has stopped."""
    spec = json.dumps({"function": f"{fn.__module__}:{fn.__qualname__}", "kwargs": kwargs})
    with tempfile.TemporaryDirectory(prefix="minicompacter-job-") as tmp:
        result_file = Path(tmp) / "result.json"
        child = subprocess.Popen([sys.executable, "-m", "minicompacter.harness.training.jobs", spec,
                                  str(result_file)])
        try:
            code = child.wait()
        except KeyboardInterrupt as interrupt:
            stop(child, interrupt)
            raise
        if code in (exit_code(Terminated()), -signal.SIGTERM):
            raise Terminated("terminated (SIGTERM)")
        if code in (exit_code(KeyboardInterrupt()), -signal.SIGINT):
            raise KeyboardInterrupt
        if not result_file.exists():
            raise JobError(f"{fn.__name__} stopped in its process with exit code {code} and no "
                           f"result; its error is printed above.")
        result = json.loads(result_file.read_text())
    if "value" in result:
        return result["value"]
    error = ValueError if result["kind"] == "ValueError" else JobError
    raise error(result["error"])


def stop(child, interrupt):
    """Pass an interrupt of this process on to the child and wait for the child to end."""
    if isinstance(interrupt, Terminated):
        child.send_signal(signal.SIGTERM)
    else:
        try:
            child.wait(timeout=2)             # a terminal's Ctrl-C reaches the child itself
            return
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGINT)
    child.wait()


def _child(spec, result_file):
    """The child's side: call the function, write {"value": ...} or {"error", "kind"}."""
    spec = json.loads(spec)
    module, name = spec["function"].split(":")
    fn = getattr(importlib.import_module(module), name)
    try:
        with handled():
            result = {"value": fn(**spec["kwargs"])}
    except KeyboardInterrupt as interrupt:
        return exit_code(interrupt)
    except ValueError as e:                                  # bad input: the message says it all
        result = {"error": str(e), "kind": "ValueError"}
    except Exception as e:                                   # a bug: keep the traceback
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}", "kind": type(e).__name__}
    Path(result_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:3]))
