"""Updates beside a frozen weight, and merging them into it.

An update leaves an attention projection's weight W untouched and adds a learned dW beside
it (the encoder's `attention_projection` hook):

    y = x W + b + x dW            x: (B, T, d_in)   W, dW: (d_in, d_out)

Because nothing nonlinear sits between x and dW, a trained update folds into the weight,
W <- W + dW, and the model runs at the base model's cost (`merge_updates`). Three kinds:

    LoRA (Hu et al. 2021; peft)       dW = (alpha / r) A B                     A: (d_in, r)  B: (r, d_out)
    LoKr (peft's tuners/lokr,         dW = (alpha / r) C kron D                C: (in_m, out_l)
          from LyCORIS)                                                        D: (in_n, out_k)
    the PHM update (Compacter's       dW = (alpha / r) sum_i A_i kron s_i t_i^T   A: (n, n, n) shared
          weight, as KAdaptation,                                              s: (n, d_in/n, r)
          He et al. 2022, places it)                                           t: (n, r, d_out/n)

LoKr, as peft computes it (peft 0.21, tuners/lokr/layer.py, get_delta_weight): each width
is split into two factors by `factorization`, d_in = in_m in_n and d_out = out_l out_k, and
in peft's (out, in) layout dW = (alpha / r) kron(W1, W2) with W1: (out_l, in_m),
W2: (out_k, in_n). W2 = lokr_w2_a @ lokr_w2_b (rank r) when r < max(out_k, in_n) / 2, else
one full lokr_w2; W1 likewise (lokr_w1_a @ lokr_w1_b) only with decompose_both. Every weight
here is stored fan-in first, so each tensor is peft's transposed under the same name, and
C = W1^T, D = W2^T:

    w1: (in_m, out_l)   or   w1_b: (in_m, r), w1_a: (r, out_l),   C = w1_b @ w1_a
    w2: (in_n, out_k)   or   w2_b: (in_n, r), w2_a: (r, out_k),   D = w2_b @ w2_a
    dW = (alpha / r) kron(C, D) = (peft's dW)^T

peft's initialisation (init_weights=True): W1 zero (or w1_a zero), the rest Kaiming-uniform
with a = sqrt 5, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), so the update starts at zero.

The PHM update is computed by the PHM layer itself (phm.py's phm_linear and phm_weight):
t starts at zero (so does dW), s Kaiming-uniform as LoRA's A, A normal with std
phm_init_range (0.5 = 1/sqrt(n) for n = 4, so that x (sum_i A_i kron s_i) has the scale of
LoRA's x A). With rank-r B_i and full-rank A_i its dW can reach rank min(d, n^2 r):
rank(A_i kron B_i) = rank(A_i) rank(B_i), n terms (notebook 08).
"""

import math

import numpy as onp

from .blocks import per_block, projection_shapes
from .layers import current
from .paths import CROSS, LOKR, LORA, PHM_LORA, SHARED, is_added, projection_kind
from .phm import init_rule, kron, low_rank_B, phm_linear, phm_weight, rule
from .t5 import stack_view
from .tree import path_map, split


# --- LoRA's update, merged --------------------------------------------------------------------

def lora_delta(cfg, params, i, name):
    """dW = (alpha / r) A B of block i's projection `name`, or None if LoRA does not adapt it.
    A: (d, r)  B: (r, d)  ->  (d, d)"""
    if projection_kind(name) not in cfg.target_modules:
        return None
    p = params["layers"][i][LORA][name]
    return (p["A"] @ p["B"]) * (cfg.alpha / cfg.r)                          # (d_in, d_out)


# --- LoKr ---------------------------------------------------------------------------------------

