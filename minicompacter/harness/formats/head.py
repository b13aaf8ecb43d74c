"""minicompacter's head, written beside an export whose target has no place for it.

peft's and transformers' files hold no classification head, and AdapterHub's heads read
[CLS], not the mean over the tokens that minicompacter pools by default. Such a head goes
beside the export as two files:

    minicompacter_head.safetensors  weight (num_labels, d), bias (num_labels,): PyTorch's
                                    layout; a two-layer head adds hidden.weight (d, d),
                                    hidden.bias (d,), applied first with tanh
    minicompacter_head.json         {"pooling", "num_labels", "layers", "label_names",
                                     "computes": how to apply it, in one line}

`write_head` writes them; `read_head` reads them back onto a model loaded without a head,
every field and tensor checked (files from outside are untrusted, ours included): the JSON's
types and ranges, the tensors' names, shapes against num_labels, layers and the model's width
(before anything is built), dtypes and values.
"""

import json
from pathlib import Path

from ...core.paths import HEAD
from ...core.tree import leaves
from .files import (FormatError, array, atomic_write, integer, read_json_object, read_tensors,
                    tensor_bytes, text)

HEAD_WEIGHTS, HEAD_INFO = "minicompacter_head.safetensors", "minicompacter_head.json"
FIELDS = {"num_labels": integer(1), "pooling": text("cls", "mean"), "layers": integer(1, 2),
          "label_names": array(text())}
FIX = "the head beside the export is damaged: export the checkpoint again (export --replace)."


def head_tensors(head):
    """{PyTorch name: array (out, in)} of a head tree {w, b[, hidden: {w, b}]}."""
    return {("" if path[0] != "hidden" else "hidden.") + ("weight" if path[-1] == "w" else "bias"):
            leaf.T if path[-1] == "w" else leaf for path, leaf in leaves(head)}


def head_info(model, labels):
    """What HEAD_INFO holds: the pooling, sizes, label names and how to apply the head."""
    skip = getattr(model.method.config, "prompt_length", 0)   # prompt tuning's vectors come first
    own = f"last_hidden_state[:, {skip}:] (after the {skip} virtual tokens)" if skip else "last_hidden_state"
    pooled = (f"the mean of {own} over the real tokens (attention_mask)"
              if model.pooling == "mean" else f"last_hidden_state[:, {skip}] ([CLS])")
    return {"pooling": model.pooling, "num_labels": model.num_labels,
            "layers": model.head_layers, "label_names": labels,
            "computes": f"pooled = {pooled}; "
                        + ("pooled = tanh(pooled @ hidden.weight.T + hidden.bias); "
                           if model.head_layers == 2 else "")
                        + "logits = pooled @ weight.T + bias (num_labels 1: the score)"}


def write_head(out, head, model, labels):
    """HEAD_WEIGHTS and HEAD_INFO in `out` (every tensor finite, or none written); returns
    their names."""
    atomic_write(Path(out) / HEAD_WEIGHTS, tensor_bytes(head_tensors(head)))
    atomic_write(Path(out) / HEAD_INFO, json.dumps(head_info(model, labels), indent=2))
    return [HEAD_WEIGHTS, HEAD_INFO]


def expected_shapes(meta, d):
    """{PyTorch name: shape} of the head HEAD_INFO describes on a model of width d."""
    shapes = {"weight": (meta["num_labels"], d), "bias": (meta["num_labels"],)}
    if meta["layers"] == 2:
        shapes.update({"hidden.weight": (d, d), "hidden.bias": (d,)})
    return shapes


def read_head(directory, model, trainable, frozen, info):
    """(model, trainable, frozen, info) with the head `write_head` wrote in directory, if
    any: the other half of an export whose target could not hold the head. FormatError,
    naming the file, for any field or tensor that is not what HEAD_INFO describes."""
    directory = Path(directory)
    if not (directory / HEAD_INFO).exists() or model.num_labels:
        return model, trainable, frozen, info
    meta = read_json_object(directory / HEAD_INFO, FIELDS, error=FormatError, fix=FIX)
    if meta["label_names"] and len(meta["label_names"]) != meta["num_labels"]:
        raise FormatError(f"{directory / HEAD_INFO}: {len(meta['label_names'])} label_names for "
                          f"num_labels {meta['num_labels']}; {FIX}")
    tensors = read_tensors(directory / HEAD_WEIGHTS, error=FormatError, fix=FIX)
    want = expected_shapes(meta, model.encoder_config.hidden_size)
    got = {name: t.shape for name, t in tensors.items()}
    if got != want:
        raise FormatError(f"{directory / HEAD_WEIGHTS} holds {got}, and the head "
                          f"{HEAD_INFO} describes ({meta['layers']} layer(s), "
                          f"{meta['num_labels']} labels, width "
                          f"{model.encoder_config.hidden_size}) is {want}; {FIX}")
    head = {"w": tensors["weight"].T, "b": tensors["bias"]}
    if meta["layers"] == 2:
        head["hidden"] = {"w": tensors["hidden.weight"].T, "b": tensors["hidden.bias"]}
    model = model._replace(num_labels=meta["num_labels"], pooling=meta["pooling"],
                           head_layers=meta["layers"])
    info = dict(info, num_labels=meta["num_labels"], pooling=meta["pooling"],
                head_layers=meta["layers"], label_names=meta["label_names"])
    return model, dict(trainable, **{HEAD: head}), frozen, info
