"""The figures: each draws what it is given, where it should be, and saves a PNG."""

import matplotlib

matplotlib.use("Agg")

import numpy as onp
import pytest
from matplotlib.collections import PathCollection

from minicompacter.harness.study import plots


def points(ax):
    """The (x, y) of every scatter marker on the axes, in drawing order."""
    return [tuple(float(v) for v in p) for c in ax.collections if isinstance(c, PathCollection)
            for p in onp.asarray(c.get_offsets())]


def test_efficiency_places_each_method_at_its_ratios_with_the_paper_beside(tmp_path):
    rows = [{"method": "compacter", "time": 0.4, "memory": 0.6},
            {"method": "bitfit", "time": 0.35, "memory": 0.55}]
    fig = plots.efficiency(rows, tmp_path / "e.png", paper={"paper": (0.73, 0.58)})
    ax = fig.axes[0]
    assert points(ax) == [(0.4, 0.6), (0.35, 0.55), (0.73, 0.58)]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("compacter (0.40, 0.60)") and labels[2].startswith("paper")
    assert (tmp_path / "e.png").stat().st_size > 0


def marker_points(ax):
    """The (x, y) of every marker drawn as a line of markers alone (errorbar's points)."""
    return [(float(x), float(y)) for line in ax.get_lines()
            if line.get_linestyle() == "None" and line.get_marker() != "_"
            for x, y in zip(line.get_xdata(), line.get_ydata())]


def test_params_vs_score_skips_a_missing_score_and_uses_a_log_axis():
    fig = plots.params_vs_score([{"method": "a", "percent": 0.1, "score": 0.8},
                                 {"method": "b", "percent": 100.0, "score": float("nan")}])
    ax = fig.axes[0]
    assert marker_points(ax) == [(0.1, 0.8)] and ax.get_xscale() == "log"


def test_params_vs_score_never_zooms_past_the_intervals():
    # 500 of 500 and 499 of 500 right: their 95% intervals overlap, and the axis shows both
    # whole, so one sentence does not look like a ranking
    rows = [{"method": "a", "percent": 0.1, "score": 1.0, "n": 500},
            {"method": "b", "percent": 1.0, "score": 0.998, "n": 500}]
    ax = plots.params_vs_score(rows).axes[0]
    low, high = ax.get_ylim()
    assert low < 0.989 and high >= 1.0                  # [0.989, 1] is 0.998's interval
    assert ax.get_ylabel().endswith("(bars: 95% Wilson interval)")


def test_low_resource_draws_means_bands_and_single_runs():
    summary = [{"method": "full", "train_size": n, "mean": m, "std": 0.01, "n": 2}
               for n, m in ((100, 0.7), (500, 0.8))]
    records = [{"method": "full", "train_size": n, "test": {"score": v}}
               for n, v in ((100, 0.69), (100, 0.71), (500, 0.8))]
    ax = plots.low_resource(summary, records=records).axes[0]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [100, 500] and list(line.get_ydata()) == [0.7, 0.8]
    assert sorted(points(ax)) == [(100, 0.69), (100, 0.71), (500, 0.8)]
    assert len(ax.collections) == 2                       # the +-1 sd band and the runs


def test_moving_mean_averages_the_last_window_values():
    assert plots.moving_mean([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert plots.moving_mean([1.0, 3.0, 5.0], 1) == [1.0, 3.0, 5.0]
    assert plots.moving_mean([2.0, 4.0, 6.0], 10) == [2.0, 3.0, 4.0]


def test_loss_and_validation_names_its_window_and_refuses_an_empty_one():
    history = [{"step": s, "loss": 1.0 / s} for s in range(1, 9)] + \
              [{"step": 8, "validation": {"score": 0.7}}]
    fig = plots.loss_and_validation({"compacter": history, "full": history}, window=4)
    loss_ax, score_ax = fig.axes
    assert "last 4 steps" in loss_ax.get_ylabel()
    assert len(loss_ax.lines) == 2 and len(score_ax.lines) == 2
    assert loss_ax.lines[0].get_linestyle() != loss_ax.lines[1].get_linestyle()
    with pytest.raises(ValueError, match="window"):
        plots.loss_and_validation({"full": history}, window=0)
