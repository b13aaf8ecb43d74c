"""Hugging Face transformers' BERT checkpoint directory, read and written:

    config.json         model_type "bert", the encoder's shapes and settings under
                        transformers' names (`config_from_hf`, `hf_config`)
    model.safetensors   the encoder's tensors under BertModel's names, with or without the
                        "bert." prefix of task models; linear weights in PyTorch's (out, in)
                        layout, transposed here once to the (in, out) that `x @ w + b`
                        wants (`hf_names`); or shards listed by model.safetensors.index.json
    tokenizer.json      (or vocab.txt) the tokenizer, and tokenizer_config.json,
                        special_tokens_map.json beside it

Reading (`read_directory`) checks every name, shape and value. Tensors the encoder does
not use are skipped on purpose: `embeddings.position_ids` (an int64 buffer 0..P-1, which
the encoder computes), `pooler.*` (BERT's next-sentence pooler: minicompacter pools [CLS]
or the mean without it) and the pretraining heads `cls.*`. Weights are never read with
pickle: `pytorch_model.bin` and other pickle files are refused.

Writing (`write_bert_directory`) is the inverse, for `export --to transformers` and for the
base model (with trained layer norms) beside an exported adapter: no pooler is written
(minicompacter has none, so transformers initialises BertModel's pooler afresh; the hidden
states do not use it), and the tokenizer files are copied from the base model's directory,
or written from the tokenizer for a model made here (such as tiny).
"""

import json
import re
import shutil
from pathlib import Path

import numpy as onp
from safetensors import SafetensorError
from safetensors.numpy import load_file, save
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from ...core.encoder import EncoderConfig
from ...core.layers import ACTIVATIONS
from ...core.paths import ATTENTION_LN, EMBEDDING_LN, FFN_LN
from ...core.tree import dotted, flatten, unflatten
from .files import PICKLE_SUFFIXES, LoadError, atomic_write, read_json_object, shard_files

# Tensors in BERT checkpoints that this encoder does not use (see the module docstring).
UNUSED_PREFIXES = ("embeddings.position_ids", "pooler.", "cls.", "classifier.")


# --- config ----------------------------------------------------------------------------

def config_from_hf(hf, source="config.json"):
    """EncoderConfig from a Hugging Face BERT config dict, refusing what the encoder
    does not implement."""
    model_type = hf.get("model_type", "bert")
    if model_type != "bert":
        raise LoadError(f"{source}: model_type {model_type!r} is not supported; minicompacter "
                        f"loads BERT-style encoders (model_type 'bert', such as all-MiniLM-L6-v2 "
                        f"or bert-base-uncased).")
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise LoadError(f"{source}: position_embedding_type {pos!r} is not supported; the encoder "
                        f"implements absolute position embeddings only. Use a checkpoint trained "
                        f"with 'absolute'.")
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise LoadError(f"{source}: hidden_act {act!r} is not supported; the encoder implements "
                        f"{sorted(ACTIVATIONS)}. Use a checkpoint trained with one of them.")
    try:
        return EncoderConfig(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_positions=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            hidden_act=act, initializer_range=hf.get("initializer_range", 0.02))
    except KeyError as e:
        raise LoadError(f"{source} has no {e.args[0]!r}; a BERT config needs vocab_size, "
                        f"hidden_size, num_hidden_layers, num_attention_heads and "
                        f"intermediate_size.") from None
    except ValueError as e:
        raise LoadError(f"{source}: {e}") from None


# --- weights ---------------------------------------------------------------------------

