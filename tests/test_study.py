"""The study behind RESULTS.md: its pieces (epochs rule, summaries, verdicts, the results
file) and, on the real GLUE files and MiniLM, the quick variant end to end, so that the
command that regenerates RESULTS.md cannot rot."""

import json
import os
import statistics
from pathlib import Path

import pytest

from minicompacter import load_pretrained
from minicompacter.core.methods import PRESETS
from minicompacter.harness import cli
from minicompacter.harness.study import report, results, study
from minicompacter.harness.cli import main as cli_main
from minicompacter.harness.pretrained import BUILTIN

from conftest import needs_minilm

pytestmark = pytest.mark.slow        # command-line batteries and whole runs: python -m pytest -m "not slow" skips them

GLUE = os.environ.get("GLUE_DIR")
needs_glue = pytest.mark.skipif(not GLUE or not Path(GLUE, "SST-2", "train.tsv").exists(),
                                reason="needs the GLUE files: set GLUE_DIR to a GLUE directory")


def test_epochs_rule_gives_about_250_updates_within_3_to_20_epochs():
    assert [study.epochs_for(n) for n in (100, 500, 1000, 2000, 4000)] == [20, 16, 8, 4, 3]
    assert study.epochs_for(10) == 20 and study.epochs_for(10 ** 6) == 3


def record(task, method, n, seed, score):
    return {"key": f"{task}{method}{n}{seed}", "task": task, "method": method, "train_size": n,
            "seed": seed, "test": {"score": score}, "train_seconds": 1.0, "percent": 0.1}


def test_summarize_gives_mean_and_sample_sd_per_group():
    recs = [record("sst2", "full", 100, s, v) for s, v in enumerate([0.7, 0.8, 0.9])]
    recs.append(record("sst2", "compacter", 100, 0, 0.75))
    rows = {r["method"]: r for r in study.summarize(recs)}
    assert rows["full"]["n"] == 3 and rows["full"]["mean"] == pytest.approx(0.8)
    assert rows["full"]["std"] == pytest.approx(statistics.stdev([0.7, 0.8, 0.9]))
    assert rows["compacter"]["std"] == 0.0


@pytest.mark.parametrize("gap, word", [(0.005, "holds"), (-0.005, "holds"),
                                       (-0.02, "holds partly"), (-0.05, "does not hold")])
def test_parity_verdict_follows_its_stated_rule(gap, word):
    summary = study.summarize([record("sst2", "full", 2000, 0, 0.80),
                               record("sst2", "compacter", 2000, 0, 0.80 + gap),
                               record("sst2", "compacter++", 2000, 0, 0.80 + gap + 0.001)])
    assert study.verdict_parity(summary, ["sst2"])[0] == word


def test_low_resource_verdict_needs_wins_at_the_small_sizes():
    def verdict(diffs):
        recs = []
        for n, d in diffs.items():
            recs += [record("sst2", "full", n, 0, 0.7), record("sst2", "compacter", n, 0, 0.7 + d)]
        return study.verdict_low_resource(study.summarize(recs), list(diffs), "sst2")[0]
    assert verdict({100: 0.05, 500: 0.02, 1000: 0.01, 4000: -0.01}) == "holds"
    assert verdict({100: 0.05, 500: -0.02, 1000: -0.01, 4000: -0.01}) == "holds partly"
    assert verdict({100: -0.05, 500: -0.02, 1000: -0.01, 4000: 0.0}) == "does not hold"


def test_leads_within_the_seed_spread_are_named():
    recs = []
    for n, full, comp in [(100, [0.70, 0.80, 0.90], [0.78, 0.82, 0.86]),   # lead 0.02, sd 0.1
                          (500, [0.80, 0.80, 0.80], [0.90, 0.90, 0.90]),   # lead 0.1, sd 0
                          (1000, [0.80, 0.81, 0.82], [0.70, 0.71, 0.72])]:  # behind
        recs += [record("sst2", "full", n, s, v) for s, v in enumerate(full)]
        recs += [record("sst2", "compacter", n, s, v) for s, v in enumerate(comp)]
    weak = study.leads_within_spread(study.summarize(recs), [100, 500, 1000], "sst2")
    assert [(n, round(d, 3), round(sd, 3)) for n, d, sd in weak] == [(100, 0.02, 0.1)]


