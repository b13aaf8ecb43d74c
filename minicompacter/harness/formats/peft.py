"""peft's LoRA, LoKr and prompt-tuning files (peft 0.21): read into a minicompacter model,
and minicompacter's LoRA, LoKr and prompt tuning written as peft saves them, for every
encoder family (families.py) and, LoRA and LoKr, for T5 (families.T5:
T5ForConditionalGeneration, task_type SEQ_2_SEQ_LM; a target adapts its projection in every
attention, self and cross, as peft's "q" matches both).

`PeftModel.save_pretrained(DIR)` on the family's bare model (BertModel, ...) writes

    adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "target_modules",
                                 "lora_dropout", "bias", "base_model_name_or_path", ...}, or
                                {"peft_type": "LOKR", "r", "alpha", "decompose_both",
                                 "decompose_factor", "rank_dropout", "module_dropout", ...}
    adapter_model.safetensors   per block i and target, under the family's module name
                                (families.peft_module: encoder.layer.{i}.attention.self.query on
                                BERT, transformer.layer.{i}.attention.q_lin on DistilBERT):
                                  LoRA: lora_A.weight (r, d), lora_B.weight (d, r)
                                  LoKr: lokr_w1 (out_l, in_m) or lokr_w1_a, lokr_w1_b;
                                        lokr_w2 (out_k, in_n) or lokr_w2_a (out_k, r), lokr_w2_b (r, in_n)
                                metadata {"format": "pt"}

and computes y = x W^T + b + (lora_alpha / r) (x A^T) B^T on each LoRA target:
minicompacter's x A B (alpha / r) with A = lora_A.weight^T (d, r) and B = lora_B.weight^T
(r, d); on each LoKr target y = x W^T + b + x dW^T with dW = (alpha / r) kron(W1, W2):
minicompacter's (core/updates.py), every tensor transposed under its name without "lokr_".

peft matches each target_modules entry against a module's full name or its last parts
(name == entry or name ending in "." + entry); an entry that matches anything but the
attention projections (BERT's "dense" also matches the feed-forward layers) is refused. Every
field of adapter_config.json is checked for its type and range (r a positive integer,
lora_alpha a finite number, ...), and the tensors' shapes against the config before the model
is built.

For prompt tuning (PromptTuningConfig, task_type FEATURE_EXTRACTION, on the family's bare
model) it writes

    adapter_config.json         {"peft_type": "PROMPT_TUNING", "task_type": "FEATURE_EXTRACTION",
                                 "num_virtual_tokens", "token_dim", "num_transformer_submodules": 1,
                                 "num_layers", "num_attention_heads", "prompt_tuning_init", ...}
    adapter_model.safetensors   prompt_embeddings (P, d); metadata {"format": "pt"}

and computes the encoder on [prompt; word embeddings] with the mask P ones longer, the
positions 0 .. P+T-1 and the token types dropped: minicompacter's prompt tuning
(core/prompts.py), prompt = prompt_embeddings, no transpose. Its SEQ_CLS wrapper keeps the
token types and adds a classifier of its own, which minicompacter does not compute. The
prompt's shape is checked against num_virtual_tokens and the model's width before the model
is built.
"""

import json
from pathlib import Path

import numpy as onp

from ...core.blocks import block_path, blocks_of, per_block, projection_shapes
from ...core.methods import LoKrConfig, LoRAConfig, PromptConfig
from ...core.model import init_model
from ...core.paths import LOKR, LORA, PROMPT, projection_kind
from ...core.tree import flatten
from ...core.updates import lokr_shapes
from .files import (FLAG, FormatError, array, atomic_write, check_fields, check_tree, integer,
                    json_file, nullable, number, read_json_object, read_tensors, refuse_pickle,
                    tensor_bytes, text)

