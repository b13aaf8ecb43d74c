"""peft's LoRA and LoKr files (peft 0.21): read into a minicompacter model, and
minicompacter's LoRA and LoKr written as peft saves them.

`PeftModel.save_pretrained(DIR)` on a transformers BertModel writes

    adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "target_modules",
                                 "lora_dropout", "bias", "base_model_name_or_path", ...}, or
                                {"peft_type": "LOKR", "r", "alpha", "decompose_both",
                                 "decompose_factor", "rank_dropout", "module_dropout", ...}
    adapter_model.safetensors   per block i and target (attention.self.{query,key,value}, or
                                attention.output.dense for the output projection), under
                                base_model.model.encoder.layer.{i}.{module}.:
                                  LoRA: lora_A.weight (r, d), lora_B.weight (d, r)
                                  LoKr: lokr_w1 (out_l, in_m) or lokr_w1_a, lokr_w1_b;
                                        lokr_w2 (out_k, in_n) or lokr_w2_a (out_k, r), lokr_w2_b (r, in_n)
                                metadata {"format": "pt"}

and computes y = x W^T + b + (lora_alpha / r) (x A^T) B^T on each LoRA target:
minicompacter's x A B (alpha / r) with A = lora_A.weight^T (d, r) and B = lora_B.weight^T
(r, d); on each LoKr target y = x W^T + b + x dW^T with dW = (alpha / r) kron(W1, W2):
minicompacter's (core/updates.py), every tensor transposed under its name without "lokr_".
"""

import json
from pathlib import Path

import numpy as onp
from safetensors.numpy import save

from ...core.methods import LoKrConfig, LoRAConfig
from ...core.model import init_model
from ...core.paths import LOKR, LORA
from ...core.tree import flatten
from .files import FormatError, atomic_write, check_tree, json_file, read_tensors, refuse_pickle

CONFIG, WEIGHTS, PICKLE = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
MODULES = {"query": "attention.self.query", "key": "attention.self.key",
           "value": "attention.self.value", "output": "attention.output.dense"}
# fields both kinds share that must have these values for minicompacter to compute peft's
COMMON = {"modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
          "rank_pattern": {}, "alpha_pattern": {}, "exclude_modules": None}
# peft's LoRA fields that must have these values for minicompacter's LoRA to be peft's
FIXED = {"peft_type": "LORA", "bias": "none", "lora_dropout": 0.0, "fan_in_fan_out": False,
         "use_rslora": False, "use_dora": False, "lora_bias": False, **COMMON,
         "layer_replication": None, "target_parameters": None, "trainable_token_indices": None}
# fields that do not change what a saved adapter computes (megatron_core and
# qalora_group_size matter only with megatron_config and use_qalora, refused when set)
NEUTRAL = ("base_model_name_or_path", "revision", "task_type", "inference_mode",
           "init_lora_weights", "auto_mapping", "peft_version", "r", "lora_alpha", "target_modules",
           "megatron_core", "qalora_group_size")
# LoKr: dropout must be off (minicompacter computes LoKr without rank or module dropout);
# use_effective_conv2d and rank_dropout_scale change nothing on a Linear without dropout
LOKR_FIXED = {"peft_type": "LOKR", "rank_dropout": 0.0, "module_dropout": 0.0, **COMMON}
LOKR_NEUTRAL = ("base_model_name_or_path", "revision", "task_type", "inference_mode",
                "init_weights", "auto_mapping", "peft_version", "r", "alpha", "target_modules",
                "decompose_both", "decompose_factor", "use_effective_conv2d",
                "rank_dropout_scale")
KINDS = {"LORA": (FIXED, NEUTRAL), "LOKR": (LOKR_FIXED, LOKR_NEUTRAL)}


def is_peft(directory):
    """A peft adapter directory: adapter_config.json with a peft_type."""
    config = json_file(Path(directory) / CONFIG)
    return isinstance(config, dict) and "peft_type" in config


def method_config(config, source):
    """The LoRAConfig or LoKrConfig that computes what a peft adapter_config.json computes;
    FormatError naming the first field it cannot honour."""
    kind = config.get("peft_type")
    if kind not in KINDS:
        raise FormatError(f"{source}: peft_type = {kind!r}; minicompacter reads peft's LORA and "
                          f"LOKR adapters only.")
    fixed, neutral = KINDS[kind]
    for field, value in fixed.items():
        if field in config and config[field] != value:
            raise FormatError(f"{source}: {field} = {config[field]!r}; minicompacter computes "
                              f"peft's {kind} with {field} = {value!r} only.")
    for field, value in config.items():
        if field not in fixed and field not in neutral and value not in (None, False, [], {}, ""):
            raise FormatError(f"{source}: field {field} = {value!r} is unknown to minicompacter, "
                              f"which cannot tell what it computes.")
    if config.get("task_type") not in (None, "FEATURE_EXTRACTION"):
        raise FormatError(f"{source}: task_type {config['task_type']!r}; minicompacter reads "
                          f"adapters of a bare BertModel (task_type null or FEATURE_EXTRACTION).")
    targets = target_modules(config, source)
    try:
        if kind == "LORA":
            return LoRAConfig(r=int(config["r"]), alpha=float(config["lora_alpha"]),
                              target_modules=targets)
        return LoKrConfig(r=int(config["r"]), alpha=float(config["alpha"]),
                          decompose_both=bool(config.get("decompose_both", False)),
                          decompose_factor=int(config.get("decompose_factor", -1)),
                          target_modules=targets)
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{source}: {e}") from None