def factorization(dimension, factor=-1):
    """(m, n) with m n = dimension, as peft's lokr `factorization` picks them: m = factor when
    factor > 0 divides dimension; otherwise m is the largest divisor of dimension that is at
    most sqrt(dimension) (and at most factor, when factor > 0), n = dimension / m.
    384 -> (16, 24), 256 -> (16, 16), 127 -> (1, 127); factor 4: 128 -> (4, 32)."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    bound = dimension if factor == -1 else factor
    m = max(k for k in range(1, math.isqrt(dimension) + 1)
            if dimension % k == 0 and k <= max(bound, 1))
    return m, dimension // m


def lokr_shapes(cfg, d_in, d_out):
    """{name: shape} of one LoKr update d_in -> d_out, as peft's update_layer chooses them:
    W1 (in_m, out_l) is factored only with decompose_both and r < max(in_m, out_l) / 2,
    W2 (in_n, out_k) whenever r < max(in_n, out_k) / 2."""
    in_m, in_n = factorization(d_in, cfg.decompose_factor)
    out_l, out_k = factorization(d_out, cfg.decompose_factor)
    shapes = {}
    if cfg.decompose_both and cfg.r < max(out_l, in_m) / 2:
        shapes.update(w1_b=(in_m, cfg.r), w1_a=(cfg.r, out_l))
    else:
        shapes["w1"] = (in_m, out_l)
    if cfg.r < max(out_k, in_n) / 2:
        shapes.update(w2_b=(in_n, cfg.r), w2_a=(cfg.r, out_k))
    else:
        shapes["w2"] = (in_n, out_k)
    return shapes


def kaiming_uniform(rng, shape, dtype, fan_in=None):
    """PyTorch's kaiming_uniform_(a = sqrt 5) on the transposed (torch) tensor, as peft uses
    it: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = shape[0] for weights stored fan-in first."""
    bound = 1.0 / math.sqrt(fan_in or shape[0])
    return rng.uniform(-bound, bound, shape).astype(dtype)


def init_lokr(rng, cfg, d_in, d_out, dtype=onp.float32):
    """One LoKr update, peft's init: W1 (w1, or w1_a) zero, every other factor Kaiming-uniform."""
    shapes = lokr_shapes(cfg, d_in, d_out)
    return {name: (onp.zeros(shape, dtype) if name in ("w1", "w1_a")
                   else kaiming_uniform(g, shape, dtype))
            for (name, shape), g in zip(sorted(shapes.items()), rng.spawn(len(shapes)))}


def kronecker_factors(p):
    """(C, D) of one LoKr update: C = w1 or w1_b @ w1_a, D = w2 or w2_b @ w2_a."""
    C = p["w1"] if "w1" in p else p["w1_b"] @ p["w1_a"]                    # (in_m, out_l)
    D = p["w2"] if "w2" in p else p["w2_b"] @ p["w2_a"]                    # (in_n, out_k)
    return C, D


def lokr_delta(cfg, params, i, name):
    """dW = (alpha / r) kron(C, D) of block i's projection `name` (peft's get_delta_weight,
    transposed), or None if LoKr does not adapt it.  -> (d_in, d_out)"""
    if projection_kind(name) not in cfg.target_modules:
        return None
    C, D = kronecker_factors(params["layers"][i][LOKR][name])
    return kron(C, D) * (cfg.alpha / cfg.r)                                  # (d_in, d_out)


def lokr_projection(cfg, params, i, name, x, y):
    """The attention-projection hook of LoKr: y + x dW, dW built as peft builds it in its
    forward.  x: (B, T, d_in)  y: (B, T, d_out)"""
    dW = lokr_delta(cfg, params, i, name)
    return y if dW is None else y + current().linear(x, dW)                  # (B, T, d_out)


def init_lokr_layers(cfg, rng, model_config, dtype=onp.float32):
    """{"layers": [{"lokr": {target: {w1 | w1_a, w1_b; w2 | w2_a, w2_b}}}, ...]}; on T5 per
    stack, a decoder block's cross-attention targets too (blocks.per_block)."""
    def block_lokr(g, block):
        shapes = projection_shapes(model_config, cfg.target_modules, block)
        return {LOKR: {t: init_lokr(r, cfg, d_in, d_out, dtype)
                       for (t, (d_in, d_out)), r in zip(shapes.items(), g.spawn(len(shapes)))}}
    return per_block(model_config, rng, block_lokr)


# --- the PHM update -----------------------------------------------------------------------------

