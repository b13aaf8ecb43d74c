"""The command line: python -m minicompacter COMMAND ...

Commands so far:
  count  trainable parameters of a method on a model, analytic from the shapes and, where
         the model's tree exists (minilm, tiny, a checkpoint directory), measured too;
         `count --model t5-base --method all` prints the Compacter paper's table.
  demo   the main job on embedded defaults. Until training lands (see the issues), it shows
         the pretrained encoder at work: sentences encoded by all-MiniLM-L6-v2 in NumPy,
         mean-pooled, compared by cosine similarity.
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


def cmd_demo(args):
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
    from .methods import AdapterConfig, method_config
    from .model import init_model

    preset = method_config(name)
    overrides = {}
    if isinstance(preset, AdapterConfig):
        overrides["reduction_factor"] = args.reduction_factor
        if preset.projection == "phm":
            overrides["phm_dim"] = args.phm_dim
    config = method_config(name, **overrides)
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


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m minicompacter",
        description="Compacter and its relatives in NumPy + autograd.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="the main job on embedded defaults",
                          description="Encode a few sentences with the pretrained encoder and "
                                      "compare them by cosine similarity.")
    demo.add_argument("--model", default="minilm",
                      help="minilm (default), tiny, a checkpoint directory or a hub id")
    demo.set_defaults(func=cmd_demo)

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

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (LoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
