"""A transformers T5 checkpoint directory read into minicompacter's T5 tree (core/t5.py).

    config.json         model_type "t5" (T5ForConditionalGeneration or T5Model): every field
                        the model uses checked for its type and range, options minicompacter
                        does not implement refused by name
    model.safetensors   or the shards that model.safetensors.index.json lists; tensors in
                        float32, float64, float16 or bfloat16, read by the one checked reader of
                        files.py (NumPy has no bfloat16; a bfloat16 is the top 16 bits of a
                        float32, so the conversion is exact)
    tokenizer.json      read when present; without it the tokenizer is None (ids in, ids out:
                        a sentencepiece spiece.model alone is not read); it pads with the
                        config's pad_token_id

transformers' names map onto the tree of core/t5.py. PyTorch stores linear weights as
(out, in); they are transposed here, once. The vocabulary is stored once as shared.weight
(encoder.embed_tokens.weight and decoder.embed_tokens.weight, where a file has them, must
equal it); lm_head.weight is the separate output layer of untied models (v1.1, flan-t5) and,
in tied ones, must equal the embedding if present. The relative position bias is in block 0 of
each stack only. Files from outside are untrusted: every header entry is checked before any
tensor is read, every expected tensor's shape and finiteness before the tree is built, and
pickle files are never opened.

Written (`write_t5_directory`): the inverse, for exports (a fine-tuned T5 for transformers,
and the base model with trained layer norms beside an exported adapter): config.json of
T5ForConditionalGeneration, model.safetensors under these names, and the tokenizer files
(copied from the base model's directory, or written from the tokenizer made here).

`T5Pretrained` is what this module reads; harness/pretrained.py makes it a `Pretrained`.
"""

import json
import math
import shutil
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as onp

from tokenizers import Tokenizer

from ...core.paths import ATTENTION_LN, CROSS_ATTENTION_LN, FFN_LN, FINAL_LN
from ...core.t5 import DECODER, EMBEDDINGS, ENCODER, FEED_FORWARD, LM_HEAD, RELATIVE_BIAS
from ...core.t5 import T5Config
from ...core.tree import dotted, flatten, unflatten
from .files import LoadError, atomic_write, read_json_object, read_model_tensors, tensor_bytes


class T5Pretrained(NamedTuple):
    """What `load_t5_directory` returns."""
    config: T5Config          # the model's shapes and settings
    params: dict              # the parameter tree (core/t5.py), float32 by default
    tokenizer: object         # a `tokenizers.Tokenizer`, or None without tokenizer.json
    name: str = ""            # where it came from
    path: Optional[str] = None    # the absolute directory it was read from


# --- config.json ------------------------------------------------------------------------------

ARCHITECTURES = ("T5ForConditionalGeneration", "T5Model", "T5WithLMHeadModel")
# config.json key -> (default when absent, or REQUIRED; kind)
REQUIRED = object()
FIELDS = {
    "vocab_size": (REQUIRED, "count"), "d_model": (REQUIRED, "count"), "d_kv": (REQUIRED, "count"),
    "d_ff": (REQUIRED, "count"), "num_layers": (REQUIRED, "count"),
    "num_heads": (REQUIRED, "count"), "num_decoder_layers": (None, "count"),
    "relative_attention_num_buckets": (32, "count"),
    "relative_attention_max_distance": (128, "count"), "dropout_rate": (0.1, "number"),
    "layer_norm_epsilon": (1e-6, "number"), "initializer_factor": (1.0, "number"),
    "feed_forward_proj": ("relu", "str"), "tie_word_embeddings": (True, "bool"),
    "pad_token_id": (0, "count0"), "eos_token_id": (1, "count0"),
    "decoder_start_token_id": (None, "count0"),
}
KINDS = {"count": "a positive integer", "count0": "a non-negative integer (a token id)",
         "number": "a finite number", "str": "a string", "bool": "true or false"}


def _fits(value, kind):
    if kind in ("count", "count0"):
        return (isinstance(value, int) and not isinstance(value, bool)
                and value >= (1 if kind == "count" else 0))
    if kind == "number":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    return isinstance(value, str if kind == "str" else bool)


