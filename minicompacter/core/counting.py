"""Counting parameters two ways: analytically from shapes, and by walking a tree.

The analytic count needs only a model's shapes, so it covers models whose weights are
not here: T5-base, the paper's model, reproduces the paper's table (docs/paper.md) to the
parameter. The measured count walks a trainable tree built by `model.init_model`; the
tests check that the two agree for every method.

The paper's formulas (Section 3.3): Adapter 2L(2kd); PHM-Adapter 4L(kd/n + n^3);
Compacter 4L(k + d) + n^3, with L the number of transformer layers, leaving out biases
and layer norms. Its other rows: AdapterDrop counts the adapters of the blocks it keeps;
prompt tuning P d (the prompt's vectors); Intrinsic-SAID d' (theta_d and the lambdas, one
per weight tensor, together), whatever the model's size, so no projection is built to count it. Here every term is counted: biases, layer norms, the head, the shared A.
Percentages divide by the base model's own parameters, as the paper does.
"""

import dataclasses
from typing import Optional

from .encoder import EncoderConfig
from .methods import (AdapterConfig, BitFitConfig, FullConfig, IntrinsicConfig, LoKrConfig,
                      LoRAConfig, PHMLoRAConfig, PromptConfig)
from .paths import is_adapter, is_bias, is_head, is_intrinsic, is_layer_norm, is_lokr, is_lora
from .paths import is_phm_lora, is_prompt, is_rule, is_shared
from .t5 import FEED_FORWARD, T5Config
from .tree import leaves
from .updates import lokr_shapes

CATEGORIES = ("adapter weights", "adapter biases", "shared A", "shared W", "lora weights",
              "lokr weights", "phm update weights", "prompt", "intrinsic", "layer norms",
              "biases", "pretrained weights", "head")


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What counting needs to know about a model."""
    name: str
    d: int                        # width
    ffn: int                      # feed-forward width
    vocab: int                    # vocabulary
    encoder_layers: int
    decoder_layers: int = 0       # T5: decoder blocks (self-attention, cross-attention, FFN)
    kind: str = "bert"            # "bert": post-LN, biases, position tables; "t5": pre-LN, no biases
    positions: int = 512          # BERT's absolute position table
    type_vocab: int = 2           # BERT's token types (RoBERTa: 1; DistilBERT: 0, no table)
    embedding_size: Optional[int] = None   # E of the embedding tables (None: d); E != d adds
                                  # ELECTRA's projection E -> d
    fixed_positions: bool = False  # a sinusoidal position table, never trained (DistilBERT)
    heads: int = 12
    relative_buckets: int = 32    # T5's relative attention bias (first block of each stack)
    inner: Optional[int] = None   # T5: num_heads * d_kv, the attention's width (None: d)
    gated: bool = False           # T5 v1.1: a gated feed-forward, two input matrices
    tied: bool = True             # T5: the output layer is the embedding (v1.0); False: its own

    @property
    def attention_width(self):
        return self.d if self.inner is None else self.inner


T5_BASE = Shapes("t5-base", d=768, ffn=3072, vocab=32100, encoder_layers=12, decoder_layers=12,
                 kind="t5", heads=12)
# T5-base's config with the vocabulary resized to 32,100 (the paper's code resized its 32,128
# rows to the tokenizer's): `count --model t5-base` measures on a random tree of it
T5_BASE_CONFIG = T5Config(vocab_size=32100, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                          num_decoder_layers=12, num_heads=12)
BERT_BASE = Shapes("bert-base-uncased", d=768, ffn=3072, vocab=30522, encoder_layers=12)


def shapes_from_config(cfg, name="encoder"):
    """The Shapes of an EncoderConfig or a T5Config."""
    if isinstance(cfg, T5Config):
        return Shapes(name, d=cfg.d_model, ffn=cfg.d_ff, vocab=cfg.vocab_size,
                      encoder_layers=cfg.num_layers, decoder_layers=cfg.num_decoder_layers,
                      kind="t5", heads=cfg.num_heads,
                      relative_buckets=cfg.relative_attention_num_buckets, inner=cfg.inner_dim,
                      gated=FEED_FORWARD[cfg.feed_forward_proj][0],
                      tied=cfg.tie_word_embeddings)
    return Shapes(name, d=cfg.hidden_size, ffn=cfg.intermediate_size, vocab=cfg.vocab_size,
                  encoder_layers=cfg.num_layers, positions=cfg.max_positions,
                  type_vocab=cfg.type_vocab_size, heads=cfg.num_heads,
                  embedding_size=cfg.embedding_width, fixed_positions=cfg.sinusoidal_positions)


# the category of each update's weights
UPDATE_CATEGORY = {LoRAConfig: "lora weights", LoKrConfig: "lokr weights",
                   PHMLoRAConfig: "phm update weights"}


# --- the base model ------------------------------------------------------------------------

def base_breakdown(s: Shapes):
    """The base model's parameters: {"weights": ..., "biases": ..., "layer norms": ...}."""
    d, f = s.d, s.ffn
    if s.kind == "bert":
        E = s.embedding_size or d                                   # embedding width
        w_project, b_project = (E * d, d) if E != d else (0, 0)     # ELECTRA's E -> d
        weights = ((s.vocab + s.positions + s.type_vocab) * E + w_project
                   + s.encoder_layers * (4 * d * d + 2 * d * f))
        biases = s.encoder_layers * (4 * d + f + d) + b_project
        norms = 2 * s.encoder_layers * 2 * d + 2 * E                # weight and bias each
        return {"weights": weights, "biases": biases, "layer norms": norms}
    # T5: shared embedding (tied with the output layer, or a separate one), no biases, layer
    # norms with a weight only; relative attention bias in the first block of each stack; a
    # final LN per stack; attention d -> inner -> d; a gated FFN has two input matrices.
    attention = 4 * d * s.attention_width
    ffn = (3 if s.gated else 2) * d * f
    enc = s.encoder_layers * (attention + ffn)
    dec = s.decoder_layers * (2 * attention + ffn)
    rel = s.relative_buckets * s.heads * (1 + (s.decoder_layers > 0))
    norms = (2 * s.encoder_layers + 3 * s.decoder_layers + 1 + (s.decoder_layers > 0)) * d
    output = 0 if s.tied else s.vocab * d
    return {"weights": s.vocab * d + output + enc + dec + rel, "biases": 0, "layer norms": norms}


