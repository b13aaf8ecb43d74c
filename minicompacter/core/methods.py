"""The method family: what each method trains and where it runs in the encoder.

A method is a small frozen config (AdapterHub's field names where they exist) turned by
`make_method` into a `Method`: a function that creates the method's own trainable
parameters, a predicate saying which of the pretrained weights it unfreezes, and the
`Hooks` the encoder calls; and, where they apply, which of its own parameters stay fixed
(`Method.fixed`) and the weight update it adds beside a projection (`Method.delta`, for
merging). The encoder never learns a method's name.

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
| adapterdrop     | dense adapters, none in the lower 5/12 of the blocks | layer norms | both slots |
| prompt-tuning-r | P vectors before the input, random          | nothing     | input-embeddings hook |
| prompt-tuning-t | P vectors before the input, from the vocabulary | nothing | input-embeddings hook |
| intrinsic-said  | theta_d and one lambda per weight tensor    | nothing (all move through P) | weights hook |
| quaternion-adapter | PHM adapters, n = 4, A fixed to the quaternions', full B | layer norms | both slots |
| lokr            | peft's LoKr, W1 kron W2, on query and value | nothing     | attention-projection hook |
| phm-lora        | sum_i A_i kron s_i t_i^T on query and value | nothing     | attention-projection hook |

The options of the reference's PHM layer are AdapterConfig's under AdapterHub's names:
learn_phm (False: A stays at its start, in the frozen tree), factorized_phm_rule
(A_i = a_i b_i^T), shared_W_phm (one set of B for every D of the model, one for every U),
and ours, phm_rule (fixed algebra rules, phm.algebra_rule). The updates beside a weight
(LoRA, LoKr, the PHM update) are core/updates.py's, which also merges them into the weights.

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
    (`train_layer_norms=False` freezes them, as AdapterHub does);
  - AdapterDrop leaves the lower round_half_up(5/12 L) blocks of each stack without
    adapters, the paper's 5 of T5-base's 12: on MiniLM's 6 blocks, 0-2 (2.5 rounds up);
  - prompt tuning and Intrinsic-SAID: prompts.py and intrinsic.py say what they choose.

On T5 (t5.py) every method is the same config and the same hooks; only `init` builds its
per-block entries per stack (blocks.per_block): adapters in every block of the encoder and
the decoder, none on cross-attention, one shared A (and shared_W_phm's weights) for both
stacks, AdapterDrop's blocks left out of each stack; LoRA, LoKr and the PHM update on the
targets of every attention, self and cross (peft's default "q", "v" on T5), their shapes from
the projection's (d -> num_heads d_kv for q, k, v); BitFit trains the biases the reference
adds (t5.init_biases); prompt tuning puts its vectors before the encoder's input.
"""

import dataclasses
import math
from functools import partial
from typing import Callable, NamedTuple, Optional

import numpy as onp

from .blocks import model_stacks, per_block, projection_shapes
from .encoder import NO_HOOKS, Hooks
from .intrinsic import init_said, said_weights
from .layers import ACTIVATIONS, activation, current
from .nn import init_dense
from .paths import ATTENTION_ADAPTER, FFN_ADAPTER, LORA, RULES, SHARED, is_bias, is_layer_norm
from .paths import is_rule, projection_kind, train_everything, train_nothing
from .phm import ALGEBRAS, C_INITS, W_INITS, check_phm_dim, glorot_uniform, init_phm_factors
from .phm import init_phm_linear, init_rule, phm_linear, rule
from .prompts import init_prompt, prepend_prompt
from .t5 import T5Config, init_biases
from .updates import init_lokr_layers, init_phm_lora_layers, lokr_delta, lokr_projection
from .updates import lora_delta, phm_lora_delta, phm_lora_projection

PROJECTIONS = ("dense", "low-rank", "phm")
# The rules a PHM layer can have: learned, or fixed to an algebra's (phm.algebra_rule).
RULE_CHOICES = ("learned",) + tuple(ALGEBRAS)


def option(default, doc, **metadata):
    """A config field with its default and a one-line description, which `--help` shows
    (metadata such as choices=(...) goes to the command line's flag too)."""
    return dataclasses.field(default=default, metadata={"doc": doc, **metadata})


