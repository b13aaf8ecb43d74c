"""peft's LoRA files (peft 0.21): read into a minicompacter model, and minicompacter's
LoRA written as peft saves it, for every encoder family (families.py) and for T5
(families.T5: T5ForConditionalGeneration, task_type SEQ_2_SEQ_LM; a target adapts its
projection in every attention, self and cross, as peft's "q" matches both).

`PeftModel.save_pretrained(DIR)` on a transformers bare model (BertModel, RobertaModel,
DistilBertModel, ...) writes

    adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "target_modules",
                                 "lora_dropout", "bias", "base_model_name_or_path", ...}
    adapter_model.safetensors   base_model.model.{layer}.{module}.lora_A.weight (r, d) and
                                .lora_B.weight (d, r), the family's names
                                (families.peft_module: encoder.layer.{i}.attention.self.query on
                                BERT, transformer.layer.{i}.attention.q_lin on DistilBERT);
                                metadata {"format": "pt"}

and computes y = x W^T + b + (lora_alpha / r) (x A^T) B^T on each target: minicompacter's
x A B (alpha / r) with A = lora_A.weight^T (d, r) and B = lora_B.weight^T (r, d).

peft matches each target_modules entry against a module's full name or its last parts
(name == entry or name ending in "." + entry); an entry that matches anything but the
attention projections (BERT's "dense" also matches the feed-forward layers) is refused. Every
field of adapter_config.json is checked for its type and range (r a positive integer,
lora_alpha a finite number, ...), and r against the tensors before the model is built.
"""

import json
from pathlib import Path

import numpy as onp

from ...core.methods import LoRAConfig, block_path, blocks_of, per_block, projection_shapes
from ...core.model import init_model
from ...core.paths import LORA, projection_kind
from ...core.tree import flatten
from .files import (FormatError, array, atomic_write, check_fields, check_tree, integer,
                    json_file, nullable, number, read_json_object, read_tensors, refuse_pickle,
                    tensor_bytes, text)

CONFIG, WEIGHTS, PICKLE = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
PROJECTIONS = ("query", "key", "value", "output")     # what minicompacter's LoRA adapts
# peft's fields that must have these values for minicompacter's LoRA to be peft's
FIXED = {"peft_type": "LORA", "bias": "none", "lora_dropout": 0.0, "fan_in_fan_out": False,
         "use_rslora": False, "use_dora": False, "lora_bias": False, "modules_to_save": None,
         "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {},
         "alpha_pattern": {}, "exclude_modules": None, "layer_replication": None,
         "target_parameters": None, "trainable_token_indices": None}
# fields that do not change what a saved adapter computes (megatron_core and
# qalora_group_size matter only with megatron_config and use_qalora, refused when set)
NEUTRAL = ("base_model_name_or_path", "revision", "task_type", "inference_mode",
           "init_lora_weights", "auto_mapping", "peft_version", "r", "lora_alpha", "target_modules",
           "megatron_core", "qalora_group_size")
# what the fields read may be
KINDS = {"r": integer(1), "lora_alpha": number(), "target_modules": array(text()),
         "task_type": nullable(text()), "base_model_name_or_path": nullable(text())}
FIX = "the file is not a LoRA adapter config as peft saves one (save_pretrained)."


def is_peft(directory):
    """A peft adapter directory: adapter_config.json with a peft_type."""
    config = json_file(Path(directory) / CONFIG)
    return isinstance(config, dict) and "peft_type" in config


def method_config(config, source, family):
    """The LoRAConfig that computes what a peft adapter_config.json computes on a model of
    the family; FormatError naming the first field it cannot honour or whose value is of the
    wrong type or range."""
    for field, value in FIXED.items():
        if field in config and config[field] != value:
            raise FormatError(f"{source}: {field} = {config[field]!r}; minicompacter's LoRA "
                              f"computes peft's with {field} = {value!r} only.")
    for field, value in config.items():
        if field not in FIXED and field not in NEUTRAL and value not in (None, False, [], {}, ""):
            raise FormatError(f"{source}: field {field} = {value!r} is unknown to minicompacter, "
                              f"which cannot tell what it computes.")
    if isinstance(config.get("target_modules"), str):
        raise FormatError(f"{source}: target_modules {config['target_modules']!r} is a regular "
                          f"expression (peft matches it against whole module names); "
                          f"minicompacter reads target_modules given as a list of names.")
    check_fields(config, {"r": KINDS["r"], "lora_alpha": KINDS["lora_alpha"],
                          "target_modules": KINDS["target_modules"]}, KINDS, source=source,
                 error=FormatError, fix=FIX)
    if config.get("task_type") not in family.peft.task_types:
        allowed = " or ".join("null" if t is None else t for t in family.peft.task_types)
        raise FormatError(f"{source}: task_type {config['task_type']!r}; minicompacter reads LoRA "
                          f"adapters of {family.peft.base_class} (task_type {allowed}).")
    ours = {projection for t in config["target_modules"]
            for projection in targets_of(t, family, source)}
    return LoRAConfig(r=config["r"], alpha=float(config["lora_alpha"]),
                      target_modules=tuple(p for p in PROJECTIONS if p in ours))