CONFIG, WEIGHTS, PICKLE = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
PROJECTIONS = ("query", "key", "value", "output")     # what minicompacter's LoRA adapts
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
# peft_type -> (the fields that must have these values, the fields without effect, the
# scaling's field)
PEFT_TYPES = {"LORA": (FIXED, NEUTRAL, "lora_alpha"), "LOKR": (LOKR_FIXED, LOKR_NEUTRAL, "alpha")}
# what the fields read may be
KINDS = {"r": integer(1), "lora_alpha": number(), "alpha": number(),
         "target_modules": array(text()), "task_type": nullable(text()),
         "base_model_name_or_path": nullable(text()), "decompose_both": FLAG,
         "decompose_factor": integer(-1)}
FIX = "the file is not a LoRA or LoKr adapter config as peft saves one (save_pretrained)."


def is_peft(directory):
    """A peft adapter directory: adapter_config.json with a peft_type."""
    config = json_file(Path(directory) / CONFIG)
    return isinstance(config, dict) and "peft_type" in config


def method_config(config, source, family):
    """The LoRAConfig or LoKrConfig that computes what a peft adapter_config.json computes on
    a model of the family; FormatError naming the first field it cannot honour or whose value
    is of the wrong type or range."""
    kind = config.get("peft_type")
    if kind not in PEFT_TYPES:
        raise FormatError(f"{source}: peft_type = {kind!r}; minicompacter reads peft's LORA, LOKR "
                          f"and PROMPT_TUNING adapters only.")
    fixed, neutral, scaling = PEFT_TYPES[kind]
    for field, value in fixed.items():
        if field in config and config[field] != value:
            raise FormatError(f"{source}: {field} = {config[field]!r}; minicompacter computes "
                              f"peft's {kind} with {field} = {value!r} only.")
    for field, value in config.items():
        if field not in fixed and field not in neutral and value not in (None, False, [], {}, ""):
            raise FormatError(f"{source}: field {field} = {value!r} is unknown to minicompacter, "
                              f"which cannot tell what it computes.")
    if isinstance(config.get("target_modules"), str):
        raise FormatError(f"{source}: target_modules {config['target_modules']!r} is a regular "
                          f"expression (peft matches it against whole module names); "
                          f"minicompacter reads target_modules given as a list of names.")
    check_fields(config, {"r": KINDS["r"], scaling: KINDS[scaling],
                          "target_modules": KINDS["target_modules"]}, KINDS, source=source,
                 error=FormatError, fix=FIX)
    if config.get("task_type") not in family.peft.task_types:
        allowed = " or ".join("null" if t is None else t for t in family.peft.task_types)
        raise FormatError(f"{source}: task_type {config['task_type']!r}; minicompacter reads "
                          f"adapters of {family.peft.base_class} (task_type {allowed}).")
    ours = {projection for t in config["target_modules"]
            for projection in targets_of(t, family, source)}
    targets = tuple(p for p in PROJECTIONS if p in ours)
    try:
        if kind == "LORA":
            return LoRAConfig(r=config["r"], alpha=float(config["lora_alpha"]),
                              target_modules=targets)
        return LoKrConfig(r=config["r"], alpha=float(config["alpha"]),
                          decompose_both=config.get("decompose_both", False),
                          decompose_factor=config.get("decompose_factor", -1),
                          target_modules=targets)
    except ValueError as e:
        raise FormatError(f"{source}: {e}") from None


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
                          + f"; minicompacter's LoRA and LoKr adapt the attention projections "
                          f"{', '.join(PROJECTIONS)} ({', '.join(family.peft.modules.values())}) "
                          f"of a {family.model_type} model.")
    kinds = {projection_kind(projections[name]) for name in hit}
    every = [name for name, p in projections.items() if projection_kind(p) in kinds]
    if sorted(every) != sorted(hit):
        raise FormatError(f"{source}: target module {entry!r} matches {', '.join(hit)} but not "
                          f"{', '.join(sorted(set(every) - set(hit)))}; minicompacter's LoRA "
                          f"and LoKr adapt a projection in every attention of a {family.model_type} "
                          f"model (self- and cross-attention), as peft's {entry.split('.')[-1]!r} "
                          f"does.")
    return [projection_kind(projections[name]) for name in hit]


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


