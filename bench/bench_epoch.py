"""An epoch over SST-2's training split with length bucketing against padding to 128
tokens, and examples per second of `finetune` and `evaluate` on real SST-2.

Needs the GLUE files (GLUE_DIR or --data-dir) and the MiniLM package. One training step is
`train.train_step` as `finetune` runs it (Compacter++ by default, dropout on, batch 32,
AdamW). Bucketed: the batches of `data.batch_order` (pools of 50 batches sorted by length,
each padded to its longest row). Padded: the same batches, every one padded to 128 tokens
(the mask marks the padding). The padded epoch is extrapolated from a timed sample of its
batches: every padded batch has the same shape, 32 x 128, so its step time does not
depend on which rows it holds; the epoch time is the median step time over the sample
times the number of batches. The bucketed epoch is timed in full unless --bucketed-sample
is given (then extrapolated the same way from a uniform random sample of its batches,
whose lengths differ, so less exactly).

Throughput: `finetune` on a stratified subset (--finetune-size examples, 1 epoch; its
time includes one validation pass, as every epoch of a real run does), and `evaluate`
(`train.predictions`, batch 64, sorted by length) over the same subset.

When the environment forces an OpenBLAS kernel (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE), the
script runs twice, as forced and without those variables, each run appending its own
section (_common.each_kernel).

    python bench/bench_epoch.py --data-dir "$GLUE_DIR"
"""

import argparse
import os
import statistics
import time

import numpy as np