def check_blocks(cfg):
    """AdapterConfig's leave_out as a sorted tuple of block indices, leave_out_lower in [0, 1)."""
    blocks = cfg.leave_out
    if isinstance(blocks, (int, onp.integer)) or not all(
            isinstance(i, (int, onp.integer)) and not isinstance(i, bool) and i >= 0 for i in blocks):
        raise ValueError(f"leave_out must be block indices (whole numbers from 0), got {blocks!r}.")
    object.__setattr__(cfg, "leave_out", tuple(sorted({int(i) for i in blocks})))
    if not (isinstance(cfg.leave_out_lower, (int, float)) and 0 <= cfg.leave_out_lower < 1):
        raise ValueError(f"leave_out_lower must be a fraction in [0, 1), got "
                         f"{cfg.leave_out_lower!r}.")


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
    phm_rule: str = option("learned", "the rules A: learned, or an algebra's, fixed: complex "
                                      "(n = 2), quaternion (4), octonion (8)", choices=RULE_CHOICES)
    learn_phm: Optional[bool] = option(None, "train the rules A (None: yes for learned rules, "
                                             "no for an algebra's)")
    factorized_phm_rule: bool = option(False, "each rule A_i = a_i b_i^T, of rank phm_rule_rank")
    phm_rule_rank: int = option(1, "rank of a factorized rule (AdapterHub, the reference: 1)")
    shared_W_phm: bool = option(False, "one set of B (or s, t) for every D of the model and one "
                                       "for every U")
    init_std: float = option(0.01, "dense adapter weights ~ N(0, init_std^2), bias 0")
    train_layer_norms: bool = option(True, "train the base model's layer norms (paper: yes; "
                                           "AdapterHub and peft: no)")
    original_ln_before: bool = option(False, "the adapter reads LN(h + f) instead of f, as "
                                             "AdapterHub's Pfeiffer and Compacter++ configs do")
    build_W: Optional[bool] = option(None, "PHM layers build W (True) or compute the factored "
                                           "product without it (False); None: by size")
    leave_out: tuple = option((), "blocks without adapters, numbered from 0 (AdapterHub's "
                                  "leave_out; a decoder's blocks count on after the encoder's)")
    leave_out_lower: float = option(0.0, "the lowest fraction of each stack's blocks left "
                                         "without adapters, rounded half up (AdapterDrop: 5/12)")

    def __post_init__(self):
        check_blocks(self)
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
                              ("non_linearity", tuple(ACTIVATIONS)), ("phm_rule", RULE_CHOICES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is unknown; use one of "
                                 f"{list(allowed)}.")
        check_rule_options(self)

    @property
    def rule_trained(self):
        """Whether the rules A are trained (`rule_is_trained`)."""
        return rule_is_trained(self)

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

    def left_out(self, num_blocks, first=0):
        """The blocks of a stack of `num_blocks` (numbered first, first + 1, ... as leave_out
        numbers them) without adapters: those leave_out names, and the lowest
        round_half_up(leave_out_lower * num_blocks).  -> a set of indices 0 .. num_blocks - 1"""
        lower = math.floor(self.leave_out_lower * num_blocks + 0.5 + 1e-9)
        return {i for i in range(num_blocks) if i < lower or first + i in self.leave_out}

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


# AdapterConfig's options of the PHM projection, and their defaults (any other value is an
# error on the other projections)
PHM_ONLY = {"phm_rule": "learned", "learn_phm": None, "factorized_phm_rule": False,
            "phm_rule_rank": 1, "shared_W_phm": False}


def rule_is_trained(cfg):
    """learn_phm, or by default: yes for learned rules, no for an algebra's (which then stay
    exactly that algebra's)."""
    return cfg.phm_rule == "learned" if cfg.learn_phm is None else cfg.learn_phm


