"""Taking an adapter elsewhere: a minicompacter checkpoint written as the files AdapterHub,
peft or transformers load themselves.

    export_adapter(checkpoint_dir, "adapters", out)      # AdapterHub: the bottleneck methods
    export_adapter(checkpoint_dir, "peft", out)          # peft: LoRA
    export_adapter(checkpoint_dir, "transformers", out)  # a BertModel: full, BitFit, LoRA merged

What a target cannot hold is carried another way, and the summary `export_adapter` returns
(which `python -m minicompacter export` prints) says how:
  - trained layer norms (the adapter methods train them, as the paper does): AdapterHub's
    files hold only the adapter, so the base model with the trained layer norms is written
    beside it, in out/base/, as a BertModel directory for `BertAdapterModel.from_pretrained`;
  - the head, where the target has no head of its own (peft, transformers) or none that
    reads the mean of the tokens (AdapterHub's read [CLS]): HEAD_WEIGHTS + HEAD_INFO in out/,
    documented in HEAD_INFO;
  - LoRA for transformers: merged into the weights, W + (alpha / r) A B (peft's
    merge_and_unload).
A method the target has no counterpart for is refused with the target that takes it.
Adapter-LowRank goes to AdapterHub as a PHM layer with n = 1 (W = 1 kron s t).
"""

import json
from pathlib import Path

import numpy as onp

from ..core.methods import AdapterConfig, BitFitConfig, FullConfig, LoRAConfig
from ..core.paths import HEAD, LORA, is_layer_norm
from ..core.tree import flatten, leaves, merge, split, unflatten
from .checkpoint import atomic_write, checkpoint_base, load_adapter

TARGETS = ("adapters", "peft", "transformers")
HEAD_WEIGHTS, HEAD_INFO = "minicompacter_head.safetensors", "minicompacter_head.json"
BASE = "base"            # out/base/: the base model with the trained layer norms, beside an adapter


class ExportError(ValueError):
    """A checkpoint the target cannot hold; the message says what to do instead."""


def export_adapter(checkpoint_dir, to, out, *, pretrained=None, name=None):
    """Write the checkpoint in checkpoint_dir as `to` ("adapters", "peft", "transformers")
    loads it, into out. Returns {"written": [paths], "notes": [what was carried how]}."""
    if to not in TARGETS:
        raise ExportError(f"Unknown target {to!r}; export to one of {', '.join(TARGETS)}.")
    pretrained = pretrained or checkpoint_base(checkpoint_dir)
    model, trainable, _, config = load_adapter(checkpoint_dir, pretrained)
    method = model.method.config
    check_target(method, to)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hub_id = pretrained.hub_id or (config.get("base_model") or {}).get("name") or pretrained.name
    labels = label_names(config)
    if to == "adapters":
        return _to_adapterhub(out, trainable, model, pretrained, name or adapter_name(method, config),
                              hub_id, labels)
    if to == "peft":
        from . import peft_lora
        written = peft_lora.write(out, trainable, model, base_model_name_or_path=hub_id)
        return _with_head(out, written, trainable, model, labels, config, "peft")
    params = merged_params(pretrained, trainable, model)
    from .bert_files import write_bert_directory
    written = write_bert_directory(out, params, pretrained)
    notes = ["LoRA merged into the weights: W + (alpha / r) A B"] if isinstance(method, LoRAConfig) else []
    summary = _with_head(out, written, trainable, model, labels, config, "transformers")
    summary["notes"] = notes + summary["notes"]
    return summary


# the method configs each target takes
TAKES = {"adapters": (AdapterConfig,), "peft": (LoRAConfig,),
         "transformers": (FullConfig, BitFitConfig, LoRAConfig)}
WHY_NOT = {"adapters": "AdapterHub's bottleneck adapter files hold the adapter methods only",
           "peft": "peft's files hold LoRA only",
           "transformers": "an adapter cannot be merged into the weights (it is nonlinear)"}


def check_target(method, to):
    """ExportError unless the target takes the method; the message names one that does."""
    if isinstance(method, TAKES[to]):
        return
    instead = next(t for t in TARGETS if isinstance(method, TAKES[t]))
    raise ExportError(f"{method.method} cannot be exported to {to}: {WHY_NOT[to]}. Export it "
                      f"with --to {instead}.")


def adapter_name(method, config):
    """The adapter's name in AdapterHub's files: the task, else the method (no "+")."""
    return (config.get("task") or method.method).replace("+", "p").replace("-", "_")


def label_names(config):
    """The head's label names: the task's, an imported head's, or none."""
    if config.get("label_names"):
        return list(config["label_names"])
    if config.get("task"):
        from .data import get_task
        return list(get_task(config["task"]).label_names)
    return []


