"""A task model: the frozen encoder, a method plugged into it, and a trainable head; or a
frozen T5 with a method in both stacks, answering in words (text-to-text, no head).

The parameters live in two trees: `trainable` (the method's own parameters, the
pretrained weights it unfreezes, and the head) and `frozen` (all the rest). The loss
takes them separately and merges them inside, so differentiating with respect to
argument 0, the trainable tree, is what "train only the adapter" means:

    loss_and_grad = value_and_grad(loss)      # what a training step calls
"""

from typing import NamedTuple

from autograd import grad, value_and_grad

from . import t5
from .encoder import POOLING, EncoderConfig, encoder, fixed, head, init_head, pool
from .layers import current
from .methods import Method, make_method
from .nn import mse
from .paths import HEAD
from .tree import merge, split


class TaskModel(NamedTuple):
    """Everything static about a model for one task (no arrays)."""
    encoder_config: EncoderConfig  # the base model's config: an EncoderConfig, or a T5Config
    method: Method
    num_labels: int = 2            # 1: regression (STS-B); 0: no head (hidden states only);
                                   # on T5 the task's, recorded (T5 answers in words, no head)
    pooling: str = POOLING         # "mean" (over real tokens) or "cls"
    head_layers: int = 1           # 1: linear; 2: a tanh hidden layer first (AdapterHub's)

    @property
    def seq2seq(self):
        """An encoder-decoder (T5): outputs are logits over the vocabulary, (B, T_dec, V)."""
        return is_seq2seq(self.encoder_config)


def is_seq2seq(config):
    """Whether a base model's config is an encoder-decoder's (T5)."""
    return isinstance(config, t5.T5Config)


def init_model(rng, pretrained, method="compacter", *, num_labels=2, pooling=POOLING,
               head_layers=1):
    """(model, trainable, frozen) for a pretrained encoder and a method (config or name).

    trainable = the method's new parameters + the pretrained weights it unfreezes + a head
    (none with num_labels=0, nor on T5); frozen = every other pretrained weight, always the encoder's
    fixed leaves (a sinusoidal position table: `encoder.fixed`), the method's new
    parameters that stay at their start (`Method.fixed`: a frozen PHM rule), and its fixed
    constants (Intrinsic-SAID's projections: `Method.from_base`)."""
    method = method if isinstance(method, Method) else make_method(method)
    cfg = pretrained.config
    if pooling not in ("cls", "mean"):
        raise ValueError(f"Unknown pooling {pooling!r}; use 'cls' or 'mean'.")
    dtype = pretrained.params["embeddings"]["word"].dtype
    r_method, r_head = rng.spawn(2)
    unfrozen, frozen = split(pretrained.params,
                             lambda path: method.unfreezes(path) and not is_fixed(cfg, path))
    kept, added = split(method.init(r_method, cfg, dtype), method.fixed)
    trainable, frozen = merge(unfrozen, added), merge(frozen, kept)
    if method.from_base is not None:      # made from the pretrained weights it may move
        movable = split(pretrained.params, lambda path: not is_fixed(cfg, path))[0]
        added, constants = method.from_base(r_method.spawn(1)[0], movable, dtype)
        trainable, frozen = merge(trainable, added), merge(frozen, constants)
    if num_labels and not is_seq2seq(cfg):
        trainable[HEAD] = init_head(r_head, cfg.hidden_size, num_labels, layers=head_layers,
                                    dtype=dtype)
    return TaskModel(cfg, method, num_labels, pooling, head_layers), trainable, frozen


def kept_fixed(model, frozen):
    """The method's own parameters in the frozen tree (`Method.fixed`: a rule frozen at its
    random start, or an algebra's): what a checkpoint must record besides the trainable tree
    to give the same model back. {} for most methods."""
    return split(frozen, model.method.fixed)[0]


def is_fixed(cfg, path):
    """A pretrained leaf no method trains (encoder.fixed; T5 has none)."""
    return not is_seq2seq(cfg) and fixed(cfg, path)


def hidden_states(trainable, frozen, batch, model, rng=None):
    """The encoder's last hidden states (B, T, d) with the method plugged in (T5: its
    encoder's); (B, P + T, d) with prompt tuning's P virtual tokens first, as peft gives them."""
    params = merge(frozen, trainable)
    forward = t5.t5_encoder if model.seq2seq else encoder
    return forward(params, batch, model.encoder_config, hooks=model.method.hooks, rng=rng)


def predict(trainable, frozen, batch, model, rng=None):
    """Logits (B, num_labels), or scores (B, 1) for regression. Dropout when rng is given.
    T5: the teacher-forced logits (B, T_dec, V) of batch["decoder_input_ids"] (t5.seq2seq_logits)."""
    if model.seq2seq:
        return t5.seq2seq_logits(merge(frozen, trainable), batch, model.encoder_config,
                                 hooks=model.method.hooks, rng=rng)
    if not model.num_labels:
        raise ValueError("This model has no head (an adapter loaded without one): it gives "
                         "hidden states (model.hidden_states), not predictions.")
    hidden = hidden_states(trainable, frozen, batch, model, rng)
    return head(trainable[HEAD], pool(hidden, batch["attention_mask"], model.pooling))


def loss(trainable, frozen, batch, model, rng=None):
    """Cross-entropy for classification, mean squared error for regression; on T5 the
    teacher-forced cross-entropy of the answer's tokens (t5.seq2seq_loss: batch["labels"]
    (B, T_dec), -100 and padding ignored)."""
    if model.seq2seq:
        return t5.seq2seq_loss(merge(frozen, trainable), batch, model.encoder_config,
                               hooks=model.method.hooks, rng=rng)
    out = predict(trainable, frozen, batch, model, rng)
    if model.num_labels == 1:
        return mse(out, batch["labels"])
    return current().cross_entropy(out, batch["labels"])


def generate(trainable, frozen, batch, model, max_new_tokens):
    """T5's greedy answers to batch["input_ids"] (B, T) with the method plugged in:
    (B, n <= max_new_tokens) ids, each row up to and including its EOS (t5.generate)."""
    if not model.seq2seq:
        raise ValueError("generate needs an encoder-decoder (T5); an encoder's model predicts "
                         "labels (predict).")
    return t5.generate(merge(frozen, trainable), model.encoder_config, batch["input_ids"],
                       batch.get("attention_mask"), max_new_tokens, hooks=model.method.hooks)


# d loss / d trainable (argument 0): the frozen tree gets no gradient. A training step
# (train.train_step) calls loss_and_grad; loss_grad is the gradient alone.
loss_and_grad = value_and_grad(loss)
loss_grad = grad(loss)