def check_rule_options(cfg):
    """The PHM options of a config (AdapterConfig or PHMLoRAConfig) that do not fit together,
    refused by name with the fix."""
    if getattr(cfg, "projection", "phm") != "phm":
        for name, default in PHM_ONLY.items():
            if hasattr(cfg, name) and getattr(cfg, name) != default:
                raise ValueError(f"{name} applies to PHM projections only; this config's "
                                 f"projection is {cfg.projection!r}. Use projection 'phm' or "
                                 f"leave {name} at {default!r}.")
    if cfg.learn_phm not in (None, True, False):
        raise ValueError(f"learn_phm must be True, False or None, got {cfg.learn_phm!r}.")
    if cfg.phm_rule in ALGEBRAS and ALGEBRAS[cfg.phm_rule] != cfg.phm_dim:
        raise ValueError(f"phm_rule {cfg.phm_rule!r} is the rule of a {ALGEBRAS[cfg.phm_rule]}-"
                         f"dimensional algebra; set phm_dim {ALGEBRAS[cfg.phm_rule]} (it is "
                         f"{cfg.phm_dim}).")
    if cfg.phm_rule in ALGEBRAS and getattr(cfg, "factorized_phm_rule", False):
        raise ValueError(f"phm_rule {cfg.phm_rule!r} fixes A to the algebra's rules, which are "
                         f"not of the form a_i b_i^T; drop factorized_phm_rule.")
    if getattr(cfg, "phm_rule_rank", 1) < 1:
        raise ValueError(f"phm_rule_rank must be at least 1, got {cfg.phm_rule_rank}.")


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
class LoKrConfig:
    """LoKr (peft's tuners/lokr, from LyCORIS), peft's defaults and field names: beside each
    target projection, y = x W + x dW with a Kronecker-product update (core/updates.py)
        dW = (alpha / r) W1 kron W2,   W2 = w2_b w2_a when r < max(its sides) / 2 (else full),
    W1 factored too only with decompose_both; W1 starts at zero, so the model at the base."""
    method: str = option("lokr", "the preset this config came from")
    r: int = option(8, "rank of the factored Kronecker factors (peft: 8)")
    alpha: float = option(8.0, "scaling alpha / r (peft: 8)")
    decompose_both: bool = option(False, "factor W1 too (w1_b w1_a) when r < max(its sides) / 2")
    decompose_factor: int = option(-1, "how each width d = m n is split: -1 near sqrt(d), else "
                                       "m = decompose_factor where it divides d (peft's "
                                       "factorization)")
    target_modules: tuple = option(("query", "value"), "the attention projections it adapts")

    def __post_init__(self):
        check_update(self, "LoKr")
        if self.decompose_factor != -1 and self.decompose_factor < 1:
            raise ValueError(f"LoKr decompose_factor must be -1 (near the square root) or a "
                             f"positive integer, got {self.decompose_factor}.")


@dataclasses.dataclass(frozen=True)
class PHMLoRAConfig:
    """The PHM update: beside each target projection, y = x W + x dW with Compacter's
    parametrisation and no nonlinearity (as KAdaptation, He et al. 2022, places it),
        dW = (alpha / r) sum_i A_i kron (s_i t_i^T),   A: (n, n, n) shared by the model,
    t zero at the start, so the model starts exactly at the base (core/updates.py)."""
    method: str = option("phm-lora", "the preset this config came from")
    r: int = option(8, "rank of each s_i t_i^T")
    alpha: float = option(8.0, "scaling alpha / r")
    phm_dim: int = option(4, "n: the number of Kronecker products, and A_i's size")
    phm_rule: str = option("learned", "the rules A: learned, or an algebra's, fixed",
                           choices=RULE_CHOICES)
    learn_phm: Optional[bool] = option(None, "train A (None: yes unless an algebra's)")
    phm_init_range: float = option(0.5, "std of the learned A at the start (0.5 = 1/sqrt(n) "
                                        "for n = 4: x (sum_i A_i kron s_i) on the scale of "
                                        "LoRA's x A)")
    target_modules: tuple = option(("query", "value"), "the attention projections it adapts")
    build_W: Optional[bool] = option(None, "build dW (True) or the factored product (False); "
                                           "None: by size")

    def __post_init__(self):
        check_update(self, "The PHM update's")
        if self.phm_dim < 1:
            raise ValueError(f"phm_dim must be at least 1, got {self.phm_dim}.")
        check_rule_options(self)

    @property
    def rule_trained(self):
        """Whether the rules A are trained (`rule_is_trained`)."""
        return rule_is_trained(self)