from _common import append_section, each_kernel, machine, start
import minicompacter                                      # noqa: E402
from minicompacter.harness.data.batches import Encoded, batch_order, encode, pad_token  # noqa: E402
from minicompacter.harness.data.tasks import get_task, load_task  # noqa: E402
from minicompacter.core.model import init_model                # noqa: E402
from minicompacter.core.optim import init_adamw                # noqa: E402
from minicompacter.harness.training.evaluate import predictions  # noqa: E402
from minicompacter.harness.training.train import TrainConfig, finetune, train_step  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("GLUE_DIR"), help="GLUE directory (default: GLUE_DIR)")
    p.add_argument("--method", default="compacter++")
    p.add_argument("--padded-sample", type=int, default=20, help="padded batches timed (default %(default)s)")
    p.add_argument("--bucketed-sample", type=int, default=0,
                   help="bucketed batches timed; 0 times the whole epoch (default)")
    p.add_argument("--finetune-size", type=int, default=2000, help="examples for the throughput runs")
    p.add_argument("--append", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("needs the GLUE files: --data-dir DIR or GLUE_DIR")
    return args


def pad_to(batch, T):
    """The batch with every row padded to T tokens (ids 0, mask 0)."""
    B, t = batch["input_ids"].shape
    out = dict(batch)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        wide = np.zeros((B, T), batch[key].dtype)
        wide[:, :t] = batch[key]
        out[key] = wide
    return out


def time_steps(enc, batches, pretrained, method, T=None):
    """Seconds of each training step over `batches` (lists of row indices)."""
    cfg = TrainConfig()
    model, trainable, frozen = init_model(np.random.default_rng(0), pretrained, method,
                                          num_labels=2, pooling=cfg.pooling)
    opt = init_adamw(trainable)
    times = []
    for step, index in enumerate(batches):
        batch = enc.batch(index)
        if T is not None:
            batch = pad_to(batch, T)
        t0 = time.perf_counter()
        _, _, (trainable, opt) = train_step(trainable, opt, frozen, batch, model, 1e-3, cfg,
                                            np.random.default_rng([0, 1, step]))
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None):
    args = parse_args(argv)
    if each_kernel():               # OpenBLAS's kernel forced: one run per kernel
        return
    start()
    notes = machine()
    print("\n".join(notes), flush=True)
    pre = minicompacter.load_pretrained("minilm")
    task = get_task("sst2")
    train = load_task("sst2", data_dir=args.data_dir)["train"]
    enc = Encoded(encode(train, pre.tokenizer, task, max_length=128), pad_token(pre.tokenizer)[1])
    order = batch_order(enc.lengths, 32, seed=[0, 0])
    n = len(order)
    tokens = [int(enc.lengths[b].max()) for b in order]
    print(f"SST-2 train: {len(enc)} examples, {n} batches of 32, mean length {enc.lengths.mean():.1f} "
          f"tokens, mean padded batch length {statistics.fmean(tokens):.1f}", flush=True)
    rng = np.random.default_rng(0)

    padded_sample = [order[i] for i in rng.choice(n, args.padded_sample, replace=False)]
    padded = time_steps(enc, padded_sample, pre, args.method, T=128)[1:]       # first: warm-up
    padded_epoch = statistics.median(padded) * n
    print(f"padded to 128: {statistics.median(padded):.3f} s per step -> epoch {padded_epoch:.0f} s", flush=True)

    if args.bucketed_sample:
        sample = [order[i] for i in rng.choice(n, args.bucketed_sample, replace=False)]
        bucketed = time_steps(enc, sample, pre, args.method)
        bucketed_epoch, how = statistics.fmean(bucketed) * n, f"{len(sample)} sampled, extrapolated"
    else:
        bucketed = time_steps(enc, order, pre, args.method)
        bucketed_epoch, how = sum(bucketed), "all timed"
    print(f"bucketed: {bucketed_epoch:.0f} s ({how})", flush=True)

    # throughput of finetune and evaluate on a subset
    cfg = TrainConfig(epochs=1, progress=False)
    m = finetune(pre, "sst2", args.method, cfg, data_dir=args.data_dir, train_size=args.finetune_size)
    sub = load_task("sst2", data_dir=args.data_dir, train_size=args.finetune_size)["train"]
    sub_enc = Encoded(encode(sub, pre.tokenizer, task, max_length=128), pad_token(pre.tokenizer)[1])
    model, trainable, frozen = init_model(np.random.default_rng(0), pre, args.method, pooling=cfg.pooling)
    t0 = time.perf_counter()
    predictions(trainable, frozen, sub_enc, model, 64)
    eval_seconds = time.perf_counter() - t0

    text = "\n".join([
        "| what | batches | timed | tokens per row | seconds | examples/s |",
        "|---|---|---|---|---|---|",
        f"| epoch, padded to 128 | {n} | {len(padded)} (median step x {n}) | 128 | "
        f"{padded_epoch:.0f} | {len(enc) / padded_epoch:.0f} |",
        f"| epoch, length-bucketed | {n} | {how} | {statistics.fmean(tokens):.1f} (mean padded) | "
        f"{bucketed_epoch:.0f} | {len(enc) / bucketed_epoch:.0f} |",
        f"| speed-up of bucketing | | | | {padded_epoch / bucketed_epoch:.2f}x | |",
        f"| `finetune`, {args.finetune_size} examples, 1 epoch (+1 validation pass) | "
        f"{-(-args.finetune_size // 32)} | all | bucketed | {m['train_seconds']:.1f} | "
        f"{args.finetune_size / m['train_seconds']:.0f} |",
        f"| `evaluate` (predictions, batch 64), {args.finetune_size} examples | "
        f"{-(-args.finetune_size // 64)} | all | sorted | {eval_seconds:.1f} | "
        f"{args.finetune_size / eval_seconds:.0f} |"])
    print("\n" + text)
    if args.append:
        append_section(f"SST-2 epoch: length bucketing against padding to 128, {args.method}", notes + [
            f"SST-2 train from {args.data_dir}: {len(enc)} examples, mean {enc.lengths.mean():.1f} "
            "tokens; training step = train.train_step with dropout, batch 32",
            "padded epoch extrapolated: median step time over the timed sample (the first step "
            "dropped as warm-up) x number of batches (all padded batches have the same shape)"],
            text)


if __name__ == "__main__":
    main()
