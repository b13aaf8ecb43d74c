"""T5, the paper's backbone: an encoder-decoder with adapter slots, as pure functions of a tree.

T5 (Raffel et al. 2020, arXiv 1910.10683) as transformers' T5ForConditionalGeneration computes
it (tests/test_t5.py checks states, logits and greedy generation against it), with the slots of
the Compacter reference code (rabeehk/compacter, seq2seq/third_party/models/t5/modeling_t5.py).
Every block is pre-LN, with T5's RMS norm (nn.rms_norm: a weight, no bias, no mean):

    f = SelfAttention(RMS_a(h))              # scale 1, relative position bias; `hooks.attention_projection`
    h = h + Dropout(slot_attention(f, h))    # `hooks.attention_output`, f by default
    f = CrossAttention(RMS_c(h), memory)     # decoder only; `hooks.attention_projection` ("cross_query" ...)
    h = h + Dropout(f)                       # no slot: the reference puts no adapter here
    f = FFN(RMS_f(h))                        # relu, or gated: act(x W_in) * (x W_in_linear)
    h = h + Dropout(slot_ffn(f, h))          # `hooks.ffn_output`, f by default

Each stack starts with the word embedding (shared by both stacks) and dropout and ends with an
RMS norm and dropout. The logits are the decoder's states times the embedding's transpose,
scaled by d_model^-0.5 first (T5 v1.0, tie_word_embeddings), or times a separate output layer
(T5 v1.1, flan-t5).

The slots are encoder.py's `Hooks`, with the same calls, so that a method plugs into both
models and both stacks without either knowing its name:
  - a slot `hooks.attention_output(params, i, f, h, norm)` or `hooks.ffn_output(...)` receives
    the sublayer's output f (before dropout, as the reference reads it), the block's input h
    (the residual) and `norm`, and returns what is added to the residual: the block computes
    h + Dropout(slot(f)). There is no layer norm after the residual add in a pre-LN block, so
    `norm` is the identity: an adapter written for BERT's LN(h + A(f)) gives the reference's
    h + Dropout(A(f)) here, and AdapterHub's Pfeiffer form f + U(g(D(norm(h + f)))) gives
    AdapterHub's T5 form f + U(g(D(h + f))). (AdapterHub applies the dropout before the
    adapter, the reference after it: the same in evaluation.)
  - `hooks.attention_projection(params, i, name, x, y)` sees every projection of every attention:
    "query", "key", "value", "output" of the self-attention and "cross_query", "cross_key",
    "cross_value", "cross_output" of the decoder's cross-attention (peft's LoRA on T5 adapts
    q and v of both).
  - the two hooks that act on the whole model run here as in the encoder:
    `hooks.input_embeddings(params, w, batch)` gets the encoder's word embeddings and may put
    vectors before them (prompt tuning; the decoder's input is never changed), and
    `hooks.weights(params)` gives the tree a forward pass computes with, once per call
    (Intrinsic-SAID), at each public entry (`with_weights`).
  - `params` is the whole tree with "layers" set to the running stack's blocks
    (`stack_view`): a hook reads its block's entries as params["layers"][i][...], as in the
    BERT encoder, and top-level entries shared by both stacks (Compacter's A in
    params["shared"], as the reference creates one phm_rule for the whole model) as before.
    So a method's tree for T5 puts its per-block entries in encoder.layers[i] and
    decoder.layers[i]; i counts the blocks of each stack from 0.

Parameter tree (dicts of arrays, lists for blocks; inner = num_heads * d_kv):

    embeddings: word (V, d)                      the vocabulary, shared by both stacks
    encoder:    layers[i]: attention {query, key, value: {w (d, inner)}, output: {w (inner, d)}},
                           attention_ln {g (d,)},
                           ffn {in: {w (d, d_ff)}, [in_linear: {w (d, d_ff)}], out: {w (d_ff, d)}},
                           ffn_ln {g}
                relative_bias (num_buckets, num_heads)   block 0's, used by every block
                final_ln {g}
    decoder:    as the encoder, each block also cross_attention {...}, cross_attention_ln {g}
    lm_head:    {w (d, V)}                       only when the output layer is not tied
"""

import dataclasses
import math
from typing import NamedTuple

import autograd.numpy as np
import numpy as onp

