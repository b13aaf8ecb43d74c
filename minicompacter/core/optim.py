"""AdamW over parameter trees, its learning-rate schedule, gradient clipping.

AdamW (Loshchilov and Hutter, "Decoupled Weight Decay Regularization", arXiv 1711.05101),
as PyTorch's torch.optim.AdamW computes it, for step t = 1, 2, ...:

    p <- p (1 - lr wd)                                  (decoupled weight decay; not on
                                                         biases and layer norms)
    m <- b1 m + (1 - b1) g                              first moment estimate
    v <- b2 v + (1 - b2) g^2                            second moment estimate
    p <- p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

The state is a plain tree a student can print: {"step", "m", "v"}, m and v shaped like
the parameters. Everything stays in the parameters' dtype (Python floats as constants).
"""

import math

import numpy as onp

from .paths import decays
from .tree import leaves, path_map, tree_map


def init_adamw(params):
    """Step 0, zero moments."""
    return {"step": 0, "m": tree_map(onp.zeros_like, params), "v": tree_map(onp.zeros_like, params)}


def global_norm(grads):
    """sqrt of the sum of squares of every gradient entry."""
    return math.sqrt(sum(float(onp.vdot(g, g)) for _, g in leaves(grads)))


def clip_by_global_norm(grads, max_norm):
    """Scale all gradients by min(1, max_norm / norm), as torch's clip_grad_norm_.
    Returns (clipped grads, the norm before clipping)."""
    norm = global_norm(grads)
    if max_norm is None or norm <= max_norm or norm == 0.0:
        return grads, norm
    scale = max_norm / (norm + 1e-6)
    return tree_map(lambda g: g * scale, grads), norm


def adamw_update(params, grads, state, lr, *, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """One AdamW step. Returns (new params, new state); the inputs are not modified."""
    t = state["step"] + 1
    c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t              # bias corrections
    m = tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, state["m"], grads)
    v = tree_map(lambda v, g: b2 * v + (1.0 - b2) * (g * g), state["v"], grads)

    def update(path, p, m, v):
        if weight_decay and decays(path):
            p = p * (1.0 - lr * weight_decay)
        return p - lr * (m * (1.0 / c1)) / (onp.sqrt(v * (1.0 / c2)) + eps)
    return path_map(update, params, m, v), {"step": t, "m": m, "v": v}


def linear_schedule(step, total_steps, warmup_steps, peak_lr):
    """The learning rate of update `step` (1-based): a linear warm-up from 0 to peak_lr
    over warmup_steps, then a linear decay to 0 at total_steps (the Hugging Face Trainer's
    linear schedule, counted from the first update so that none is wasted at 0)."""
    if warmup_steps and step <= warmup_steps:
        return peak_lr * step / warmup_steps
    return peak_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