def hf_names(cfg):
    """Every tensor the encoder needs: {our path: (Hugging Face name, transpose?, our shape)}."""
    d, k, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    names = {
        ("embeddings", "word"): ("embeddings.word_embeddings.weight", False, (V, d)),
        ("embeddings", "position"): ("embeddings.position_embeddings.weight", False,
                                     (cfg.max_positions, d)),
        ("embeddings", "token_type"): ("embeddings.token_type_embeddings.weight", False,
                                       (cfg.type_vocab_size, d)),
        ("embeddings", EMBEDDING_LN, "g"): ("embeddings.LayerNorm.weight", False, (d,)),
        ("embeddings", EMBEDDING_LN, "b"): ("embeddings.LayerNorm.bias", False, (d,)),
    }
    dense_layers = {("attention", "query"): ("attention.self.query", d, d),
                    ("attention", "key"): ("attention.self.key", d, d),
                    ("attention", "value"): ("attention.self.value", d, d),
                    ("attention", "output"): ("attention.output.dense", d, d),
                    ("ffn", "in"): ("intermediate.dense", d, k),
                    ("ffn", "out"): ("output.dense", k, d)}
    norms = {ATTENTION_LN: "attention.output.LayerNorm", FFN_LN: "output.LayerNorm"}
    for i in range(cfg.num_layers):
        hf = f"encoder.layer.{i}."
        for ours, (theirs, d_in, d_out) in dense_layers.items():
            names[("layers", i) + ours + ("w",)] = (hf + theirs + ".weight", True, (d_in, d_out))
            names[("layers", i) + ours + ("b",)] = (hf + theirs + ".bias", False, (d_out,))
        for ours, theirs in norms.items():
            names[("layers", i, ours, "g")] = (hf + theirs + ".weight", False, (d,))
            names[("layers", i, ours, "b")] = (hf + theirs + ".bias", False, (d,))
    return names


def normalise_hf_name(name):
    """Drop the "bert." prefix of task-model checkpoints and rename the old
    LayerNorm.gamma / LayerNorm.beta to weight / bias."""
    if name.startswith("bert."):
        name = name[len("bert."):]
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)


def params_from_hf(tensors, cfg, *, dtype=onp.float32, source="model.safetensors"):
    """Our parameter tree from {Hugging Face name: array}, every name and shape checked."""
    tensors = {normalise_hf_name(k): v for k, v in tensors.items()}
    flat = {}
    for path, (name, transpose, shape) in hf_names(cfg).items():
        if name not in tensors:
            raise LoadError(f"{source} has no tensor {name!r}, which config.json implies "
                            f"(num_hidden_layers={cfg.num_layers}); the weights and the config "
                            f"do not belong together, or this is not a BERT checkpoint.")
        t = tensors[name]
        expected = shape[::-1] if transpose else shape             # as stored by PyTorch
        if tuple(t.shape) != expected:
            raise LoadError(f"{source}: {name!r} has shape {tuple(t.shape)}, but config.json "
                            f"implies {expected}; the weights and the config do not belong "
                            f"together.")
        if not onp.isfinite(t).all():
            raise LoadError(f"{source}: {name!r} holds non-finite values (nan or inf); the "
                            f"weights are damaged: download or convert them again.")
        flat[dotted(path)] = onp.ascontiguousarray(t.T if transpose else t, dtype=dtype)
    known = {name for name, _, _ in hf_names(cfg).values()}
    unknown = sorted(k for k in tensors if k not in known and not k.startswith(UNUSED_PREFIXES))
    if unknown:
        raise LoadError(f"{source} holds tensors the encoder does not know: {unknown[:5]}"
                        f"{' ...' if len(unknown) > 5 else ''}. Is this a BERT encoder checkpoint "
                        f"with as many layers as config.json says?")
    return unflatten(flat)


