"""The method family: what each method trains and where it runs in the encoder.

A method is a small frozen config (AdapterHub's field names where they exist) turned by
`make_method` into a `Method`: a function that creates the method's own trainable
parameters, a predicate saying which of the pretrained weights it unfreezes, and the
`Hooks` the encoder calls. The encoder never learns a method's name.

| method          | adds                                   | unfreezes          | hooks                |
|-----------------|----------------------------------------|--------------------|----------------------|
| full            | nothing                                | everything         | none                 |
| adapter         | dense adapters after both sublayers    | layer norms        | both slots           |
| pfeiffer        | dense adapter after the FFN only       | layer norms        | FFN slot             |
| adapter-lowrank | adapters with rank-r projections s t   | layer norms        | both slots           |
| phm-adapter     | PHM adapters, own A per layer, full B  | layer norms        | both slots           |
| compacter       | PHM adapters, one shared A, B = s t    | layer norms        | both slots           |
| compacter++     | as compacter, after the FFN only       | layer norms        | FFN slot             |
| bitfit          | nothing                                | every bias         | none                 |
| lora            | B A on query and value                 | nothing            | projection hook      |

Every method also trains a task head (model.py). The adapter (Houlsby et al. 2019;
Compacter paper Eq. 2) is   A(x) = x + U(f(D(x))),  D: d -> k, U: k -> d, k = d / reduction_factor.

Choices where the paper is silent (PAPER.md, "What the paper leaves open"):
  - the adapter's nonlinearity f is the tanh GELU ("gelu_new"), as in the reference configs;
  - Adapter-LowRank: each projection W = s t with s: (d_in, r), t: (r, d_out), Glorot
    uniform with gain sqrt 2 (as the PHM factors), zero bias;
  - LoRA: peft's defaults, rank 8, alpha 8, A Kaiming-uniform (U(-1/sqrt d, 1/sqrt d)),
    B zero, no dropout, on query and value; layer norms frozen;
  - layer norms are trained by the adapter methods, as in the paper
    (`train_layer_norms=False` freezes them, as AdapterHub does).
"""

import dataclasses
import math
from typing import Callable, NamedTuple, Optional

import autograd.numpy as np
import numpy as onp

from .encoder import Hooks
from .kernels import dense, linear
from .nn import ACTIVATIONS, init_dense
from .phm import C_INITS, W_INITS, check_phm_dim, glorot_uniform, init_phm_linear
from .phm import init_phm_rule, phm_linear


def relu(x):
    return x * (x > 0)                       # multiplying by a mask keeps float32 gradients


def swish(x):
    return x / (1.0 + np.exp(-x))


ADAPTER_ACTIVATIONS = dict(ACTIVATIONS, relu=relu, swish=swish)
PROJECTIONS = ("dense", "low-rank", "phm")


# --- configs -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """Bottleneck adapters and their PHM / low-rank variants. Defaults are Compacter's."""
    method: str = "compacter"               # the preset this config came from
    mh_adapter: bool = True                 # an adapter after the attention sublayer
    output_adapter: bool = True             # an adapter after the feed-forward sublayer
    reduction_factor: int = 32              # bottleneck k = d // reduction_factor (paper: 32)
    non_linearity: str = "gelu_new"         # f inside the adapter (reference: gelu_new)
    projection: str = "phm"                 # D and U: "dense", "low-rank" or "phm"
    phm_dim: int = 4                        # n (paper: 4 for Compacter, 12 for PHM-Adapter)
    phm_rank: int = 1                       # r of s t (Compacter, Adapter-LowRank: 1)
    shared_phm_rule: bool = True            # one A for every PHM layer of the model
    factorized_phm_W: bool = True           # B_i = s_i t_i (False: a full B_i)
    phm_c_init: str = "normal"              # A's init: "normal" or "uniform"
    phm_init_range: float = 1e-4            # std of the shared A (paper: 1e-4)
    hypercomplex_nonlinearity: str = "glorot-uniform"   # init of B / s / t
    phm_bias: bool = True                   # PHM layers have a bias
    init_std: float = 0.01                  # dense adapter weights N(0, init_std^2), bias 0
    train_layer_norms: bool = True          # paper: trained; AdapterHub: frozen
    factored: Optional[bool] = None         # PHM product without building W (None: by size)

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
                              ("non_linearity", tuple(ADAPTER_ACTIVATIONS))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is unknown; use one of "
                                 f"{list(allowed)}.")

    def bottleneck(self, d):
        """k = d // reduction_factor, checked (and, for PHM, checked against phm_dim)."""
        k = d // self.reduction_factor
        if k < 1:
            raise ValueError(f"reduction_factor {self.reduction_factor} makes the bottleneck of "
                             f"a width-{d} model zero; use a reduction_factor of at most {d}.")
        if self.projection == "phm":
            check_phm_dim(self.phm_dim, d, k)
        return k


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """LoRA (Hu et al. 2021), peft's defaults: y = x W + (alpha / r) x A B on the targets."""
    method: str = "lora"
    r: int = 8                              # rank
    alpha: float = 8.0                      # scaling alpha / r
    target_modules: tuple = ("query", "value")

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
    method: str = "bitfit"


@dataclasses.dataclass(frozen=True)
class FullConfig:
    """Full fine-tuning: every pretrained weight is trained."""
    method: str = "full"


