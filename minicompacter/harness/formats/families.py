"""The encoder families minicompacter reads, as data: BERT, RoBERTa, XLM-RoBERTa, DistilBERT
and ELECTRA (discriminators; a generator's encoder reads the same way).

Each is a configuration of the one encoder (core/encoder.py), so a family here is only what
differs in the files: how transformers' config.json names the shapes, how its checkpoint
names the tensors, which tensors are skipped on purpose, the tokenizer's special tokens, and
how AdapterHub and peft name an adapter's tensors on that model class. Four small functions
use the data:

    encoder_config(hf)                      config.json (a dict) -> EncoderConfig, every field
                                            type- and range-checked, unsupported options
                                            refused by name (config_json: the inverse)
    tensor_names(family, cfg)               {our path: (transformers name, transpose?, our shape)}
    params_from_tensors(tensors, family, cfg)   {transformers name: array} -> our parameter tree
    tensors_from_params(params, family, cfg)    the inverse (names without the model prefix)

and two for tokenizers: `pad_token` (the token and id that padding must use) and
`check_post_processor` (tokenizer.json adds the family's special tokens). Reading the files is
the caller's: these functions take dicts and arrays.

What differs, in brief (transformers 4.57, adapters 1.3.0, peft 0.21; the fixtures in
tests/fixtures/families/ were saved by those libraries):

    bert         config: hidden_size, num_hidden_layers, ...; tensors [bert.]embeddings.*,
                 encoder.layer.{i}.attention.self.query, ...; [CLS] A [SEP] B [SEP], types 0/1,
                 [PAD] (0 in BERT's vocabulary)
    roberta      as BERT, and pad_token_id (1) -> padding_idx: positions from padding_idx + 1;
                 prefix roberta.; type_vocab_size 1; <s> A </s></s> B </s>, types all 0, <pad> = 1
    xlm-roberta  as RoBERTa (prefix roberta. too), a SentencePiece tokenizer
    distilbert   config: dim, n_layers, n_heads, hidden_dim, activation, dropout,
                 sinusoidal_pos_embds; tensors [distilbert.]transformer.layer.{i}.attention.q_lin,
                 sa_layer_norm, ffn.lin1, output_layer_norm, ...; no token types; BERT's tokens
    electra      as BERT, and embedding_size E: tables E wide, then embeddings_project (E -> d);
                 prefix electra.; BERT's tokens
"""

import math
import re
from typing import NamedTuple

import numpy as onp

from ...core.encoder import EncoderConfig
from ...core.layers import ACTIVATIONS
from ...core.paths import ATTENTION_ADAPTER, ATTENTION_LN, EMBEDDING_LN, FFN_ADAPTER, FFN_LN
from ...core.tree import dotted, flatten, unflatten
from .files import LoadError

REQUIRED = object()        # a config.json key without a default: it must be there


class FamilyError(LoadError):
    """A config, checkpoint or tokenizer of an encoder family that cannot be read as it is;
    the message names the file, the field or tensor, and the fix. (A LoadError: the command
    line answers it with exit code 2.)"""


class Field(NamedTuple):
    """One config.json key and the EncoderConfig field it sets."""
    theirs: str                # the key in config.json
    ours: str                  # the EncoderConfig field
    kind: str                  # what values are valid: a key of CHECKS
    default: object            # transformers' default when the key is absent, or REQUIRED


class Tokens(NamedTuple):
    """A family's tokenizer conventions (the released tokenizers'; ids are their vocabularies')."""
    pad: str
    cls: str                   # first token of every input
    sep: str                   # ends each text
    unk: str
    mask: str
    pair: str                  # the pair template, for messages: "<s> A </s></s> B </s>"
    seps_in_pair: int          # sep tokens in an encoded pair: BERT 2, RoBERTa 3
    pad_id: int                # the pad token's id in the released vocabularies
    returns_type_ids: bool     # transformers' tokenizer returns token_type_ids by default
                               # (model_input_names): BERT and ELECTRA yes; RoBERTa, XLM-R
                               # (all zeros, one type) and DistilBERT (no types) no


