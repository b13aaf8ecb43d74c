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
    harness = PACKAGE / "harness"
    assert {p.relative_to(harness).as_posix() for p in harness.rglob("*.py")} >= {
        "pretrained.py", "cli.py", "data/tasks.py", "data/batches.py", "data/synthetic.py",
        "data/metrics.py", "formats/files.py", "formats/native.py", "formats/adapterhub.py",
        "formats/peft.py", "formats/transformers.py", "formats/dispatch.py",
        "training/train.py", "training/evaluate.py", "training/rundir.py", "study/study.py",
        "study/report.py", "study/plots.py"}
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py"]



# --- the import graph ------------------------------------------------------------------------

def module_name(path):
    """minicompacter.harness.formats.files for .../minicompacter/harness/formats/files.py."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path):
    """[(line, imported module, inside a function?)] of a package file's imports of the
    package itself; `from . import x` names the module x where x is one."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if not target.startswith("minicompacter"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                module = sub if (ROOT / (sub.replace(".", "/") + ".py")).exists() else target
                out.append((node.lineno, module, id(node) in in_function))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, id(node) in in_function) for a in node.names
                    if a.name.startswith("minicompacter")]
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_no_module_imports_the_package_inside_a_function():
    inside = [f"{p.relative_to(ROOT)}:{line} imports {m}" for p in MODULES
              for line, m, in_function in internal_imports(p) if in_function]
    assert not inside, inside


def test_a_third_party_import_inside_a_function_says_why():
    """Heavy third-party packages may be imported where they are first needed, with the
    reason in a comment on the import's line (or "imported here" and why in the docstring)."""
    unexplained = []
    for path in MODULES:
        lines = path.read_text().splitlines()
        tree = ast.parse(path.read_text())
        for f in ast.walk(tree):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(f) or ""
            for node in ast.walk(f):
                third_party = isinstance(node, ast.Import) or (
                    isinstance(node, ast.ImportFrom) and not node.level)
                if third_party and "#" not in lines[node.lineno - 1] and "imported here" not in doc:
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not unexplained, unexplained



def test_the_format_modules_import_only_the_file_layer_and_the_families_data():
    """files.py imports no sibling, families.py only files.py, every other format module
    only those two: never each other (dispatch.py sits above them all)."""
    formats = PACKAGE / "harness" / "formats"
    below = {"files.py": set(), "families.py": {"minicompacter.harness.formats.files"}}
    for path in sorted(formats.glob("*.py")):
        if path.name in ("dispatch.py", "__init__.py"):
            continue
        siblings = {m for _, m, _ in internal_imports(path)
                    if m.startswith("minicompacter.harness.formats.")}
        allowed = below.get(path.name, {"minicompacter.harness.formats.files",
                                        "minicompacter.harness.formats.families"})
        assert siblings <= allowed, (path.name, siblings)


def test_the_module_map_names_every_module_and_no_other():
    text = (ROOT / "docs" / "design.md").read_text()
    section = text[text.index("## The module map"):]
    section = section[:section.index("\n## ", 4)]
    named = set(re.findall(r"^\| `(minicompacter/[\w/]+\.py)` \|", section, flags=re.M))
    actual = {p.relative_to(ROOT).as_posix() for p in MODULES}
    assert named - actual == set(), "the map names modules that do not exist"
    assert actual - named == set(), "modules the map does not name"

def cycle(graph):
    """One import cycle of a {module: {modules it imports}} graph, or None."""
    state = {}

    def visit(m, trail):
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return trail[trail.index(n):] + [n]
            if n not in state:
                found = visit(n, trail + [n])
                if found:
                    return found
        state[m] = "done"
        return None
    for m in sorted(graph):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    graph = {module_name(p): {m for _, m, _ in internal_imports(p)} - {module_name(p)}
             for p in MODULES}
    # a package's __init__ is imported on the way to any of its modules: count only the
    # edges of modules, as Python resolves them, and the top-level re-exports
    graph = {m: {n for n in deps if not (m.startswith(n + ".") and n != "minicompacter")}
             for m, deps in graph.items()}
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_cycle_check_sees_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None

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


@pytest.mark.slow
def test_importing_and_using_the_package_leave_blas_progress_bars_threads_signals_and_malloc_alone():
    got = run_python(PROCESS_STATE + '''
tiny = mc.load_pretrained("tiny")
seen = {}
def on_step(state_):
    from minicompacter.core import threads
    seen["during"] = dict(state(), pool=threads.active_threads(), wanted=threads.pool_size(),
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


@pytest.mark.slow
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
    from minicompacter.harness.training.evaluate import evaluate_checkpoint

    recorded = json.loads((OLD / "metrics.json").read_text())
    assert "pad_token_id" in json.loads((OLD / "adapter_config.json").read_text())["base_config"]
    model, trainable, frozen, config = mc.load_adapter(OLD)
    assert config["method"] == "compacter" and "shared" in trainable
    assert evaluate_checkpoint(OLD) == {"validation": recorded["validation"],
                                        "test": recorded["test"]}
