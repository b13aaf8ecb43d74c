"""A Hugging Face BERT checkpoint directory written from a minicompacter parameter tree:
the inverse of pretrained.load_directory, for `export --to transformers` and for the base
model (with trained layer norms) beside an exported adapter.

    config.json         model_type "bert", architectures ["BertModel"], the EncoderConfig's
                        values under transformers' names
    model.safetensors   the encoder's tensors under BertModel's names (no "bert." prefix),
                        linear weights back to PyTorch's (out, in); no pooler: minicompacter
                        has none, so transformers initialises BertModel's pooler afresh
                        (the hidden states do not use it)
    tokenizer.json, tokenizer_config.json, vocab.txt, special_tokens_map.json
                        copied from the base model's directory, or (a model made here, such
                        as tiny) tokenizer.json and a tokenizer_config.json written from the
                        tokenizer
"""

import json
import shutil
from pathlib import Path

import numpy as onp

from ..core.tree import dotted, flatten
from .checkpoint import atomic_write
from .pretrained import hf_names

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
    from safetensors.numpy import save

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