class AdapterHub(NamedTuple):
    """How the adapters library (1.3.0) names an adapter on this family's `...AdapterModel`:
        {prefix}{layer}{location}.adapters.{name}.adapter_down.0.{...}  (.adapter_up.{...})
        {prefix}shared_parameters.{name}.phm_rule        (Compacter's shared A)
        heads.{name}.{1, 4}.{weight, bias}               (the head, no prefix)"""
    model_class: str           # "RobertaAdapterModel"
    model_type: str            # adapter_config.json's "model_type"
    prefix: str                # the base model's attribute: "roberta."
    layer: str                 # "encoder.layer.{i}."
    locations: dict            # our slot -> the module that holds the slot's adapters


class Peft(NamedTuple):
    """How peft (0.21) names LoRA on this family: base_model.model.{prefix}{layer}{module}
    .lora_A.weight (r, d) and .lora_B.weight (d, r); {prefix} is "" on the bare model
    (RobertaModel) and the family's prefix on a task model (RobertaForSequenceClassification)."""
    base_class: str            # the bare model class peft wraps: "RobertaModel"
    layer: str                 # "encoder.layer.{i}."
    modules: dict              # our projection -> the module name under layer
    task_types: tuple = (None, "FEATURE_EXTRACTION")   # adapter_config.json's task_type
                               # values read (the first is the one written)


class Family(NamedTuple):
    model_type: str            # config.json's "model_type"
    prefix: str                # task and pretraining checkpoints' prefix: "roberta."
    fields: tuple              # Fields read from config.json
    fixed: dict                # EncoderConfig fields the family sets whatever the config says
    refused: dict              # config.json key -> the values accepted (others are refused)
    embeddings: dict           # our path under "embeddings" -> the tensor module's name
    layer: str                 # the per-layer prefix: "encoder.layer.{i}."
    modules: dict              # our path inside a layer -> the module's name there
    skipped: tuple             # name prefixes skipped on purpose (after the prefix is dropped)
    tokens: Tokens
    adapterhub: AdapterHub
    peft: Peft

    # the names other libraries give this family's adapters (functions below), as methods so
    # that a format module handed a Family needs no import of this one's functions
    def adapterhub_prefix(self, i, slot, name, stack=None):
        return adapterhub_prefix(self, i, slot, name, stack)

    def adapterhub_shared(self, name):
        return adapterhub_shared(self, name)

    def adapterhub_shared_rule(self, name):
        return adapterhub_shared_rule(self, name)

    def peft_module(self, i, projection, *, task_model=False, stack=None):
        return peft_module(self, i, projection, task_model=task_model, stack=stack)

    def peft_target_modules(self, projections):
        return peft_target_modules(self, projections)


# --- the families --------------------------------------------------------------------------

BERT_FIELDS = (
    Field("vocab_size", "vocab_size", "count", REQUIRED),
    Field("hidden_size", "hidden_size", "count", REQUIRED),
    Field("num_hidden_layers", "num_layers", "count", REQUIRED),
    Field("num_attention_heads", "num_heads", "count", REQUIRED),
    Field("intermediate_size", "intermediate_size", "count", REQUIRED),
    Field("max_position_embeddings", "max_positions", "count", 512),
    Field("type_vocab_size", "type_vocab_size", "count", 2),
    Field("layer_norm_eps", "layer_norm_eps", "eps", 1e-12),
    Field("hidden_dropout_prob", "hidden_dropout", "rate", 0.1),
    Field("attention_probs_dropout_prob", "attention_dropout", "rate", 0.1),
    Field("hidden_act", "hidden_act", "activation", "gelu"),
    Field("initializer_range", "initializer_range", "std", 0.02),
)
# RoBERTa and XLM-R: positions count from the pad token's id + 1
ROBERTA_FIELDS = BERT_FIELDS + (Field("pad_token_id", "padding_idx", "token_id", 1),)
ELECTRA_FIELDS = BERT_FIELDS + (Field("embedding_size", "embedding_size", "count", 128),)
DISTILBERT_FIELDS = (
    Field("vocab_size", "vocab_size", "count", REQUIRED),
    Field("dim", "hidden_size", "count", REQUIRED),
    Field("n_layers", "num_layers", "count", REQUIRED),
    Field("n_heads", "num_heads", "count", REQUIRED),
    Field("hidden_dim", "intermediate_size", "count", REQUIRED),
    Field("max_position_embeddings", "max_positions", "count", 512),
    Field("dropout", "hidden_dropout", "rate", 0.1),
    Field("attention_dropout", "attention_dropout", "rate", 0.1),
    Field("activation", "hidden_act", "activation", "gelu"),
    Field("initializer_range", "initializer_range", "std", 0.02),
    Field("sinusoidal_pos_embds", "sinusoidal_positions", "flag", False),
)

