"""The method family: what each method trains and where it runs in the encoder.

A method is a small frozen config (AdapterHub's field names where they exist) turned by
`make_method` into a `Method`: a function that creates the method's own trainable
parameters, a predicate saying which of the pretrained weights it unfreezes, and the
`Hooks` the encoder calls. The encoder never learns a method's name.

| method          | adds                                        | unfreezes   | hooks           |
|-----------------|---------------------------------------------|-------------|-----------------|
| full            | nothing                                     | everything  | none            |
| adapter         | dense adapters after both sublayers         | layer norms | both slots      |
| pfeiffer        | dense adapter after the FFN only            | layer norms | FFN slot        |
| adapter-lowrank | adapters with rank-r projections s t        | layer norms | both slots      |
| phm-adapter     | PHM adapters, own A per layer, full B       | layer norms | both slots      |
| compacter       | PHM adapters, one shared A, B_i = s_i t_i^T | layer norms | both slots      |
| compacter++     | as compacter, after the FFN only            | layer norms | FFN slot        |
| bitfit          | nothing                                     | every bias  | none            |
| lora            | B A on query and value                      | nothing     | attention-projection hook |

Every method also trains a task head on the encoder (model.py); on T5 the answers are words,
and no head is added. The adapter (Houlsby et al. 2019;
Compacter paper Eq. 2) is   A(x) = x + U(f(D(x))),  D: d -> k, U: k -> d, k = d / reduction_factor.

Choices where the paper is silent (docs/paper.md, "Choices"):
  - the adapter's nonlinearity f is the tanh GELU ("gelu_new"), as in the reference configs;
  - Adapter-LowRank: each projection W = s t with s: (d_in, r), t: (r, d_out), Glorot
    uniform with gain sqrt 2 (as the PHM factors), zero bias;
  - LoRA: peft's defaults, rank 8, alpha 8, A Kaiming-uniform (U(-1/sqrt d, 1/sqrt d)),
    B zero, no dropout, on query and value; layer norms frozen;
  - layer norms are trained by the adapter methods, as in the paper
    (`train_layer_norms=False` freezes them, as AdapterHub does).

On T5 (t5.py) every method is the same config and the same hooks; only `init` builds its
per-block entries per stack (`per_block`): adapters in every block of the encoder and the
decoder, none on cross-attention, one shared A for both stacks; LoRA on the targets of every
attention, self and cross (peft's default "q", "v" on T5), A: (d, r), B: (r, num_heads d_kv);
BitFit trains the biases the reference adds (t5.init_biases).
"""

import dataclasses
import math
from functools import partial
from typing import Callable, NamedTuple, Optional

import numpy as onp

from .encoder import NO_HOOKS, Hooks
from .layers import ACTIVATIONS, activation, current
from .nn import init_dense
from .paths import ATTENTION_ADAPTER, CROSS, FFN_ADAPTER, LORA, SHARED, is_bias, is_layer_norm
from .paths import projection_kind, train_everything, train_nothing
from .t5 import DECODER, ENCODER, T5Config, init_biases, stacks
from .phm import C_INITS, W_INITS, check_phm_dim, glorot_uniform, init_phm_linear
from .phm import init_phm_rule, phm_linear

PROJECTIONS = ("dense", "low-rank", "phm")


def option(default, doc, **metadata):
    """A config field with its default and a one-line description, which `--help` shows
    (metadata such as choices=(...) goes to the command line's flag too)."""
    return dataclasses.field(default=default, metadata={"doc": doc, **metadata})


