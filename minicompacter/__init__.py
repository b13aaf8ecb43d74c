"""minicompacter: Compacter (Mahabadi, Henderson, Ruder, NeurIPS 2021, arXiv 2106.04647)
and its relatives in NumPy + autograd, on a BERT-style encoder that loads real
pretrained checkpoints."""

from .data import tokenize
from .encoder import (NO_HOOKS, TINY, EncoderConfig, Hooks, encoder, head, init_encoder,
                      init_head, pool)
from .pretrained import LoadError, Pretrained, encode_texts, load_pretrained

__version__ = "0.1.0"

__all__ = ["EncoderConfig", "Hooks", "LoadError", "NO_HOOKS", "Pretrained", "TINY",
           "encode_texts", "encoder", "head", "init_encoder", "init_head", "load_pretrained",
           "pool", "tokenize"]
