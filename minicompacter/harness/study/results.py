"""The study behind RESULTS.md, run end to end: its runs (study.py), its figures and its
report (report.py), in one call.

    python -m minicompacter study --data-dir "$GLUE_DIR"      # what cli.py runs
    run_study(pretrained, data_dir, out="results", report="RESULTS.md")
"""

from pathlib import Path

from .report import draw_figures, model_facts, write_report
from .study import efficiency, full_plan, machine_info, quick_plan, run_grid, study_seconds


def run_study(pretrained, data_dir, *, out="results", report="RESULTS.md", quick=False,
              model_name="minilm", train=True, log=print):
    """The whole study: the GLUE comparison, the low-resource study, the efficiency table,
    the figures and the report. Finished runs in `out` are reused. train=False writes the
    report and figures from the runs recorded so far, training nothing (an unfinished
    study's report says what is missing)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = quick_plan(data_dir) if quick else full_plan(data_dir)
    grid = {"data_dir": data_dir, "model_name": model_name, "train": train, "log": log}
    glue = run_grid(pretrained, plan.glue_runs(), results=out / "glue.jsonl", **grid)
    low = run_grid(pretrained, plan.low_resource_runs(), results=out / "low_resource.jsonl",
                   known={r["key"]: r for r in glue}, **grid)
    eff = efficiency(plan, data_dir, out, model_name, train=train, log=log)
    missing = {"GLUE": len(plan.glue_runs()) - len(glue),
               "low_resource": len(plan.low_resource_runs()) - len(low),
               "efficiency": len(plan.timed_methods()) - len(eff)}
    seconds = study_seconds(glue, low, eff.values())
    command = "python -m minicompacter study --data-dir DIR" + (" --quick" if quick else "")
    figures = draw_figures(plan, glue, low, eff, out, report)
    write_report(report, plan, glue, low, eff, figures, model=model_facts(pretrained, model_name),
                 machine=machine_info(), seconds=seconds, commands=[command], results=out,
                 missing=missing)
    return {"glue": glue, "low_resource": low, "efficiency": eff, "seconds": seconds,
            "missing": {part: n for part, n in missing.items() if n}}