def check_update(cfg, name):
    """The rank and targets of an update beside the attention projections."""
    if cfg.r < 1:
        raise ValueError(f"{name} rank r must be at least 1, got {cfg.r}.")
    bad = set(cfg.target_modules) - {"query", "key", "value", "output"}
    if bad or not cfg.target_modules:
        raise ValueError(f"{name} target_modules {sorted(bad) or '()'}: use some of query, "
                         f"key, value, output.")


@dataclasses.dataclass(frozen=True)
class BitFitConfig:
    """BitFit (Ben Zaken et al. 2021): train every bias, linear layers and layer norms."""
    method: str = option("bitfit", "the preset this config came from")


@dataclasses.dataclass(frozen=True)
class FullConfig:
    """Full fine-tuning: every pretrained weight is trained."""
    method: str = option("full", "the preset this config came from")


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """Prompt tuning (Lester et al. 2021; prompts.py): P trained vectors before the input."""
    method: str = option("prompt-tuning-r", "the preset this config came from")
    prompt_length: int = option(100, "P, the virtual tokens before every input (paper: 100; "
                                     "peft's num_virtual_tokens)")
    prompt_init: str = option("random", "random: U(-0.5, 0.5) (Prompt Tuning-R); vocab: copies "
                                        "of vocabulary embeddings (Prompt Tuning-T)",
                              choices=("random", "vocab"))
    init_token_ids: tuple = option((), "vocab: the tokens whose embeddings the prompt copies, "
                                       "repeated to P rows (none: P drawn at random)")

    def __post_init__(self):
        if isinstance(self.prompt_length, bool) or not isinstance(self.prompt_length, int) \
                or self.prompt_length < 1:
            raise ValueError(f"prompt_length must be a positive integer, got {self.prompt_length!r}.")
        if self.prompt_init not in ("random", "vocab"):
            raise ValueError(f"prompt_init {self.prompt_init!r} is unknown; use random or vocab.")
        object.__setattr__(self, "init_token_ids", tuple(int(i) for i in self.init_token_ids))


