"""Parameter counting: the Compacter paper's table for T5-base reproduced from shapes
alone (the expected values are the paper's, docs/paper.md), known model sizes, and the
`count` command."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import minicompacter as mc
from minicompacter.core.counting import (BERT_BASE, T5_BASE, base_total, count_analytic,
                                    peft_line, summary)

from conftest import needs_minilm

ROOT = Path(__file__).resolve().parents[1]

# Table 1 of Mahabadi et al. 2021 (T5-base on GLUE): trainable parameters and % of T5-base.
PAPER_TABLE = {
    "adapter": (1_855_104, "0.832"),
    "pfeiffer": (951_360, "0.427"),
    "adapter-lowrank": (161_664, "0.073"),
    "phm-adapter": (398_976, "0.179"),
    "compacter": (161_728, "0.073"),
    "compacter++": (104_704, "0.047"),
    "bitfit": (280_932, "0.126"),
}


def test_t5_base_size():
    assert base_total(T5_BASE) == 222_882_048            # after resizing the vocabulary to 32,100


def test_bert_base_size_matches_the_published_count():
    # bert-base-uncased's BertModel has 109,482,240 parameters, 590,592 of them in the
    # pooler, which minicompacter does not use.
    assert base_total(BERT_BASE) + 768 * 768 + 768 == 109_482_240


@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_paper_table_reproduced(name):
    s = summary(count_analytic(mc.method_config(name), T5_BASE), base_total(T5_BASE))
    trainable, percent = PAPER_TABLE[name]
    assert s["trainable"] == trainable
    assert f"{s['percent']:.3f}" == percent


def test_paper_formulas_without_biases_and_layer_norms():
    """Section 3.3: Adapter 2L(2kd), PHM-Adapter 4L(kd/n + n^3), Compacter 4L(k + d) + n^3,
    with L = 24 layers (12 + 12), d = 768, k = 24."""
    L, d, k = 24, 768, 24
    def weights(name):
        b = count_analytic(mc.method_config(name), T5_BASE)
        return b["adapter weights"] + b["shared A"]
    assert weights("adapter") == 2 * L * 2 * k * d
    assert weights("phm-adapter") == 4 * L * (k * d // 12 + 12 ** 3)
    assert weights("compacter") == 4 * L * (k + d) + 4 ** 3


def run_count(*args):
    return subprocess.run([sys.executable, "-m", "minicompacter", "count", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_count_t5_base_all_prints_the_paper_table_from_shapes_and_measured():
    """The table from T5-base's shapes, and measured on a real tree: T5-base's config with the
    vocabulary resized to 32,100, random weights, each method's trainable tree walked."""
    out = run_count("--model", "t5-base", "--method", "all")
    assert out.returncode == 0, out.stderr
    for name, (trainable, percent) in PAPER_TABLE.items():
        assert f"| {name} | {trainable:,} | {percent} | {trainable:,} |" in out.stdout


@pytest.mark.slow
def test_count_json_and_breakdown():
    out = run_count("--model", "t5-base", "--method", "compacter", "--json")
    r = json.loads(out.stdout)
    assert {"trainable", "total", "percent", "breakdown"} <= set(r)
    assert r["trainable"] == 161_728 and r["total"] == 222_882_048
    assert r["breakdown"] == {"adapter weights": 48 * (4 * 192 + 4 * 6 + 4 * 6 + 4 * 192),
                              "adapter biases": 48 * (24 + 768), "shared A": 64,
                              "layer norms": 47_616}


def test_count_peft_line_and_head_line_on_tiny():
    out = run_count("--model", "tiny", "--method", "lora", "--num-labels", "3")
    assert out.returncode == 0, out.stderr
    # tiny: vocabulary 425, width 32, 2 layers, FFN 64, 128 positions:
    # (425 + 128 + 2) * 32 + 2 * (4 * 32 * 32 + 2 * 32 * 64) + 2 * (4 * 32 + 64 + 32)
    # + 5 * 2 * 32 = 17,760 + 16,384 + 448 + 320 = 34,912 parameters;
    # LoRA r = 8 on query and value: 2 * 2 * 8 * (32 + 32) = 2,048; head 32 * 3 + 3 = 99
    assert "model tiny: 34,912 parameters in the base model" in out.stdout
    assert "trainable params: 2,147 || all params: 37,059 || trainable%: 5.7935" in out.stdout
    assert "head                            99" in out.stdout
    assert "measured by walking the trainable tree: 2,147 (agrees)" in out.stdout


@pytest.mark.slow
@needs_minilm
def test_count_minilm_all_agrees_with_the_trees():
    out = run_count("--model", "minilm", "--method", "all", "--json")
    rows = json.loads(out.stdout)
    assert [r["method"] for r in rows] == list(mc.METHODS)
    assert all(r["measured"] == r["trainable"] for r in rows)
    assert {r["method"]: r["trainable"] for r in rows}["compacter++"] == 17_946


@pytest.mark.slow
def test_count_bad_input():
    out = run_count("--model", "t5-base", "--method", "compactor")
    assert out.returncode == 2 and "Unknown method 'compactor'; the methods are" in out.stderr
    out = run_count("--model", "t5-base", "--method", "compacter", "--phm-dim", "5")
    assert out.returncode == 2 and "phm_dim 5 does not divide the widths [768, 24]" in out.stderr
    out = run_count("--model", "t5-base", "--method", "adapter", "--reduction-factor", "1000")
    assert out.returncode == 2 and "bottleneck of a width-768 model zero" in out.stderr
    assert "Traceback" not in out.stderr


def test_peft_line_format():
    s = summary({"adapter weights": 10, "adapter biases": 0, "shared A": 0, "lora weights": 0,
                 "layer norms": 5, "biases": 0, "pretrained weights": 0, "head": 0}, 100)
    assert peft_line(s) == "trainable params: 15 || all params: 110 || trainable%: 13.6364"


@needs_minilm
def test_count_accepts_a_checkpoint_directory():
    from minicompacter.harness.pretrained import minilm_dir
    out = run_count("--model", str(minilm_dir()), "--method", "compacter++", "--json")
    r = json.loads(out.stdout)
    assert r["trainable"] == r["measured"] == 17_946 and r["total"] == 22_565_376