def init_phm_lora_layers(cfg, rng, model_config, dtype=onp.float32):
    """{"layers": [{"phm_lora": {target: {"s": (n, d_in/n, r), "t": (n, r, d_out/n)}}}, ...],
        "shared": {"A": (n, n, n)}}: s Kaiming-uniform (fan-in d_in/n), t zero, so dW = 0;
    A normal with std phm_init_range, or the algebra's rules. On T5 per stack, a decoder
    block's cross-attention targets too (blocks.per_block), one A for the whole model."""
    n = cfg.phm_dim
    from_shared, from_layers = rng.spawn(2)
    algebra = None if cfg.phm_rule == "learned" else cfg.phm_rule
    shared = init_rule(from_shared, n, shared=True, algebra=algebra, phm_c_init="normal",
                       phm_init_range=cfg.phm_init_range, dtype=dtype)

    def update(g, d_in, d_out):
        for width in (d_in, d_out):
            if width % n:
                raise ValueError(f"phm_dim {n} does not divide the projection's width {width}; "
                                 f"choose a phm_dim that divides {d_in} and {d_out}.")
        return {"s": kaiming_uniform(g, (n, d_in // n, cfg.r), dtype, fan_in=d_in // n),
                "t": onp.zeros((n, cfg.r, d_out // n), dtype)}

    def block_updates(g, block):
        shapes = projection_shapes(model_config, cfg.target_modules, block)
        return {PHM_LORA: {t: update(r, *shape)
                           for (t, shape), r in zip(shapes.items(), g.spawn(len(shapes)))}}
    return {**per_block(model_config, from_layers, block_updates), SHARED: shared}


def phm_lora_delta(cfg, params, i, name):
    """dW = (alpha / r) sum_i A_i kron (s_i t_i^T) of block i's projection `name`, or None if
    the update does not adapt it.  -> (d_in, d_out)"""
    if projection_kind(name) not in cfg.target_modules:
        return None
    p = params["layers"][i][PHM_LORA][name]
    return phm_weight(rule(params[SHARED]), low_rank_B(p["s"], p["t"])) * (cfg.alpha / cfg.r)


def phm_lora_projection(cfg, params, i, name, x, y):
    """The attention-projection hook of the PHM update: y + (alpha / r) x sum_i A_i kron
    s_i t_i^T, by the PHM layer (the factored product or W built, by size).
    x: (B, T, d_in)  y: (B, T, d_out)"""
    if projection_kind(name) not in cfg.target_modules:
        return y
    p = params["layers"][i][PHM_LORA][name]
    dy = phm_linear({"s": p["s"], "t": p["t"]}, x, shared_A=rule(params[SHARED]),
                    build_W=cfg.build_W)                                     # (B, T, d_out)
    return y + dy * (cfg.alpha / cfg.r)


# --- merging ------------------------------------------------------------------------------------

def merge_refusal(method):
    """Why a method cannot be merged into the weights, or None when it can: a bottleneck
    adapter is nonlinear in its input; a prompt is input, not a weight."""
    hooks = method.hooks
    if hooks.input_embeddings is not None:
        return ("a prompt is extra input before the tokens, not a weight: the model has no "
                "place for it.")
    if hooks.attention_output is not None or hooks.ffn_output is not None:
        return ("its adapters compute f + U(g(D(f))) after a sublayer, with the nonlinearity g "
                "between D and U, and no weight of the encoder can hold a nonlinear function.")
    if hooks.attention_projection is not None and method.delta is None:
        return "it changes the attention projections without a weight update to fold into them."
    return None


def merge_updates(params, method):
    """The model's own tree with a method's updates folded into its weights: every adapted
    attention projection's w (T5's cross-attention's too) becomes w + dW (method.delta), a `weights` hook's weights are
    written out (Intrinsic-SAID's theta_0 + lambda_i P_i(theta_d)), and the method's own
    entries and the head are dropped. params: the whole tree the encoder runs on (frozen and trainable
    merged), so pretrained weights a method trained (full fine-tuning, BitFit's biases) come
    as trained. A method whose computation no weight can hold is refused with the reason
    (`merge_refusal`): a bottleneck adapter is nonlinear in its input."""
    why = merge_refusal(method)
    if why is not None:
        raise ValueError(f"{method.config.method} cannot be merged into the weights: {why} "
                         f"Keep it as it is (export it to a library's adapter files).")
    if method.hooks.weights is not None:
        params = method.hooks.weights(params)
    _, base = split(params, is_added)
    if method.delta is None:
        return base

    def fold(path, w):
        stack, rest = (None, path) if path[0] == "layers" else (path[0], path[1:])
        if (len(rest) == 5 and rest[0] == "layers" and rest[4] == "w"
                and rest[2] in ("attention", "cross_attention")):
            name = rest[3] if rest[2] == "attention" else CROSS + rest[3]
            view = params if stack is None else stack_view(params, stack)   # T5's stacks
            dW = method.delta(view, rest[1], name)
            return w if dW is None else w + dW.astype(w.dtype)              # (d_in, d_out)
        return w
    return path_map(fold, base)