def base_total(s: Shapes):
    return sum(base_breakdown(s).values())


def fixed_count(s: Shapes):
    """Base parameters no method trains: a sinusoidal position table (encoder.fixed)."""
    return s.positions * (s.embedding_size or s.d) if s.fixed_positions else 0


# --- a method's trainable parameters, analytically ------------------------------------------

def adapter_positions(s: Shapes, cfg: AdapterConfig):
    """Adapters sit after self-attention and/or the FFN of every block, encoder and decoder
    (none on T5's cross-attention, as in the paper), but the blocks cfg leaves out
    (AdapterDrop; a decoder's blocks numbered on from the encoder's, as AdapterHub does)."""
    blocks = (s.encoder_layers - len(cfg.left_out(s.encoder_layers))
              + s.decoder_layers - len(cfg.left_out(s.decoder_layers, s.encoder_layers)))
    return blocks * (int(cfg.mh_adapter) + int(cfg.output_adapter))


def rule_count(cfg, n):
    """Trained numbers of one set of PHM rules: n^3, or 2 n^2 r for A_i = a_i b_i^T; 0 when
    the rules stay fixed (learn_phm False, or an algebra's)."""
    if not cfg.rule_trained:
        return 0
    return 2 * n * n * cfg.phm_rule_rank if getattr(cfg, "factorized_phm_rule", False) else n ** 3


def phm_weights_count(cfg: AdapterConfig, d_in, d_out):
    """B of one PHM projection d_in -> d_out: r (d_in + d_out) for B_i = s_i t_i^T, else
    d_in d_out / n."""
    if cfg.factorized_phm_W:
        return cfg.phm_rank * (d_in + d_out)
    return d_in * d_out // cfg.phm_dim


def projection_count(cfg: AdapterConfig, d_in, d_out):
    """(weights, biases) of one adapter projection d_in -> d_out (without what PHM layers
    share: `shared_count`)."""
    if cfg.projection == "dense":
        return d_in * d_out, d_out
    if cfg.projection == "low-rank":
        return cfg.phm_rank * (d_in + d_out), d_out
    A = 0 if cfg.shared_phm_rule else rule_count(cfg, cfg.phm_dim)
    B = 0 if cfg.shared_W_phm else phm_weights_count(cfg, d_in, d_out)
    return A + B, d_out if cfg.phm_bias else 0


def shared_count(cfg: AdapterConfig, d, k):
    """(shared A, shared W): the rules every PHM layer shares, and the one B of every D
    (d -> k) and of every U (k -> d) with shared_W_phm."""
    if cfg.projection != "phm":
        return 0, 0
    A = rule_count(cfg, cfg.phm_dim) if cfg.shared_phm_rule else 0
    W = phm_weights_count(cfg, d, k) + phm_weights_count(cfg, k, d) if cfg.shared_W_phm else 0
    return A, W


def update_count(config, d_in, d_out):
    """Trained numbers of one update beside a d_in -> d_out projection (LoRA, LoKr, the PHM
    update)."""
    if isinstance(config, LoKrConfig):
        return sum(a * b for a, b in lokr_shapes(config, d_in, d_out).values())
    return config.r * (d_in + d_out)        # LoRA's A and B; the PHM update's s and t


