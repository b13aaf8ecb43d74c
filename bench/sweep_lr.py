"""The learning-rate sweep behind the baselines' presets (core/methods.py PRESETS): each
method at two peak rates on SST-2 (seed 0, batch 32, max length 128, 4 epochs), chosen on
the VALIDATION score; the test score is never looked at here. AdapterDrop runs in the
study's setting (2,000 training examples); prompt tuning and Intrinsic-SAID, whose steps
cost several times full fine-tuning's, on 500 (64 updates instead of 252), the sweep's
budget on a shared machine. Runs are kept in a results file (one JSON line each, the
study's format), so the sweep is resumable and the table can be printed again without
training.

    python bench/sweep_lr.py --data-dir "$GLUE_DIR"              # runs what is missing, prints the table
    python bench/sweep_lr.py --data-dir "$GLUE_DIR" --table-only

docs/methods.md ("The baselines' learning rates") holds the last table.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minicompacter.core.methods import PRESETS                                  # noqa: E402
from minicompacter.harness.pretrained import load_pretrained                    # noqa: E402
from minicompacter.harness.study.study import Run, run_grid                     # noqa: E402

TASK, SEED, EPOCHS = "sst2", 0, 4
# per method: (training examples, the rates tried): the paper's rate (core/methods.py
# paper_lr) and the other of the two the paper uses for its baselines (3e-4 / 3e-3 for the
# adapters; 3e-2 / 3e-1 for prompt tuning, -R's and -T's), or a decade below (Intrinsic-SAID)
RATES = {"adapterdrop": (2000, (3e-4, 3e-3)),
         "prompt-tuning-r": (500, (3e-2, 3e-1)),
         "prompt-tuning-t": (500, (3e-2, 3e-1)),
         "intrinsic-said": (500, (3e-3, 3e-2))}


def runs(methods):
    return [Run(TASK, m, RATES[m][0], SEED, epochs=EPOCHS, lr=lr) for m in methods
            for lr in RATES[m][1]]


def table(records):
    lines = ["| method | training examples | peak lr | validation | the paper's lr | chosen |",
             "|---|---|---|---|---|---|"]
    best = {}
    for r in records:
        if r["method"] not in best or r["validation"]["score"] > best[r["method"]]["validation"]["score"]:
            best[r["method"]] = r
    for r in records:
        m = r["method"]
        lines.append(f"| {m} | {r['train_size']} | {r['lr']:g} | {r['validation']['score']:.4f} | "
                     f"{PRESETS[m].paper_lr:g} | {'yes' if best[m] is r else ''} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="the GLUE directory")
    p.add_argument("--results", default=str(ROOT / "results" / "lr_sweep.jsonl"))
    p.add_argument("--methods", default=",".join(RATES))
    p.add_argument("--table-only", action="store_true", help="print the table, train nothing")
    args = p.parse_args(argv)
    pretrained = load_pretrained("minilm")
    # log=None: run_grid's progress lines show test scores, which the choice must not see
    records = run_grid(pretrained, runs(args.methods.split(",")), data_dir=args.data_dir,
                       results=args.results, model_name="minilm", train=not args.table_only,
                       log=None)
    print(table(records))


if __name__ == "__main__":
    main()