from .encoder import NO_HOOKS
from .layers import activation, current
from .nn import dropout, mask_bias
from .paths import ATTENTION_LN, BIAS, CROSS, CROSS_ATTENTION_LN, FFN_LN, FINAL_LN

EMBEDDINGS, ENCODER, DECODER, LM_HEAD = "embeddings", "encoder", "decoder", "lm_head"
RELATIVE_BIAS = "relative_bias"
IGNORE_INDEX = -100              # a label that counts for nothing (transformers' ignore_index)

# feed_forward_proj -> (gated, activation: an entry of layers.ACTIVATIONS), as transformers
# reads it: "gated-gelu" is the tanh GELU (gelu_new), "gated-silu" x sigmoid(x)
FEED_FORWARD = {"relu": (False, "relu"), "gated-gelu": (True, "gelu_new"),
                "gated-silu": (True, "silu")}


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Shapes and settings of a T5 (transformers' T5Config names). Defaults are t5-small's,
    which are transformers' defaults too."""
    vocab_size: int = 32128                    # V, rows of the shared embedding
    d_model: int = 512                         # d, the model width
    d_kv: int = 64                             # width of one attention head
    d_ff: int = 2048                           # feed-forward width
    num_layers: int = 6                        # encoder blocks
    num_decoder_layers: int = 6                # decoder blocks
    num_heads: int = 8                         # attention heads; heads * d_kv need not be d
    relative_attention_num_buckets: int = 32   # relative position buckets per direction pair
    relative_attention_max_distance: int = 128  # distances beyond this share a bucket
    dropout_rate: float = 0.1                  # every dropout of the model
    layer_norm_epsilon: float = 1e-6           # added to the mean square in every RMS norm
    feed_forward_proj: str = "relu"            # "relu" (v1.0), "gated-gelu" (v1.1, flan-t5), ...
    tie_word_embeddings: bool = True           # output layer = the embedding (v1.0)
    initializer_factor: float = 1.0            # scales the random weights of `init_t5`
    pad_token_id: int = 0                      # padding; also the decoder's start, in T5
    eos_token_id: int = 1                      # ends a generated sequence
    decoder_start_token_id: int = 0            # the decoder's first input token

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                     "num_heads", "relative_attention_num_buckets",
                     "relative_attention_max_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, onp.integer)) or value < 1:
                raise ValueError(f"T5Config.{name} must be a positive integer, got {value!r}.")
        buckets = self.relative_attention_num_buckets
        distance = self.relative_attention_max_distance
        if buckets < 4 or distance <= buckets // 2:
            raise ValueError(f"T5Config: relative_attention_num_buckets {buckets} and "
                             f"relative_attention_max_distance {distance} leave no logarithmic "
                             f"buckets; use at least 4 buckets and a max distance above half the "
                             f"buckets (T5: 32 and 128).")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate}.")
        if not (math.isfinite(self.layer_norm_epsilon) and self.layer_norm_epsilon > 0):
            raise ValueError(f"T5Config.layer_norm_epsilon must be positive, got "
                             f"{self.layer_norm_epsilon}.")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(f"T5Config.tie_word_embeddings must be True or False, got "
                             f"{self.tie_word_embeddings!r}.")
        if isinstance(self.initializer_factor, bool) or not (
                isinstance(self.initializer_factor, (int, float))
                and math.isfinite(self.initializer_factor) and self.initializer_factor > 0):
            raise ValueError(f"T5Config.initializer_factor must be a positive number, got "
                             f"{self.initializer_factor!r}.")
        if self.feed_forward_proj not in FEED_FORWARD:
            raise ValueError(f"T5Config.feed_forward_proj {self.feed_forward_proj!r} is not "
                             f"supported; use one of {sorted(FEED_FORWARD)}.")
        for name in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, onp.integer)) \
                    or not 0 <= value < self.vocab_size:
                raise ValueError(f"T5Config.{name} must be a token id in [0, {self.vocab_size}), "
                                 f"got {value!r}.")

    @property
    def inner_dim(self):
        """num_heads * d_kv, the width of the attention's queries, keys and values."""
        return self.num_heads * self.d_kv

    @property
    def hidden_size(self):
        """d_model under the name EncoderConfig gives the width (the methods' adapters and the
        adapter formats read it so)."""
        return self.d_model