def test_gaps_by_task_are_method_minus_full():
    summary = study.summarize([record("sst2", "full", 2000, 0, 0.80),
                               record("sst2", "compacter", 2000, 0, 0.78),
                               record("cola", "full", 2000, 0, 0.10)])
    gaps = study.gaps_by_task(summary, ["sst2", "cola"], "compacter")
    assert list(gaps) == ["sst2"] and gaps["sst2"] == pytest.approx(-0.02)


def test_study_time_counts_each_run_once_and_falls_back_to_training_time():
    a = {**record("sst2", "full", 100, 0, 0.5), "run_seconds": 10.0}
    b = record("sst2", "full", 100, 1, 0.5)                   # older record: train_seconds 1.0
    assert study.study_seconds([a, b], [a]) == 11.0          # a copied into a second file


def test_time_spread_compares_runs_of_the_same_work_only():
    times = {("sst2", "full", 0): 10.0, ("sst2", "full", 1): 16.0,          # 1.6 apart
             ("sst2", "bitfit", 0): 2.0, ("cola", "full", 0): 40.0}       # no second seed
    recs = [{**record(t, m, 100, seed, 0.5), "train_seconds": v} for (t, m, seed), v in times.items()]
    assert study.time_spread(recs) == pytest.approx(1.6)
    assert study.time_spread(recs[2:]) == 1.0


def test_run_grid_copies_a_known_run_instead_of_training_it(tmp_path, monkeypatch):
    class Pretrained:
        name = "m"

    run = study.Run("sst2", "compacter", 100, 0)
    known = {run.key("m"): {"key": run.key("m"), "test": {"score": 0.5}, "train_seconds": 3.0}}
    monkeypatch.setattr(study, "run_one", lambda *a, **k: pytest.fail("a known run was trained"))
    results = tmp_path / "r.jsonl"
    records = study.run_grid(Pretrained(), [run], results=results, known=known, log=None)
    assert records == [known[run.key("m")]]
    assert study.read_results(results) == known               # and kept in this study's file


def test_results_file_survives_a_line_cut_short(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"key": "a", "x": 1}) + "\n" + '{"key": "b", "x"')
    assert list(study.read_results(path)) == ["a"]
    assert study.read_results(tmp_path / "none.jsonl") == {}


def test_efficiency_verdict_follows_its_stated_rule():
    def verdict(seconds, mb):
        eff = {"full": {"train_seconds": 10.0, "peak_memory_mb": 1000.0},
               "compacter++": {"train_seconds": seconds, "peak_memory_mb": mb}}
        return study.verdict_efficiency(eff)
    word, name, less_t, less_m = verdict(7.0, 700.0)
    assert (word, name) == ("holds", "compacter++")
    assert (less_t, less_m) == (pytest.approx(0.3), pytest.approx(0.3))
    assert verdict(7.0, 900.0)[0] == "holds partly"          # 10% of the memory: not enough
    assert verdict(12.0, 1100.0)[0] == "does not hold"
    assert study.verdict_efficiency({"compacter++": {}})[:2] == ("not measured", None)


def test_study_methods_keep_the_tables_order_and_leave_out_adapter_lowrank():
    assert study.STUDY_METHODS == ("full", "adapter", "pfeiffer", "phm-adapter", "compacter",
                                   "compacter++", "bitfit", "lora", "adapterdrop",
                                   "prompt-tuning-r", "prompt-tuning-t", "intrinsic-said")