PRESETS = {
    "full": FullConfig(),
    "adapter": AdapterConfig(method="adapter", projection="dense"),
    "pfeiffer": AdapterConfig(method="pfeiffer", projection="dense", mh_adapter=False),
    "adapter-lowrank": AdapterConfig(method="adapter-lowrank", projection="low-rank"),
    "phm-adapter": AdapterConfig(method="phm-adapter", phm_dim=12, shared_phm_rule=False,
                                 factorized_phm_W=False),
    "compacter": AdapterConfig(method="compacter"),
    "compacter++": AdapterConfig(method="compacter++", mh_adapter=False),
    "bitfit": BitFitConfig(),
    "lora": LoRAConfig(),
}
METHODS = tuple(PRESETS)


def method_config(name, **overrides):
    """The preset of a method, with fields replaced: method_config("compacter", phm_dim=8).
    Overrides that are None are ignored (command-line defaults)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown method {name!r}; the methods are: {', '.join(METHODS)}.")
    preset = PRESETS[name]
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
    return linear(linear(x, params["s"]), params["t"], params["b"])


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
        return dense(params, x)
    if cfg.projection == "low-rank":
        return low_rank_linear(params, x)
    return phm_linear(params, x, shared_A=shared_A, factored=cfg.factored)


def init_adapter(rng, cfg, d, dtype=onp.float32):
    """{"down": D (d -> k), "up": U (k -> d)}"""
    k = cfg.bottleneck(d)
    r_down, r_up = rng.spawn(2)
    return {"down": init_projection(r_down, cfg, d, k, dtype),
            "up": init_projection(r_up, cfg, k, d, dtype)}


def adapter(cfg, params, x, shared_A=None):
    """A(x) = x + U(f(D(x)))   (Compacter paper, Eq. 2).  x: (B, T, d) -> (B, T, d)"""
    h = ADAPTER_ACTIVATIONS[cfg.non_linearity](project(cfg, params["down"], x, shared_A))  # (B, T, k)
    return x + project(cfg, params["up"], h, shared_A)                                     # (B, T, d)


def init_lora(rng, cfg, d, dtype=onp.float32):
    """Per target: A: (d, r) Kaiming-uniform U(-1/sqrt d, 1/sqrt d) (peft's default, a=sqrt 5),
    B: (r, d) zero, so the model starts exactly at the base."""
    bound = 1.0 / math.sqrt(d)
    return {name: {"A": g.uniform(-bound, bound, (d, cfg.r)).astype(dtype),
                   "B": onp.zeros((cfg.r, d), dtype)}
            for name, g in zip(cfg.target_modules, rng.spawn(len(cfg.target_modules)))}


# --- methods as the encoder and the trainer see them -------------------------------------

class Method(NamedTuple):
    """What a method means to the rest of the package."""
    config: object            # one of the config dataclasses above
    init: Callable            # (rng, EncoderConfig, dtype) -> the method's new parameters
    unfreezes: Callable       # (path tuple of a pretrained weight) -> trained?
    hooks: Hooks              # what the encoder calls


def is_layer_norm(path):
    return len(path) >= 2 and path[-2] in ("ln", "attention_ln", "ffn_ln")


def is_bias(path):
    return path[-1] == "b"


def make_method(config):
    """The Method for a config (or a method name, for its preset)."""
    if isinstance(config, str):
        config = method_config(config)
    if isinstance(config, FullConfig):
        return Method(config, lambda rng, enc, dtype=onp.float32: {}, lambda path: True, Hooks())
    if isinstance(config, BitFitConfig):
        return Method(config, lambda rng, enc, dtype=onp.float32: {}, is_bias, Hooks())
    if isinstance(config, LoRAConfig):
        return Method(config, _lora_init(config), lambda path: False, _lora_hooks(config))
    if isinstance(config, AdapterConfig):
        unfreezes = is_layer_norm if config.train_layer_norms else (lambda path: False)
        return Method(config, _adapter_init(config), unfreezes, _adapter_hooks(config))
    raise TypeError(f"Not a method config: {config!r}")


def _adapter_init(cfg):
    def init(rng, enc, dtype=onp.float32):
        d = enc.hidden_size
        cfg.bottleneck(d)                                    # clear errors before any work
        r_shared, r_layers = rng.spawn(2)
        layers = []
        for g in r_layers.spawn(enc.num_layers):
            g_att, g_ffn = g.spawn(2)
            layer = {}
            if cfg.mh_adapter:
                layer["attention_adapter"] = init_adapter(g_att, cfg, d, dtype)
            if cfg.output_adapter:
                layer["ffn_adapter"] = init_adapter(g_ffn, cfg, d, dtype)
            layers.append(layer)
        added = {"layers": layers}
        if cfg.projection == "phm" and cfg.shared_phm_rule:
            added["shared"] = {"A": init_phm_rule(r_shared, cfg.phm_dim, shared=True,
                                                  phm_c_init=cfg.phm_c_init,
                                                  phm_init_range=cfg.phm_init_range, dtype=dtype)}
        return added
    return init


def _adapter_hooks(cfg):
    def slot(key):
        def run(params, i, x):
            shared_A = params["shared"]["A"] if "shared" in params else None
            return adapter(cfg, params["layers"][i][key], x, shared_A)
        return run
    return Hooks(attention_output=slot("attention_adapter") if cfg.mh_adapter else None,
                 ffn_output=slot("ffn_adapter") if cfg.output_adapter else None)


def _lora_init(cfg):
    def init(rng, enc, dtype=onp.float32):
        return {"layers": [{"lora": init_lora(g, cfg, enc.hidden_size, dtype)}
                           for g in rng.spawn(enc.num_layers)]}
    return init


def _lora_hooks(cfg):
    scale = cfg.alpha / cfg.r

    def projection(params, i, name, x, y):
        if name not in cfg.target_modules:
            return y
        p = params["layers"][i]["lora"][name]
        return y + linear(linear(x, p["A"]), p["B"]) * scale   # (B, T, d): x A B alpha / r
    return Hooks(projection=projection)