def stacks(cfg):
    """T5's two stacks of blocks: (name, blocks, cross-attention?) of the encoder and the
    decoder. A method's per-block entries go in params[name]["layers"][i] (`stack_view`)."""
    return ((ENCODER, cfg.num_layers, False), (DECODER, cfg.num_decoder_layers, True))


# A small T5 for gradient checks and fast tests: both stacks of different depths, and
# heads * d_kv (12) different from d_model (16).
TINY_T5 = T5Config(vocab_size=40, d_model=16, d_kv=4, d_ff=24, num_layers=2,
                   num_decoder_layers=3, num_heads=3, relative_attention_num_buckets=8,
                   relative_attention_max_distance=12, feed_forward_proj="gated-gelu",
                   tie_word_embeddings=False)


# --- random initialisation ------------------------------------------------------------------

def weight(rng, d_in, d_out, std, dtype):
    """{"w": (d_in, d_out)} ~ N(0, std^2): T5's linear layers have no bias."""
    return {"w": (rng.standard_normal((d_in, d_out)) * std).astype(dtype)}


def init_attention(rng, cfg, dtype):
    """Mesh TensorFlow's initialisation, which makes the 1/sqrt(d_kv) scale unnecessary:
    W_q ~ N(0, 1 / (d d_kv)), W_k, W_v ~ N(0, 1 / d), W_o ~ N(0, 1 / (h d_kv)), times the factor."""
    d, inner, c = cfg.d_model, cfg.inner_dim, cfg.initializer_factor
    r = rng.spawn(4)
    return {"query": weight(r[0], d, inner, c * (d * cfg.d_kv) ** -0.5, dtype),
            "key": weight(r[1], d, inner, c * d ** -0.5, dtype),
            "value": weight(r[2], d, inner, c * d ** -0.5, dtype),
            "output": weight(r[3], inner, d, c * inner ** -0.5, dtype)}


def init_feed_forward(rng, cfg, dtype):
    """W_in (and W_in_linear) ~ N(0, 1 / d), W_out ~ N(0, 1 / d_ff), times the factor."""
    d, k, c = cfg.d_model, cfg.d_ff, cfg.initializer_factor
    r = rng.spawn(3)
    p = {"in": weight(r[0], d, k, c * d ** -0.5, dtype),
         "out": weight(r[2], k, d, c * k ** -0.5, dtype)}
    if FEED_FORWARD[cfg.feed_forward_proj][0]:
        p["in_linear"] = weight(r[1], d, k, c * d ** -0.5, dtype)
    return p


def init_stack(rng, cfg, num_blocks, cross, dtype):
    """One stack: its blocks (with cross-attention in the decoder), the relative position bias
    table N(0, 1 / d), the final RMS norm."""
    ones = {"g": onp.ones(cfg.d_model, dtype)}
    r_bias, r_blocks = rng.spawn(2)
    layers = []
    for r in r_blocks.spawn(num_blocks):
        r_att, r_cross, r_ffn = r.spawn(3)
        block = {"attention": init_attention(r_att, cfg, dtype), ATTENTION_LN: dict(ones),
                 "ffn": init_feed_forward(r_ffn, cfg, dtype), FFN_LN: dict(ones)}
        if cross:
            block["cross_attention"] = init_attention(r_cross, cfg, dtype)
            block[CROSS_ATTENTION_LN] = dict(ones)
        layers.append(block)
    shape = (cfg.relative_attention_num_buckets, cfg.num_heads)
    std = cfg.initializer_factor * cfg.d_model ** -0.5
    return {"layers": layers, RELATIVE_BIAS: (r_bias.standard_normal(shape) * std).astype(dtype),
            FINAL_LN: dict(ones)}


def init_t5(rng, cfg, *, dtype=onp.float32):
    """Random weights as transformers initialises T5: the embedding N(0, factor^2), the rest as
    `init_attention`, `init_feed_forward` and `init_stack` say, an untied output layer
    N(0, factor^2 / d), every RMS norm weight 1."""
    r_emb, r_enc, r_dec, r_head = rng.spawn(4)
    params = {EMBEDDINGS: {"word": (r_emb.standard_normal((cfg.vocab_size, cfg.d_model))
                                    * cfg.initializer_factor).astype(dtype)},
              ENCODER: init_stack(r_enc, cfg, cfg.num_layers, False, dtype),
              DECODER: init_stack(r_dec, cfg, cfg.num_decoder_layers, True, dtype)}
    if not cfg.tie_word_embeddings:
        params[LM_HEAD] = weight(r_head, cfg.d_model, cfg.vocab_size,
                                 cfg.initializer_factor * cfg.d_model ** -0.5, dtype)
    return params