# --- configs -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """Bottleneck adapters and their PHM / low-rank variants. Defaults are Compacter's.
    Fields marked for the command line become flags of `finetune` and `compare`."""
    method: str = option("compacter", "the preset this config came from")
    mh_adapter: bool = option(True, "an adapter after the attention sublayer")
    output_adapter: bool = option(True, "an adapter after the feed-forward sublayer")
    reduction_factor: int = option(32, "bottleneck k = d // reduction_factor (paper: 32)")
    non_linearity: str = option("gelu_new", "f inside the adapter (reference: gelu_new)")
    projection: str = option("phm", "D and U: dense, low-rank or phm")
    phm_dim: int = option(4, "n of the PHM layers (paper: 4 for Compacter, 12 for PHM-Adapter)")
    phm_rank: int = option(1, "r of B_i = s_i t_i^T (Compacter, Adapter-LowRank: 1)")
    shared_phm_rule: bool = option(True, "one A for every PHM layer of the model")
    factorized_phm_W: bool = option(True, "B_i = s_i t_i^T (False: a full B_i)")
    phm_c_init: str = option("normal", "A's initialisation: normal or uniform")
    phm_init_range: float = option(1e-4, "std of the shared A (paper: 1e-4)")
    hypercomplex_nonlinearity: str = option("glorot-uniform", "initialisation of B / s / t")
    phm_bias: bool = option(True, "PHM layers have a bias")
    init_std: float = option(0.01, "dense adapter weights ~ N(0, init_std^2), bias 0")
    train_layer_norms: bool = option(True, "train the base model's layer norms (paper: yes; "
                                           "AdapterHub and peft: no)")
    original_ln_before: bool = option(False, "the adapter reads LN(h + f) instead of f, as "
                                             "AdapterHub's Pfeiffer and Compacter++ configs do")
    build_W: Optional[bool] = option(None, "PHM layers build W (True) or compute the factored "
                                           "product without it (False); None: by size")

    def __post_init__(self):
        if not (self.mh_adapter or self.output_adapter):
            raise ValueError("An adapter config needs mh_adapter or output_adapter (or both).")
        if not isinstance(self.reduction_factor, (int, onp.integer)) or self.reduction_factor < 1:
            raise ValueError(f"reduction_factor must be a positive integer, got "
                             f"{self.reduction_factor!r}.")
        if self.phm_rank < 1:
            raise ValueError(f"phm_rank must be at least 1, got {self.phm_rank}.")
        if self.phm_dim < 1:
            raise ValueError(f"phm_dim must be at least 1, got {self.phm_dim}.")
        for name, allowed in (("projection", PROJECTIONS), ("phm_c_init", C_INITS),
                              ("hypercomplex_nonlinearity", W_INITS),
                              ("non_linearity", tuple(ACTIVATIONS))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is unknown; use one of "
                                 f"{list(allowed)}.")

    def bottleneck_size(self, d):
        """k = d // reduction_factor, checked (and, for PHM, checked against phm_dim)."""
        k = d // self.reduction_factor
        if k < 1:
            raise ValueError(f"reduction_factor {self.reduction_factor} makes the bottleneck of "
                             f"a width-{d} model zero; use a reduction_factor of at most {d}.")
        if self.projection == "phm":
            try:
                check_phm_dim(self.phm_dim, d, k)
            except ValueError as e:
                raise ValueError(f"{e}{self.reduction_factor_hint(d)}") from None
        return k

    def reduction_factor_hint(self, d):
        """" Or ...": the largest reduction_factor whose bottleneck phm_dim divides, on a
        width-d model ("" if phm_dim does not divide d, where none does)."""
        n = self.phm_dim
        fits = [r for r in range(1, d + 1) if d % n == 0 and (d // r) % n == 0]
        if not fits:
            return ""
        r = max(fits)
        return (f" Or keep phm_dim {n} with reduction_factor {r} (--reduction-factor {r} on the "
                f"command line), a bottleneck of {d // r}.")


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """LoRA (Hu et al. 2021), peft's defaults: y = x W + (alpha / r) x A B on the targets."""
    method: str = option("lora", "the preset this config came from")
    r: int = option(8, "rank")
    alpha: float = option(8.0, "scaling alpha / r")
    target_modules: tuple = option(("query", "value"), "the attention projections it adapts")

    def __post_init__(self):
        if self.r < 1:
            raise ValueError(f"LoRA rank r must be at least 1, got {self.r}.")
        bad = set(self.target_modules) - {"query", "key", "value", "output"}
        if bad:
            raise ValueError(f"LoRA target_modules {sorted(bad)} unknown; use query, key, "
                             f"value, output.")


@dataclasses.dataclass(frozen=True)
class BitFitConfig:
    """BitFit (Ben Zaken et al. 2021): train every bias, linear layers and layer norms."""
    method: str = option("bitfit", "the preset this config came from")


@dataclasses.dataclass(frozen=True)
class FullConfig:
    """Full fine-tuning: every pretrained weight is trained."""
    method: str = option("full", "the preset this config came from")


class Preset(NamedTuple):
    """A method as the package names it: its config and its peak learning rates."""
    config: object                 # one of the configs above, with the paper's settings
    lr: float                      # our default (TrainConfig.lr = None takes it)
    paper_lr: Optional[float]      # the paper's, on T5-base (None: not in the paper)


# Peak learning rates. The paper (T5-base, batch 100, thousands of steps) used 3e-3 for the
# Compacter family and Adapter-LowRank and 3e-4 for Adapter, Pfeiffer-Adapter, BitFit and
# full fine-tuning. Here (MiniLM, batch 32, a few hundred steps on small training sets):
# 3e-3 for every parameter-efficient method (on the synthetic sentiment task, 600 examples,
# 57 steps, seeds 0-2, best validation accuracy: Adapter, BitFit and LoRA averaged 0.77,
# 0.69, 0.69 at 1e-3 and 0.99, 0.91, 0.97 at 3e-3, higher under every seed;
# notebooks/records/learning_rates.json) and 1e-4, the usual rate for BERT-size models,
# for full fine-tuning (not tuned).
PRESETS = {
    "full": Preset(FullConfig(), 1e-4, 3e-4),
    "adapter": Preset(AdapterConfig(method="adapter", projection="dense"), 3e-3, 3e-4),
    "pfeiffer": Preset(AdapterConfig(method="pfeiffer", projection="dense", mh_adapter=False),
                       3e-3, 3e-4),
    "adapter-lowrank": Preset(AdapterConfig(method="adapter-lowrank", projection="low-rank"),
                              3e-3, 3e-3),
    "phm-adapter": Preset(AdapterConfig(method="phm-adapter", phm_dim=12, shared_phm_rule=False,
                                        factorized_phm_W=False), 3e-3, 3e-3),
    "compacter": Preset(AdapterConfig(method="compacter"), 3e-3, 3e-3),
    "compacter++": Preset(AdapterConfig(method="compacter++", mh_adapter=False), 3e-3, 3e-3),
    "bitfit": Preset(BitFitConfig(), 3e-3, 3e-4),
    "lora": Preset(LoRAConfig(), 3e-3, None),
}
METHODS = tuple(PRESETS)
LEARNING_RATES = {name: preset.lr for name, preset in PRESETS.items()}


def method_config(name, **overrides):
    """The preset of a method, with fields replaced: method_config("compacter", phm_dim=8).
    Overrides that are None are ignored (command-line defaults)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown method {name!r}; the methods are: {', '.join(METHODS)}.")
    preset = PRESETS[name].config
    overrides = {k: v for k, v in overrides.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(preset)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"Method {name!r} has no option {unknown}; its options are "
                         f"{sorted(fields - {'method'})}.")
    return dataclasses.replace(preset, **overrides)


# --- the pieces of math ------------------------------------------------------------------

def low_rank_linear(params, x):
    """y = (x s) t + b, a rank-r weight W = s t.   s: (d_in, r)  t: (r, d_out)"""
    L = current()
    return L.linear(L.linear(x, params["s"]), params["t"], params["b"])


def init_projection(rng, cfg, d_in, d_out, dtype):
    """One adapter projection (D or U), as the config says."""
    if cfg.projection == "dense":
        return init_dense(rng, d_in, d_out, std=cfg.init_std, dtype=dtype)
    if cfg.projection == "low-rank":
        r_s, r_t = rng.spawn(2)
        return {"s": glorot_uniform(r_s, (d_in, cfg.phm_rank), dtype=dtype),
                "t": glorot_uniform(r_t, (cfg.phm_rank, d_out), dtype=dtype),
                "b": onp.zeros(d_out, dtype)}
    return init_phm_linear(rng, cfg.phm_dim, d_in, d_out,
                           rank=cfg.phm_rank if cfg.factorized_phm_W else None,
                           with_A=not cfg.shared_phm_rule, bias=cfg.phm_bias,
                           hypercomplex_nonlinearity=cfg.hypercomplex_nonlinearity,
                           phm_c_init=cfg.phm_c_init, phm_init_range=cfg.phm_init_range,
                           dtype=dtype)


def project(cfg, params, x, shared_A=None):
    """Apply one adapter projection.  x: (..., d_in) -> (..., d_out)"""
    if cfg.projection == "dense":
        return current().dense(params, x)
    if cfg.projection == "low-rank":
        return low_rank_linear(params, x)
    return phm_linear(params, x, shared_A=shared_A, build_W=cfg.build_W)


def init_adapter(rng, cfg, d, dtype=onp.float32):
    """{"down": D (d -> k), "up": U (k -> d)}"""
    k = cfg.bottleneck_size(d)
    r_down, r_up = rng.spawn(2)
    return {"down": init_projection(r_down, cfg, d, k, dtype),
            "up": init_projection(r_up, cfg, k, d, dtype)}


def bottleneck(cfg, params, x, shared_A=None):
    """U(f(D(x))), the adapter without its residual.  x: (B, T, d) -> (B, T, d)"""
    h = activation(cfg.non_linearity)(project(cfg, params["down"], x, shared_A))   # (B, T, k)
    return project(cfg, params["up"], h, shared_A)                                  # (B, T, d)


def adapter(cfg, params, x, shared_A=None):
    """A(x) = x + U(f(D(x)))   (Compacter paper, Eq. 2).  x: (B, T, d) -> (B, T, d)"""
    return x + bottleneck(cfg, params, x, shared_A)


def init_lora(rng, cfg, shapes, dtype=onp.float32):
    """Per adapted projection W: (d_in, d_out) (shapes: {name: (d_in, d_out)}):
    A: (d_in, r) Kaiming-uniform U(-1/sqrt d_in, 1/sqrt d_in) (peft's default, a=sqrt 5),
    B: (r, d_out) zero, so the model starts exactly at the base."""
    out = {}
    for (name, (d_in, d_out)), g in zip(shapes.items(), rng.spawn(len(shapes))):
        bound = 1.0 / math.sqrt(d_in)
        out[name] = {"A": g.uniform(-bound, bound, (d_in, cfg.r)).astype(dtype),
                     "B": onp.zeros((cfg.r, d_out), dtype)}
    return out


# --- where a method's per-block entries go ----------------------------------------------

class Block(NamedTuple):
    """One transformer block as a method's init sees it."""
    stack: Optional[str]      # None: the BERT-style encoder's; T5's "encoder" or "decoder"
    index: int                # i in params[stack]["layers"][i] (in params["layers"] if None)
    number: int               # counted over the whole model, a decoder's after the encoder's
    cross: bool               # the block has cross-attention (T5's decoder)


def model_stacks(cfg):
    """A model's stacks of blocks, (name, blocks, cross-attention?): one unnamed stack for
    the BERT-style encoder, T5's encoder and decoder (t5.stacks) for a T5Config."""
    return stacks(cfg) if isinstance(cfg, T5Config) else ((None, cfg.num_layers, False),)


def per_block(cfg, rng, make):
    """A method's entries for every block, where the model's hooks look for them: make(g, block)
    for each Block, with its own generator g, gathered as
        {"layers": [...]}                                       the encoder (encoder.py)
        {"encoder": {"layers": [...]}, "decoder": {"layers": [...]}}   T5 (t5.stack_view)
    One stack draws its generators from rng itself (as before T5 was here), several from one
    child generator each."""
    parts = model_stacks(cfg)
    gens = [rng] if len(parts) == 1 else rng.spawn(len(parts))
    out, first = {}, 0
    for (stack, n, cross), g in zip(parts, gens):
        layers = [make(r, Block(stack, i, first + i, cross)) for i, r in enumerate(g.spawn(n))]
        first += n
        if stack is None:
            out["layers"] = layers
        else:
            out[stack] = {"layers": layers}
    return out


def blocks_of(tree):
    """(stack, i, entries) of every block of a tree laid out as `per_block` lays it out (a
    method's tree, a trainable tree, a model's parameters): stack None for tree["layers"],
    "encoder" and "decoder" for T5's, in that order."""
    if "layers" in tree:
        return [(None, i, layer) for i, layer in enumerate(tree["layers"])]
    return [(stack, i, layer) for stack in (ENCODER, DECODER) if stack in tree
            for i, layer in enumerate(tree[stack]["layers"])]


def block_path(stack, i):
    """The dotted path of a block in a tree: "layers.3", or "decoder.layers.3" in T5."""
    return f"layers.{i}" if stack is None else f"{stack}.layers.{i}"


def map_blocks(tree, fn):
    """The tree with every block's entries replaced by fn(entries) (`blocks_of`'s blocks)."""
    if "layers" in tree:
        return dict(tree, layers=[fn(layer) for layer in tree["layers"]])
    return dict(tree, **{stack: dict(tree[stack], layers=[fn(layer) for layer in
                                                          tree[stack]["layers"]])
                         for stack in (ENCODER, DECODER) if stack in tree})


def projection_shapes(cfg, names, block):
    """{projection name: (d_in, d_out)} of the attention projections `names` (query, key,
    value, output) in a block, and, in a block with cross-attention, of the same projections
    there (cross_query, ...): queries, keys and values d -> inner, the output inner -> d
    (inner = num_heads * d_kv in T5; d in the encoder)."""
    d = cfg.hidden_size
    inner = cfg.inner_dim if isinstance(cfg, T5Config) else d
    shape = {"query": (d, inner), "key": (d, inner), "value": (d, inner), "output": (inner, d)}
    prefixes = ("", CROSS) if block.cross else ("",)
    return {prefix + name: shape[name] for prefix in prefixes for name in names}


# --- methods as the encoder and the trainer see them -------------------------------------

class Method(NamedTuple):
    """What a method means to the rest of the package."""
    config: object            # one of the config dataclasses above
    init: Callable            # (rng, the base's EncoderConfig or T5Config, dtype) -> the
                              # method's new parameters (on T5, per stack: `per_block`)
    unfreezes: Callable       # (path tuple of a pretrained weight) -> trained?
    hooks: Hooks              # what the encoder calls


def make_method(config):
    """The Method for a config (or a method name, for its preset). Its functions are the
    named functions below with the config bound (functools.partial)."""
    if isinstance(config, str):
        config = method_config(config)
    if isinstance(config, FullConfig):
        return Method(config, init_nothing, train_everything, NO_HOOKS)
    if isinstance(config, BitFitConfig):
        return Method(config, init_bitfit, is_bias, NO_HOOKS)
    if isinstance(config, LoRAConfig):
        return Method(config, partial(init_lora_layers, config), train_nothing,
                      Hooks(attention_projection=partial(lora_projection, config)))
    if isinstance(config, AdapterConfig):
        hooks = Hooks(
            attention_output=partial(adapter_slot, config, ATTENTION_ADAPTER) if config.mh_adapter else None,
            ffn_output=partial(adapter_slot, config, FFN_ADAPTER) if config.output_adapter else None)
        return Method(config, partial(init_adapters, config),
                      is_layer_norm if config.train_layer_norms else train_nothing, hooks)
    raise TypeError(f"Not a method config: {config!r}")


def init_nothing(rng, encoder_config, dtype=onp.float32):
    """The `init` of methods that add no parameters (full fine-tuning)."""
    return {}


def init_bitfit(rng, model_config, dtype=onp.float32):
    """BitFit's `init`: nothing on the encoder, whose biases it unfreezes; on T5, which has no
    biases, the zero biases the reference adds (t5.init_biases), trained with the rest."""
    return init_biases(model_config, dtype) if isinstance(model_config, T5Config) else {}


def init_adapters(cfg, rng, model_config, dtype=onp.float32):
    """Every block's adapters (in the slots cfg names) and, for Compacter, the shared A, one
    for the whole model (both of T5's stacks, as the reference's phm_rule):
    {"layers": [{"attention_adapter": ..., "ffn_adapter": ...}, ...], "shared": {"A": (n, n, n)}}
    on the encoder; on T5 the blocks' entries under "encoder" and "decoder" (`per_block`)."""
    d = model_config.hidden_size
    cfg.bottleneck_size(d)                                        # clear errors before any work
    r_shared, r_layers = rng.spawn(2)

    def block_adapters(g, block):
        g_att, g_ffn = g.spawn(2)
        layer = {}
        if cfg.mh_adapter:
            layer[ATTENTION_ADAPTER] = init_adapter(g_att, cfg, d, dtype)
        if cfg.output_adapter:
            layer[FFN_ADAPTER] = init_adapter(g_ffn, cfg, d, dtype)
        return layer
    added = per_block(model_config, r_layers, block_adapters)
    if cfg.projection == "phm" and cfg.shared_phm_rule:
        added[SHARED] = {"A": init_phm_rule(r_shared, cfg.phm_dim, shared=True,
                                            phm_c_init=cfg.phm_c_init,
                                            phm_init_range=cfg.phm_init_range, dtype=dtype)}
    return added


def adapter_slot(cfg, key, params, i, f, h, norm):
    """The slot function of every adapter method: block i's adapter `key` (the attention or
    the FFN slot's), with the shared A when there is one. f is the sublayer's output, h its
    input, norm the block's layer norm; returns what the block adds to h before norm:
        A(f) = f + U(g(D(f)))                        the reference (and AdapterHub's Houlsby
                                                     and Compacter blocks)
        f + U(g(D(norm(h + f))))                     original_ln_before (AdapterHub's Pfeiffer
                                                     and Compacter++ blocks)
    f, h: (B, T, d) -> (B, T, d)"""
    shared_A = params[SHARED]["A"] if SHARED in params else None
    p = params["layers"][i][key]
    if cfg.original_ln_before:
        return f + bottleneck(cfg, p, norm(h + f), shared_A)
    return adapter(cfg, p, f, shared_A)


def init_lora_layers(cfg, rng, model_config, dtype=onp.float32):
    """{"layers": [{"lora": {target: {"A", "B"}}}, ...]}; on T5 per stack (`per_block`), and a
    decoder block's cross-attention targets too (cross_query, ...), as peft's "q", "v" match
    the projections of every attention."""
    def block_lora(g, block):
        return {LORA: init_lora(g, cfg, projection_shapes(model_config, cfg.target_modules,
                                                          block), dtype)}
    return per_block(model_config, rng, block_lora)


def lora_projection(cfg, params, i, name, x, y):
    """The attention-projection hook of LoRA: y + (alpha / r) x A B on the target projections of
    block i (a target names its kind: "query" adapts a cross-attention's query too), y
    unchanged on the others.   x: (B, T, d_in)  y: (B, T, d_out)"""
    if projection_kind(name) not in cfg.target_modules:
        return y
    p = params["layers"][i][LORA][name]
    L = current()
    return y + L.linear(L.linear(x, p["A"]), p["B"]) * (cfg.alpha / cfg.r)   # (B, T, d_out)