# Options that change what the model computes in ways the encoder does not implement: the
# values accepted (absent counts as accepted).
BERT_REFUSED = {"position_embedding_type": ("absolute",), "is_decoder": (False,),
                "add_cross_attention": (False,), "pruned_heads": ({},)}
DISTILBERT_REFUSED = {"pruned_heads": ({},)}

BERT_EMBEDDINGS = {("word",): "embeddings.word_embeddings",
                   ("position",): "embeddings.position_embeddings",
                   ("token_type",): "embeddings.token_type_embeddings",
                   (EMBEDDING_LN,): "embeddings.LayerNorm"}
BERT_MODULES = {("attention", "query"): "attention.self.query",
                ("attention", "key"): "attention.self.key",
                ("attention", "value"): "attention.self.value",
                ("attention", "output"): "attention.output.dense",
                (ATTENTION_LN,): "attention.output.LayerNorm",
                ("ffn", "in"): "intermediate.dense",
                ("ffn", "out"): "output.dense",
                (FFN_LN,): "output.LayerNorm"}
DISTILBERT_MODULES = {("attention", "query"): "attention.q_lin",
                      ("attention", "key"): "attention.k_lin",
                      ("attention", "value"): "attention.v_lin",
                      ("attention", "output"): "attention.out_lin",
                      (ATTENTION_LN,): "sa_layer_norm",
                      ("ffn", "in"): "ffn.lin1",
                      ("ffn", "out"): "ffn.lin2",
                      (FFN_LN,): "output_layer_norm"}

# Buffers every family may carry (the encoder computes them) and the pooler (minicompacter
# pools [CLS] or the mean without it).
COMMON_SKIPPED = ("embeddings.position_ids", "embeddings.token_type_ids", "pooler.")

BERT_TOKENS = Tokens("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", "[CLS] A [SEP] B [SEP]", 2, 0,
                     True)
ROBERTA_TOKENS = Tokens("<pad>", "<s>", "</s>", "<unk>", "<mask>", "<s> A </s></s> B </s>", 3, 1,
                        False)
BERT_LOCATIONS = {ATTENTION_ADAPTER: "attention.output", FFN_ADAPTER: "output"}
BERT_PEFT = {"query": "attention.self.query", "key": "attention.self.key",
             "value": "attention.self.value", "output": "attention.output.dense"}

FAMILIES = {
    "bert": Family(
        "bert", "bert.", BERT_FIELDS, {}, BERT_REFUSED, BERT_EMBEDDINGS, "encoder.layer.{i}.",
        BERT_MODULES, COMMON_SKIPPED + ("cls.", "classifier."), BERT_TOKENS,
        AdapterHub("BertAdapterModel", "bert", "bert.", "encoder.layer.{i}.", BERT_LOCATIONS),
        Peft("BertModel", "encoder.layer.{i}.", BERT_PEFT)),
    "roberta": Family(
        "roberta", "roberta.", ROBERTA_FIELDS, {}, BERT_REFUSED, BERT_EMBEDDINGS,
        "encoder.layer.{i}.", BERT_MODULES, COMMON_SKIPPED + ("lm_head.", "classifier."),
        ROBERTA_TOKENS,
        AdapterHub("RobertaAdapterModel", "roberta", "roberta.", "encoder.layer.{i}.",
                   BERT_LOCATIONS),
        Peft("RobertaModel", "encoder.layer.{i}.", BERT_PEFT)),
    "xlm-roberta": Family(
        "xlm-roberta", "roberta.", ROBERTA_FIELDS, {}, BERT_REFUSED, BERT_EMBEDDINGS,
        "encoder.layer.{i}.", BERT_MODULES, COMMON_SKIPPED + ("lm_head.", "classifier."),
        ROBERTA_TOKENS,
        AdapterHub("XLMRobertaAdapterModel", "xlm-roberta", "roberta.", "encoder.layer.{i}.",
                   BERT_LOCATIONS),
        Peft("XLMRobertaModel", "encoder.layer.{i}.", BERT_PEFT)),
    "distilbert": Family(
        "distilbert", "distilbert.", DISTILBERT_FIELDS,
        # no token types; DistilBERT's layer norms have eps 1e-12 whatever the config says,
        # and its attention sublayer's output has no dropout
        {"type_vocab_size": 0, "layer_norm_eps": 1e-12, "attention_output_dropout": False},
        DISTILBERT_REFUSED,
        {k: v for k, v in BERT_EMBEDDINGS.items() if k != ("token_type",)},
        "transformer.layer.{i}.", DISTILBERT_MODULES,
        COMMON_SKIPPED + ("vocab_transform.", "vocab_layer_norm.", "vocab_projector.",
                          "pre_classifier.", "classifier.", "qa_outputs."),
        BERT_TOKENS._replace(returns_type_ids=False),
        AdapterHub("DistilBertAdapterModel", "distilbert", "distilbert.", "transformer.layer.{i}.",
                   {ATTENTION_ADAPTER: "attention_adapters", FFN_ADAPTER: "output_adapters"}),
        Peft("DistilBertModel", "transformer.layer.{i}.",
             {"query": "attention.q_lin", "key": "attention.k_lin", "value": "attention.v_lin",
              "output": "attention.out_lin"})),
    "electra": Family(
        "electra", "electra.", ELECTRA_FIELDS, {}, BERT_REFUSED,
        {**BERT_EMBEDDINGS, ("project",): "embeddings_project"},
        "encoder.layer.{i}.", BERT_MODULES,
        COMMON_SKIPPED + ("discriminator_predictions.", "generator_predictions.",
                          "generator_lm_head.", "classifier."),
        BERT_TOKENS,
        AdapterHub("ElectraAdapterModel", "electra", "electra.", "encoder.layer.{i}.",
                   BERT_LOCATIONS),
        Peft("ElectraModel", "encoder.layer.{i}.", BERT_PEFT)),
}