def init_biases(cfg, dtype=onp.float32):
    """The biases the Compacter reference code gives T5 for BitFit (T5 has none of its own),
    all zero: every linear layer of every block (attention, cross-attention, feed-forward)
    and every block's RMS norm (then g x / rms(x) + b), and the output layer; not the stacks'
    final norms, which the reference builds without one. T5-base: 8,448 per encoder block,
    12,288 per decoder block and 32,100 for the output layer, 280,932 in all (the paper's).
    -> {"encoder": {"layers": [...]}, "decoder": {"layers": [...]}, "lm_head": {"b": (V,)}}"""
    d, inner, k = cfg.d_model, cfg.inner_dim, cfg.d_ff
    ffn_in = ("in", "in_linear") if FEED_FORWARD[cfg.feed_forward_proj][0] else ("in",)

    def zeros(n):
        return {BIAS: onp.zeros(n, dtype)}

    def attention():
        return {"query": zeros(inner), "key": zeros(inner), "value": zeros(inner),
                "output": zeros(d)}

    def block(cross):
        b = {"attention": attention(), ATTENTION_LN: zeros(d), FFN_LN: zeros(d),
             "ffn": {**{name: zeros(k) for name in ffn_in}, "out": zeros(d)}}
        if cross:
            b.update({"cross_attention": attention(), CROSS_ATTENTION_LN: zeros(d)})
        return b
    out = {name: {"layers": [block(cross) for _ in range(n)]} for name, n, cross in stacks(cfg)}
    out[LM_HEAD] = zeros(cfg.vocab_size)
    return out


# --- relative positions ---------------------------------------------------------------------

def relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """The bucket of each relative position (key position - query position), Mesh TensorFlow's
    rule as transformers has it. In the encoder (bidirectional) half the buckets are for keys
    after the query; in the decoder keys after the query do not count (bucket 0: the causal
    mask hides them). Of the n buckets of a direction, distances below n/2 each get their own;
    the others are logarithmic up to max_distance, and farther distances share the last:
        bucket(r) = r                                                   r < n/2
                  = min(n - 1, n/2 + int(log(r / (n/2)) / log(max_distance / (n/2)) (n - n/2)))
    The logarithm is taken in float32, as transformers does (float64 gives the same buckets
    for every configuration tried, T5's included, but at the edges of a bucket the rounding
    could decide).
    relative_position: int array (any shape) -> buckets, int64, the same shape."""
    rel = onp.asarray(relative_position)
    buckets = onp.zeros(rel.shape, onp.int64)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0) * num_buckets
        distance = onp.abs(rel)
    else:
        distance = -onp.minimum(rel, 0)
    max_exact = num_buckets // 2
    ratio = onp.maximum(distance, 1).astype(onp.float32) / onp.float32(max_exact)
    log_part = (onp.log(ratio) / onp.float32(math.log(max_distance / max_exact))
                * onp.float32(num_buckets - max_exact))
    large = onp.minimum(max_exact + log_part.astype(onp.int64), num_buckets - 1)
    return buckets + onp.where(distance < max_exact, distance, large)


def position_bias(table, q_len, k_len, cfg, bidirectional, offset=0):
    """Each head's learned bias for each (query, key) pair, table[bucket(key - query)], the
    queries at positions offset .. offset + q_len - 1 (a decoder generating token t has
    offset t).   table: (num_buckets, h)  ->  (1, h, q_len, k_len)"""
    queries = onp.arange(offset, offset + q_len)[:, None]        # (Tq, 1)
    keys = onp.arange(k_len)[None, :]                            # (1, Tk)
    buckets = relative_position_bucket(keys - queries, bidirectional,
                                       cfg.relative_attention_num_buckets,
                                       cfg.relative_attention_max_distance)       # (Tq, Tk)
    values = current().embedding(table, buckets)                 # (Tq, Tk, h)
    return np.transpose(values, (2, 0, 1))[None]                 # (1, h, Tq, Tk)


