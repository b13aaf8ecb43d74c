"""The one door in and out: which format a directory holds, `load_adapter` for every format,
the base model a checkpoint names, and `export_adapter` to every target.

    load_adapter(DIR)          minicompacter's checkpoint (native.py; 0.1.0's too),
                               AdapterHub's adapter (adapterhub.py), peft's (peft.py)
    checkpoint_base(DIR)       the pretrained model a checkpoint of any of these formats names
    export_adapter(DIR, "adapters", out)      AdapterHub: the bottleneck methods
    export_adapter(DIR, "peft", out)          peft: LoRA, LoKr
    export_adapter(DIR, "transformers", out)  a BertModel: full, BitFit, and every update
                                              beside a weight (LoRA, LoKr, the PHM update)
                                              merged into it (core/updates.merge_updates)

The format modules below import only the file layer (files.py), never each other or this
module; this module imports them all.

What a target cannot hold is carried another way, and the summary `export_adapter` returns
(which `python -m minicompacter export` prints) says how:
  - trained layer norms (the adapter methods train them, as the paper does): AdapterHub's
    files hold only the adapter, so the base model with the trained layer norms is written
    beside it, in out/base/, as a BertModel directory for `BertAdapterModel.from_pretrained`;
  - the head, where the target has no head of its own (peft, transformers) or none that
    reads the mean of the tokens (AdapterHub's read [CLS]): head.py's two files in out/;
  - LoRA, LoKr and the PHM update for transformers: merged into the weights, W + dW (peft's
    merge_and_unload for the first two); an adapter cannot be, it is nonlinear.
A method the target has no counterpart for is refused with the reason and the target that
takes it.
Adapter-LowRank goes to AdapterHub as a PHM layer with n = 1 (W = 1 kron s t).
"""

from pathlib import Path

import numpy as onp

from ...core.methods import AdapterConfig, LoKrConfig, LoRAConfig
from ...core.model import kept_fixed
from ...core.paths import HEAD, is_layer_norm
from ...core.tree import flatten, merge, split
from ...core.updates import merge_refusal, merge_updates
from ..data.tasks import get_task
from ..pretrained import BUILTIN, HUB_IDS, load_pretrained, weights_digest
from . import adapterhub, native, peft
from .files import LoadError, json_file
from .head import HEAD_INFO, HEAD_WEIGHTS, read_head, write_head
from .transformers import write_bert_directory

TARGETS = ("adapters", "peft", "transformers")
BASE = "base"            # out/base/: the base model with the trained layer norms, beside an adapter
FOREIGN = {"adapterhub": adapterhub, "peft": peft}


class ExportError(ValueError):
    """A checkpoint the target cannot hold; the message says what to do instead."""


# --- reading ---------------------------------------------------------------------------------

def checkpoint_format(directory):
    """"minicompacter", "minicompacter-0.1", "adapterhub", "peft", or None (nothing here).
    This version's native files first, then AdapterHub's, then peft's, then 0.1.0's (whose
    file names are peft's)."""
    directory = Path(directory)
    if native.kind(directory) == "minicompacter":
        return "minicompacter"
    if adapterhub.is_adapterhub(directory):
        return "adapterhub"
    if peft.is_peft(directory):
        return "peft"
    return native.kind(directory)


def load_adapter(directory, pretrained=None):
    """(model, trainable, frozen, config) from a checkpoint directory: minicompacter's own
    (this version's or 0.1.0's), AdapterHub's or peft's. The base model is found from what
    the checkpoint records (checkpoint_base) unless given; it must be the one the
    checkpoint was trained on. For another library's adapter, config says what was read
    (its "format", "num_labels" and "label_names" of the head it carried, none: 0), and a
    head written beside it by `export_adapter` is loaded too."""
    directory = Path(directory)
    kind = checkpoint_format(directory)
    if kind is None:
        raise native.CheckpointError(
            f"{directory / native.CONFIG} does not exist; give the directory finetune --out "
            f"wrote, or an AdapterHub or peft adapter directory.")
    pretrained = pretrained or checkpoint_base(directory)
    if kind in FOREIGN:
        return read_head(directory, *FOREIGN[kind].read(directory, pretrained))
    return native.read(directory, pretrained)


def checkpoint_base(directory):
    """The pretrained model a checkpoint directory names (any of the formats load_adapter
    reads), found as `load_base` finds it."""
    directory = Path(directory)
    kind = checkpoint_format(directory)
    if kind in FOREIGN:
        if (directory / BASE / "config.json").exists():     # written beside it by export
            return load_pretrained(directory / BASE)
        config = json_file(directory / FOREIGN[kind].CONFIG)
        name = config.get("model_name" if kind == "adapterhub" else "base_model_name_or_path")
        return load_base({"name": name, "hub_id": name}, source=str(directory))
    base, _, _ = native.parts(directory, native.read_config(directory))
    return load_base(base, source=str(directory))


def base_candidates(identity):
    """The ways to find a recorded base model, in the order they are tried: a built-in name
    (the packaged copy), the built-in model whose hub id it is, the recorded directory, the
    hub id (the only one that needs the hub)."""
    name, hub_id, path = identity.get("name"), identity.get("hub_id"), identity.get("path")
    by_hub = {v: k for k, v in HUB_IDS.items()}
    out = []
    for candidate in (name if name in BUILTIN else None, by_hub.get(hub_id), by_hub.get(name),
                      path if path and Path(path).is_dir() else None, hub_id):
        if candidate and candidate not in out:
            out.append(candidate)
    return out