# T5 (an encoder-decoder, not an encoder family: formats/t5.py reads its directories) as the
# adapter formats name it: AdapterHub's T5AdapterModel (1.3.0) saves a block's adapters under
# transformer.{stack}.block.{i}.layer.{L}.adapters.{name}., L = 0 after self-attention, the
# feed-forward's L = 1 in an encoder block and 2 in a decoder block (1 is its cross-attention,
# which has none), and the shared rule under transformer.shared_parameters.{name}.phm_rule
# (T5ForConditionalGeneration with adapters.init keeps the rule but does not save it: load
# and save T5 adapters with T5AdapterModel). peft (0.21) on T5ForConditionalGeneration
# (task_type SEQ_2_SEQ_LM) names base_model.model.{stack}.block.{i}.layer.0.SelfAttention.q
# and ...layer.1.EncDecAttention.q (decoder); its default targets "q", "v" match both.
T5_ATTENTION = {"query": "q", "key": "k", "value": "v", "output": "o"}
T5_PEFT = {**{ours: f"layer.0.SelfAttention.{theirs}" for ours, theirs in T5_ATTENTION.items()},
           **{"cross_" + ours: f"layer.1.EncDecAttention.{theirs}"
              for ours, theirs in T5_ATTENTION.items()}}
# every module of a T5 block by name (peft's target_modules match these): the attention
# projections, the feed-forward's (layer 1 in the encoder, 2 in the decoder), the layer norms
T5_MODULES = {**{(name,): module for name, module in T5_PEFT.items()},
              **{(f"ffn{layer}", part): f"layer.{layer}.DenseReluDense.{part}"
                 for layer in (1, 2) for part in ("wi", "wi_0", "wi_1", "wo")},
              **{(f"ln{layer}",): f"layer.{layer}.layer_norm" for layer in (0, 1, 2)}}
T5 = Family(
    "t5", "", (), {}, {}, {}, "{stack}.block.{i}.", T5_MODULES, (),
    Tokens("<pad>", "", "</s>", "<unk>", "", "A </s> B </s>", 2, 0, False),
    AdapterHub("T5AdapterModel", "t5", "transformer.", "{stack}.block.{i}.",
               {ATTENTION_ADAPTER: "layer.0",
                FFN_ADAPTER: {"encoder": "layer.1", "decoder": "layer.2"}}),
    Peft("T5ForConditionalGeneration", "{stack}.block.{i}.", T5_PEFT,
         ("SEQ_2_SEQ_LM", None)))


# --- config.json -> EncoderConfig ---------------------------------------------------------------

def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v):
    return isinstance(v, int) and not isinstance(v, bool)