def causal_bias(q_len, k_len, offset, dtype):
    """0 where a query may see the key (key position <= query position), a large negative
    number where it may not.  -> (1, 1, q_len, k_len), a constant"""
    queries = onp.arange(offset, offset + q_len)[:, None]       # (Tq, 1)
    keys = onp.arange(k_len)[None, :]                            # (1, Tk)
    return mask_bias(keys <= queries, dtype).reshape(1, 1, q_len, k_len)


# --- blocks -----------------------------------------------------------------------------------

def spawn(rng, n):
    """n independent generators for the dropouts, or n Nones (no dropout)."""
    return rng.spawn(n) if rng is not None else [None] * n


def no_norm(x):
    """The `norm` a T5 slot receives: a pre-LN block has no layer norm after the residual add."""
    return x


def stack_view(params, stack):
    """The tree the hooks of a stack see: the whole tree, "layers" the stack's blocks."""
    view = {key: params[key] for key in params}
    view["layers"] = params[stack]["layers"]
    return view


def projection_hook(hooks, view, i, prefix=""):
    """The `project` function an attention of block i hands its projections to (names with
    `prefix`, "cross_" for cross-attention), or None without a projection hook."""
    if hooks.attention_projection is None:
        return None

    def project(name, x, y):
        return hooks.attention_projection(view, i, prefix + name, x, y)
    return project


def residual(view, i, h, f, slot, cfg, rng):
    """h + Dropout(slot(f)): a sublayer's output through its slot (identity if None), dropout,
    the residual add.   h, f: (B, T, d) -> (B, T, d)"""
    if slot is not None:
        f = slot(view, i, f, h, no_norm)
    return h + dropout(f, cfg.dropout_rate, rng)


def feed_forward(p, x, cfg, rng=None):
    """relu:   Dropout(relu(x W_in)) W_out
    gated:  Dropout(act(x W_in) * (x W_in_linear)) W_out    (GEGLU, SwiGLU; Shazeer 2020)
    x: (B, T, d) -> (B, T, d)"""
    L = current()
    gated, act = FEED_FORWARD[cfg.feed_forward_proj]
    a = activation(act)(L.dense(p["in"], x))                     # (B, T, d_ff)
    if gated:
        a = a * L.dense(p["in_linear"], x)                       # (B, T, d_ff)
    return L.dense(p["out"], dropout(a, cfg.dropout_rate, rng))  # (B, T, d)


def self_attention(view, i, h, bias, pos, cfg, hooks, rng, past=None):
    """Self-attention of block i on RMS_a(h), keys and values of earlier tokens `past`
    (B, T_past, 2 inner) before those of h. Returns (f (B, T, d), keys and values
    (B, T_past + T, 2 inner))."""
    L = current()
    p = view["layers"][i]
    x = L.rms_norm(p[ATTENTION_LN], h, cfg.layer_norm_epsilon)   # (B, T, d)
    project = projection_hook(hooks, view, i)
    kv = L.key_values(p["attention"], x, project)                # (B, T, 2 inner)
    if past is not None:
        kv = np.concatenate([past, kv], axis=1)                  # (B, T_past + T, 2 inner)
    f = L.attention(p["attention"], x, bias, cfg.num_heads, dropout_rate=cfg.dropout_rate,
                    rng=rng, project=project, kv=kv, position_bias=pos, scale=1.0)
    return f, kv


def encoder_block(view, i, h, bias, pos, cfg, hooks=NO_HOOKS, rng=None):
    """Encoder block i.  h: (B, T, d) -> (B, T, d)"""
    p = view["layers"][i]
    r = spawn(rng, 4)
    f, _ = self_attention(view, i, h, bias, pos, cfg, hooks, r[0])
    h = residual(view, i, h, f, hooks.attention_output, cfg, r[1])
    x = current().rms_norm(p[FFN_LN], h, cfg.layer_norm_epsilon)
    f = feed_forward(p["ffn"], x, cfg, r[2])                     # (B, T, d)
    return residual(view, i, h, f, hooks.ffn_output, cfg, r[3])


