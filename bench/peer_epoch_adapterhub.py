"""The PyTorch side of bench/bench_epoch_peers.py: one epoch of a GLUE task over AdapterHub
(all-MiniLM-L6-v2 with the Compacter++-equivalent block), then one validation pass, on the
examples minicompacter's `finetune` uses, in its batch order or in random order.

Runs in the peer venv (torch 2.13.0, transformers 4.57.x, adapters 1.3.0; see
bench/peer_adapterhub.py), which also needs what importing minicompacter needs
(`peer-env/bin/pip install autograd scipy threadpoolctl "datasets<4.1"`: a datasets that
accepts transformers 4.57's huggingface-hub), with this checkout on PYTHONPATH:
minicompacter's own data functions pick the training subset, the validation split and the
length-grouped batch order, so both sides see the same rows. The loop: a one-layer head on
[CLS], cross-entropy (MSE for STS-B), dropout as the model's config has it (0.1), AdamW (weight decay 0), a linear
schedule with minicompacter's warm-up ratio, clipping to global norm 1. Prints one JSON line:
seconds of the epoch plus the validation pass, peak resident MB, the trainable count.

    PYTHONPATH=. peer-env/bin/python bench/peer_epoch_adapterhub.py sst2 --data-dir "$GLUE_DIR" --order grouped
"""

import argparse
import json
import resource
import time

import numpy as np


def batches(setup_order, enc, torch):
    """Yield (inputs, labels) torch tensors for each list of row indices."""
    for index in setup_order:
        b = enc.batch(index)
        yield ({k: torch.from_numpy(b[k]) for k in ("input_ids", "token_type_ids", "attention_mask")},
               torch.from_numpy(b["labels"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=["sst2", "stsb"])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--order", choices=["grouped", "random"], default="grouped")
    p.add_argument("--train-layer-norms", action="store_true")
    p.add_argument("--lr", type=float, required=True)
    args = p.parse_args()

    import adapters
    import tokenizers
    import torch
    import transformers

    from minicompacter.harness.data.batches import Encoded, batch_order, encode
    from minicompacter.harness.data.tasks import get_task, load_task
    from minicompacter.harness.training.train import TrainConfig
    from peer_adapterhub import CONFIGS, model_dir

    torch.manual_seed(0)
    cfg = TrainConfig()
    task = get_task(args.task)
    regression = task.num_labels == 1
    tok = tokenizers.Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    splits = load_task(args.task, data_dir=args.data_dir, train_size=args.train_size, seed=cfg.seed)
    pad = tok.token_to_id("[PAD]")                 # MiniLM is a BERT: it pads with [PAD]
    tok.enable_padding(pad_id=pad, pad_token="[PAD]")
    enc = {k: Encoded(encode(splits[k], tok, task, max_length=cfg.max_length), pad, regression)
           for k in ("train", "validation")}
    if args.order == "grouped":
        order = batch_order(enc["train"].lengths, cfg.batch_size, seed=[cfg.seed, 0])
    else:
        perm = np.random.default_rng(cfg.seed).permutation(len(enc["train"]))
        order = [perm[i:i + cfg.batch_size] for i in range(0, len(perm), cfg.batch_size)]
    val_order = batch_order(enc["validation"].lengths, cfg.eval_batch_size)

    transformers.logging.set_verbosity_error()
    model = adapters.BertAdapterModel.from_pretrained(str(model_dir()))
    model.add_classification_head("task", num_labels=task.num_labels, layers=1)
    model.add_adapter("task", config=CONFIGS["compacter++-equivalent"](adapters))
    model.train_adapter("task", train_embeddings=False)
    if args.train_layer_norms:
        for name, param in model.named_parameters():
            if "LayerNorm" in name:
                param.requires_grad_(True)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=cfg.weight_decay)
    total, warmup = len(order), round(cfg.warmup_ratio * len(order))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if warmup and s + 1 <= warmup
        else max(0.0, (total - s - 1) / max(1, total - warmup)))

    start = time.perf_counter()
    model.train()
    for inputs, labels in batches(order, enc["train"], torch):
        out = model(**inputs).logits
        loss = (torch.nn.functional.mse_loss(out.squeeze(-1), labels) if regression
                else torch.nn.functional.cross_entropy(out, labels))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        for inputs, _ in batches(val_order, enc["validation"], torch):
            model(**inputs)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "trainable": sum(q.numel() for q in params), "batches": total}))


if __name__ == "__main__":
    main()
