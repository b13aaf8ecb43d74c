"""The one switch between the reference layers and the fast ones.

Everything the model computes, the encoder, T5, every adapter and LoRA update and the loss,
calls its layers through `current()`, which is one of two `Layers` (the two exceptions,
dropout and the padding mask's additive bias, are one function each in nn.py, called
directly: neither has a gradient worth writing by hand):

  PLAIN  the functions of nn.py, written as the math reads; autograd differentiates
         them as written. The reference.
  FAST   kernels.py's autograd primitives with hand-written gradients: the same values
         to float32 rounding (tests/test_layers.py checks every method both ways), several
         times faster to train. The default.

Choose with a context manager, for a block of code,

    with use_layers("plain"):
        value = loss(trainable, frozen, batch, model)

or with `TrainConfig(layer_set="plain")` (`--layer-set plain`) for a whole run. The choice
belongs to the running thread (a contextvars.ContextVar) and ends with the block; importing
a module never makes it.

`ACTIVATIONS` is the one table of activation functions: the encoder's `hidden_act` and an
adapter's `non_linearity` name an entry of it (Hugging Face's and AdapterHub's spellings).
"""

import contextlib
import contextvars
from typing import Callable, NamedTuple

from . import kernels, nn


class Layers(NamedTuple):
    """One implementation of every layer the model uses."""
    name: str
    linear: Callable          # (x, w, b=None) -> x @ w + b
    dense: Callable           # ({"w", "b"}, x) -> x @ w + b
    layer_norm: Callable      # ({"g", "b"}, x, eps) -> (x - mu) / sqrt(var + eps) * g + b
    rms_norm: Callable        # ({"g"}, x, eps) -> x / sqrt(mean(x^2) + eps) * g   (T5's)
    attention: Callable       # (params, x, bias, num_heads, ...) -> multi-head attention
    key_values: Callable      # (params, memory) -> [memory W_k | memory W_v], for attention(kv=)
    embedding: Callable       # (table, ids) -> the rows of the table
    cross_entropy: Callable   # (logits, labels) -> mean negative log-likelihood
    gelu: Callable            # the exact GELU, x Phi(x)
    gelu_tanh: Callable       # the tanh approximation
    relu: Callable
    swish: Callable           # x sigmoid(x), also called SiLU
    tanh: Callable

    def __repr__(self):
        return f"Layers({self.name!r})"


PLAIN = Layers("plain", nn.linear, nn.dense, nn.layer_norm, nn.rms_norm, nn.attention,
               nn.key_values, nn.embedding, nn.cross_entropy, nn.gelu, nn.gelu_tanh, nn.relu,
               nn.swish, nn.tanh)
FAST = Layers("fast", kernels.linear, kernels.dense, kernels.layer_norm, kernels.rms_norm,
              kernels.attention, kernels.key_values, kernels.embedding, kernels.cross_entropy,
              kernels.gelu, nn.gelu_tanh, nn.relu, nn.swish, nn.tanh)
LAYERS = {"plain": PLAIN, "fast": FAST}

# name in a config -> the Layers field that computes it
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_tanh": "gelu_tanh", "relu": "relu", "swish": "swish", "silu": "swish",
               "tanh": "tanh"}

_current = contextvars.ContextVar("minicompacter_layers", default=FAST)


def current():
    """The Layers in use: FAST unless a `use_layers` block says otherwise."""
    return _current.get()


def resolve(which):
    """A Layers from "plain", "fast" or a Layers."""
    if isinstance(which, Layers):
        return which
    if which not in LAYERS:
        raise ValueError(f"layers {which!r} is unknown; use one of {sorted(LAYERS)}.")
    return LAYERS[which]


@contextlib.contextmanager
def use_layers(which):
    """Run the block on the given layers ("plain", "fast" or a Layers)."""
    token = _current.set(resolve(which))
    try:
        yield current()
    finally:
        _current.reset(token)


def activation(name):
    """The activation function a config names, from the layers in use."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is unknown; use one of {sorted(ACTIVATIONS)}.")
    return getattr(current(), ACTIVATIONS[name])