def decoder_block(view, i, h, bias, pos, memory, cfg, hooks=NO_HOOKS, rng=None, past=None):
    """Decoder block i: self-attention over past and h, cross-attention over the encoder's
    states (`memory`), feed-forward. h: (B, T, d) -> (h (B, T, d), this block's keys and
    values of the tokens so far (B, T_past + T, 2 inner))"""
    L = current()
    p = view["layers"][i]
    r = spawn(rng, 6)
    f, kv = self_attention(view, i, h, bias, pos, cfg, hooks, r[0], past)
    h = residual(view, i, h, f, hooks.attention_output, cfg, r[1])
    x = L.rms_norm(p[CROSS_ATTENTION_LN], h, cfg.layer_norm_epsilon)
    f = L.attention(p["cross_attention"], x, memory.bias, cfg.num_heads,
                    dropout_rate=cfg.dropout_rate, rng=r[2], kv=memory.kv[i], scale=1.0,
                    project=projection_hook(hooks, view, i, CROSS))   # (B, T, d)
    h = residual(view, i, h, f, None, cfg, r[3])
    x = L.rms_norm(p[FFN_LN], h, cfg.layer_norm_epsilon)
    f = feed_forward(p["ffn"], x, cfg, r[4])
    return residual(view, i, h, f, hooks.ffn_output, cfg, r[5]), kv


# --- the stacks -------------------------------------------------------------------------------

def check_ids(ids, mask, cfg, name):
    """Clear errors for token ids the model cannot take; returns ids as an int array (B, T)."""
    ids = onp.asarray(ids)
    if ids.ndim != 2 or not onp.issubdtype(ids.dtype, onp.integer):
        raise ValueError(f"{name} must be integer token ids of shape (batch, tokens), got "
                         f"{ids.dtype} {ids.shape}.")
    if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
        raise ValueError(f"{name} hold values outside [0, {cfg.vocab_size}); the tokenizer does "
                         f"not belong to this model's vocabulary.")
    if mask is not None and onp.shape(mask) != ids.shape:
        raise ValueError(f"the attention mask of {name} has shape {onp.shape(mask)}, expected "
                         f"{ids.shape} like {name}.")
    return ids


def with_weights(params, hooks):
    """(the tree a forward pass computes with, the hooks without `weights`): a method's
    `weights` hook (Intrinsic-SAID's theta_0 + lambda_i P_i(theta_d)) applied once, so that
    the functions a public entry calls do not apply it again."""
    if hooks.weights is None:
        return params, hooks
    return hooks.weights(params), hooks._replace(weights=None)


def t5_encoder(params, batch, cfg, *, hooks=NO_HOOKS, rng=None):
    """The encoder's states.
    batch: {"input_ids": (B, T) int, "attention_mask": (B, T) 1 real / 0 padding (optional)}
    rng: a numpy Generator turns dropout on (training); None turns it off.
    Returns (B, T, d) in the dtype of the parameters; (B, P + T, d) when
    hooks.input_embeddings puts P vectors first (prompt tuning)."""
    L = current()
    params, hooks = with_weights(params, hooks)
    mask = batch.get("attention_mask")
    ids = check_ids(batch["input_ids"], mask, cfg, "input_ids")
    word = params[EMBEDDINGS]["word"]
    h = L.embedding(word, ids)                                   # (B, T, d)
    if hooks.input_embeddings is not None:                       # prompt tuning: (B, P + T, d)
        h, batch = hooks.input_embeddings(params, h, batch)
        mask = batch["attention_mask"]
    B, T = h.shape[:2]
    bias = mask_bias(onp.ones((B, T)) if mask is None else mask, word.dtype)     # (B, 1, 1, T)
    pos = position_bias(params[ENCODER][RELATIVE_BIAS], T, T, cfg, True)         # (1, h, T, T)
    view = stack_view(params, ENCODER)
    r = spawn(rng, cfg.num_layers + 2)
    h = dropout(h, cfg.dropout_rate, r[0])
    for i in range(cfg.num_layers):
        h = encoder_block(view, i, h, bias, pos, cfg, hooks, r[i + 1])
    h = L.rms_norm(params[ENCODER][FINAL_LN], h, cfg.layer_norm_epsilon)
    return dropout(h, cfg.dropout_rate, r[-1])


def states_mask(states, attention_mask):
    """The padding mask of the encoder's states (B, T', d): the input's (B, T), with ones
    first for the positions a method put before the input (T' - T: prompt tuning's)."""
    if attention_mask is None:
        return None
    mask = onp.asarray(attention_mask)
    extra = states.shape[1] - mask.shape[1]
    return mask if not extra else onp.concatenate([onp.ones((len(mask), extra), mask.dtype),
                                                    mask], axis=1)


