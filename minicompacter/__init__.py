"""minicompacter: Compacter (Mahabadi, Henderson, Ruder, NeurIPS 2021, arXiv 2106.04647)
and its relatives in NumPy + autograd, on a BERT-style encoder that loads real
pretrained checkpoints."""

from .checkpoint import load_adapter
from .data import load_task, tasks, tokenize
from .encoder import (NO_HOOKS, TINY, EncoderConfig, Hooks, encoder, head, init_encoder,
                      init_head, pool)
from .methods import (METHODS, AdapterConfig, BitFitConfig, FullConfig, LoRAConfig, Method,
                      make_method, method_config)
from .model import TaskModel, init_model, loss, loss_grad, predict
from .phm import phm_linear, phm_weight
from .pretrained import LoadError, Pretrained, encode_texts, load_pretrained
from .train import TrainConfig, evaluate_checkpoint, finetune

__version__ = "0.1.0"

__all__ = ["AdapterConfig", "BitFitConfig", "EncoderConfig", "FullConfig", "Hooks",
           "LoRAConfig", "LoadError", "METHODS", "Method", "NO_HOOKS", "Pretrained",
           "TINY", "TaskModel", "encode_texts", "encoder", "head", "init_encoder",
           "init_head", "init_model", "load_pretrained", "loss", "loss_grad", "make_method",
           "method_config", "phm_linear", "phm_weight", "pool", "predict", "tokenize",
           "TrainConfig", "evaluate_checkpoint", "finetune", "load_adapter", "load_task", "tasks"]
