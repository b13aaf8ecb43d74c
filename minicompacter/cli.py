"""The command line: python -m minicompacter COMMAND ...

Commands so far:
  demo   the main job on embedded defaults. Until training lands (see the issues), it shows
         the pretrained encoder at work: sentences encoded by all-MiniLM-L6-v2 in NumPy,
         mean-pooled, compared by cosine similarity.
"""

import argparse
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
    return parser


def main(argv=None):
    from .pretrained import LoadError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