def read_safetensors(directory):
    """{name: array} from model.safetensors or the shards a model.safetensors.index.json
    lists. Refuses pickle files."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.exists():
        files = [single]
    elif index.exists():
        files = shard_files(directory, index)
    else:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise LoadError(
                f"{directory} holds {pickles[0]}, a pickle file, and no model.safetensors. "
                f"minicompacter never loads pickle files (unpickling can run arbitrary code). "
                f"Convert it once where PyTorch is installed, e.g. with transformers: "
                f"AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True).")
        raise LoadError(f"{directory} has no model.safetensors; a checkpoint directory needs "
                        f"config.json, model.safetensors and tokenizer.json.")
    tensors = {}
    for f in files:
        if not f.exists():
            raise LoadError(f"{f} is listed in model.safetensors.index.json but missing; "
                            f"download the checkpoint again.")
        try:
            tensors.update(load_file(f))
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise LoadError(f"{f} cannot be read as safetensors ({e}); the file is corrupt or "
                            f"holds a dtype NumPy lacks (bfloat16): download it again or save "
                            f"it as float32.") from None
    return tensors


# --- tokenizer -------------------------------------------------------------------------

def read_tokenizer(directory):
    """A `tokenizers.Tokenizer` from tokenizer.json, or built from vocab.txt (BERT WordPiece).
    Any padding or truncation stored in the file is switched off: `tokenize` pads to the
    longest text in each batch and truncates to the length it is given."""
    if (directory / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    elif (directory / "vocab.txt").exists():
        lower = True
        if (directory / "tokenizer_config.json").exists():
            lower = json.loads((directory / "tokenizer_config.json").read_text()).get(
                "do_lower_case", True)
        tok = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=lower)._tokenizer
    else:
        raise LoadError(f"{directory} has neither tokenizer.json nor vocab.txt; a checkpoint "
                        f"directory needs one of them beside config.json.")
    tok.no_padding()
    tok.no_truncation()
    return tok

# --- the whole directory -------------------------------------------------------------------

def read_directory(directory, *, dtype=onp.float32):
    """(EncoderConfig, parameter tree, tokenizer) of a BERT checkpoint directory."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise LoadError(f"{directory} has no config.json; a checkpoint directory needs "
                        f"config.json, model.safetensors and tokenizer.json.")
    hf = read_json_object(directory / "config.json", error=LoadError,
                          fix="a BERT config.json is an object with vocab_size, hidden_size, ...")
    cfg = config_from_hf(hf, source=str(directory / "config.json"))
    params = params_from_hf(read_safetensors(directory), cfg, dtype=dtype,
                            source=str(directory / "model.safetensors"))
    tok = read_tokenizer(directory)
    if tok.get_vocab_size() > cfg.vocab_size:
        raise LoadError(f"{directory}: the tokenizer has {tok.get_vocab_size()} tokens but the "
                        f"model only {cfg.vocab_size} word embeddings; they do not belong together.")
    return cfg, params, tok


# --- writing -------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def hf_config(cfg):
    """config.json of a BertModel with an EncoderConfig's shapes and settings."""
    return {"architectures": ["BertModel"], "model_type": "bert",
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
            "intermediate_size": cfg.intermediate_size,
            "max_position_embeddings": cfg.max_positions, "type_vocab_size": cfg.type_vocab_size,
            "layer_norm_eps": cfg.layer_norm_eps, "hidden_dropout_prob": cfg.hidden_dropout,
            "attention_probs_dropout_prob": cfg.attention_dropout, "hidden_act": cfg.hidden_act,
            "initializer_range": cfg.initializer_range, "position_embedding_type": "absolute",
            "pad_token_id": 0}


def bert_tensors(params, cfg):
    """{BertModel tensor name: array in PyTorch's layout} of an encoder parameter tree."""
    flat = flatten(params)
    return {name: onp.ascontiguousarray(flat[dotted(path)].T if transpose else flat[dotted(path)],
                                        dtype=onp.float32)
            for path, (name, transpose, _) in hf_names(cfg).items()}


def write_bert_directory(out, params, pretrained):
    """config.json, model.safetensors and the tokenizer files of a BertModel with these
    encoder parameters (pretrained: the base model, for its config and tokenizer)."""
    out = Path(out)
    atomic_write(out / "config.json", json.dumps(hf_config(pretrained.config), indent=2))
    atomic_write(out / "model.safetensors",
                 save(bert_tensors(params, pretrained.config), metadata={"format": "pt"}))
    source = Path(pretrained.path) if pretrained.path else None
    copied = [f for f in TOKENIZER_FILES if source is not None and (source / f).exists()]
    for f in copied:
        shutil.copyfile(source / f, out / f)
    if "tokenizer.json" not in copied:
        pretrained.tokenizer.save(str(out / "tokenizer.json"))
        atomic_write(out / "tokenizer_config.json", json.dumps(
            {"tokenizer_class": "BertTokenizerFast", "do_lower_case": True, "unk_token": "[UNK]",
             "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
             "mask_token": "[MASK]", "model_max_length": pretrained.config.max_positions},
            indent=2))
        copied = ["tokenizer.json", "tokenizer_config.json"]
    return ["config.json", "model.safetensors"] + copied
