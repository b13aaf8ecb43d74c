"""Hugging Face transformers' checkpoint directory of an encoder family (BERT, RoBERTa,
XLM-RoBERTa, DistilBERT, ELECTRA: families.py), read and written:

    config.json         model_type and the encoder's shapes and settings under transformers'
                        names, every field checked (families.encoder_config)
    model.safetensors   the encoder's tensors under the family's names, with or without the
                        model prefix of task models ("bert.", "roberta.", ...); linear weights
                        in PyTorch's (out, in) layout, transposed once to the (in, out) that
                        `x @ w + b` wants; or shards listed by model.safetensors.index.json
    tokenizer.json      (or, for BERT, vocab.txt) the tokenizer, and tokenizer_config.json,
                        special_tokens_map.json beside it

Reading (`read_directory`) goes through the one reader of files.py (float64, float16 and
bfloat16 converted exactly, integers refused, every value finite after the cast) and checks
every name and shape. Tensors the encoder does not use are skipped on purpose, never read:
the families' buffers (BERT's int64 `embeddings.position_ids`), the pooler and the
pretraining or task heads (families.skipped). Weights are never read with pickle:
`pytorch_model.bin` and other pickle files are refused. The tokenizer pads with the family's
pad token (tokenizer_config.json's, checked against config.json's pad_token_id), and its
template must add the family's special tokens.

Writing (`write_directory`) is the inverse, for `export --to transformers` and for the base
model (with trained layer norms) beside an exported adapter: the family's config.json and
tensor names (no pooler: minicompacter has none, so transformers initialises it afresh; the
hidden states do not use it), and the tokenizer files copied from the base model's
directory, or written from the tokenizer for a model made here (such as tiny).
"""

import json
import shutil
from pathlib import Path

import numpy as onp
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from . import families
from .files import LoadError, atomic_write, read_json_object, read_model_tensors, tensor_bytes

CONVERT = (", e.g. with transformers: AutoModel.from_pretrained(dir).save_pretrained(dir, "
           "safe_serialization=True)")
DIRECTORY = "a checkpoint directory needs config.json, model.safetensors and tokenizer.json"


# --- tokenizer -------------------------------------------------------------------------

def read_tokenizer(directory, family=families.FAMILIES["bert"]):
    """A `tokenizers.Tokenizer` from tokenizer.json, or (BERT-style WordPiece families) built
    from vocab.txt. Padding and truncation stored in the file are switched off; `tokenize`
    pads to the longest text in each batch and truncates to the length it is given."""
    path, vocab = directory / "tokenizer.json", directory / "vocab.txt"
    if path.exists():
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:                               # tokenizers raises its own kinds
            raise LoadError(f"{path} cannot be read as a tokenizer ({str(e)[:120]}); the file is "
                            f"damaged: download or save the tokenizer again.") from None
    elif vocab.exists() and family.tokens.cls == "[CLS]":          # a WordPiece family
        lower = tokenizer_config(directory).get("do_lower_case", True)
        tok = BertWordPieceTokenizer(str(vocab), lowercase=bool(lower))._tokenizer
    else:
        raise LoadError(f"{directory} has neither tokenizer.json nor vocab.txt; {DIRECTORY} "
                        f"(or, for BERT, vocab.txt) beside config.json.")
    tok.no_padding()
    tok.no_truncation()
    return tok


def tokenizer_config(directory):
    """tokenizer_config.json's object ({} when there is none), checked to be a JSON object."""
    path = directory / "tokenizer_config.json"
    if not path.exists():
        return {}
    return read_json_object(path, error=LoadError,
                            fix="the file is damaged: download or save the tokenizer again.")


def tokenizer_for(directory, family, cfg):
    """The tokenizer of a directory, checked against the family and the config, padding with
    the family's pad token (what `tokenize` and `Encoded` pad with)."""
    tok = read_tokenizer(directory, family)
    source = directory / "tokenizer.json"
    if tok.get_vocab_size() > cfg.vocab_size:
        raise LoadError(f"{directory}: the tokenizer has {tok.get_vocab_size()} tokens but the "
                        f"model only {cfg.vocab_size} word embeddings; they do not belong together.")
    families.check_post_processor(tok, family, source=source)
    token, pad_id = families.pad_token(tok, family, cfg, tokenizer_config(directory), source=source)
    tok.enable_padding(pad_id=pad_id, pad_token=token)        # to the longest in a batch
    return tok


# --- the whole directory -------------------------------------------------------------------

def read_directory(directory, *, dtype=onp.float32):
    """(EncoderConfig, parameter tree, tokenizer, family name) of a transformers checkpoint
    directory of any family in families.py."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise LoadError(f"{directory} has no config.json; {DIRECTORY}.")
    hf = read_json_object(directory / "config.json", error=LoadError,
                          fix="a model's config.json is an object with model_type, hidden_size, ...")
    source = str(directory / "config.json")
    family = families.family_of(hf, source)
    cfg = families.encoder_config(hf, source)
    tensors = read_model_tensors(directory, dtype=dtype, skip=families.skipped(family),
                                 convert=CONVERT)
    params = families.params_from_tensors(tensors, family, cfg, dtype=dtype,
                                          source=str(directory / "model.safetensors"))
    return cfg, params, tokenizer_for(directory, family, cfg), family.model_type


# --- writing -------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model")
TOKENIZER_CLASSES = {"bert": "BertTokenizerFast", "roberta": "RobertaTokenizerFast",
                     "xlm-roberta": "XLMRobertaTokenizerFast",
                     "distilbert": "DistilBertTokenizerFast", "electra": "ElectraTokenizerFast"}


def write_directory(out, params, pretrained):
    """config.json, model.safetensors and the tokenizer files of the family's bare model
    (BertModel, RobertaModel, ...) with these encoder parameters (pretrained: the base model,
    for its family, config and tokenizer). Returns the names written."""
    out = Path(out)
    family = families.FAMILIES[pretrained.family]
    cfg = pretrained.config
    atomic_write(out / "config.json", json.dumps(families.config_json(family, cfg), indent=2))
    atomic_write(out / "model.safetensors",
                 tensor_bytes(families.tensors_from_params(params, family, cfg),
                              metadata={"format": "pt"}))
    source = Path(pretrained.path) if pretrained.path else None
    copied = [f for f in TOKENIZER_FILES if source is not None and (source / f).is_file()]
    for f in copied:
        shutil.copyfile(source / f, out / f)
    if "tokenizer.json" not in copied:
        plain = Tokenizer.from_str(pretrained.tokenizer.to_str())
        plain.no_padding()                                    # as transformers saves one
        plain.no_truncation()
        atomic_write(out / "tokenizer.json", plain.to_str())
        t = family.tokens
        atomic_write(out / "tokenizer_config.json", json.dumps(
            {"tokenizer_class": TOKENIZER_CLASSES[family.model_type], "do_lower_case": True,
             "unk_token": t.unk, "sep_token": t.sep, "pad_token": t.pad, "cls_token": t.cls,
             "mask_token": t.mask, "model_max_length": cfg.max_length}, indent=2))
        copied = ["tokenizer.json", "tokenizer_config.json"]
    return ["config.json", "model.safetensors"] + copied
