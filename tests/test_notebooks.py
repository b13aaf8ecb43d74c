"""Every notebook runs top to bottom at the small size, and the committed .ipynb (with
its outputs) holds the same code as its py:percent source."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build", ROOT / "notebooks" / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)
SOURCES = build.sources()


def code_cells(nb):
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks():
    assert SOURCES


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_small(source):
    nb = build.execute(source, size="small", timeout=600)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_matches_its_source_and_has_outputs(source):
    import jupytext
    import nbformat
    committed = source.with_suffix(".ipynb")
    assert committed.exists(), f"run: python notebooks/build.py {source.stem}"
    nb = nbformat.read(committed, as_version=4)
    assert code_cells(nb) == code_cells(jupytext.read(source)), \
        f"{committed.name} is out of date; run: python notebooks/build.py {source.stem}"
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