# kind -> (is the value valid?, what a valid value is, for the message)
CHECKS = {
    "count": (lambda v: _whole(v) and v >= 1, "a positive integer"),
    "token_id": (lambda v: _whole(v) and v >= 0, "a token id (an integer >= 0)"),
    "rate": (lambda v: _number(v) and 0 <= v < 1, "a probability in [0, 1)"),
    "eps": (lambda v: _number(v) and 0 < v <= 0.1, "a small positive number (such as 1e-12)"),
    "std": (lambda v: _number(v) and v > 0, "a positive number"),
    "activation": (lambda v: isinstance(v, str) and v in ACTIVATIONS,
                   f"one of {sorted(ACTIVATIONS)}"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
}


def family_of(hf, source="config.json"):
    """The Family of a config.json dict, by its model_type (absent: BERT, as old BERT
    checkpoints have none)."""
    model_type = hf.get("model_type", "bert")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise FamilyError(f"{source}: model_type {model_type!r} is not supported; minicompacter "
                          f"reads the encoder families {', '.join(FAMILIES)}.")
    return FAMILIES[model_type]


def read_field(hf, field, source):
    """One config value, checked: present (or defaulted), of the right type and range."""
    if field.theirs not in hf:
        if field.default is REQUIRED:
            raise FamilyError(f"{source} has no {field.theirs!r}; a {hf.get('model_type', 'bert')} "
                              f"config needs it. Use the config.json saved with the weights.")
        return field.default
    value = hf[field.theirs]
    valid, what = CHECKS[field.kind]
    if not valid(value):
        raise FamilyError(f"{source}: {field.theirs} = {value!r} is not valid; it must be {what}.")
    return value


def encoder_config(hf, source="config.json"):
    """EncoderConfig of a transformers config.json (a dict) of any family here; FamilyError
    naming the first key that is missing, invalid or asks for what the encoder lacks."""
    if not isinstance(hf, dict):
        raise FamilyError(f"{source} holds {type(hf).__name__}, not a JSON object; use the "
                          f"config.json saved with the weights.")
    family = family_of(hf, source)
    for key, accepted in family.refused.items():
        if key in hf and hf[key] not in accepted:
            raise FamilyError(f"{source}: {key} = {hf[key]!r} is not supported; minicompacter's "
                              f"encoder computes {key} = {accepted[0]!r} only (a bidirectional "
                              f"encoder with absolute positions and every head).")
    values = {f.ours: read_field(hf, f, source) for f in family.fields}
    values.update(family.fixed)
    if values.get("padding_idx") is not None and values["padding_idx"] >= values["vocab_size"]:
        raise FamilyError(f"{source}: pad_token_id {values['padding_idx']} is not below vocab_size "
                          f"{values['vocab_size']}; the config is damaged.")
    try:
        return EncoderConfig(**values)
    except ValueError as e:
        raise FamilyError(f"{source}: {e}") from None


def config_json(family, cfg):
    """config.json of the family's bare model (transformers' names) with an EncoderConfig's
    shapes and settings: the inverse of `encoder_config`, for exports."""
    hf = {"architectures": [family.peft.base_class], "model_type": family.model_type}
    hf.update({f.theirs: getattr(cfg, f.ours) for f in family.fields})
    hf.update({key: accepted[0] for key, accepted in family.refused.items()
               if key != "pruned_heads"})
    if "pad_token_id" not in hf:
        hf["pad_token_id"] = family.tokens.pad_id
    return hf


# --- tensor names --------------------------------------------------------------------------------

def shape_of(cfg, path):
    """Our shape of the module at `path`: an embedding table, a layer norm (its g and b) or
    a dense layer (its w; b is w's last axis)."""
    d, k, E = cfg.hidden_size, cfg.intermediate_size, cfg.embedding_width
    shapes = {("embeddings", "word"): (cfg.vocab_size, E),
              ("embeddings", "position"): (cfg.max_positions, E),
              ("embeddings", "token_type"): (cfg.type_vocab_size, E),
              ("embeddings", EMBEDDING_LN): (E,), ("embeddings", "project"): (E, d),
              ("ffn", "in"): (d, k), ("ffn", "out"): (k, d),
              (ATTENTION_LN,): (d,), (FFN_LN,): (d,)}
    return shapes.get(tuple(path), (d, d))                      # else an attention projection


def module_tensors(ours, theirs, shape):
    """{our leaf path: (their tensor name, transpose?, our shape)} of one module: a table
    (one weight), a layer norm (weight -> g, bias -> b) or a dense layer (weight (out, in)
    -> w (in, out), bias -> b)."""
    if len(shape) == 2 and ours[-1] in ("word", "position", "token_type"):
        return {ours: (theirs + ".weight", False, shape)}
    if len(shape) == 1:
        return {ours + ("g",): (theirs + ".weight", False, shape),
                ours + ("b",): (theirs + ".bias", False, shape)}
    return {ours + ("w",): (theirs + ".weight", True, shape),
            ours + ("b",): (theirs + ".bias", False, shape[1:])}


def tensor_names(family, cfg):
    """Every tensor the encoder needs: {our path: (transformers name without the model prefix,
    transpose?, our shape)}."""
    names = {}
    for part, theirs in family.embeddings.items():
        if (part == ("token_type",) and not cfg.type_vocab_size) or (
                part == ("project",) and not cfg.projects_embeddings):
            continue
        ours = ("embeddings",) + part
        names.update(module_tensors(ours, theirs, shape_of(cfg, ours)))
    for i in range(cfg.num_layers):
        for part, theirs in family.modules.items():
            names.update(module_tensors(("layers", i) + part, family.layer.format(i=i) + theirs,
                                        shape_of(cfg, part)))
    return names


def strip_prefix(tensors, family, source):
    """{name without the model prefix: array}, with the old LayerNorm.gamma / .beta renamed
    weight / bias. A name present both with and without the prefix is refused."""
    out = {}
    for name, value in tensors.items():
        short = name[len(family.prefix):] if name.startswith(family.prefix) else name
        short = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", short)
        short = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", short)
        if short in out:
            raise FamilyError(f"{source} holds {short!r} twice (with and without the "
                              f"{family.prefix!r} prefix); it mixes two checkpoints.")
        out[short] = value
    return out


def skipped(family):
    """skip(name) -> True for the tensors of a checkpoint that are left out on purpose (with
    or without the model prefix): buffers, the pooler, pretraining and task heads. The reader
    does not read them (files.read_tensors' skip), so an int64 buffer is no error."""
    def skip(name):
        short = name[len(family.prefix):] if name.startswith(family.prefix) else name
        return short.startswith(family.skipped)
    return skip


def params_from_tensors(tensors, family, cfg, *, dtype=onp.float32, source="model.safetensors"):
    """Our parameter tree from {transformers name: array} (with or without the model prefix),
    every name, shape and value checked; the tensors in family.skipped are left out on
    purpose, any other unknown tensor is refused."""
    tensors = strip_prefix(tensors, family, source)
    names = tensor_names(family, cfg)
    flat = {}
    for path, (name, transpose, shape) in names.items():
        if name not in tensors:
            raise FamilyError(f"{source} has no tensor {name!r}, which a {family.model_type} "
                              f"encoder with this config.json needs; the weights and the config "
                              f"do not belong together.")
        t = onp.asarray(tensors[name])
        expected = shape[::-1] if transpose else shape             # as PyTorch stores it
        if t.shape != expected:
            raise FamilyError(f"{source}: {name!r} has shape {t.shape}, but config.json implies "
                              f"{expected}; the weights and the config do not belong together.")
        if t.dtype.kind != "f" or not onp.isfinite(t).all():
            raise FamilyError(f"{source}: {name!r} is not finite floating-point data "
                              f"({t.dtype}); the weights are damaged: convert them again.")
        flat[dotted(path)] = onp.ascontiguousarray(t.T if transpose else t, dtype=dtype)
    known = {name for name, _, _ in names.values()}
    unknown = sorted(k for k in tensors if k not in known and not k.startswith(family.skipped))
    if unknown:
        raise FamilyError(f"{source} holds tensors a {family.model_type} encoder with this "
                          f"config.json does not have: {unknown[:5]}"
                          f"{' ...' if len(unknown) > 5 else ''}. Is num_layers (or "
                          f"embedding_size, type_vocab_size) in config.json right?")
    return unflatten(flat)


def tensors_from_params(params, family, cfg):
    """{transformers name (bare model, no prefix): float32 array in PyTorch's layout}."""
    flat = flatten(params)
    return {name: onp.ascontiguousarray(flat[dotted(path)].T if transpose else flat[dotted(path)],
                                        dtype=onp.float32)
            for path, (name, transpose, _) in tensor_names(family, cfg).items()}


# --- tokenizers --------------------------------------------------------------------------------

def pad_token(tokenizer, family, cfg, tokenizer_config=None, source="tokenizer.json"):
    """(token, id) that padding must use: tokenizer_config.json's pad_token (a string or an
    AddedToken dict), else the family's. For RoBERTa and XLM-R the id must be the config's
    pad_token_id: their positions skip exactly the tokens equal to it."""
    token = (tokenizer_config or {}).get("pad_token", family.tokens.pad)
    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str):
        raise FamilyError(f"{source}: the pad token {token!r} is not a string; tokenizer_config"
                          f".json's pad_token must name one.")
    pad_id = tokenizer.token_to_id(token)
    if pad_id is None:
        raise FamilyError(f"{source} has no pad token {token!r} (a {family.model_type} tokenizer "
                          f"pads with {family.tokens.pad!r}); use the model's own tokenizer.")
    if cfg.padding_idx is not None and pad_id != cfg.padding_idx:
        raise FamilyError(f"{source} pads with {token!r} = {pad_id}, but config.json's "
                          f"pad_token_id is {cfg.padding_idx}: positions would count the "
                          f"padding. Use the tokenizer saved with the model.")
    return token, pad_id