@dataclasses.dataclass(frozen=True)
class IntrinsicConfig:
    """Intrinsic-SAID (Aghajanyan et al. 2021; intrinsic.py): every weight tensor moved as
    theta_0,i + lambda_i P_i(theta_d), P_i a fixed random Fastfood projection."""
    method: str = option("intrinsic-said", "the preset this config came from")
    intrinsic_dim: int = option(20000, "d', the trained numbers: theta_d and one lambda per "
                                       "weight tensor, counted inside d' as the reference does")
    projection_seed: int = option(1997, "the seed of the fixed random projections (the "
                                        "reference's random_seed)")

    def __post_init__(self):
        for name, least in (("intrinsic_dim", 1), ("projection_seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}.")


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
    # the paper's other baselines (configs of the reference code: adapters_drop.json,
    # prompt_tuning_random_init.json, prompt_tuning_tokens_init.json, intrinsic_said.json);
    # our rates: docs/methods.md, "The baselines' learning rates", a sweep on validation
    "adapterdrop": Preset(AdapterConfig(method="adapterdrop", projection="dense",
                                        leave_out_lower=5 / 12), 3e-3, 3e-4),
    "prompt-tuning-r": Preset(PromptConfig(), 3e-2, 3e-2),
    "prompt-tuning-t": Preset(PromptConfig(method="prompt-tuning-t", prompt_init="vocab"), 3e-2, 3e-1),
    "intrinsic-said": Preset(IntrinsicConfig(), 3e-3, 3e-2),
    # the Kronecker family (notebook 08): a PHM-Adapter with n = 4 whose rule is fixed to the
    # quaternions' (quaternion-valued D and U), peft's LoKr, and the PHM update beside W.
    # The quaternion adapter's B ~ N(0, 0.01^2), the dense adapter's init: with rules of +-1
    # (not a learned A near zero) a Glorot B moves MiniLM's hidden states by 165% at the
    # start, N(0, 0.01^2) by 0.9% (the dense adapter: 0.7%, PHM-Adapter: 1.3%).
    # Their rates were chosen on SST-2's validation split (2,000 examples, seed 0, from 1e-3,
    # 3e-3 and 1e-2; notebook 08): validation accuracy 0.843 / 0.848 / 0.845 (quaternion
    # adapter), 0.801 / 0.835 / 0.836 (LoKr), 0.849 / 0.843 / 0.846 (the PHM update). Apart
    # from LoKr at 1e-3 they lie within a point, less than one standard error of 1,000
    # examples (1.1 points). peft has no default rate.
    "quaternion-adapter": Preset(AdapterConfig(method="quaternion-adapter", phm_rule="quaternion",
                                               factorized_phm_W=False,
                                               hypercomplex_nonlinearity="normal",
                                               phm_init_range=0.01), 3e-3, None),
    "lokr": Preset(LoKrConfig(), 1e-2, None),
    "phm-lora": Preset(PHMLoRAConfig(), 1e-3, None),
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
    """One adapter projection (D or U), as the config says (PHM: without what the model
    shares, the rules or the weights)."""
    if cfg.projection == "dense":
        return init_dense(rng, d_in, d_out, std=cfg.init_std, dtype=dtype)
    if cfg.projection == "low-rank":
        r_s, r_t = rng.spawn(2)
        return {"s": glorot_uniform(r_s, (d_in, cfg.phm_rank), dtype=dtype),
                "t": glorot_uniform(r_t, (cfg.phm_rank, d_out), dtype=dtype),
                "b": onp.zeros(d_out, dtype)}
    return init_phm_linear(rng, cfg.phm_dim, d_in, d_out,
                           rank=cfg.phm_rank if cfg.factorized_phm_W else None,
                           with_A=not cfg.shared_phm_rule, with_B=not cfg.shared_W_phm,
                           bias=cfg.phm_bias,
                           hypercomplex_nonlinearity=cfg.hypercomplex_nonlinearity,
                           phm_c_init=cfg.phm_c_init, phm_init_range=cfg.phm_init_range,
                           algebra=algebra_of(cfg), rule_rank=rule_rank_of(cfg), dtype=dtype)


def algebra_of(cfg):
    """The algebra whose rules a config fixes, or None (learned rules)."""
    return None if cfg.phm_rule == "learned" else cfg.phm_rule


def rule_rank_of(cfg):
    """The rank of a factorized rule, or None (a full A)."""
    return cfg.phm_rule_rank if cfg.factorized_phm_rule else None


def project(cfg, params, x, shared_A=None, shared_W=None):
    """Apply one adapter projection.  x: (..., d_in) -> (..., d_out)
    PHM: the layer's own rules (A, or A_left and A_right) unless shared_A (n, n, n) is
    given, and its own B or s, t unless shared_W (the model's, for this projection) is."""
    if cfg.projection == "dense":
        return current().dense(params, x)
    if cfg.projection == "low-rank":
        return low_rank_linear(params, x)
    A = rule(params) if shared_A is None else shared_A                       # (n, n, n)
    layer = {k: params[k] for k in params if k not in RULES}
    if shared_W is not None:
        layer.update({k: shared_W[k] for k in shared_W})
    return phm_linear(layer, x, shared_A=A, build_W=cfg.build_W)


def init_adapter(rng, cfg, d, dtype=onp.float32):
    """{"down": D (d -> k), "up": U (k -> d)}"""
    k = cfg.bottleneck_size(d)
    r_down, r_up = rng.spawn(2)
    return {"down": init_projection(r_down, cfg, d, k, dtype),
            "up": init_projection(r_up, cfg, k, d, dtype)}


def bottleneck(cfg, params, x, shared_A=None, shared_W=None):
    """U(f(D(x))), the adapter without its residual.  x: (B, T, d) -> (B, T, d)
    shared_W: {"down": ..., "up": ...}, the model's one set of PHM weights (shared_W_phm)."""
    w = shared_W or {}
    h = activation(cfg.non_linearity)(project(cfg, params.get("down", {}), x, shared_A,
                                              w.get("down")))                  # (B, T, k)
    return project(cfg, params.get("up", {}), h, shared_A, w.get("up"))         # (B, T, d)


def adapter(cfg, params, x, shared_A=None, shared_W=None):
    """A(x) = x + U(f(D(x)))   (Compacter paper, Eq. 2).  x: (B, T, d) -> (B, T, d)"""
    return x + bottleneck(cfg, params, x, shared_A, shared_W)


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


# --- methods as the encoder and the trainer see them -------------------------------------

class Method(NamedTuple):
    """What a method means to the rest of the package."""
    config: object            # one of the config dataclasses above
    init: Callable            # (rng, the base's EncoderConfig or T5Config, dtype) -> the
                              # method's new parameters (on T5, per stack: `per_block`)
    unfreezes: Callable       # (path tuple of a pretrained weight) -> trained?
    hooks: Hooks              # what the encoder calls
    from_base: Optional[Callable] = None   # (rng, the pretrained weights it may move, dtype) ->
                              # (new trainable parameters, new frozen constants), for methods
                              # whose parameters are made from the base model's (prompt
                              # tuning's -T init, Intrinsic-SAID's one lambda per tensor)
    fixed: Callable = train_nothing   # (path of one of its new parameters) -> kept at its
                              # initial value (a frozen PHM rule)? model.init_model puts those
                              # in the frozen tree, and a checkpoint records them
    delta: Optional[Callable] = None  # (params, i, name) -> dW (d_in, d_out) or None: the
                              # update of block i's projection `name`, for merging
                              # (updates.merge_updates); None: no update beside a weight


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
                      Hooks(attention_projection=partial(lora_projection, config)),
                      delta=partial(lora_delta, config))
    if isinstance(config, LoKrConfig):
        return Method(config, partial(init_lokr_layers, config), train_nothing,
                      Hooks(attention_projection=partial(lokr_projection, config)),
                      delta=partial(lokr_delta, config))
    if isinstance(config, PHMLoRAConfig):
        return Method(config, partial(init_phm_lora_layers, config), train_nothing,
                      Hooks(attention_projection=partial(phm_lora_projection, config)),
                      fixed=train_nothing if config.rule_trained else is_rule,
                      delta=partial(phm_lora_delta, config))
    if isinstance(config, AdapterConfig):
        hooks = Hooks(
            attention_output=partial(adapter_slot, config, ATTENTION_ADAPTER) if config.mh_adapter else None,
            ffn_output=partial(adapter_slot, config, FFN_ADAPTER) if config.output_adapter else None)
        fixed = is_rule if config.projection == "phm" and not config.rule_trained else train_nothing
        return Method(config, partial(init_adapters, config),
                      is_layer_norm if config.train_layer_norms else train_nothing, hooks,
                      fixed=fixed)
    if isinstance(config, PromptConfig):
        return Method(config, init_nothing, train_nothing, Hooks(input_embeddings=prepend_prompt),
                      partial(init_prompt, config))
    if isinstance(config, IntrinsicConfig):
        return Method(config, init_nothing, train_nothing, Hooks(weights=said_weights),
                      partial(init_said, config))
    raise TypeError(f"Not a method config: {config!r}")