def head_count(s: Shapes, num_labels):
    """BERT-style models get a linear head; T5 answers in text and has none (the paper)."""
    return 0 if s.kind == "t5" else s.d * num_labels + num_labels


def count_analytic(config, s: Shapes, num_labels=2):
    """{category: parameters} of what a method trains on a model of these shapes."""
    out = dict.fromkeys(CATEGORIES, 0)
    out["head"] = head_count(s, num_labels)
    if isinstance(config, FullConfig):
        out["pretrained weights"] = base_total(s) - fixed_count(s)
    elif isinstance(config, BitFitConfig):
        if s.kind == "bert":
            base = base_breakdown(s)
            out["biases"] = base["biases"] + base["layer norms"] // 2       # LN biases too
        else:  # the reference gives every T5 linear layer and block layer norm a bias
            d, f, inner = s.d, s.ffn, s.attention_width      # (t5.init_biases; docs/paper.md)
            attention = 3 * inner + d
            ffn = (2 if s.gated else 1) * f + d
            out["biases"] = (s.encoder_layers * (attention + ffn + 2 * d)
                             + s.decoder_layers * (2 * attention + ffn + 3 * d) + s.vocab)
    elif isinstance(config, (LoRAConfig, LoKrConfig, PHMLoRAConfig)):
        attention_modules = s.encoder_layers + 2 * s.decoder_layers           # T5: + cross
        inner = s.attention_width                     # q, k, v: d -> inner; output inner -> d
        shape = {"query": (s.d, inner), "key": (s.d, inner), "value": (s.d, inner),
                 "output": (inner, s.d)}
        out[UPDATE_CATEGORY[type(config)]] = attention_modules * sum(
            update_count(config, *shape[t]) for t in config.target_modules)
        if isinstance(config, PHMLoRAConfig):
            out["shared A"] = rule_count(config, config.phm_dim)
    elif isinstance(config, PromptConfig):       # P vectors of the embeddings' width
        out["prompt"] = config.prompt_length * (s.embedding_size or s.d)
    elif isinstance(config, IntrinsicConfig):    # theta_d and the lambdas, d' in all
        out["intrinsic"] = config.intrinsic_dim
    elif isinstance(config, AdapterConfig):
        k = config.bottleneck_size(s.d)
        (w_down, b_down), (w_up, b_up) = projection_count(config, s.d, k), projection_count(config, k, s.d)
        positions = adapter_positions(s, config)
        out["adapter weights"] = positions * (w_down + w_up)
        out["adapter biases"] = positions * (b_down + b_up)
        out["shared A"], out["shared W"] = shared_count(config, s.d, k)
        if config.train_layer_norms:
            out["layer norms"] = base_breakdown(s)["layer norms"]
    else:
        raise TypeError(f"Not a method config: {config!r}")
    return out


# --- measured, by walking a tree --------------------------------------------------------------

def category(path):
    """The counting category of a leaf of a trainable tree, from its path."""
    if is_head(path):
        return "head"
    if is_shared(path):
        return "shared A" if is_rule(path) else "shared W"
    if is_prompt(path):
        return "prompt"
    if is_intrinsic(path):
        return "intrinsic"
    if is_adapter(path):
        return "adapter biases" if is_bias(path) else "adapter weights"
    if is_lora(path):
        return "lora weights"
    if is_lokr(path):
        return "lokr weights"
    if is_phm_lora(path):
        return "phm update weights"
    if is_layer_norm(path):
        return "layer norms"
    if is_bias(path):
        return "biases"
    return "pretrained weights"


def count_measured(trainable, config=None):
    """{category: parameters} of a trainable tree. With the full method every pretrained
    leaf counts as "pretrained weights", as the analytic count has it."""
    out = dict.fromkeys(CATEGORIES, 0)
    for path, leaf in leaves(trainable):
        c = category(path)
        if isinstance(config, FullConfig) and c not in ("head",):
            c = "pretrained weights"
        if isinstance(config, BitFitConfig) and c == "layer norms":
            c = "biases"                                  # an LN's bias is a bias
        out[c] += int(leaf.size)
    return out


def summary(breakdown, base):
    """The numbers a user wants: trainable, total (the base model), percent of the base,
    and the peft-style "all params" (base + what the method adds)."""
    trainable = sum(breakdown.values())
    added = trainable - breakdown["pretrained weights"] - breakdown["biases"] - breakdown["layer norms"]
    return {"trainable": trainable, "total": base, "percent": 100.0 * trainable / base,
            "all": base + added, "breakdown": {k: v for k, v in breakdown.items() if v}}


def peft_line(s):
    """peft's print_trainable_parameters format (trainable% = trainable / all)."""
    return (f"trainable params: {s['trainable']:,} || all params: {s['all']:,} || "
            f"trainable%: {100.0 * s['trainable'] / s['all']:.4f}")
