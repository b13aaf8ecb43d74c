"""The figures the command line and the notebooks draw (matplotlib, no display needed).

Each function returns its figure. Given a path (or a binary file object: the PNG goes
there), it draws without pyplot, on a figure no backend knows about, so that drawing a
file changes nothing in the process (a notebook's inline backend, a script's window);
without, it draws with pyplot, for a notebook to show."""

import math

from ..data.metrics import wilson_interval


def _subplots(path, *args, **kwargs):
    """(figure, axes) as pyplot's `subplots` makes them: a bare `Figure` when the figure
    goes to `path`, pyplot's when it is to be shown. (matplotlib is imported here, not at the
    top: it takes a third of a second.)"""
    if path is None:
        import matplotlib.pyplot as plt
        return plt.subplots(*args, **kwargs)
    from matplotlib.figure import Figure
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(*args, **kwargs)


def _finish(fig, path):
    """Lay the figure out; save it to path (a PNG, at 120 dpi) if given. Returns the figure."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120, format="png")
    return fig


# One look per method, the same in every figure; other names take the next free ones.
_METHODS = ("full", "adapter", "pfeiffer", "phm-adapter", "compacter", "compacter++", "bitfit",
            "lora")
_MARKERS = "osD^vP*Xh<>"


def _style(method, i):
    """(color, marker) of a method: fixed for the known ones, by position `i` otherwise."""
    k = _METHODS.index(method) if method in _METHODS else len(_METHODS) + i
    return f"C{k % 10}", _MARKERS[k % len(_MARKERS)]


def _label(ax, xlabel, ylabel, title=None, *, legend_loc="best", legend_size=8):
    """Axis labels, the legend, a light grid and the title, as every figure here has them."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=legend_size, loc=legend_loc)
    ax.grid(True, which="both", alpha=0.3)
    if title:
        ax.set_title(title)


def params_vs_score(rows, path=None, *, title=None):
    """The Compacter paper's Figure 1 in small: trainable parameters (% of the base model,
    log axis) against the task score, one point per method.
    rows: dicts with "method", "percent" and "score", and "n" where the score is a
    proportion of n scored examples (accuracy): that point then carries its 95% Wilson
    interval, and the score axis is never narrower than the intervals, so that points a
    few examples apart do not look ranked. Returns the figure; saved to path if given."""
    fig, ax = _subplots(path, figsize=(6, 4))
    spans = []
    for i, r in enumerate(rows):
        if r.get("score") is None or not math.isfinite(r["score"]):
            continue
        color, marker = _style(r["method"], i)
        ax.plot([r["percent"]], [r["score"]], marker, ms=7, color=color,
                label=f"{r['method']} ({r['percent']:.3g}%, {r['score']:.3f})")
        spans.append(r["score"])
        if r.get("n"):
            low, high = wilson_interval(r["score"], r["n"])
            spans += [low, high]
            ax.errorbar(r["percent"], r["score"], yerr=[[r["score"] - low], [high - r["score"]]],
                        fmt="none", color=color, capsize=3)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.12)
    if spans:
        pad = 0.1 * max(max(spans) - min(spans), 0.01)
        ax.set_ylim(min(spans) - pad, max(spans) + pad)
    ylabel = "score" + (" (bars: 95% Wilson interval)" if any(r.get("n") for r in rows) else "")
    _label(ax, "trainable parameters (% of the base model, log scale)", ylabel, title)
    return _finish(fig, path)


def low_resource(summary, path=None, *, title=None, records=None):
    """Test score against training-set size (log axis), one line per method: the mean over
    seeds, a band of +-1 standard deviation, and each seed's run as a faint point.
    summary: rows of study.summarize (method, train_size, mean, std, n); records: the runs
    (optional, for the points). Returns the figure; saved to path if given."""
    fig, ax = _subplots(path, figsize=(6.5, 4))
    methods = list(dict.fromkeys(r["method"] for r in summary))
    for i, method in enumerate(methods):
        rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r["train_size"])
        x = [r["train_size"] for r in rows]
        mean = [r["mean"] for r in rows]
        color, _ = _style(method, i)
        ax.plot(x, mean, marker="o", color=color,
                label=f"{method} (mean of {max(r['n'] for r in rows)} seeds, band: +-1 sd)")
        ax.fill_between(x, [m - r["std"] for m, r in zip(mean, rows)],
                        [m + r["std"] for m, r in zip(mean, rows)], color=color, alpha=0.15)
        if records:
            points = [(r["train_size"], r["test"]["score"]) for r in records if r["method"] == method]
            ax.scatter([p[0] for p in points], [p[1] for p in points], s=12, color=color, alpha=0.4)
    ax.set_xscale("log")
    sizes = sorted({r["train_size"] for r in summary})
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.minorticks_off()
    _label(ax, "training examples (log scale)", "test score", title, legend_loc="lower right")
    return _finish(fig, path)


def efficiency(rows, path=None, *, title=None, paper=None):
    """Each method's time per epoch against its peak memory, both relative to full
    fine-tuning's (1, 1): lower left is cheaper on both. rows: dicts with "method",
    "time" and "memory" (ratios); paper: optional {label: (time, memory)} drawn as hollow
    markers for comparison. Returns the figure; saved to path if given."""
    fig, ax = _subplots(path, figsize=(6, 4.2))
    for i, r in enumerate(rows):
        color, marker = _style(r["method"], i)
        ax.scatter(r["time"], r["memory"], s=50, color=color, marker=marker,
                   label=f"{r['method']} ({r['time']:.2f}, {r['memory']:.2f})")
    for label, (t, m) in (paper or {}).items():
        ax.scatter(t, m, s=80, facecolors="none", edgecolors="black",
                   label=f"{label} ({t:.2f}, {m:.2f})")
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1.1)
    ax.set_ylim(0, 1.1)
    _label(ax, "time per epoch, relative to full fine-tuning",
           "peak memory, relative to full fine-tuning", title, legend_loc="lower right",
           legend_size=7)
    return _finish(fig, path)


_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 2)), (0, (6, 2, 1, 2)))


def moving_mean(values, window):
    """The mean of the last `window` values at each position (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_and_validation(histories, path=None, *, window, title=None):
    """Training loss as a moving mean over `window` steps (left) and the validation score
    at each evaluation (right), one line per method in the method's fixed colour and
    marker and a line style of its own, so that curves lying on one another stay visible.
    histories: {method: history list from finetune}. Returns the figure; saved to path if given."""
    if window < 1:
        raise ValueError(f"window must be at least 1 step, got {window}.")
    fig, (ax_loss, ax_score) = _subplots(path, 1, 2, figsize=(10, 3.6))
    for i, (method, history) in enumerate(histories.items()):
        color, marker = _style(method, i)
        style = _LINESTYLES[i % len(_LINESTYLES)]
        steps = [h["step"] for h in history if "loss" in h]
        losses = moving_mean([h["loss"] for h in history if "loss" in h], window)
        ax_loss.plot(steps, losses, color=color, ls=style, marker=marker, markersize=4,
                     markevery=max(1, len(steps) // 8), label=method)
        evals = [(h["step"], h["validation"]["score"]) for h in history if "validation" in h]
        ax_score.plot([s for s, _ in evals], [v for _, v in evals], color=color, ls=style,
                      marker=marker, markersize=5, label=method)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel(f"training loss (mean of the last {window} steps)")
    ax_loss.grid(True, alpha=0.3)
    _label(ax_score, "step", "validation score")                  # one legend, on the right
    if title:
        fig.suptitle(title)
    return _finish(fig, path)