class Memory(NamedTuple):
    """What the decoder reads of the encoder's output, computed once per input."""
    kv: list          # per decoder block, (B, T_enc, 2 inner): cross-attention's keys, values
    bias: object      # (B, 1, 1, T_enc): the encoder's padding as an additive bias


def memory(params, states, attention_mask, cfg, hooks=NO_HOOKS):
    """Each decoder block's cross-attention keys and values of the encoder's states (B, T, d)."""
    L = current()
    view = stack_view(params, DECODER)
    B, T, _ = states.shape
    kv = [L.key_values(view["layers"][i]["cross_attention"], states,
                       projection_hook(hooks, view, i, CROSS))
          for i in range(cfg.num_decoder_layers)]
    mask = onp.ones((B, T)) if attention_mask is None else attention_mask
    return Memory(kv, mask_bias(mask, states.dtype))


def t5_decoder(params, decoder_input_ids, memory, cfg, *, hooks=NO_HOOKS, rng=None,
               decoder_attention_mask=None, past=None):
    """The decoder's states for its input tokens, each seeing the tokens before it and itself.
    decoder_input_ids: (B, T) int; memory: from `memory`; decoder_attention_mask: (B, T_past + T)
    or None; past: each block's keys and values of T_past earlier tokens (from a previous
    call; generation), or None.
    Returns (states (B, T, d), past for the next call: a list of (B, T_past + T, 2 inner))."""
    L = current()
    ids = check_ids(decoder_input_ids, None, cfg, "decoder_input_ids")
    B, T = ids.shape
    offset = 0 if past is None else past[0].shape[1]
    word = params[EMBEDDINGS]["word"]
    bias = causal_bias(T, offset + T, offset, word.dtype)        # (1, 1, T, T_past + T)
    if decoder_attention_mask is not None:
        if onp.shape(decoder_attention_mask) != (B, offset + T):
            raise ValueError(f"decoder_attention_mask has shape "
                             f"{onp.shape(decoder_attention_mask)}, expected {(B, offset + T)}: "
                             f"one entry per decoder token, earlier tokens included.")
        bias = bias + mask_bias(decoder_attention_mask, word.dtype)    # (B, 1, T, T_past + T)
    pos = position_bias(params[DECODER][RELATIVE_BIAS], T, offset + T, cfg, False, offset)
    view = stack_view(params, DECODER)
    r = spawn(rng, cfg.num_decoder_layers + 2)
    h = dropout(L.embedding(word, ids), cfg.dropout_rate, r[0])  # (B, T, d)
    new_past = []
    for i in range(cfg.num_decoder_layers):
        h, kv = decoder_block(view, i, h, bias, pos, memory, cfg, hooks, r[i + 1],
                              None if past is None else past[i])
        new_past.append(kv)
    h = L.rms_norm(params[DECODER][FINAL_LN], h, cfg.layer_norm_epsilon)
    return dropout(h, cfg.dropout_rate, r[-1]), new_past


def lm_logits(params, states, cfg):
    """Scores over the vocabulary. Tied (v1.0): (states * d^-0.5) E^T, as Mesh TensorFlow and
    transformers scale it; untied: states W_lm; either + b when the tree holds an output bias
    (lm_head.b: BitFit adds one, as the reference does).   states: (..., d) -> (..., V)"""
    L = current()
    if cfg.tie_word_embeddings:
        embedding = params[EMBEDDINGS]["word"]                   # (V, d)
        bias = params[LM_HEAD][BIAS] if LM_HEAD in params else None
        return L.linear(states * cfg.d_model ** -0.5, np.transpose(embedding), bias)
    return L.dense(params[LM_HEAD], states)


def seq2seq_logits(params, batch, cfg, *, hooks=NO_HOOKS, rng=None):
    """Teacher-forced logits: every decoder position's scores for the next token.
    batch: {"input_ids", "attention_mask" (optional), "decoder_input_ids" (B, T_dec),
            "decoder_attention_mask" (optional)}  ->  (B, T_dec, V)"""
    r_enc, r_dec = spawn(rng, 2)
    mask = batch.get("attention_mask")
    params, hooks = with_weights(params, hooks)
    states = t5_encoder(params, batch, cfg, hooks=hooks, rng=r_enc)
    mask = states_mask(states, mask)
    h, _ = t5_decoder(params, batch["decoder_input_ids"], memory(params, states, mask, cfg, hooks),
                      cfg, hooks=hooks, rng=r_dec,
                      decoder_attention_mask=batch.get("decoder_attention_mask"))
    return lm_logits(params, h, cfg)


