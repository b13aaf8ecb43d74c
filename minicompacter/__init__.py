"""minicompacter: Compacter (Mahabadi, Henderson, Ruder, NeurIPS 2021, arXiv 2106.04647)
and its relatives in NumPy + autograd, on a BERT-style encoder that loads real
pretrained checkpoints.

The package has two layers: `minicompacter.core`, the math (layers, the PHM product, the
encoder, the methods, the loss, the optimiser, parameter counts), which reads no file and
imports nothing of the rest; and `minicompacter.harness`, everything around it (checkpoints
and data, training loops, the study, figures, the command line). The names below are the
public API of both. Importing the package changes nothing in the process: the fast kernels
take every core only while `finetune`, `evaluate_checkpoint` or `encode_texts` runs (or
inside `parallel()`), and the allocator is tuned only by the command line.
"""

from .core.encoder import (NO_HOOKS, TINY, EncoderConfig, Hooks, encoder, head, init_encoder,
                           init_head, pool)
from .core.layers import FAST, PLAIN, Layers, use_layers
from .core.methods import (METHODS, PRESETS, AdapterConfig, BitFitConfig, FullConfig,
                           IntrinsicConfig, LoKrConfig, LoRAConfig, Method, PHMLoRAConfig,
                           PromptConfig, make_method, method_config)
from .core.model import TaskModel, hidden_states, init_model, loss, loss_and_grad, loss_grad, predict
from .core.phm import algebra_rule, phm_linear, phm_weight
from .core.t5 import T5Config, init_t5, seq2seq_logits
from .core.threads import parallel
from .core.updates import merge_updates
from .harness.data.batches import tokenize
from .harness.data.tasks import load_task, tasks
from .harness.data.userdata import TaskData
from .harness.formats.dispatch import export_adapter, load_adapter
from .harness.pretrained import LoadError, Pretrained, encode_texts, generate, load_pretrained
from .harness.training.evaluate import evaluate_checkpoint
from .harness.training.train import TrainConfig, finetune

__version__ = "0.3.0"

__all__ = ["AdapterConfig", "BitFitConfig", "EncoderConfig", "FAST", "FullConfig",
           "Hooks", "IntrinsicConfig", "Layers", "LoKrConfig", "LoRAConfig",
           "LoadError", "METHODS", "Method", "NO_HOOKS", "PHMLoRAConfig", "PLAIN",
           "PRESETS", "Pretrained", "PromptConfig", "T5Config", "TINY", "TaskData",
           "TaskModel", "TrainConfig", "algebra_rule", "encode_texts", "encoder",
           "evaluate_checkpoint", "export_adapter", "finetune", "generate", "head",
           "hidden_states", "init_encoder", "init_head", "init_model", "init_t5",
           "load_adapter", "load_pretrained", "load_task", "loss", "loss_and_grad",
           "loss_grad", "make_method", "merge_updates", "method_config", "parallel",
           "phm_linear", "phm_weight", "pool", "predict", "seq2seq_logits", "tasks",
           "tokenize", "use_layers"]