def init_nothing(rng, encoder_config, dtype=onp.float32):
    """The `init` of methods that add no parameters (full fine-tuning)."""
    return {}


def init_bitfit(rng, model_config, dtype=onp.float32):
    """BitFit's `init`: nothing on the encoder, whose biases it unfreezes; on T5, which has no
    biases, the zero biases the reference adds (t5.init_biases), trained with the rest."""
    return init_biases(model_config, dtype) if isinstance(model_config, T5Config) else {}


def init_adapters(cfg, rng, model_config, dtype=onp.float32):
    """Every block's adapters (in the slots cfg names, none in the blocks AdapterDrop leaves
    out) and what the model's PHM layers share, one for the whole model (both of T5's stacks,
    as the reference's phm_rule):
    {"layers": [{"attention_adapter": ..., "ffn_adapter": ...}, ...],
     "shared": {"A": (n, n, n)} (Compacter's shared rule; A_left, A_right when factorized)
               + {"down": {s, t} or {B}, "up": ...} (shared_W_phm)}
    on the encoder; on T5 the blocks' entries under "encoder" and "decoder" (`per_block`)."""
    d = model_config.hidden_size
    k = cfg.bottleneck_size(d)                                    # clear errors before any work
    left_out = blocks_left_out(cfg, model_config)
    r_shared, r_layers = rng.spawn(2)

    def block_adapters(g, block):
        g_att, g_ffn = g.spawn(2)
        layer = {}
        if block.number in left_out:                              # AdapterDrop: no adapter here
            return layer
        if cfg.mh_adapter:
            layer[ATTENTION_ADAPTER] = init_adapter(g_att, cfg, d, dtype)
        if cfg.output_adapter:
            layer[FFN_ADAPTER] = init_adapter(g_ffn, cfg, d, dtype)
        return layer
    added = per_block(model_config, r_layers, block_adapters)
    shared = init_shared(r_shared, cfg, d, k, dtype) if cfg.projection == "phm" else {}
    if shared:
        added[SHARED] = shared
    return added