def update_layout(cfg, model_config):
    """{(stack, i, name): (minicompacter dotted path of its update, (d_in, d_out))} of every
    projection a LoRA or LoKr config adapts on the model (its tree's layout,
    `blocks.per_block`, without making any array)."""
    key = LOKR if isinstance(cfg, LoKrConfig) else LORA
    blocks = per_block(model_config, onp.random.default_rng(0), lambda g, block: {
        key: projection_shapes(model_config, cfg.target_modules, block)})
    return {(stack, i, name): (f"{block_path(stack, i)}.{key}.{name}", shape)
            for stack, i, layer in blocks_of(blocks) for name, shape in layer[key].items()}


def update_tensors(cfg, model_config, family):
    """{peft tensor name: (minicompacter dotted path, the shape peft gives it, the projection's
    (d_in, d_out))} of a LoRA or LoKr (every one transposed): lora_A.weight (r, d_in),
    lora_B.weight (d_out, r); LoKr's lokr_w1 -> w1, lokr_w2_a -> w2_a, ... (which ones:
    updates.lokr_shapes)."""
    out = {}
    for (stack, i, name), (path, widths) in update_layout(cfg, model_config).items():
        base = family.peft_module(i, name, stack=stack) + "."
        if isinstance(cfg, LoKrConfig):
            for leaf, shape in lokr_shapes(cfg, *widths).items():
                out[base + "lokr_" + leaf] = (f"{path}.{leaf}", tuple(reversed(shape)), widths)
        else:
            out[base + "lora_A.weight"] = (f"{path}.A", (cfg.r, widths[0]), widths)
            out[base + "lora_B.weight"] = (f"{path}.B", (widths[1], cfg.r), widths)
    return out


def check_shapes(tensors, cfg, model_config, family, source):
    """FormatError unless every LoRA or LoKr tensor has the shape the config gives it on this
    model: before the model is built, so a config naming a huge r allocates nothing."""
    for theirs, (_, want, (d_in, d_out)) in update_tensors(cfg, model_config, family).items():
        if tensors[theirs].shape != want:
            raise FormatError(f"{source}: {theirs} has shape {tensors[theirs].shape}, and r = "
                              f"{cfg.r} on a projection {d_in} -> {d_out} needs {want}; the "
                              f"config and the weights do not belong together.")


def check_prompt(tensors, cfg, width, source):
    """FormatError unless prompt_embeddings is (num_virtual_tokens, token_dim): before the
    model is built, so a config naming a huge prompt allocates nothing."""
    want = (cfg.prompt_length, width)
    if tensors[PROMPT_TENSOR].shape != want:
        raise FormatError(f"{source}: {PROMPT_TENSOR} has shape {tensors[PROMPT_TENSOR].shape}, "
                          f"and {cfg.prompt_length} virtual tokens on a model of width {width} "
                          f"need {want}; the config and the weights do not belong together.")


def tensor_names(cfg, encoder_config, family):
    """{peft tensor name: (minicompacter dotted path, transposed?)} of LoRA, LoKr or prompt
    tuning."""
    if isinstance(cfg, PromptConfig):
        return {PROMPT_TENSOR: (PROMPT, False)}
    return {theirs: (ours, True)
            for theirs, (ours, _, _) in update_tensors(cfg, encoder_config, family).items()}


def described(cfg, encoder_config, family):
    """What the files should hold, for a message."""
    if isinstance(cfg, PromptConfig):
        return f"a prompt of {cfg.prompt_length} vectors"
    kind = "LoKr" if isinstance(cfg, LoKrConfig) else "LoRA"
    return (f"{kind} on {list(cfg.target_modules)} of a {encoder_config.num_layers}-layer "
            f"{family.peft.base_class}")


