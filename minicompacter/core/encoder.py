"""A BERT-style encoder with adapter slots, and the heads that read it.

One encoder for the BERT family: BERT, RoBERTa, XLM-RoBERTa, DistilBERT and ELECTRA
discriminators are configurations of it (`EncoderConfig`), not copies. What differs is data:

    family          positions (the table rows read)           token types   embeddings
    BERT            0, 1, ..., T-1                            2             width d
    RoBERTa, XLM-R  p+1, p+2, ... on real tokens, p on pads   1 (all zero)  width d
                    (p = padding_idx, the pad token's id: 1)
    DistilBERT      0, 1, ..., T-1 (learned or fixed sin/cos) none          width d
    ELECTRA         0, 1, ..., T-1                            2             width E, then E -> d
All are post-LN with the same block; DistilBERT alone has no dropout on the attention output.

The embeddings (Devlin et al. 2019, Section 3; ELECTRA, Clark et al. 2020, Section 3.2):

    e = W_word[ids] + W_pos[positions] (+ W_type[token_type_ids])      # (B, T, E)
    x = Dropout(LN_e(e))          (then x W_proj + b_proj, (B, T, d), when E != d)

One block (post-LN, as BERT; Devlin et al. 2019), with the two slots where adapter
methods plug in (Houlsby et al. 2019; Compacter, Mahabadi et al. 2021, Section 2):

    a = Dropout(SelfAttention(h))          # query/key/value/output: `hooks.attention_projection`
                                           # (no Dropout here in DistilBERT)
    a = slot_attention(a, h, LN_a)         # `hooks.attention_output`, a by default
    h = LN_a(h + a)
    f = Dropout(W_out GELU(W_in h))
    f = slot_ffn(f, h, LN_f)               # `hooks.ffn_output`, f by default
    h = LN_f(h + f)

A slot sees the sublayer's output, the sublayer's input h (the residual) and the block's
layer norm, and returns what the block adds to h before that layer norm. The reference's
adapter (and AdapterHub's Houlsby and Compacter blocks) returns f + U(g(D(f))), so the block
is LN(h + f + U(g(D(f)))) = LN(h + A(Dropout(Sublayer(h)))); AdapterHub's Pfeiffer and
Compacter++ blocks return f + U(g(D(LN(h + f)))) (`AdapterConfig.original_ln_before`). The
adapter sits after the sublayer's dropout (the T5 reference code applies dropout after the
adapter instead; docs/paper.md, "Choices"). The encoder never learns a method's name: a
method hands it `Hooks`. Two more act on the whole model: `input_embeddings` may put vectors
of the method's own before the input's word embeddings (prompt tuning; the positions are then
numbered over the whole sequence, as transformers numbers `inputs_embeds`), and `weights`
makes the tree the encoder computes with from the one it was given (Intrinsic-SAID).

Every layer comes from `layers.current()`: nn.py's plain functions or kernels.py's fast
primitives, whichever `use_layers` chose (the fast ones by default), but for dropout and
the padding mask's bias (`nn.dropout`, `nn.mask_bias`), which both sets share.

Parameter tree (dicts of arrays, lists for layers; the path is the checkpoint name):

    embeddings: word (V, E), position (P, E), token_type (Tv, E) unless Tv = 0, ln {g, b} (E,),
                and project {w (E, d), b (d,)} when E != d (E = d except in ELECTRA)
    layers[i]:  attention {query, key, value, output: {w (d, d), b (d,)}}, attention_ln {g, b},
                ffn {in: {w (d, k_ff), b}, out: {w (k_ff, d), b}}, ffn_ln {g, b}
    (a method may add entries to a layer or to the top level; the hooks read them)
"""

import dataclasses
from functools import partial
from typing import Callable, NamedTuple, Optional

import autograd.numpy as np
import numpy as onp