def blocks_left_out(cfg, model_config):
    """The numbers (Block.number) of the blocks without adapters: in each stack those
    leave_out names (a decoder's numbered on after the encoder's, as AdapterHub numbers them)
    and its lowest round_half_up(leave_out_lower * its blocks) (cfg.left_out). Checked:
    leave_out may name only blocks the model has, and must leave one with adapters."""
    stacks, first, left_out = model_stacks(model_config), 0, set()
    for _, n, _ in stacks:
        left_out |= {first + i for i in cfg.left_out(n, first)}
        first += n
    beyond = [i for i in cfg.leave_out if i >= first]
    if beyond:
        raise ValueError(f"leave_out names blocks {beyond} of a model whose blocks are 0 .. "
                         f"{first - 1}; name blocks it has.")
    if len(left_out) == first:
        raise ValueError(f"leave_out and leave_out_lower leave none of the {first} blocks an "
                         f"adapter; keep at least one.")
    return left_out


def init_shared(rng, cfg, d, k, dtype):
    """What every PHM layer of the model shares: the rules (shared_phm_rule), drawn first, and
    one set of weights for every D (d -> k) and one for every U (shared_W_phm), as AdapterHub's
    init_shared_parameters makes them (W_down_left, W_down_right, W_up_left, W_up_right)."""
    shared = {}
    if cfg.shared_phm_rule:
        shared.update(init_rule(rng, cfg.phm_dim, shared=True, algebra=algebra_of(cfg),
                                rank=rule_rank_of(cfg), phm_c_init=cfg.phm_c_init,
                                phm_init_range=cfg.phm_init_range, dtype=dtype))
    if cfg.shared_W_phm:
        n, rank = cfg.phm_dim, cfg.phm_rank if cfg.factorized_phm_W else None
        for part, (d_in, d_out), g in zip(("down", "up"), ((d, k), (k, d)), rng.spawn(2)):
            shared[part] = init_phm_factors(*g.spawn(2), n, d_in // n, d_out // n, rank,
                                            cfg.hypercomplex_nonlinearity, cfg.phm_init_range,
                                            dtype)
    return shared


def adapter_slot(cfg, key, params, i, f, h, norm):
    """The slot function of every adapter method: block i's adapter `key` (the attention or
    the FFN slot's), with what the model's PHM layers share. f is the sublayer's output, h its
    input, norm the block's layer norm; returns what the block adds to h before norm:
        A(f) = f + U(g(D(f)))                        the reference (and AdapterHub's Houlsby
                                                     and Compacter blocks)
        f + U(g(D(norm(h + f))))                     original_ln_before (AdapterHub's Pfeiffer
                                                     and Compacter++ blocks)
    f, h: (B, T, d) -> (B, T, d)"""
    layer = params["layers"][i]
    if key not in layer and (cfg.leave_out or cfg.leave_out_lower):  # a block AdapterDrop left out
        return f
    shared = params[SHARED] if SHARED in params else {}
    shared_A = rule(shared) if cfg.projection == "phm" and cfg.shared_phm_rule else None
    shared_W = shared if cfg.projection == "phm" and cfg.shared_W_phm else None
    p = layer.get(key, {})                        # {} when every weight is shared, no bias
    if cfg.original_ln_before:
        return f + bottleneck(cfg, p, norm(h + f), shared_A, shared_W)
    return adapter(cfg, p, f, shared_A, shared_W)


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