# --- training and generation ------------------------------------------------------------------

def shift_right(labels, cfg):
    """The decoder's input for teacher forcing: the start token, then the labels but the last,
    with -100 (ignored labels) read as padding.   labels: (B, T) -> (B, T)"""
    labels = onp.asarray(labels)
    start = onp.full(labels.shape[:1] + (1,), cfg.decoder_start_token_id, labels.dtype)
    shifted = onp.concatenate([start, labels[:, :-1]], axis=1)
    return onp.where(shifted == IGNORE_INDEX, cfg.pad_token_id, shifted)


def seq2seq_loss(params, batch, cfg, *, hooks=NO_HOOKS, rng=None, ignore_pad=True):
    """Teacher-forced cross-entropy, the mean over the label tokens of -log p(label | input,
    labels before it). batch: "input_ids", "attention_mask" (optional), "labels" (B, T_dec)
    and "decoder_input_ids" (default: `shift_right(labels)`). Labels -100 count for nothing,
    as in transformers; so do padding labels when ignore_pad (the reference's
    ignore_pad_token_for_loss, which turns them into -100): then labels padded with either
    give the same loss. The output layer runs on the counted positions only."""
    labels = onp.asarray(batch["labels"])
    counted = labels != IGNORE_INDEX
    if ignore_pad:
        counted &= labels != cfg.pad_token_id
    rows = onp.flatnonzero(counted)                              # (N,) positions in B * T_dec
    if not rows.size:
        raise ValueError("the labels hold no token to learn (all -100 or padding).")
    decoder_ids = batch.get("decoder_input_ids")
    if decoder_ids is None:
        decoder_ids = shift_right(labels, cfg)
    if onp.shape(decoder_ids) != labels.shape:
        raise ValueError(f"decoder_input_ids {onp.shape(decoder_ids)} and labels {labels.shape} "
                         f"must have the same shape.")
    r_enc, r_dec = spawn(rng, 2)
    mask = batch.get("attention_mask")
    params, hooks = with_weights(params, hooks)
    states = t5_encoder(params, batch, cfg, hooks=hooks, rng=r_enc)
    mask = states_mask(states, mask)
    h, _ = t5_decoder(params, decoder_ids, memory(params, states, mask, cfg, hooks), cfg,
                      hooks=hooks, rng=r_dec,
                      decoder_attention_mask=batch.get("decoder_attention_mask"))
    picked = np.reshape(h, (-1, cfg.d_model))[rows]              # (N, d)
    return current().cross_entropy(lm_logits(params, picked, cfg), labels.reshape(-1)[rows])


def generate(params, cfg, input_ids, attention_mask=None, max_new_tokens=20, *, hooks=NO_HOOKS):
    """Greedy decoding: from the start token, the most likely next token, one at a time,
    until every row has produced EOS or max_new_tokens were made. The encoder runs once; each
    step runs the decoder on the newest token only, with every block's keys and values of the
    tokens before it kept from the steps before (`t5_decoder`'s past) and cross-attention's
    keys and values of the encoder states made once (`memory`).
    Returns (B, n) int64, n <= max_new_tokens: the generated ids without the start token, each
    row up to and including its EOS, then padding (pad_token_id) once it has finished."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, onp.integer)) \
            or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}.")
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    params, hooks = with_weights(params, hooks)
    states = t5_encoder(params, batch, cfg, hooks=hooks)         # (B, T, d)
    mem = memory(params, states, states_mask(states, attention_mask), cfg, hooks)
    B = states.shape[0]
    token = onp.full((B, 1), cfg.decoder_start_token_id, onp.int64)
    finished = onp.zeros(B, bool)
    past, out = None, []
    for _ in range(max_new_tokens):
        h, past = t5_decoder(params, token, mem, cfg, hooks=hooks, past=past)   # (B, 1, d)
        logits = lm_logits(params, h[:, -1], cfg)                # (B, V)
        token = onp.where(finished, cfg.pad_token_id, onp.argmax(logits, axis=-1))[:, None]
        out.append(token[:, 0])
        finished |= token[:, 0] == cfg.eos_token_id
        if finished.all():
            break
    return onp.stack(out, axis=1) if out else onp.zeros((B, 0), onp.int64)