def load_base(identity, *, source="the checkpoint", dtype=onp.float32):
    """The pretrained model a checkpoint's identity names: the first candidate that loads and
    whose weights have the recorded digest (any, if none was recorded)."""
    tried = []
    for candidate in base_candidates(identity):
        try:
            pretrained = load_pretrained(candidate, dtype=dtype)
        except LoadError as e:
            tried.append(f"{candidate!r}: {str(e).split(';')[0]}")
            continue
        if identity.get("digest") in (None, weights_digest(pretrained.params)):
            return pretrained._replace(name=identity.get("name") or pretrained.name)
        tried.append(f"{candidate!r}: other weights (digest differs)")
    raise LoadError(f"{source} was trained on base model {identity.get('name')!r}, which could "
                    f"not be found here ({'; '.join(tried) or 'nothing to try'}). Give the base "
                    f"model explicitly (--model DIR, or the `pretrained` argument).")


# --- writing ---------------------------------------------------------------------------------

def export_adapter(checkpoint_dir, to, out, *, pretrained=None, name=None):
    """Write the checkpoint in checkpoint_dir as `to` ("adapters", "peft", "transformers")
    loads it, into out. Returns {"written": [paths], "notes": [what was carried how]}."""
    if to not in TARGETS:
        raise ExportError(f"Unknown target {to!r}; export to one of {', '.join(TARGETS)}.")
    pretrained = pretrained or checkpoint_base(checkpoint_dir)
    model, trainable, frozen, config = load_adapter(checkpoint_dir, pretrained)
    method = model.method.config
    check_target(model.method, to)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hub_id = pretrained.hub_id or (config.get("base_model") or {}).get("name") or pretrained.name
    labels = label_names(config)
    if to == "adapters":                # with the rules the method keeps fixed (learn_phm False)
        return _to_adapterhub(out, merge(trainable, kept_fixed(model, frozen)), model, pretrained,
                              name or adapter_name(method, config), hub_id, labels)
    if to == "peft":
        written = peft.write(out, trainable, model, base_model_name_or_path=hub_id)
        return _with_head(out, written, trainable, model, labels, config, "peft")
    params = merged_params(trainable, frozen, model)
    written = write_bert_directory(out, params, pretrained)
    notes = [f"{method.method} merged into the weights: W + dW"] if model.method.delta else []
    summary = _with_head(out, written, trainable, model, labels, config, "transformers")
    summary["notes"] = notes + summary["notes"]
    return summary


# the method configs each target takes ("transformers": whatever merges, `merge_refusal`)
TAKES = {"adapters": (AdapterConfig,), "peft": (LoRAConfig, LoKrConfig)}
WHY_NOT = {"adapters": "AdapterHub's bottleneck adapter files hold the adapter methods only",
           "peft": "peft's files hold LoRA and LoKr only (peft has no PHM update)"}


def takes(method, to):
    """Whether a target takes a method (a Method): AdapterHub and peft by kind, transformers
    whatever merges into the weights."""
    if to == "transformers":
        return merge_refusal(method) is None
    return isinstance(method.config, TAKES[to])


def check_target(method, to):
    """ExportError unless the target takes the method (a Method), and holds its options; the
    message says why and names a target that takes it."""
    if takes(method, to):
        if to == "adapters":
            try:
                adapterhub.bn_config(method.config)
            except adapterhub.ExportError as e:
                raise ExportError(f"{method.config.method} cannot be exported to adapters: "
                                  f"{e}") from None
        return
    why = (f"it cannot be merged into the weights: {merge_refusal(method)}"
           if to == "transformers" else WHY_NOT[to])
    instead = next(t for t in TARGETS if takes(method, t))
    raise ExportError(f"{method.config.method} cannot be exported to {to}: {why.rstrip('.')}. "
                      f"Export it with --to {instead}.")


def adapter_name(method, config):
    """The adapter's name in AdapterHub's files: the task, else the method (no "+")."""
    return (config.get("task") or method.method).replace("+", "p").replace("-", "_")


def label_names(config):
    """The head's label names: the task's, an imported head's, or none."""
    if config.get("label_names"):
        return list(config["label_names"])
    if config.get("task"):
        return list(get_task(config["task"]).label_names)
    return []


def _to_adapterhub(out, trainable, model, pretrained, name, hub_id, labels):
    norms, adapter = split(trainable, is_layer_norm)
    head_here = model.pooling == "cls" and HEAD in adapter
    written = adapterhub.write(out, adapter if head_here else _without_head(adapter), model,
                               name=name, model_name=hub_id, label_names=labels)
    summary = {"written": [str(out / f) for f in written], "notes": []}
    if flatten(norms):
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
    """The head beside the export (head.py), noted in the summary."""
    summary["written"] += [str(out / f) for f in write_head(out, head, model, labels)]
    summary["notes"].append(f"the head: in {out / HEAD_WEIGHTS}, described in {out / HEAD_INFO} "
                            f"({why})")
    return summary


def merged_params(trainable, frozen, model):
    """The encoder's parameters with what was trained put in (core/updates.merge_updates):
    the unfrozen pretrained weights (full fine-tuning, BitFit's biases) as trained, and every
    update beside a weight (LoRA, LoKr, the PHM update) merged into it, w + dW
    (w: (d_in, d_out), as minicompacter stores it)."""
    return merge_updates(merge(frozen, trainable), model.method)
