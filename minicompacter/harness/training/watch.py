"""Training you can watch: after each validation one line (epoch, step, training loss, the
validation metrics, the best so far, seconds), printed and appended to DIR/train.log, and
DIR/curves.png (the training loss and the validation score, study/plots.py's
`loss_and_validation`) drawn again.

    watch = Watch(out, log=print)         # log: where lines are printed (None: nowhere)
    watch.line("...")                     # printed and appended to DIR/train.log
    watch.validated(run, state, scores)   # the validation's line, and DIR/curves.png

train.log is appended to line by line, so it holds everything a run (and each --resume of
it) printed; curves.png is written whole (atomically) each time. Drawing it takes about half
a second, so after a validation it is drawn only if ten times (1 / DRAW_SHARE) as long as
the last drawing took has passed since: the figure never takes more than a tenth of a run's
time. A real run, whose validations are minutes apart, has it drawn after each; the tiny
model's runs in the tests, which validate every second, every few validations. It is
always drawn at the end.
"""

import io
import time
from pathlib import Path

from ..formats.files import atomic_write
from ..study.plots import loss_and_validation

LOG, CURVES = "train.log", "curves.png"
DRAW_SHARE = 0.1          # the largest share of a run's time spent drawing curves.png


def metrics_text(scores):
    """ "accuracy 0.8500, macro_f1 0.8496, score 0.8498" (non-finite outputs said so; counts,
    such as T5's invalid_answers, as whole numbers)."""
    if scores.get("non_finite_outputs"):
        return "non-finite outputs, score nan"
    return ", ".join(f"{name} {value}" if isinstance(value, int) else f"{name} {value:.4f}"
                     for name, value in scores.items())


def loss_since_validation(history):
    """The mean training loss of the steps since the previous validation (None: no step)."""
    losses = []
    for record in reversed(history[:-1] if history and "validation" in history[-1] else history):
        if "validation" in record:
            break
        losses.append(record["loss"])
    return sum(losses) / len(losses) if losses else None


def validation_line(run, state, scores, seconds):
    """One validation as a line (state.history ends with it, state.best includes it)."""
    loss = loss_since_validation(state.history)
    best = state.best
    new = best is not None and best["step"] == state.step
    best_text = ("no finite score yet" if best is None else
                 "new best" if new else f"best {best['score']:.4f} at epoch {best['epoch']}")
    return (f"epoch {state.epoch + 1}/{run.cfg.epochs} step {state.step}: training loss "
            + (f"{loss:.4f}" if loss is not None else "-") + f"; validation {metrics_text(scores)}"
            f" ({best_text}); {seconds:.0f} s")


def curves_window(run):
    """The moving mean's window: a quarter of an epoch's steps, 1 to 50."""
    steps_per_epoch = max(1, run.total_steps // run.cfg.epochs)
    return max(1, min(50, steps_per_epoch // 4))


def curves_png(run, history):
    """The PNG bytes of the run's loss and validation curves."""
    buffer = io.BytesIO()
    method = run.model.method.config.method
    loss_and_validation({method: history}, buffer, window=curves_window(run),
                        title=f"{run.task_name}, {method}")
    return buffer.getvalue()


class Watch:
    """Where a run's lines go (log, DIR/train.log) and its curves (DIR/curves.png)."""

    def __init__(self, out, log=None, train_seconds=0.0):
        self.out = Path(out) if out is not None else None
        self.log = log
        self.clock = time.perf_counter() - train_seconds     # seconds of training, resumes too
        self.drawn = None                                     # len(history) when last drawn
        self.drawn_at, self.draw_seconds = -float("inf"), 0.0  # when, and how long it took

    def line(self, text):
        """Print `text` (through log) and append it to DIR/train.log."""
        if self.log is not None:
            self.log(text)
        if self.out is not None:
            with open(self.out / LOG, "a", encoding="utf-8") as f:
                f.write(text + "\n")

    def validated(self, run, state, scores):
        """After a validation: its line, and the curves drawn again."""
        self.line(validation_line(run, state, scores, time.perf_counter() - self.clock))
        self.curves(run, state)

    def curves(self, run, state, *, final=False):
        """DIR/curves.png from the history, unless drawn already from this history or (but
        at the end) too recently for DRAW_SHARE."""
        start = time.perf_counter()
        if self.out is None or self.drawn == len(state.history) or (
                not final and start - self.drawn_at < self.draw_seconds / DRAW_SHARE):
            return
        atomic_write(self.out / CURVES, curves_png(run, state.history))
        self.drawn, self.drawn_at = len(state.history), time.perf_counter()
        self.draw_seconds = self.drawn_at - start
