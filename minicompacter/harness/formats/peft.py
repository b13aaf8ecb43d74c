"""peft's LoRA and prompt-tuning files (peft 0.21): read into a minicompacter model, and
minicompacter's LoRA and prompt tuning written as peft saves them.

`PeftModel.save_pretrained(DIR)` on a transformers BertModel writes

    adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "target_modules",
                                 "lora_dropout", "bias", "base_model_name_or_path", ...}
    adapter_model.safetensors   base_model.model.encoder.layer.{i}.attention.self.{query,key,value}
                                .lora_A.weight (r, d) and .lora_B.weight (d, r) (attention.output.dense
                                for the output projection); metadata {"format": "pt"}

and computes y = x W^T + b + (lora_alpha / r) (x A^T) B^T on each target: minicompacter's
x A B (alpha / r) with A = lora_A.weight^T (d, r) and B = lora_B.weight^T (r, d).

For prompt tuning (PromptTuningConfig, task_type FEATURE_EXTRACTION, on a BertModel) it writes

    adapter_config.json         {"peft_type": "PROMPT_TUNING", "task_type": "FEATURE_EXTRACTION",
                                 "num_virtual_tokens", "token_dim", "num_transformer_submodules": 1,
                                 "num_layers", "num_attention_heads", "prompt_tuning_init", ...}
    adapter_model.safetensors   prompt_embeddings (P, d); metadata {"format": "pt"}

and computes the encoder on [prompt; word embeddings] with the mask P ones longer, the
positions 0 .. P+T-1 and the token types dropped: minicompacter's prompt tuning
(core/prompts.py), prompt = prompt_embeddings, no transpose. Its SEQ_CLS wrapper keeps the
token types and adds a classifier of its own, which minicompacter does not compute.
"""

import json
from pathlib import Path

import numpy as onp
from safetensors.numpy import save

from ...core.methods import LoRAConfig, PromptConfig
from ...core.model import init_model
from ...core.paths import LORA, PROMPT
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


# peft's prompt-tuning fields that must have these values (an encoder's placement, one prompt)
PROMPT_FIXED = {"peft_type": "PROMPT_TUNING", "task_type": "FEATURE_EXTRACTION",
                "num_transformer_submodules": 1, "modules_to_save": None}
# fields that do not change what a saved prompt computes (the initialisation is overwritten
# by the saved prompt; the model's sizes are checked against the base model)
PROMPT_NEUTRAL = ("base_model_name_or_path", "revision", "inference_mode", "auto_mapping",
                  "peft_version", "num_virtual_tokens", "token_dim", "num_layers",
                  "num_attention_heads", "prompt_tuning_init", "prompt_tuning_init_text",
                  "tokenizer_name_or_path", "tokenizer_kwargs")
PROMPT_TENSOR = "prompt_embeddings"
PROMPT_INITS = {"RANDOM": "random", "TEXT": "vocab", "SAMPLE_VOCAB": "vocab"}


def prompt_config(config, source, encoder_config):
    """The PromptConfig that computes what a peft prompt-tuning adapter_config.json computes on
    this base model; FormatError naming the first field it cannot honour."""
    for field, value in PROMPT_FIXED.items():
        if config.get(field, value) != value:
            raise FormatError(f"{source}: {field} = {config[field]!r}; minicompacter computes "
                              f"peft's prompt tuning of an encoder with {field} = {value!r} only "
                              f"(SEQ_CLS keeps the token types and adds its own classifier).")
    for field, value in config.items():
        if field not in PROMPT_FIXED and field not in PROMPT_NEUTRAL and value not in (None, False, [], {}, ""):
            raise FormatError(f"{source}: field {field} = {value!r} is unknown to minicompacter, "
                              f"which cannot tell what it computes.")
    sizes = {"token_dim": encoder_config.embedding_width, "num_layers": encoder_config.num_layers,
             "num_attention_heads": encoder_config.num_heads}
    for field, want in sizes.items():
        if config.get(field, want) != want:
            raise FormatError(f"{source}: {field} = {config[field]!r}, the base model's is "
                              f"{want}; was it saved for another model?")
    length = config.get("num_virtual_tokens")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise FormatError(f"{source}: num_virtual_tokens = {length!r}; it must be a positive integer.")
    init = PROMPT_INITS.get(config.get("prompt_tuning_init", "RANDOM"))
    if init is None:
        raise FormatError(f"{source}: prompt_tuning_init = {config['prompt_tuning_init']!r}; "
                          f"peft's are {', '.join(PROMPT_INITS)}.")
    return PromptConfig(method="prompt-tuning-r" if init == "random" else "prompt-tuning-t",
                        prompt_length=length, prompt_init=init)