def targets_of(entry, family, source):
    """Our projections a target_modules entry names, as peft matches it: every module of a
    layer whose name is the entry or ends in "." + entry. FormatError if it matches none, or
    any module that is not an attention projection."""
    modules = {name: part for part, name in family.modules.items()}
    hit = [name for name in modules if name == entry or name.endswith("." + entry)]
    projections = {name: p for p, name in family.peft.modules.items()}
    if not hit or any(name not in projections for name in hit):
        raise FormatError(f"{source}: target module {entry!r}"
                          + (f" matches {', '.join(hit)}" if hit else " matches no module")
                          + f"; minicompacter's LoRA adapts the attention projections "
                          f"{', '.join(PROJECTIONS)} ({', '.join(family.peft.modules.values())}) "
                          f"of a {family.model_type} model.")
    kinds = {projection_kind(projections[name]) for name in hit}
    every = [name for name, p in projections.items() if projection_kind(p) in kinds]
    if sorted(every) != sorted(hit):
        raise FormatError(f"{source}: target module {entry!r} matches {', '.join(hit)} but not "
                          f"{', '.join(sorted(set(every) - set(hit)))}; minicompacter's LoRA "
                          f"adapts a projection in every attention of a {family.model_type} "
                          f"model (self- and cross-attention), as peft's {entry.split('.')[-1]!r} "
                          f"does.")
    return [projection_kind(projections[name]) for name in hit]


def lora_layout(cfg, model_config):
    """{peft module name: (minicompacter dotted path of its LoRA, (d_in, d_out))} of every
    projection the config adapts on the model (its tree's layout, `methods.per_block`,
    without making any array)."""
    family_blocks = per_block(model_config, onp.random.default_rng(0), lambda g, block: {
        LORA: projection_shapes(model_config, cfg.target_modules, block)})
    return {(stack, i, name): (f"{block_path(stack, i)}.{LORA}.{name}", shape)
            for stack, i, layer in blocks_of(family_blocks)
            for name, shape in layer[LORA].items()}


def lora_names(cfg, model_config, family):
    """{peft tensor name: minicompacter dotted path} (every one transposed)."""
    out = {}
    for (stack, i, name), (path, _) in lora_layout(cfg, model_config).items():
        base = family.peft_module(i, name, stack=stack) + "."
        out[base + "lora_A.weight"] = f"{path}.A"
        out[base + "lora_B.weight"] = f"{path}.B"
    return out


def check_rank(tensors, cfg, model_config, family, source):
    """FormatError unless every lora_A.weight is (r, d_in) and lora_B.weight (d_out, r) for the
    config's r and its projection's widths: before the model is built, so a config naming a
    huge r allocates nothing."""
    for (stack, i, name), (_, (d_in, d_out)) in lora_layout(cfg, model_config).items():
        base = family.peft_module(i, name, stack=stack) + "."
        for theirs, want in ((base + "lora_A.weight", (cfg.r, d_in)),
                             (base + "lora_B.weight", (d_out, cfg.r))):
            if tensors[theirs].shape != want:
                raise FormatError(f"{source}: {theirs} has shape {tensors[theirs].shape}, and "
                                  f"r = {cfg.r} on this model (a projection {d_in} -> {d_out}) "
                                  f"needs {want}; the config and the weights do not belong "
                                  f"together.")


def read(directory, pretrained, family):
    """(model, trainable, frozen, info) of a peft LoRA directory on a pretrained model of the
    family (no head: peft's files of a bare model hold none)."""
    directory = Path(directory)
    config = read_json_object(directory / CONFIG, error=FormatError, fix=FIX)
    cfg = method_config(config, directory / CONFIG, family)
    refuse_pickle(directory, PICKLE, WEIGHTS)
    tensors = read_tensors(directory / WEIGHTS, error=FormatError, fix=FIX)
    names = lora_names(cfg, pretrained.config, family)
    if set(tensors) != set(names):
        odd = sorted(set(tensors) ^ set(names))
        raise FormatError(f"{directory}: tensors {odd[:3]} do not fit LoRA on "
                          f"{list(cfg.target_modules)} of a {pretrained.config.num_layers}-layer "
                          f"{family.peft.base_class} as {CONFIG} describes it.")
    check_rank(tensors, cfg, pretrained.config, family, directory)
    model, skeleton, frozen = init_model(onp.random.default_rng(0), pretrained, cfg, num_labels=0)
    trainable = check_tree(skeleton, {ours: tensors[theirs].T for theirs, ours in names.items()},
                           directory)
    name = config.get("base_model_name_or_path")
    info = {"format": "peft", "method": "lora", "task": None, "num_labels": 0, "pooling": "cls",
            "head_layers": 1, "label_names": [], "base_model": {"name": name, "hub_id": name}}
    return model, trainable, frozen, info


def peft_config(cfg, base_model_name_or_path, family):
    """adapter_config.json as peft writes it for minicompacter's LoRA on the family's bare model."""
    module = family.model_type.replace("-", "_")
    task_type = family.peft.task_types[0]
    mapping = None if task_type else {"base_model_class": family.peft.base_class,
                                      "parent_library": f"transformers.models.{module}."
                                                        f"modeling_{module}"}
    return {**FIXED, "auto_mapping": mapping,
            "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
            "init_lora_weights": True, "r": cfg.r, "lora_alpha": cfg.alpha, "revision": None,
            "target_modules": family.peft_target_modules(cfg.target_modules),
            "task_type": task_type}


def write(out, trainable, model, *, family, base_model_name_or_path):
    """peft's files for minicompacter's LoRA (the head, if any, is the caller's business);
    every tensor finite or none written."""
    cfg = model.method.config
    flat = flatten(trainable)
    tensors = {theirs: flat[ours].T for theirs, ours in
               lora_names(cfg, model.encoder_config, family).items()}
    out = Path(out)
    atomic_write(out / WEIGHTS, tensor_bytes(tensors, metadata={"format": "pt"}))
    atomic_write(out / CONFIG, json.dumps(peft_config(cfg, base_model_name_or_path, family),
                                          indent=2))
    return [CONFIG, WEIGHTS]