from .layers import ACTIVATIONS, activation, current
from .nn import dropout, init_attention, init_dense, init_embedding, init_layer_norm, mask_bias
from .nn import sinusoidal_table
from .paths import ATTENTION_LN, EMBEDDING_LN, FFN_LN


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Shapes and settings of a BERT-style encoder. Defaults are all-MiniLM-L6-v2's (BERT);
    the last four fields, with type_vocab_size 1 or 0, make the other families (module
    docstring)."""
    vocab_size: int = 30522          # V, rows of the word embedding
    hidden_size: int = 384           # d, the model width
    num_layers: int = 6              # L, transformer blocks
    num_heads: int = 12              # attention heads; d must be a multiple
    intermediate_size: int = 1536    # feed-forward width
    max_positions: int = 512         # P, rows of the (absolute) position embedding
    type_vocab_size: int = 2         # Tv, token type (segment) ids: 0 first text, 1 second;
                                     # 0: no token-type table, token_type_ids unread (DistilBERT)
    layer_norm_eps: float = 1e-12    # added to the variance in every layer norm
    hidden_dropout: float = 0.1      # after each sublayer and on the embeddings
    attention_dropout: float = 0.1   # on the attention probabilities
    hidden_act: str = "gelu"         # "gelu" exact (erf) form; "gelu_new" tanh form
    initializer_range: float = 0.02  # std of random weights in `init_encoder`
    embedding_size: Optional[int] = None   # E, width of the embedding tables (None: d); when
                                     # E != d a dense E -> d follows them (ELECTRA's
                                     # embeddings_project)
    padding_idx: Optional[int] = None      # None: token t sits at position t (BERT). The pad
                                     # token's id p (RoBERTa, XLM-R: 1): real tokens at p+1,
                                     # p+2, ..., tokens equal to p at position p
    sinusoidal_positions: bool = False     # the position table holds fixed sin/cos values and
                                     # is never trained (DistilBERT's sinusoidal_pos_embds)
    attention_output_dropout: bool = True  # dropout on the attention sublayer's output
                                     # (BERT); DistilBERT has none there

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                     "intermediate_size", "max_positions"):
            check_count(self, name, getattr(self, name), 1)
        check_count(self, "type_vocab_size", self.type_vocab_size, 0)
        if self.embedding_size is not None:
            check_count(self, "embedding_size", self.embedding_size, 1)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"EncoderConfig: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_heads {self.num_heads}; choose a head count that divides it.")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"EncoderConfig.{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"EncoderConfig.hidden_act {self.hidden_act!r} is not supported; "
                             f"use one of {sorted(ACTIVATIONS)}.")
        if self.padding_idx is not None:
            check_count(self, "padding_idx", self.padding_idx, 0)
            if self.padding_idx >= self.vocab_size or self.max_length < 1:
                raise ValueError(f"EncoderConfig.padding_idx {self.padding_idx} must be a token id "
                                 f"below vocab_size {self.vocab_size} and leave room in the "
                                 f"{self.max_positions} positions, which start at padding_idx + 1.")
        for name in ("sinusoidal_positions", "attention_output_dropout"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"EncoderConfig.{name} must be True or False, got "
                                 f"{getattr(self, name)!r}.")

    @property
    def embedding_width(self):
        """E: the embedding tables' width (d unless embedding_size says otherwise)."""
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    @property
    def projects_embeddings(self):
        """Whether a dense E -> d follows the embeddings (E != d, ELECTRA)."""
        return self.embedding_width != self.hidden_size

    @property
    def max_length(self):
        """Tokens per row the positions allow: P, or P - (padding_idx + 1) when positions
        start after padding_idx (RoBERTa's 514 rows give 512 tokens)."""
        return self.max_positions - (0 if self.padding_idx is None else self.padding_idx + 1)