def peft_prompt_config(cfg, encoder_config, base_model_name_or_path):
    """adapter_config.json as peft writes it for minicompacter's prompt tuning (-T as
    SAMPLE_VOCAB: started from vocabulary embeddings; the exact tokens are minicompacter's
    init_token_ids, which matter only to a new run)."""
    return {**PROMPT_FIXED, "auto_mapping": None, "base_model_name_or_path": base_model_name_or_path,
            "inference_mode": True, "num_attention_heads": encoder_config.num_heads,
            "num_layers": encoder_config.num_layers, "num_virtual_tokens": cfg.prompt_length,
            "revision": None, "token_dim": encoder_config.embedding_width,
            "prompt_tuning_init": "RANDOM" if cfg.prompt_init == "random" else "SAMPLE_VOCAB",
            "prompt_tuning_init_text": None, "tokenizer_kwargs": None, "tokenizer_name_or_path": None}


def lora_names(cfg, num_layers):
    """{peft tensor name: minicompacter dotted path} (every one transposed)."""
    out = {}
    for i in range(num_layers):
        for target in cfg.target_modules:
            base = f"base_model.model.encoder.layer.{i}.{MODULES[target]}."
            out[base + "lora_A.weight"] = f"layers.{i}.{LORA}.{target}.A"
            out[base + "lora_B.weight"] = f"layers.{i}.{LORA}.{target}.B"
    return out


def tensor_names(cfg, encoder_config):
    """{peft tensor name: (minicompacter dotted path, transposed?)} of a LoRA or prompt tuning."""
    if isinstance(cfg, PromptConfig):
        return {PROMPT_TENSOR: (PROMPT, False)}
    return {theirs: (ours, True) for theirs, ours in lora_names(cfg, encoder_config.num_layers).items()}


def described(cfg, encoder_config):
    """What the files should hold, for a message."""
    if isinstance(cfg, PromptConfig):
        return f"a prompt of {cfg.prompt_length} vectors"
    return f"LoRA on {list(cfg.target_modules)} of a {encoder_config.num_layers}-layer BertModel"


def read(directory, pretrained):
    """(model, trainable, frozen, info) of a peft LoRA or prompt-tuning directory on a
    pretrained model (no head: peft's files of a BertModel hold none)."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG).read_text())
    cfg = (prompt_config(config, directory / CONFIG, pretrained.config)
           if config.get("peft_type") == PROMPT_FIXED["peft_type"]
           else method_config(config, directory / CONFIG))
    refuse_pickle(directory, PICKLE, WEIGHTS)
    tensors = read_tensors(directory / WEIGHTS)
    model, skeleton, frozen = init_model(onp.random.default_rng(0), pretrained, cfg, num_labels=0)
    names = tensor_names(cfg, pretrained.config)
    if set(tensors) != set(names):
        odd = sorted(set(tensors) ^ set(names))
        raise FormatError(f"{directory}: tensors {odd[:3]} do not fit "
                          f"{described(cfg, pretrained.config)} as {CONFIG} describes it.")
    trainable = check_tree(skeleton, {ours: tensors[theirs].T if transposed else tensors[theirs]
                                      for theirs, (ours, transposed) in names.items()}, directory)
    name = config.get("base_model_name_or_path")
    info = {"format": "peft", "method": cfg.method, "task": None, "num_labels": 0, "pooling": "cls",
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
    """peft's files for minicompacter's LoRA or prompt tuning (the head, if any, is the
    caller's business)."""
    cfg = model.method.config
    flat = flatten(trainable)
    tensors = {theirs: onp.ascontiguousarray(flat[ours].T if transposed else flat[ours],
                                             dtype=onp.float32)
               for theirs, (ours, transposed) in tensor_names(cfg, model.encoder_config).items()}
    config = (peft_prompt_config(cfg, model.encoder_config, base_model_name_or_path)
              if isinstance(cfg, PromptConfig) else peft_config(cfg, base_model_name_or_path))
    out = Path(out)
    atomic_write(out / CONFIG, json.dumps(config, indent=2))
    atomic_write(out / WEIGHTS, save(tensors, metadata={"format": "pt"}))
    return [CONFIG, WEIGHTS]