def read(directory, pretrained, family):
    """(model, trainable, frozen, info) of a peft LoRA, LoKr or prompt-tuning directory on a
    pretrained model of the family (no head: peft's files of a bare model hold none)."""
    directory = Path(directory)
    config = read_json_object(directory / CONFIG, error=FormatError, fix=FIX)
    cfg = (prompt_config(config, directory / CONFIG, pretrained.config)
           if config.get("peft_type") == PROMPT_FIXED["peft_type"]
           else method_config(config, directory / CONFIG, family))
    refuse_pickle(directory, PICKLE, WEIGHTS)
    tensors = read_tensors(directory / WEIGHTS, error=FormatError, fix=FIX)
    names = tensor_names(cfg, pretrained.config, family)
    if set(tensors) != set(names):
        odd = sorted(set(tensors) ^ set(names))
        raise FormatError(f"{directory}: tensors {odd[:3]} do not fit "
                          f"{described(cfg, pretrained.config, family)} as {CONFIG} describes it.")
    if isinstance(cfg, PromptConfig):
        check_prompt(tensors, cfg, pretrained.config.embedding_width, directory)
    else:
        check_shapes(tensors, cfg, pretrained.config, family, directory)
    model, skeleton, frozen = init_model(onp.random.default_rng(0), pretrained, cfg, num_labels=0)
    trainable = check_tree(skeleton, {ours: tensors[theirs].T if transposed else tensors[theirs]
                                      for theirs, (ours, transposed) in names.items()}, directory)
    name = config.get("base_model_name_or_path")
    info = {"format": "peft", "method": cfg.method, "task": None, "num_labels": 0, "pooling": "cls",
            "head_layers": 1, "label_names": [], "base_model": {"name": name, "hub_id": name}}
    return model, trainable, frozen, info


def peft_config(cfg, base_model_name_or_path, family):
    """adapter_config.json as peft writes it for minicompacter's LoRA or LoKr on the family's
    bare model."""
    module = family.model_type.replace("-", "_")
    task_type = family.peft.task_types[0]
    mapping = None if task_type else {"base_model_class": family.peft.base_class,
                                      "parent_library": f"transformers.models.{module}."
                                                        f"modeling_{module}"}
    common = {"auto_mapping": mapping, "base_model_name_or_path": base_model_name_or_path,
              "inference_mode": True, "r": cfg.r, "revision": None, "task_type": task_type,
              "target_modules": family.peft_target_modules(cfg.target_modules)}
    if isinstance(cfg, LoKrConfig):
        return {**LOKR_FIXED, **common, "alpha": cfg.alpha, "decompose_both": cfg.decompose_both,
                "decompose_factor": cfg.decompose_factor, "init_weights": True,
                "rank_dropout_scale": False, "use_effective_conv2d": False}
    return {**FIXED, **common, "init_lora_weights": True, "lora_alpha": cfg.alpha}


def write(out, trainable, model, *, family, base_model_name_or_path):
    """peft's files for minicompacter's LoRA, LoKr or prompt tuning (the head, if any, is the
    caller's business); every tensor finite or none written."""
    cfg = model.method.config
    flat = flatten(trainable)
    tensors = {theirs: flat[ours].T if transposed else flat[ours]
               for theirs, (ours, transposed) in tensor_names(cfg, model.encoder_config, family).items()}
    config = (peft_prompt_config(cfg, model.encoder_config, base_model_name_or_path)
              if isinstance(cfg, PromptConfig) else peft_config(cfg, base_model_name_or_path, family))
    out = Path(out)
    atomic_write(out / WEIGHTS, tensor_bytes(tensors, metadata={"format": "pt"}))
    atomic_write(out / CONFIG, json.dumps(config, indent=2))
    return [CONFIG, WEIGHTS]
