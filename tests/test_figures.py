"""Every figure a reader sees is drawn at 100 dpi or more: the PNGs in the committed
notebooks' outputs, the committed result figures, and what the plot helpers save."""

import base64
import struct
from pathlib import Path

import pytest

from minicompacter.harness.study import plots

ROOT = Path(__file__).resolve().parents[1]
MIN_DPI = 100
METRES_PER_INCH = 0.0254


def png_dpi(data):
    """(x, y) dots per inch from a PNG's pHYs chunk; None if it has none or no unit."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at = 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"pHYs":
            x, y, unit = struct.unpack(">IIB", data[at + 8:at + 17])
            return (x * METRES_PER_INCH, y * METRES_PER_INCH) if unit == 1 else None
        if kind == b"IDAT":                  # pHYs must come before the image data
            return None
        at += 12 + length
    return None


def at_least(dpi):
    # pHYs stores whole pixels per metre: 100 dpi is 3937 px/m, 99.9998 dpi read back
    return dpi is not None and min(dpi) >= MIN_DPI - 0.01


def test_png_dpi_reads_what_matplotlib_wrote(tmp_path):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    for dpi in (64, 100, 150):
        fig, _ = plt.subplots(figsize=(2, 1))
        fig.savefig(tmp_path / "f.png", dpi=dpi)
        plt.close(fig)
        assert png_dpi((tmp_path / "f.png").read_bytes()) == pytest.approx((dpi, dpi), abs=0.013)  # whole px per metre
    assert not at_least(png_dpi((tmp_path / "f.png").read_bytes().replace(b"pHYs", b"xxxx")))


def notebook_pngs():
    import nbformat
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for number, cell in enumerate(nb.cells):
            for output in cell.get("outputs", []):
                png = output.get("data", {}).get("image/png")
                if png:
                    yield f"{path.name}, cell {number}", base64.b64decode(png)


def test_every_committed_notebook_figure_is_100_dpi_or_more():
    figures = list(notebook_pngs())
    assert figures
    low = [(where, png_dpi(data)) for where, data in figures if not at_least(png_dpi(data))]
    assert not low, f"figures below {MIN_DPI} dpi (set plt.rcParams['figure.dpi']): {low}"


def test_every_committed_result_figure_is_100_dpi_or_more():
    paths = sorted((ROOT / "results").glob("*.png"))
    low = [(p.name, png_dpi(p.read_bytes())) for p in paths if not at_least(png_dpi(p.read_bytes()))]
    assert not low, f"result figures below {MIN_DPI} dpi: {low}"


def test_the_plot_helpers_save_at_100_dpi_or_more(tmp_path):
    history = [{"step": s, "loss": 1.0 / s} for s in range(1, 9)] + \
              [{"step": 8, "epoch": 0, "validation": {"score": 0.8}}]
    summary = [{"method": m, "train_size": n, "mean": 0.7, "std": 0.01, "n": 3}
               for m in ("compacter", "full") for n in (100, 500)]
    drawn = {
        "params_vs_score": lambda path: plots.params_vs_score(
            [{"method": "full", "percent": 100.0, "score": 0.8},
             {"method": "compacter", "percent": 0.1, "score": 0.79}], path),
        "low_resource": lambda path: plots.low_resource(summary, path),
        "efficiency": lambda path: plots.efficiency(
            [{"method": "compacter", "time": 0.6, "memory": 0.7}], path,
            paper={"the paper": (0.73, 0.58)}),
        "loss_and_validation": lambda path: plots.loss_and_validation(
            {"full": history, "compacter": history}, path, window=4),
    }
    for name, draw in drawn.items():
        path = tmp_path / f"{name}.png"
        draw(path)
        assert at_least(png_dpi(path.read_bytes())), (name, png_dpi(path.read_bytes()))