def refuse_unsupported(hf, source):
    """Options of a T5 config that this T5 does not implement, refused by name."""
    model_type = hf.get("model_type")
    if model_type != "t5":
        raise LoadError(f"{source}: model_type {model_type!r} is not 't5'; this loader reads "
                        f"T5 checkpoints (t5-small, t5-base, google/t5-v1_1-*, "
                        f"google/flan-t5-*).")
    if hf.get("is_encoder_decoder", True) is not True or hf.get("is_decoder", False) is not False:
        raise LoadError(f"{source}: is_encoder_decoder must be true and is_decoder false; this "
                        f"is not a whole encoder-decoder T5.")
    unknown = [a for a in hf.get("architectures") or [] if a not in ARCHITECTURES]
    if unknown:
        raise LoadError(f"{source}: architectures {unknown} are not supported; minicompacter "
                        f"loads {', '.join(ARCHITECTURES)} checkpoints (T5EncoderModel has no "
                        f"decoder; task heads are not read).")
    if hf.get("pruned_heads"):
        raise LoadError(f"{source}: pruned_heads {hf['pruned_heads']} are not supported; every "
                        f"block must have num_heads heads.")
    proj = hf.get("feed_forward_proj", "relu")
    if isinstance(proj, str) and proj not in FEED_FORWARD:
        raise LoadError(f"{source}: feed_forward_proj {proj!r} is not supported; minicompacter's "
                        f"T5 implements {sorted(FEED_FORWARD)}.")


def config_from_t5(hf, source="config.json"):
    """T5Config from a transformers T5 config dict: every field checked, unsupported options
    refused. num_decoder_layers defaults to num_layers and decoder_start_token_id to
    pad_token_id, as in T5's own configs."""
    refuse_unsupported(hf, source)
    values = {}
    for key, (default, kind) in FIELDS.items():
        value = hf.get(key, default)
        if value is REQUIRED:
            raise LoadError(f"{source} has no {key!r}; a T5 config needs "
                            f"{', '.join(k for k, (d, _) in FIELDS.items() if d is REQUIRED)}.")
        if value is None and default is None:
            continue
        if not _fits(value, kind):
            raise LoadError(f"{source}: {key} is {json.dumps(value)[:40]}, not {KINDS[kind]}.")
        values[key] = value
    values.setdefault("num_decoder_layers", values["num_layers"])
    values.setdefault("decoder_start_token_id", values["pad_token_id"])
    try:
        return T5Config(**values)
    except ValueError as e:
        raise LoadError(f"{source}: {e}") from None


# --- tensors ----------------------------------------------------------------------------------

def t5_names(cfg):
    """Every tensor the T5 tree takes from a file, the embedding apart (`embedding_from`):
    {our path: (transformers name, transposed?, our shape)}."""
    d, inner, k = cfg.d_model, cfg.inner_dim, cfg.d_ff
    gated = FEED_FORWARD[cfg.feed_forward_proj][0]
    names = {}

    def attention(ours, theirs):
        for name, letter, shape in (("query", "q", (d, inner)), ("key", "k", (d, inner)),
                                    ("value", "v", (d, inner)), ("output", "o", (inner, d))):
            names[ours + (name, "w")] = (f"{theirs}.{letter}.weight", True, shape)

    def block(stack, i, cross):
        ours, theirs = (stack, "layers", i), f"{stack}.block.{i}.layer."
        attention(ours + ("attention",), theirs + "0.SelfAttention")
        names[ours + (ATTENTION_LN, "g")] = (theirs + "0.layer_norm.weight", False, (d,))
        if cross:
            attention(ours + ("cross_attention",), theirs + "1.EncDecAttention")
            names[ours + (CROSS_ATTENTION_LN, "g")] = (theirs + "1.layer_norm.weight", False, (d,))
        ffn = theirs + f"{2 if cross else 1}."
        ins = {"in": "wi_0", "in_linear": "wi_1"} if gated else {"in": "wi"}
        for name, theirs_name in ins.items():
            names[ours + ("ffn", name, "w")] = (ffn + f"DenseReluDense.{theirs_name}.weight",
                                                True, (d, k))
        names[ours + ("ffn", "out", "w")] = (ffn + "DenseReluDense.wo.weight", True, (k, d))
        names[ours + (FFN_LN, "g")] = (ffn + "layer_norm.weight", False, (d,))

    for stack, count, cross in ((ENCODER, cfg.num_layers, False),
                                (DECODER, cfg.num_decoder_layers, True)):
        for i in range(count):
            block(stack, i, cross)
        names[(stack, RELATIVE_BIAS)] = (
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", False,
            (cfg.relative_attention_num_buckets, cfg.num_heads))
        names[(stack, FINAL_LN, "g")] = (f"{stack}.final_layer_norm.weight", False, (d,))
    if not cfg.tie_word_embeddings:
        names[(LM_HEAD, "w")] = ("lm_head.weight", True, (d, cfg.vocab_size))
    return names


EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# in old checkpoints, ignored by transformers too: cross-attention never had a position bias
IGNORED = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)


def checked(tensors, name, shape, source):
    """tensors[name], refused unless it has this shape and only finite values."""
    t = tensors[name]
    if tuple(t.shape) != shape:
        raise LoadError(f"{source}: {name!r} has shape {tuple(t.shape)}, but config.json implies "
                        f"{shape}; the weights and the config do not belong together.")
    if not onp.isfinite(t).all():
        raise LoadError(f"{source}: {name!r} holds non-finite values (nan or inf); the weights "
                        f"are damaged: download or convert them again.")
    return t


def embedding_from(tensors, cfg, source):
    """The vocabulary (V, d): shared.weight, or the encoder's or decoder's copy; every copy
    present must be equal, and so must lm_head.weight of a tied model."""
    present = [n for n in EMBEDDING_NAMES if n in tensors]
    if not present:
        raise LoadError(f"{source} has no shared.weight (the embedding); this is not a T5 "
                        f"checkpoint, or a part of one.")
    shape = (cfg.vocab_size, cfg.d_model)
    word = checked(tensors, present[0], shape, source)
    copies = present[1:] + (["lm_head.weight"] if cfg.tie_word_embeddings
                            and "lm_head.weight" in tensors else [])
    for name in copies:
        if tuple(tensors[name].shape) != shape or not onp.array_equal(tensors[name], word):
            fix = ("; set tie_word_embeddings false in config.json if the output layer is "
                   "separate" if name == "lm_head.weight" else "")
            raise LoadError(f"{source}: {name!r} differs from {present[0]!r}; T5 shares one "
                            f"embedding{fix}.")
    return word