def check_post_processor(tokenizer, family, source="tokenizer.json"):
    """The tokenizer's template puts the family's special tokens around texts and pairs
    ("<s> A </s></s> B </s>" for RoBERTa); FamilyError otherwise (a tokenizer.json without
    its post_processor adds none, and the encoder would see texts without them)."""
    tokens = tokenizer.encode("a", "b").tokens
    cls, sep = family.tokens.cls, family.tokens.sep
    if not tokens or tokens[0] != cls or tokens[-1] != sep or \
            tokens.count(sep) != family.tokens.seps_in_pair:
        raise FamilyError(f"{source} encodes a pair as {tokens}, not as {family.tokens.pair}, "
                          f"the {family.model_type} template; its post_processor is missing or "
                          f"not this family's. Use the tokenizer saved with the model.")


# --- adapter files of other libraries -------------------------------------------------------

def adapterhub_prefix(family, i, slot, name, stack=None):
    """The name prefix of block i's adapter in a slot (ATTENTION_ADAPTER or FFN_ADAPTER), as
    `...AdapterModel.save_adapter` writes it:
    "roberta.encoder.layer.{i}.attention.output.adapters.{name}." (BERT-like),
    "distilbert.transformer.layer.{i}.attention_adapters.adapters.{name}." (DistilBERT),
    "transformer.decoder.block.{i}.layer.2.adapters.{name}." (T5; stack "encoder" or "decoder")."""
    a = family.adapterhub
    location = a.locations[slot]
    location = location[stack] if isinstance(location, dict) else location
    return f"{a.prefix}{a.layer.format(i=i, stack=stack)}{location}.adapters.{name}."