def test_the_costly_baselines_run_what_fits_and_the_report_says_so():
    plan = study.Plan(tasks=("cola", "sst2"))
    runs = plan.glue_runs()
    for m in study.STUDY_METHODS:
        costly = m in study.BUDGET
        assert {r.seed for r in runs if r.method == m} == ({0} if costly else {0, 1, 2}), m
        assert {r.task for r in runs if r.method == m} == ({"cola"} if costly else {"cola", "sst2"}), m
    assert len(runs) == 2 * 3 * (len(study.STUDY_METHODS) - 3) + 3
    assert ("(prompt-tuning-r, prompt-tuning-t and intrinsic-said: cola, seed 0 only: their steps "
            "cost several times" in report.budget_note(plan))
    assert report.budget_note(study.Plan(tasks=("cola",), budget={})) == ""
    assert set(plan.timed_methods()) == set(study.STUDY_METHODS) - set(study.BASELINES)


def test_the_paper_column_is_its_table_1_row_on_the_same_scale():
    assert report.paper_scores("compacter", ["cola", "sst2"]) == f"{(63.75 + 93.00) / 200:.3f} / 0.866"
    assert report.paper_scores("lora", ["cola"]) == ""            # not in the paper
    assert set(study.PAPER_TABLE1) == set(study.STUDY_METHODS) - {"lora"} | {"adapter-lowrank"}


RESULTS = Path(__file__).resolve().parents[1] / "results"


@needs_glue
def test_the_committed_study_is_found_whole(tmp_path):
    plan = study.full_plan(GLUE)
    recorded = {json.loads(line)["task"] for line in (RESULTS / "glue.jsonl").open()}
    if set(plan.tasks) != recorded:
        pytest.skip(f"this GLUE directory has other tasks than the committed study's {recorded}")
    for name in ("glue.jsonl", "low_resource.jsonl", "efficiency.jsonl"):   # left untouched
        (tmp_path / name).write_bytes((RESULTS / name).read_bytes())

    class Pretrained:
        name = "minilm"

    glue = study.run_grid(Pretrained(), plan.glue_runs(), results=tmp_path / "glue.jsonl",
                          train=False, log=None)
    low = study.run_grid(Pretrained(), plan.low_resource_runs(), train=False, log=None,
                         results=tmp_path / "low_resource.jsonl", known={r["key"]: r for r in glue})
    eff = study.efficiency(plan, GLUE, tmp_path, "minilm", train=False, log=None)
    assert (len(glue), len(low), len(eff)) == (len(plan.glue_runs()), 90, 8)
    assert list(eff) == list(plan.timed_methods())


def test_learning_rates_are_the_presets(monkeypatch):
    for m, lr, paper in [("full", 2e-5, 1.5e-4), ("adapter", 5e-3, 9e-4),
                         ("compacter", 5e-3, 7e-3)]:
        monkeypatch.setitem(PRESETS, m, PRESETS[m]._replace(lr=lr, paper_lr=paper))
    methods = ("full", "adapter", "compacter")
    assert report.learning_rates(methods) == ("5e-3 for every parameter-efficient method and "
                                              "2e-5 for full fine-tuning")
    line = report.lr_difference(methods)[0]
    assert "1.5e-4 for full; 9e-4 for adapter; 7e-3 for compacter" in line
    monkeypatch.setitem(PRESETS, "adapter", PRESETS["adapter"]._replace(lr=4e-4))
    assert report.learning_rates(methods) == "2e-5 for full; 4e-4 for adapter; 5e-3 for compacter"