def params_from_t5(tensors, cfg, *, dtype=onp.float32, source="model.safetensors"):
    """The T5 tree from {transformers name: array}, every name, shape and value checked."""
    names = t5_names(cfg)
    flat = {dotted((EMBEDDINGS, "word")):
            onp.ascontiguousarray(embedding_from(tensors, cfg, source), dtype=dtype)}
    for path, (name, transpose, shape) in names.items():
        if name not in tensors:
            raise LoadError(f"{source} has no tensor {name!r}, which config.json implies "
                            f"(num_layers={cfg.num_layers}, num_decoder_layers="
                            f"{cfg.num_decoder_layers}, feed_forward_proj "
                            f"{cfg.feed_forward_proj!r}, tie_word_embeddings="
                            f"{cfg.tie_word_embeddings}); the weights and the config do not "
                            f"belong together.")
        t = checked(tensors, name, shape[::-1] if transpose else shape, source)
        flat[dotted(path)] = onp.ascontiguousarray(t.T if transpose else t, dtype=dtype)
    known = {name for name, _, _ in names.values()} | set(EMBEDDING_NAMES) | set(IGNORED)
    known |= {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    unknown = sorted(k for k in tensors if k not in known)
    if unknown:
        raise LoadError(f"{source} holds tensors a T5 with this config.json does not have: "
                        f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}.")
    return unflatten(flat)


# --- safetensors --------------------------------------------------------------------------------

def read_t5_tensors(directory, dtype=onp.float32):
    """{name: array of dtype} from model.safetensors or the shards a
    model.safetensors.index.json lists, through the one checked reader (files.py: float32,
    float64, float16 or bfloat16, converted exactly where the dtype allows). Refuses pickle
    files."""
    return read_model_tensors(directory, dtype=dtype, convert=(
        ": T5ForConditionalGeneration.from_pretrained(dir).save_pretrained(dir, "
        "safe_serialization=True)"))


# --- tokenizer and directory --------------------------------------------------------------------

def read_t5_tokenizer(directory, cfg):
    """A `tokenizers.Tokenizer` from tokenizer.json (truncation switched off, padding to the
    longest of a batch with the config's pad token), or None without one. Its vocabulary must
    fit the embedding, and its </s> and <pad>, where it has them, must be the config's EOS and
    padding ids."""

    path = directory / "tokenizer.json"
    if not path.exists():
        return None
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:                                   # tokenizers raises its own kind
        raise LoadError(f"{path} cannot be read as a tokenizer ({e}); download it again.") from None
    tok.no_padding()
    tok.no_truncation()
    if tok.get_vocab_size() > cfg.vocab_size:
        raise LoadError(f"{directory}: the tokenizer has {tok.get_vocab_size()} tokens but the "
                        f"model only {cfg.vocab_size} embedding rows; they do not belong together.")
    for token, field in (("</s>", "eos_token_id"), ("<pad>", "pad_token_id")):
        found = tok.token_to_id(token)
        if found is not None and found != getattr(cfg, field):
            raise LoadError(f"{directory}: the tokenizer's {token} is id {found} but config.json's "
                            f"{field} is {getattr(cfg, field)}; they do not belong together.")
    pad = tok.id_to_token(cfg.pad_token_id)
    if pad is None:
        raise LoadError(f"{directory}: the tokenizer has no token of id {cfg.pad_token_id}, "
                        f"config.json's pad_token_id; they do not belong together.")
    tok.enable_padding(pad_id=cfg.pad_token_id, pad_token=pad)   # as data/batches.tokenize pads
    return tok


def load_t5_directory(directory, *, dtype=onp.float32, name=None):
    """Config, parameters and tokenizer (or None) of a transformers T5 checkpoint directory."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise LoadError(f"{directory} has no config.json; a T5 checkpoint directory needs "
                        f"config.json and model.safetensors.")
    hf = read_json_object(directory / "config.json", error=LoadError,
                                 fix="a T5 config.json is an object with model_type 't5', "
                                     "d_model, ...")
    cfg = config_from_t5(hf, source=str(directory / "config.json"))
    params = params_from_t5(read_t5_tensors(directory, dtype), cfg, dtype=dtype,
                            source=str(directory / "model.safetensors"))
    return T5Pretrained(cfg, params, read_t5_tokenizer(directory, cfg), name or str(directory),
                        str(directory.resolve()))


# --- writing ------------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "spiece.model")


def config_json(cfg):
    """config.json of T5ForConditionalGeneration with a T5Config's shapes and settings (the
    inverse of `config_from_t5`)."""
    hf = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
          "is_encoder_decoder": True}
    hf.update({key: getattr(cfg, key) for key in FIELDS})
    return hf


def t5_tensors(params, cfg):
    """{transformers name: float32 array in PyTorch's layout} of a T5 tree (`t5_names`, plus
    shared.weight; lm_head.weight for an untied model is among t5_names)."""
    flat = flatten(params)
    out = {"shared.weight": flat[dotted((EMBEDDINGS, "word"))]}
    for path, (name, transpose, _) in t5_names(cfg).items():
        out[name] = flat[dotted(path)].T if transpose else flat[dotted(path)]
    return {name: onp.ascontiguousarray(t, dtype=onp.float32) for name, t in out.items()}


def write_t5_directory(out, params, pretrained):
    """config.json, model.safetensors and the tokenizer files of T5ForConditionalGeneration
    with these parameters (pretrained: the base model, for its config and tokenizer). A tree
    with leaves T5 has no place for (BitFit's biases) is refused. Returns the names written."""
    out = Path(out)
    cfg = pretrained.config
    extra = sorted(set(flatten(params)) - {dotted(p) for p in t5_names(cfg)}
                   - {dotted((EMBEDDINGS, "word"))})
    if extra:
        raise ValueError(f"transformers' T5 has no place for {extra[:3]}: T5 has no biases "
                         f"(BitFit adds them); keep this model in minicompacter's checkpoint.")
    atomic_write(out / "config.json", json.dumps(config_json(cfg), indent=2))
    atomic_write(out / "model.safetensors", tensor_bytes(t5_tensors(params, cfg),
                                                         metadata={"format": "pt"}))
    source = Path(pretrained.path) if pretrained.path else None
    copied = [f for f in TOKENIZER_FILES if source is not None and (source / f).is_file()]
    for f in copied:
        shutil.copyfile(source / f, out / f)
    if "tokenizer.json" not in copied and pretrained.tokenizer is not None:
        plain = Tokenizer.from_str(pretrained.tokenizer.to_str())
        plain.no_padding()                                    # as transformers saves one
        plain.no_truncation()
        atomic_write(out / "tokenizer.json", plain.to_str())
        atomic_write(out / "tokenizer_config.json", json.dumps(
            {"tokenizer_class": "T5TokenizerFast", "eos_token": "</s>", "unk_token": "<unk>",
             "pad_token": plain.id_to_token(cfg.pad_token_id), "extra_ids": 0}, indent=2))
        copied = ["tokenizer.json", "tokenizer_config.json"]
    return ["config.json", "model.safetensors"] + copied