def target_modules(config, source):
    """Our names of the projections a peft config targets, in minicompacter's order."""
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    by_module = {v: k for k, v in MODULES.items()}
    ours = [t if t in MODULES else by_module.get(t) for t in targets]
    if None in ours:
        bad = targets[ours.index(None)]
        raise FormatError(f"{source}: target module {bad!r}; minicompacter adapts the "
                          f"attention projections {', '.join(MODULES)} "
                          f"({', '.join(MODULES.values())}).")
    return tuple(m for m in MODULES if m in ours)      # peft writes them in no fixed order


def lora_names(cfg, num_layers):
    """{peft tensor name: minicompacter dotted path} (every one transposed)."""
    out = {}
    for i in range(num_layers):
        for target in cfg.target_modules:
            base = f"base_model.model.encoder.layer.{i}.{MODULES[target]}."
            out[base + "lora_A.weight"] = f"layers.{i}.{LORA}.{target}.A"
            out[base + "lora_B.weight"] = f"layers.{i}.{LORA}.{target}.B"
    return out


def lokr_names(trainable, cfg):
    """{peft tensor name: minicompacter dotted path} of a LoKr tree (every one transposed):
    lokr_w1 -> w1, lokr_w2_a -> w2_a, ..."""
    out = {}
    for i, layer in enumerate(trainable["layers"]):
        for target in cfg.target_modules:
            base = f"base_model.model.encoder.layer.{i}.{MODULES[target]}."
            for leaf in layer[LOKR][target]:
                out[base + "lokr_" + leaf] = f"layers.{i}.{LOKR}.{target}.{leaf}"
    return out


def tensor_names(trainable, cfg, num_layers):
    """{peft tensor name: minicompacter dotted path} for LoRA or LoKr."""
    if isinstance(cfg, LoKrConfig):
        return lokr_names(trainable, cfg)
    return lora_names(cfg, num_layers)


def read(directory, pretrained):
    """(model, trainable, frozen, info) of a peft LoRA directory on a pretrained model (no
    head: peft's files of a BertModel hold none)."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG).read_text())
    cfg = method_config(config, directory / CONFIG)
    refuse_pickle(directory, PICKLE, WEIGHTS)
    tensors = read_tensors(directory / WEIGHTS)
    model, skeleton, frozen = init_model(onp.random.default_rng(0), pretrained, cfg, num_labels=0)
    names = tensor_names(skeleton, cfg, pretrained.config.num_layers)
    if set(tensors) != set(names):
        odd = sorted(set(tensors) ^ set(names))
        raise FormatError(f"{directory}: tensors {odd[:3]} do not fit {config['peft_type']} on "
                          f"{list(cfg.target_modules)} of a {pretrained.config.num_layers}-layer "
                          f"BertModel as {CONFIG} describes it.")
    trainable = check_tree(skeleton, {ours: tensors[theirs].T for theirs, ours in names.items()},
                           directory)
    name = config.get("base_model_name_or_path")
    info = {"format": "peft", "method": cfg.method, "task": None, "num_labels": 0,
            "pooling": "cls", "head_layers": 1, "label_names": [],
            "base_model": {"name": name, "hub_id": name}}
    return model, trainable, frozen, info


def peft_config(cfg, base_model_name_or_path):
    """adapter_config.json as peft writes it for minicompacter's LoRA or LoKr."""
    common = {"auto_mapping": {"base_model_class": "BertModel",
                               "parent_library": "transformers.models.bert.modeling_bert"},
              "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
              "r": cfg.r, "revision": None, "task_type": None,
              "target_modules": [MODULES[t] if t == "output" else t for t in cfg.target_modules]}
    if isinstance(cfg, LoKrConfig):
        return {**LOKR_FIXED, **common, "alpha": cfg.alpha, "decompose_both": cfg.decompose_both,
                "decompose_factor": cfg.decompose_factor, "init_weights": True,
                "rank_dropout_scale": False, "use_effective_conv2d": False}
    return {**FIXED, **common, "init_lora_weights": True, "lora_alpha": cfg.alpha}


def write(out, trainable, model, *, base_model_name_or_path):
    """peft's files for minicompacter's LoRA or LoKr (the head, if any, is the caller's
    business)."""
    cfg = model.method.config
    flat = flatten(trainable)
    names = tensor_names(trainable, cfg, model.encoder_config.num_layers)
    tensors = {theirs: onp.ascontiguousarray(flat[ours].T, dtype=onp.float32)
               for theirs, ours in names.items()}
    out = Path(out)
    atomic_write(out / CONFIG, json.dumps(peft_config(cfg, base_model_name_or_path), indent=2))
    atomic_write(out / WEIGHTS, save(tensors, metadata={"format": "pt"}))
    return [CONFIG, WEIGHTS]
