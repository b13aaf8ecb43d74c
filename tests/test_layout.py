"""The shape of the package and of the repository: the core imports nothing of the harness
and no harness library; importing the package, and using it, leaves the process as it was;
every tracked file points only inside the repository; a checkpoint of 0.1.0 still loads."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minicompacter"
# what the core may import besides itself and the standard library
CORE_THIRD_PARTY = {"numpy", "autograd", "scipy", "threadpoolctl"}


def imports(path):
    """(absolute module names, relative (level, module) pairs) imported anywhere in a file."""
    absolute, relative = [], []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            absolute += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                relative.append((node.level, node.module or ""))
            else:
                absolute.append(node.module)
    return absolute, relative


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name)
def test_the_core_imports_only_itself_numpy_autograd_scipy_and_the_standard_library(path):
    absolute, relative = imports(path)
    assert all(level == 1 for level, _ in relative), f"{path.name} reaches outside core/"
    for name in absolute:
        top = name.split(".")[0]
        assert top != "minicompacter", f"{path.name} imports {name}"
        assert top in CORE_THIRD_PARTY or top in sys.stdlib_module_names, \
            f"{path.name} imports {name}, which is not for the core"


def test_the_check_would_see_a_core_module_reaching_the_harness(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ..harness.data import load_task\n")
    assert imports(bad)[1] == [(2, "harness.data")]


def test_the_folders_show_the_layers():
    assert {p.name for p in (PACKAGE / "core").glob("*.py")} >= {
        "nn.py", "kernels.py", "layers.py", "phm.py", "encoder.py", "methods.py", "model.py",
        "optim.py", "tree.py", "paths.py", "counting.py"}
    assert {p.name for p in (PACKAGE / "harness").glob("*.py")} >= {
        "data.py", "synthetic.py", "metrics.py", "pretrained.py", "train.py", "checkpoint.py",
        "jobs.py", "study.py", "plots.py", "cli.py"}
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py"]


# --- nothing changed behind the user's back -----------------------------------------------

PROCESS_STATE = '''
import ctypes, json, signal, sys, threading
fetched = []
class Recording(ctypes.CDLL):                      # notes every libc function looked up
    def __getattr__(self, name):
        fetched.append(name)
        return super().__getattr__(name)
ctypes.CDLL = Recording
import numpy
from threadpoolctl import threadpool_info
import datasets

def state():
    return {"blas": {p["filepath"]: p["num_threads"] for p in threadpool_info()
                     if p["user_api"] == "blas"},
            "progress": datasets.is_progress_bar_enabled(),
            "threads": sorted(t.name for t in threading.enumerate()),
            "signals": [repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)]}

before = state()
import minicompacter as mc
after_import = state()
'''


def run_python(code):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_and_using_the_package_leave_blas_progress_bars_threads_signals_and_malloc_alone():
    got = run_python(PROCESS_STATE + '''
tiny = mc.load_pretrained("tiny")
seen = {}
def on_step(state_):
    from minicompacter.core import kernels
    seen["during"] = dict(state(), pool=kernels.active_threads(), wanted=kernels.pool_size(),
                          sigterm=repr(signal.getsignal(signal.SIGTERM)))
for progress in (False, True):
    m = mc.finetune(tiny, "synthetic-sentiment", mc.method_config("compacter", reduction_factor=8),
                    mc.TrainConfig(epochs=1, batch_size=16, max_length=32, progress=progress),
                    train_size=32, on_step=on_step)
mc.encode_texts(tiny, ["a good film"])
print(json.dumps({"before": before, "after_import": after_import, "during": seen["during"],
                  "after_use": state(), "mallopt": "mallopt" in fetched}))
''')
    before = got["before"]
    for after in (got["after_import"], got["after_use"]):
        # SciPy loads a BLAS of its own on the way: every BLAS keeps (or starts with) the
        # thread count the process had
        assert all(after["blas"][lib] == n for lib, n in before["blas"].items())
        assert set(after["blas"].values()) == set(before["blas"].values())
        assert after["progress"] == before["progress"] and after["threads"] == before["threads"]
        assert after["signals"] == before["signals"]           # SIGTERM handled only during a run
    assert got["mallopt"] is False
    assert "_on_signal" in got["during"]["sigterm"]      # while training, SIGTERM saves last/
    # while training, BLAS was on one thread and the kernels had their pool
    if got["during"]["wanted"] > 1:
        assert all(n == 1 for n in got["during"]["blas"].values())
        assert got["during"]["pool"] == got["during"]["wanted"]


def test_the_command_line_tunes_the_allocator():
    got = run_python(PROCESS_STATE + '''
from minicompacter.harness.cli import main
main(["count", "--model", "t5-base", "--method", "compacter", "--json"])
print(json.dumps({"mallopt": "mallopt" in fetched}))
''')
    assert got["mallopt"] is True


# --- the repository points only at itself ---------------------------------------------------

def tracked_text_files():
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    out = []
    for name in names:
        path = ROOT / name
        if name == ".ci/run" or path.suffix in (".png", ".npz", ".safetensors", ".bin") \
                or not path.is_file():
            continue
        try:
            out.append((name, path.read_text()))
        except UnicodeDecodeError:
            continue
    return out


OUTSIDE = re.compile(r"\.\./shared|(?<![\w.])/(?:work|tmp|root|home|Users|opt|mnt)/|"
                     r"\b(?:PAPER|PERF|DESIGN|STYLE)\.md\b")
WORK_ITEMS = re.compile(r"\b(?:the\s+)?[\"“]?(?:Architecture|Interop|Teaching|Performance|"
                        r"Reliability):?[\"”]?\s+issue\b|\bissue\s+#?\d+\b", re.IGNORECASE)


def test_no_tracked_file_names_a_path_outside_the_repository_or_a_work_item():
    found = []
    for name, text in tracked_text_files():
        if name == "tests/test_layout.py":              # its own patterns and examples
            continue
        for pattern in (OUTSIDE, WORK_ITEMS):
            found += [f"{name}: {m.group(0)!r}" for m in pattern.finditer(text)]
    assert not found, "\n".join(found[:40])


REFERENCE = re.compile(r"(?<![\w/.-])((?:minicompacter|tests|bench|notebooks|docs|results)/"
                       r"[\w./-]*[\w]\.(?:py|md|ipynb|json|jsonl|png|npz|safetensors)|"
                       r"(?:README|BENCHMARKS|RESULTS|CHANGELOG)\.md|LICENSE)\b")


def test_every_file_the_repository_names_exists():
    missing = []
    for name, text in tracked_text_files():
        if name == "tests/test_layout.py":
            continue
        for m in REFERENCE.finditer(text):
            if not (ROOT / m.group(1)).exists():
                missing.append(f"{name}: {m.group(1)}")
    assert not missing, "\n".join(sorted(set(missing))[:40])


def test_the_scans_would_catch_what_they_look_for():
    assert OUTSIDE.search("see ../shared/PERF.md") and OUTSIDE.search("python /work/x/y.py")
    assert OUTSIDE.search("(PAPER.md, section 2)") and not OUTSIDE.search("docs/paper.md")
    assert WORK_ITEMS.search('as the "Interop:" issue says') and WORK_ITEMS.search("see issue 13")
    assert not WORK_ITEMS.search("a known issue with padding")
    assert REFERENCE.findall("see docs/nowhere.md and README.md") == ["docs/nowhere.md", "README.md"]


# --- old checkpoints ------------------------------------------------------------------------

OLD = ROOT / "tests" / "fixtures" / "checkpoint_0.1.0"


def test_a_checkpoint_written_by_0_1_0_loads_and_evaluates_as_it_did():
    import minicompacter as mc
    from minicompacter.harness.train import evaluate_checkpoint

    recorded = json.loads((OLD / "metrics.json").read_text())
    assert "pad_token_id" in json.loads((OLD / "adapter_config.json").read_text())["base_config"]
    model, trainable, frozen, config = mc.load_adapter(OLD)
    assert config["method"] == "compacter" and "shared" in trainable
    assert evaluate_checkpoint(OLD) == {"validation": recorded["validation"],
                                        "test": recorded["test"]}