def _to_adapterhub(out, trainable, model, pretrained, name, hub_id, labels):
    from . import adapterhub

    norms, adapter = split(trainable, is_layer_norm)
    head_here = model.pooling == "cls" and HEAD in adapter
    written = adapterhub.write(out, adapter if head_here else _without_head(adapter), model,
                               name=name, model_name=hub_id, label_names=labels)
    summary = {"written": [str(out / f) for f in written], "notes": []}
    if flatten(norms):
        from .bert_files import write_bert_directory
        base = merge(split(pretrained.params, is_layer_norm)[1], norms)
        files = write_bert_directory(out / BASE, base, pretrained)
        summary["written"] += [str(out / BASE / f) for f in files]
        summary["notes"].append(f"the trained layer norms: in {out / BASE}, the base model to load "
                                f"the adapter on (AdapterHub's adapter files do not hold them)")
    if HEAD in adapter and not head_here:
        summary = _head_beside(out, summary, adapter[HEAD], model, labels, "AdapterHub's heads read "
                               "[CLS], this one the mean over the tokens")
    elif head_here:
        summary["notes"].append(f"the head: AdapterHub's {model.head_layers}-layer classification "
                                f"head on [CLS]")
    return summary


def _without_head(tree):
    return {k: v for k, v in tree.items() if k != HEAD}


def _with_head(out, written, trainable, model, labels, config, target):
    summary = {"written": [str(out / f) for f in written], "notes": []}
    if HEAD in trainable:
        summary = _head_beside(out, summary, trainable[HEAD], model, labels,
                               f"{target}'s files have no place for minicompacter's head")
    return summary


def _head_beside(out, summary, head, model, labels, why):
    """HEAD_WEIGHTS (PyTorch's layout: weight (labels, d), bias; hidden.weight, hidden.bias
    for a two-layer head) and HEAD_INFO, which says how to apply it."""
    from safetensors.numpy import save

    tensors = {("" if path[0] != "hidden" else "hidden.") + ("weight" if path[-1] == "w" else "bias"):
               onp.ascontiguousarray(leaf.T if path[-1] == "w" else leaf, dtype=onp.float32)
               for path, leaf in leaves(head)}
    pooled = ("the mean of last_hidden_state over the real tokens (attention_mask)"
              if model.pooling == "mean" else "last_hidden_state[:, 0] ([CLS])")
    info = {"pooling": model.pooling, "num_labels": model.num_labels,
            "layers": model.head_layers, "label_names": labels,
            "computes": f"pooled = {pooled}; "
                        + ("pooled = tanh(pooled @ hidden.weight.T + hidden.bias); "
                           if model.head_layers == 2 else "")
                        + "logits = pooled @ weight.T + bias (num_labels 1: the score)"}
    atomic_write(out / HEAD_WEIGHTS, save(tensors))
    atomic_write(out / HEAD_INFO, json.dumps(info, indent=2))
    summary["written"] += [str(out / HEAD_WEIGHTS), str(out / HEAD_INFO)]
    summary["notes"].append(f"the head: in {out / HEAD_WEIGHTS}, described in {out / HEAD_INFO} "
                            f"({why})")
    return summary


def merged_params(pretrained, trainable, model):
    """The encoder's parameters with what was trained put in: the unfrozen pretrained weights
    (full fine-tuning, BitFit's biases) as trained, and LoRA's update merged into its targets,
    w + (alpha / r) A B  (w: (d_in, d_out), as minicompacter stores it)."""
    flat = dict(flatten(pretrained.params))
    for name, leaf in flatten(trainable).items():
        if name in flat:
            flat[name] = leaf
    method = model.method.config
    if isinstance(method, LoRAConfig):
        for i, layer in enumerate(trainable["layers"]):
            for target, p in layer[LORA].items():
                key = f"layers.{i}.attention.{target}.w"
                flat[key] = flat[key] + (p["A"] @ p["B"]) * (method.alpha / method.r)
    return unflatten(flat)


def read_head_beside(directory, model, trainable, frozen, info):
    """(model, trainable, frozen, info) with the head `_head_beside` wrote in directory, if
    any: the other half of a peft or AdapterHub export that could not hold the head."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    if not (directory / HEAD_INFO).exists() or model.num_labels:
        return model, trainable, frozen, info
    head_info = json.loads((directory / HEAD_INFO).read_text())
    tensors = load_file(str(directory / HEAD_WEIGHTS))
    head = {"w": tensors["weight"].T, "b": tensors["bias"]}
    if "hidden.weight" in tensors:
        head["hidden"] = {"w": tensors["hidden.weight"].T, "b": tensors["hidden.bias"]}
    model = model._replace(num_labels=head_info["num_labels"], pooling=head_info["pooling"],
                           head_layers=head_info["layers"])
    info = dict(info, num_labels=head_info["num_labels"], pooling=head_info["pooling"],
                head_layers=head_info["layers"], label_names=head_info["label_names"])
    return model, dict(trainable, **{HEAD: head}), frozen, info