def test_model_sentences_describe_the_model_given():
    tiny = load_pretrained("tiny")

    def size(tree):
        if isinstance(tree, dict):
            return sum(size(v) for v in tree.values())
        if isinstance(tree, (list, tuple)):
            return sum(size(v) for v in tree)
        return tree.size

    n, width = size(tiny.params), tiny.params["embeddings"]["word"].shape[1]
    facts = report.model_facts(tiny, "tiny")
    assert (facts["params"], facts["layers"], facts["width"]) == (n, len(tiny.params["layers"]), width)
    text = report.model_sentence(facts)
    assert f"{n / 1000:.1f}k parameters" in text and f"width {width}" in text
    assert BUILTIN["tiny"] in text and "t5-base, 223M" in text
    # width 32 and reduction factor 32: a bottleneck of 1; T5-base's 768: the paper's 24
    assert "a bottleneck of 1 (the paper's: 24)" in report.model_difference(facts)[0]


def test_splits_and_updates_are_stated_from_the_data():
    text = report.splits_sentence(("cola", "sst2", "stsb"))
    assert "small tasks (CoLA, STS-B;" in text and "large ones (SST-2; 1,000 training" in text
    records = [{"epochs": 4, "train_examples": 2000}, {"epochs": 20, "train_examples": 100}]
    assert report.updates_per_run(records, 32) == (20 * 4, 4 * 63)     # 100 / 32: 4 batches
    assert report.rate(0.003) == "3e-3" and report.rate(1.5e-4) == "1.5e-4"


@needs_glue
def test_available_tasks_are_those_with_train_and_dev_files():
    found = study.available_tasks(GLUE)
    assert {"cola", "sst2", "stsb"} <= set(found)
    assert "qnli" not in found and "wnli" not in found       # QNLI: dev only; WNLI: left out


def test_study_without_a_glue_directory_says_how_to_give_one(monkeypatch, capsys):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    assert cli_main(["study", "--quick"]) == 2
    assert "--data-dir" in capsys.readouterr().err


@needs_glue
def test_report_only_trains_nothing_and_says_what_is_missing(tmp_path, monkeypatch):
    plan = study.quick_plan(GLUE)
    run = plan.glue_runs()[0]
    rec = {**record(run.task, run.method, run.train_size, run.seed, 0.8), "key": run.key("minilm")}
    out = tmp_path / "results"
    out.mkdir()
    (out / "glue.jsonl").write_text(json.dumps(rec) + "\n")
    monkeypatch.setattr(study, "run_one", lambda *a, **k: pytest.fail("a run was trained"))
    # the records are minilm's (their keys name it); the tiny model only describes itself
    result = results.run_study(load_pretrained("tiny"), GLUE, out=out, report=tmp_path / "R.md",
                             quick=True, model_name="minilm", train=False, log=None)
    assert result["glue"] == [rec]
    assert result["low_resource"] == [rec]           # the same run, in both studies
    assert result["missing"] == {"GLUE": len(plan.glue_runs()) - 1, "efficiency": len(plan.methods),
                                 "low_resource": len(plan.low_resource_runs()) - 1}
    text = (tmp_path / "R.md").read_text()
    assert text.startswith("# Results") and "**Unfinished study" in text
    assert f"{len(plan.glue_runs()) - 1} of the GLUE study" in text
    assert "**Verdict, parity (provisional): not measured.**" in text
    assert "**Verdict, little data (sst2) (provisional): not measured.**" in text


