"""Build the notebooks: each `NN_name.py` (jupytext py:percent, the source a reviewer
reads) is executed top to bottom and written, outputs included, to `NN_name.ipynb`.

    python notebooks/build.py                  # every notebook, full size
    python notebooks/build.py 00_encoder --size small
    python notebooks/build.py 05_low_resource --text-only   # new prose, outputs kept

The size reaches the notebooks as the environment variable MINICOMPACTER_NOTEBOOK_SIZE
("full" or "small"); CI runs them small (tests/test_notebooks.py).
"""

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE_VARIABLE = "MINICOMPACTER_NOTEBOOK_SIZE"


def sources():
    return sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))


def execute(source, size="full", timeout=1800):
    """The notebook of a py:percent source, executed in a fresh kernel; raises
    nbclient's CellExecutionError on the first failing cell."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    os.environ[SIZE_VARIABLE] = size              # the kernel inherits the environment
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(Path(source).parent)}}).execute()
    return nb


def refresh_text(source):
    """Replace the markdown cells of the committed notebook by the source's, in order."""
    import jupytext
    import nbformat

    target = source.with_suffix(".ipynb")
    new, old = jupytext.read(source), nbformat.read(target, as_version=4)
    kinds = lambda nb: [c.cell_type for c in nb.cells]
    code = lambda nb: [c.source for c in nb.cells if c.cell_type == "code"]
    if kinds(new) != kinds(old) or code(new) != code(old):
        raise SystemExit(f"{source.name}: the code or the cell layout changed; run the notebook "
                         f"again instead of --text-only")
    for cell_new, cell_old in zip(new.cells, old.cells):
        if cell_new.cell_type == "markdown":
            cell_old.source = cell_new.source
    nbformat.write(old, target)
    print(f"{source.stem}: markdown refreshed")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all)")
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--text-only", action="store_true",
                        help="copy the markdown cells of the sources into the committed "
                             ".ipynb, keeping its outputs (the code cells must be unchanged)")
    args = parser.parse_args(argv)
    import nbformat

    for source in sources():
        if args.names and source.stem not in args.names:
            continue
        if args.text_only:
            refresh_text(source)
            continue
        t0 = time.perf_counter()
        nb = execute(source, args.size, timeout=6 * 3600)   # a cell may run a long study
        nbformat.write(nb, source.with_suffix(".ipynb"))
        print(f"{source.stem}: {time.perf_counter() - t0:.1f} s ({args.size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