def adapterhub_shared(family, name):
    """Where AdapterHub keeps what an adapter's PHM layers share (the rule, shared_W_phm's
    weights): "{prefix}shared_parameters.{name}." """
    return f"{family.adapterhub.prefix}shared_parameters.{name}."


def adapterhub_shared_rule(family, name):
    """The shared PHM rule's name: "{prefix}shared_parameters.{name}.phm_rule"."""
    return adapterhub_shared(family, name) + "phm_rule"


def peft_module(family, i, projection, *, task_model=False, stack=None):
    """The module peft's LoRA wraps for one of our projections (query, key, value, output) in
    block i, as adapter_model.safetensors names it (before .lora_A.weight / .lora_B.weight):
    base_model.model.encoder.layer.{i}.attention.self.query on a bare RobertaModel,
    base_model.model.transformer.layer.{i}.attention.q_lin on DistilBertModel,
    base_model.model.decoder.block.{i}.layer.1.EncDecAttention.q on T5 (cross_query of the
    decoder: stack "decoder"); with task_model, the family prefix follows base_model.model.
    (RobertaForSequenceClassification)."""
    p = family.peft
    prefix = family.prefix if task_model else ""
    return f"base_model.model.{prefix}{p.layer.format(i=i, stack=stack)}{p.modules[projection]}"


def peft_target_modules(family, projections):
    """peft's target_modules for our projections: the module names' last parts
    ("query", "value"; DistilBERT "q_lin", "v_lin"; "output" as the full
    "attention.output.dense" on BERT-like models, where "dense" alone matches the FFN too)."""
    modules = family.peft.modules
    return [modules[p] if modules[p].endswith(".dense") else modules[p].split(".")[-1]
            for p in projections]