def test_cli_report_only_flag_reaches_the_study(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_study(pretrained, data_dir, **kw):
        seen.update(kw)
        return {"seconds": 60.0, "missing": {"GLUE": 3}}

    monkeypatch.setattr(cli, "run_study", fake_study)
    monkeypatch.setattr("minicompacter.harness.cli.load_pretrained", lambda name: None)
    assert cli_main(["study", "--data-dir", str(tmp_path), "--report-only"]) == 0
    assert seen["train"] is False
    assert "unfinished: runs not made yet: 3 GLUE" in capsys.readouterr().out


@needs_minilm
@needs_glue
def test_quick_study_writes_every_part_and_reuses_finished_runs(tmp_path, monkeypatch):
    pre = load_pretrained("minilm")
    out, report = tmp_path / "results", tmp_path / "RESULTS.md"
    trained = []
    run_one = study.run_one
    monkeypatch.setattr(study, "run_one", lambda p, run, **k: trained.append(run) or run_one(p, run, **k))
    result = results.run_study(pre, GLUE, out=out, report=report, quick=True, log=None)
    plan = study.quick_plan(GLUE)
    assert len(result["glue"]) == len(plan.methods) * len(plan.seeds)
    assert len(result["low_resource"]) == len(plan.sizes) * len(plan.seeds) * 2
    # the low-resource runs at the GLUE comparison's cap are the same runs: copied, not trained
    assert plan.train_cap in plan.sizes
    assert len(trained) == len(result["glue"]) + len(plan.seeds) * 2 * (len(plan.sizes) - 1)
    same = [r for r in result["low_resource"] if r["train_size"] == plan.train_cap]
    assert same and all(r in result["glue"] for r in same)
    for r in result["glue"]:
        assert r["run_seconds"] >= r["train_seconds"] > 0
    # efficiency: each method in its own process, its peak counted from its training's start,
    # so full fine-tuning's gradients and AdamW moments (3 x 22.7M floats) show; nothing but
    # the records is left on disk
    eff = result["efficiency"]
    assert set(eff) == set(plan.methods)
    assert eff["full"]["peak_memory_mb"] - eff["compacter"]["peak_memory_mb"] > 150
    assert len(study.read_results(out / "efficiency.jsonl")) == len(plan.methods)
    assert not list(out.rglob("*.safetensors"))
    assert result["seconds"] == pytest.approx(
        study.study_seconds(result["glue"], result["low_resource"], eff.values()))
    text = report.read_text()
    assert result["missing"] == {} and "Unfinished" not in text and "provisional" not in text
    for heading in ("## 1. GLUE", "## 2. Little data", "## 3. Efficiency"):
        assert heading in text
    for verdict in ("Verdict, parity:", "Verdict, little data (sst2):", "Verdict, efficiency:"):
        assert verdict in text
    assert (out / "params_vs_score.png").stat().st_size > 0
    assert (out / "low_resource_sst2.png").stat().st_size > 0
    assert (out / "efficiency.png").stat().st_size > 0
    assert "](results/efficiency.png)" in text             # linked from the report's folder
    # a second run finds every run in the results files and trains nothing
    monkeypatch.setattr(study, "run_one", lambda *a, **k: pytest.fail("a finished run ran again"))
    again = results.run_study(pre, GLUE, out=out, report=report, quick=True, log=None)
    assert [r["test"] for r in again["glue"]] == [r["test"] for r in result["glue"]]


def test_the_baselines_paragraph_ranks_them_here_and_in_the_paper():
    plan = study.Plan(tasks=("cola", "sst2"), methods=("full", "adapter", "adapterdrop", "intrinsic-said"))
    means = {"full": 0.5, "adapter": 0.6, "adapterdrop": 0.7, "intrinsic-said": 0.4}
    rows = [{"task": t, "method": m, "mean": v} for t in plan.tasks for m, v in means.items()]
    text = report.baselines_paragraph(plan, rows)[0]
    # the paper, mean of CoLA and SST-2: full 78.185, adapter 78.915, adapterdrop 78.14, said 76.42
    assert "adapterdrop 0.700, 1st (the paper: 0.781, 3rd)" in text
    assert "intrinsic-said 0.400, 4th (the paper: 0.764, 4th)" in text
    assert report.baselines_paragraph(study.Plan(tasks=("cola",), methods=("full",)), rows[:1]) == []
    partial = rows + [{"task": "cola", "method": "prompt-tuning-r", "mean": 0.02, "n": 1}]
    plan = study.Plan(tasks=("cola", "sst2"), methods=plan.methods + ("prompt-tuning-r",))
    assert "prompt-tuning-r on cola: 0.020 (the paper: 0.005)" in report.baselines_paragraph(plan, partial)[0]