def check_count(cfg, name, value, least):
    """A whole number (not a bool) of at least `least`, or a ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, onp.integer)) or value < least:
        kind = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ValueError(f"EncoderConfig.{name} must be {kind}, got {value!r}.")


# A small encoder for gradient checks and fast tests (the `tiny` model). Its vocabulary
# size is replaced by that of the tokenizer it is paired with (pretrained.py).
TINY = EncoderConfig(vocab_size=1000, hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=64, max_positions=128, type_vocab_size=2)


class Hooks(NamedTuple):
    """Where a method plugs into the encoder. Each is optional (None: identity).

    attention_output(params, i, a, h, norm) -> a'   slot 1 of block i: a is the attention
                                          sublayer's output (after dropout), h its input, norm
                                          the block's layer norm (a function); returns what
                                          the block adds to h before norm: h = norm(h + a')
    ffn_output(params, i, f, h, norm) -> f'   slot 2, the same for the feed-forward sublayer
    attention_projection(params, i, name, x, y) -> y   each attention projection of block i
                                          (name: query, key, value, output)
    input_embeddings(params, w, batch) -> (w', batch')   the input's word embeddings w
                                          (B, T, E), before positions and token types are
                                          added; returns the sequence the model reads
                                          (B, T', E) and the batch that goes with it (an
                                          attention_mask (B, T'); token types, if kept, too).
                                          Prompt tuning puts its vectors first here, as peft does
    weights(params) -> params             the parameters the model computes with, made once per
                                          call from those it was given (Intrinsic-SAID:
                                          theta_0 + lambda_i P_i(theta_d))
    The slots' and the projections' arrays are (B, T, d). `params` is the whole tree the
    encoder was called with (after `weights`), so a hook finds both its own per-layer
    entries (params["layers"][i][...]) and any shared or top-level ones."""
    attention_output: Optional[Callable] = None
    ffn_output: Optional[Callable] = None
    attention_projection: Optional[Callable] = None
    input_embeddings: Optional[Callable] = None
    weights: Optional[Callable] = None


NO_HOOKS = Hooks()


def init_encoder(rng, cfg, *, dtype=onp.float32):
    """Random BERT initialisation: weights N(0, initializer_range^2), biases 0, LN g=1 b=0;
    a sinusoidal position table (DistilBERT's) gets its fixed values instead."""
    r_emb, r_layers = rng.spawn(2)
    params = {"embeddings": init_embeddings(r_emb, cfg, dtype), "layers": []}
    d, std = cfg.hidden_size, cfg.initializer_range
    for r in r_layers.spawn(cfg.num_layers):
        ra, ri, ro = r.spawn(3)
        params["layers"].append({
            "attention": init_attention(ra, d, std=std, dtype=dtype),
            ATTENTION_LN: init_layer_norm(d, dtype=dtype),
            "ffn": {"in": init_dense(ri, d, cfg.intermediate_size, std=std, dtype=dtype),
                    "out": init_dense(ro, cfg.intermediate_size, d, std=std, dtype=dtype)},
            FFN_LN: init_layer_norm(d, dtype=dtype),
        })
    return params


def init_embeddings(rng, cfg, dtype):
    """{word (V, E), position (P, E), token_type (Tv, E) if Tv > 0, ln, project (E -> d) if
    E != d}. The first three draws are BERT's, so a BERT config gets the same weights as
    before the other families existed."""
    E, std = cfg.embedding_width, cfg.initializer_range
    e = rng.spawn(4)
    p = {"word": init_embedding(e[0], cfg.vocab_size, E, std=std, dtype=dtype),
         "position": (sinusoidal_table(cfg.max_positions, E, dtype) if cfg.sinusoidal_positions
                      else init_embedding(e[1], cfg.max_positions, E, std=std, dtype=dtype)),
         EMBEDDING_LN: init_layer_norm(E, dtype=dtype)}
    if cfg.type_vocab_size:
        p["token_type"] = init_embedding(e[2], cfg.type_vocab_size, E, std=std, dtype=dtype)
    if cfg.projects_embeddings:
        p["project"] = init_dense(e[3], E, cfg.hidden_size, std=std, dtype=dtype)
    return p


def fixed(cfg, path):
    """Leaves of the encoder that no method trains: a sinusoidal position table (DistilBERT
    freezes it too). `model.init_model` keeps them in the frozen tree."""
    return cfg.sinusoidal_positions and tuple(path) == ("embeddings", "position")


def check_batch(batch, cfg):
    """Clear errors for inputs the encoder cannot take; returns (B, T)."""
    ids = onp.asarray(batch["input_ids"])
    if ids.ndim != 2:
        raise ValueError(f"input_ids must have shape (batch, tokens), got {ids.shape}.")
    B, T = ids.shape
    if T > cfg.max_length:
        after = ("" if cfg.padding_idx is None else
                 f" (positions start at padding_idx + 1 = {cfg.padding_idx + 1}, so rows hold at "
                 f"most {cfg.max_length} tokens)")
        raise ValueError(f"The batch has {T} tokens per row but the model has only "
                         f"{cfg.max_positions} position embeddings{after}; truncate the texts "
                         f"(max_length <= {cfg.max_length}).")
    for key in ("token_type_ids", "attention_mask"):
        if key in batch and onp.shape(batch[key]) != (B, T):
            raise ValueError(f"{key} has shape {onp.shape(batch[key])}, expected {(B, T)} "
                             f"like input_ids.")
    if ids.size and (ids.min() < 0 or ids.max() >= cfg.vocab_size):
        raise ValueError(f"input_ids hold values outside [0, {cfg.vocab_size}); the tokenizer "
                         f"does not belong to this model's vocabulary.")
    types = batch.get("token_type_ids")
    if cfg.type_vocab_size and types is not None and onp.size(types) and (
            onp.min(types) < 0 or onp.max(types) >= cfg.type_vocab_size):
        raise ValueError(f"token_type_ids hold values outside [0, {cfg.type_vocab_size}): this "
                         f"model has {cfg.type_vocab_size} token type(s); give zeros for a "
                         f"model with one (RoBERTa, XLM-R), or tokenize with its own tokenizer.")
    return B, T


def position_ids(ids, cfg):
    """The row of the position table each token reads.  ids: (B, T) -> (T,) or (B, T)

    BERT, DistilBERT, ELECTRA: 0, 1, ..., T-1 for every row.
    RoBERTa, XLM-R (padding_idx p): real tokens count from p + 1, pad tokens stay at p,
        positions = cumsum(m) * m + p,   m = (ids != p)
    (transformers' create_position_ids_from_input_ids; a padded row's real tokens get the
    positions they would have unpadded, whichever side the padding is on)."""
    T = ids.shape[1]
    if cfg.padding_idx is None:
        return onp.arange(T)
    real = (onp.asarray(ids) != cfg.padding_idx).astype(onp.int64)      # (B, T)
    return onp.cumsum(real, axis=1) * real + cfg.padding_idx             # (B, T)


def sequential_positions(length, cfg):
    """The positions of a sequence given as embeddings rather than ids (a method's virtual
    tokens first): 0 .. length-1, or p+1 .. p+length with padding_idx p, padding or not, as
    transformers numbers `inputs_embeds` (create_position_ids_from_inputs_embeds). -> (length,)"""
    if length > cfg.max_length:
        raise ValueError(f"The model reads {length} positions per row (the method's virtual "
                         f"tokens and the input's), more than its {cfg.max_length}; use a "
                         f"shorter prompt or truncate the texts (max_length).")
    return onp.arange(length) + (0 if cfg.padding_idx is None else cfg.padding_idx + 1)


def embed(params, batch, cfg, rng=None, hooks=NO_HOOKS):
    """Word + position (+ token-type) embeddings, layer norm, dropout, and the E -> d
    projection when E != d; a method's `hooks.input_embeddings` may first put vectors of its
    own before the input's word embeddings.
    Returns ((B, T', d), the batch the blocks read: `batch`, or the hook's (T' = T + its
    vectors, a longer attention mask))."""
    L = current()
    p = params["embeddings"]
    ids = batch["input_ids"]                                     # (B, T) int
    w = L.embedding(p["word"], ids)                              # (B, T, E)
    if hooks.input_embeddings is None:
        positions = position_ids(ids, cfg)                       # (T,) or (B, T)
    else:
        w, batch = hooks.input_embeddings(params, w, batch)      # (B, T', E)
        positions = sequential_positions(w.shape[1], cfg)        # (T',)
    e = w + L.embedding(p["position"], positions)                # (B, T', E)
    if cfg.type_vocab_size:
        types = batch.get("token_type_ids")
        types = onp.zeros(w.shape[:2], onp.int64) if types is None else types
        e = e + L.embedding(p["token_type"], types)              # (B, T', E)
    h = dropout(L.layer_norm(p[EMBEDDING_LN], e, cfg.layer_norm_eps), cfg.hidden_dropout, rng)
    h = L.dense(p["project"], h) if cfg.projects_embeddings else h       # (B, T', d)
    return h, batch


def block(params, i, h, padding_bias, cfg, hooks=NO_HOOKS, rng=None):
    """Transformer block i (post-LN) with its two adapter slots.  h: (B, T, d) -> (B, T, d)
    padding_bias: (B, 1, 1, T), added to the attention scores (nn.mask_bias of the mask)."""
    L = current()
    p = params["layers"][i]
    r_att, r_a, r_f = rng.spawn(3) if rng is not None else (None, None, None)
    project = None
    if hooks.attention_projection is not None:
        def project(name, x, y):
            return hooks.attention_projection(params, i, name, x, y)

    a = L.attention(p["attention"], h, padding_bias, cfg.num_heads,
                    dropout_rate=cfg.attention_dropout,
                    rng=r_att, project=project)                  # (B, T, d)
    a = dropout(a, cfg.hidden_dropout if cfg.attention_output_dropout else 0.0, r_a)
    norm_a = partial(L.layer_norm, p[ATTENTION_LN], eps=cfg.layer_norm_eps)
    if hooks.attention_output is not None:
        a = hooks.attention_output(params, i, a, h, norm_a)      # slot 1
    h = norm_a(h + a)

    act = activation(cfg.hidden_act)
    f = L.dense(p["ffn"]["out"], act(L.dense(p["ffn"]["in"], h)))   # (B, T, k_ff) -> (B, T, d)
    f = dropout(f, cfg.hidden_dropout, r_f)
    norm_f = partial(L.layer_norm, p[FFN_LN], eps=cfg.layer_norm_eps)
    if hooks.ffn_output is not None:
        f = hooks.ffn_output(params, i, f, h, norm_f)            # slot 2
    return norm_f(h + f)


def encoder(params, batch, cfg, *, hooks=NO_HOOKS, rng=None):
    """The encoder's hidden states.

    batch: {"input_ids": (B, T) int, "token_type_ids": (B, T) int (optional),
            "attention_mask": (B, T) 1 real / 0 padding (optional)}
    rng: a numpy Generator turns dropout on (training); None turns it off (evaluation).
    Returns (B, T, d) in the dtype of the parameters; (B, T', d) when the method puts
    virtual tokens before the input (hooks.input_embeddings: prompt tuning), the input's
    own states last."""
    B, T = check_batch(batch, cfg)
    if hooks.weights is not None:
        params = hooks.weights(params)                           # e.g. theta_0 + lambda P theta_d
    dtype = params["embeddings"]["word"].dtype
    rngs = rng.spawn(cfg.num_layers + 1) if rng is not None else [None] * (cfg.num_layers + 1)
    h, batch = embed(params, batch, cfg, rngs[0], hooks)        # (B, T', d)
    mask = batch.get("attention_mask")
    padding_bias = mask_bias(onp.ones(h.shape[:2]) if mask is None else mask, dtype)  # (B, 1, 1, T')
    for i in range(cfg.num_layers):
        h = block(params, i, h, padding_bias, cfg, hooks, rngs[i + 1])
    return h


# --- heads -----------------------------------------------------------------------------

# How a sentence is read off the hidden states, unless a caller says otherwise: the mean over
# real tokens (all-MiniLM-L6-v2 was trained with it; every run recorded so far used it).
POOLING = "mean"


def pool(hidden, mask, how=POOLING):
    """One vector per row: the [CLS] (first) token's state, or the mean over real tokens
    (sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained with mean
    pooling). Only the input's own tokens count: when a method put virtual tokens before
    them (prompt tuning), the hidden states are longer than the mask and the input's are
    the last T, so [CLS] is the first of those.
    hidden: (B, T', d), T' >= T  mask: (B, T)  ->  (B, d)"""
    T = onp.shape(mask)[1]
    if hidden.shape[1] != T:
        hidden = hidden[:, hidden.shape[1] - T:, :]              # (B, T, d): the input's own
    if how == "cls":
        return hidden[:, 0, :]
    if how == "mean":
        m = onp.asarray(mask, hidden.dtype)[:, :, None]          # (B, T, 1), a constant
        count = onp.maximum(m.sum(axis=1), 1.0)                  # (B, 1)
        return np.sum(hidden * m, axis=1) / count                # (B, d)
    raise ValueError(f"Unknown pooling {how!r}; use 'cls' or 'mean'.")


def init_head(rng, d, num_labels, *, layers=1, std=0.02, dtype=onp.float32):
    """A linear head {w: (d, num_labels), b}; num_labels = 1 for regression (STS-B). With
    layers=2, a hidden layer {hidden: {w: (d, d), b}} with tanh comes first, as in
    AdapterHub's default classification head."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1 (1 for regression), got {num_labels}.")
    if layers not in (1, 2):
        raise ValueError(f"a head has 1 or 2 layers, got {layers}.")
    params = init_dense(rng, d, num_labels, std=std, dtype=dtype)
    if layers == 2:
        params["hidden"] = init_dense(rng.spawn(1)[0], d, d, std=std, dtype=dtype)
    return params


def head(params, pooled):
    """Logits (classification) or the score (regression):  pooled @ w + b, after
    tanh(pooled @ W_h + b_h) if the head has a hidden layer.  (B, d) -> (B, num_labels)"""
    L = current()
    if "hidden" in params:
        pooled = L.tanh(L.dense(params["hidden"], pooled))                 # (B, d)
    return L.dense(params, pooled)
