"""peft's LoRA files (peft 0.21): read into a minicompacter model, and minicompacter's
LoRA written as peft saves it.

`PeftModel.save_pretrained(DIR)` on a transformers BertModel writes

    adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "target_modules",
                                 "lora_dropout", "bias", "base_model_name_or_path", ...}
    adapter_model.safetensors   base_model.model.encoder.layer.{i}.attention.self.{query,key,value}
                                .lora_A.weight (r, d) and .lora_B.weight (d, r) (attention.output.dense
                                for the output projection); metadata {"format": "pt"}

and computes y = x W^T + b + (lora_alpha / r) (x A^T) B^T on each target: minicompacter's
x A B (alpha / r) with A = lora_A.weight^T (d, r) and B = lora_B.weight^T (r, d).
"""

import json
from pathlib import Path

import numpy as onp
from safetensors.numpy import save

from ...core.methods import LoRAConfig
from ...core.model import init_model
from ...core.paths import LORA
from ...core.tree import flatten
from .files import FormatError, atomic_write, check_tree, json_file, read_tensors, refuse_pickle

CONFIG, WEIGHTS, PICKLE = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
MODULES = {"query": "attention.self.query", "key": "attention.self.key",
           "value": "attention.self.value", "output": "attention.output.dense"}
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


def is_peft(directory):
    """A peft adapter directory: adapter_config.json with a peft_type."""
    config = json_file(Path(directory) / CONFIG)
    return isinstance(config, dict) and "peft_type" in config


def method_config(config, source):
    """The LoRAConfig that computes what a peft adapter_config.json computes; FormatError
    naming the first field it cannot honour."""
    for field, value in FIXED.items():
        if field in config and config[field] != value:
            raise FormatError(f"{source}: {field} = {config[field]!r}; minicompacter's LoRA "
                              f"computes peft's with {field} = {value!r} only.")
    for field, value in config.items():
        if field not in FIXED and field not in NEUTRAL and value not in (None, False, [], {}, ""):
            raise FormatError(f"{source}: field {field} = {value!r} is unknown to minicompacter, "
                              f"which cannot tell what it computes.")
    if config.get("task_type") not in (None, "FEATURE_EXTRACTION"):
        raise FormatError(f"{source}: task_type {config['task_type']!r}; minicompacter reads LoRA "
                          f"adapters of a bare BertModel (task_type null or FEATURE_EXTRACTION).")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    by_module = {v: k for k, v in MODULES.items()}
    ours = [t if t in MODULES else by_module.get(t) for t in targets]
    if None in ours:
        bad = targets[ours.index(None)]
        raise FormatError(f"{source}: target module {bad!r}; minicompacter's LoRA adapts the "
                          f"attention projections {', '.join(MODULES)} "
                          f"({', '.join(MODULES.values())}).")
    order = [m for m in MODULES if m in ours]            # peft writes them in no fixed order
    return LoRAConfig(r=int(config["r"]), alpha=float(config["lora_alpha"]),
                      target_modules=tuple(order))


def lora_names(cfg, num_layers):
    """{peft tensor name: minicompacter dotted path} (every one transposed)."""
    out = {}
    for i in range(num_layers):
        for target in cfg.target_modules:
            base = f"base_model.model.encoder.layer.{i}.{MODULES[target]}."
            out[base + "lora_A.weight"] = f"layers.{i}.{LORA}.{target}.A"
            out[base + "lora_B.weight"] = f"layers.{i}.{LORA}.{target}.B"
    return out


def read(directory, pretrained):
    """(model, trainable, frozen, info) of a peft LoRA directory on a pretrained model (no
    head: peft's files of a BertModel hold none)."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG).read_text())
    cfg = method_config(config, directory / CONFIG)
    refuse_pickle(directory, PICKLE, WEIGHTS)
    tensors = read_tensors(directory / WEIGHTS)
    model, skeleton, frozen = init_model(onp.random.default_rng(0), pretrained, cfg, num_labels=0)
    names = lora_names(cfg, pretrained.config.num_layers)
    if set(tensors) != set(names):
        odd = sorted(set(tensors) ^ set(names))
        raise FormatError(f"{directory}: tensors {odd[:3]} do not fit LoRA on "
                          f"{list(cfg.target_modules)} of a {pretrained.config.num_layers}-layer "
                          f"BertModel as {CONFIG} describes it.")
    trainable = check_tree(skeleton, {ours: tensors[theirs].T for theirs, ours in names.items()},
                           directory)
    name = config.get("base_model_name_or_path")
    info = {"format": "peft", "method": "lora", "task": None, "num_labels": 0, "pooling": "cls",
            "head_layers": 1, "label_names": [], "base_model": {"name": name, "hub_id": name}}
    return model, trainable, frozen, info


def peft_config(cfg, base_model_name_or_path):
    """adapter_config.json as peft writes it for minicompacter's LoRA."""
    return {**FIXED, "auto_mapping": {"base_model_class": "BertModel",
                                      "parent_library": "transformers.models.bert.modeling_bert"},
            "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
            "init_lora_weights": True, "r": cfg.r, "lora_alpha": cfg.alpha, "revision": None,
            "target_modules": [MODULES[t] if t == "output" else t for t in cfg.target_modules],
            "task_type": None}


def write(out, trainable, model, *, base_model_name_or_path):
    """peft's files for minicompacter's LoRA (the head, if any, is the caller's business)."""
    cfg = model.method.config
    flat = flatten(trainable)
    tensors = {theirs: onp.ascontiguousarray(flat[ours].T, dtype=onp.float32)
               for theirs, ours in lora_names(cfg, model.encoder_config.num_layers).items()}
    out = Path(out)
    atomic_write(out / CONFIG, json.dumps(peft_config(cfg, base_model_name_or_path), indent=2))
    atomic_write(out / WEIGHTS, save(tensors, metadata={"format": "pt"}))
    return [CONFIG, WEIGHTS]
