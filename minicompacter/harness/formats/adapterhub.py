"""AdapterHub's adapter files (the `adapters` library, 1.x): read into a minicompacter
model, and a minicompacter adapter written as AdapterHub saves one, for every encoder family
(families.py: BERT, RoBERTa, XLM-RoBERTa, DistilBERT, ELECTRA) and for T5 (families.T5:
T5AdapterModel's names, both stacks, no head).

`{Family}AdapterModel.save_adapter(DIR, NAME, with_head=True)` writes, for a bottleneck adapter:

    adapter_config.json     {"config": {BnConfig's fields}, "hidden_size", "model_class":
                            "BertAdapterModel" (RobertaAdapterModel, ...), "model_name" (the
                            base model's hub id), "model_type": "bert", "name": NAME, "version"}
    adapter.safetensors     per block i and slot, under the family's name for it
                            (families.adapterhub_prefix: bert.encoder.layer.{i}.attention.output
                            .adapters.{NAME}. for the attention slot, ...output.adapters... for
                            the FFN slot; DistilBERT's attention_adapters / output_adapters):
                              dense: adapter_down.0.weight (k, d), .bias; adapter_up.weight (d, k), .bias
                              PHM:   adapter_down.0.W_left (n, d/n, r), .W_right (n, r, k/n) (or .W
                                     (n, d/n, k/n)), .b, .phm_rule (n, n, n) unless shared; the same
                                     under adapter_up (without the ".0")
                            and, with a shared rule, {prefix}shared_parameters.{NAME}.phm_rule (n, n, n)
    head_config.json        {"config": {"head_type": "classification", "num_labels", "layers",
                            "activation_function", "use_pooler", "bias", "label2id", ...}, ...}
    model_head.safetensors  heads.{NAME}.1.weight (labels, d), .bias (one layer on [CLS]); with
                            two layers heads.{NAME}.1.* (d, d), tanh, heads.{NAME}.4.* (labels, d)

AdapterHub's PHM weight is minicompacter's: W = sum_i kron(phm_rule[i], W_left[i] @ W_right[i]),
applied as x @ W + b, no transposes; its dense adapter layers are torch Linears, (out, in).

What AdapterHub computes in a BERT block, with x the sublayer's input and f its output
(adapters 1.3.0, measured: tests/fixtures/interop/make_interop_fixtures.py):
    original_ln_before False (DoubleSeqBnConfig, CompacterConfig): LN(x + f + A(f)), the
        reference's block, which minicompacter computes by default;
    original_ln_before True, residual_before_ln True (SeqBnConfig, CompacterPlusPlusConfig):
        LN(x + f + A(LN(x + f))), which AdapterConfig(original_ln_before=True) computes.
Every other field must have the value that gives one of these two blocks; a field with
any other value is refused by name, never ignored. leave_out (the blocks without adapters,
AdapterDrop's) is read and written: minicompacter's leave_out, and leave_out_lower's blocks,
go to AdapterHub's as one list. Every file is read through files.py's checked readers: each
JSON field's type and range, the tensors' dtypes and values; and the numbers the files hold
must be the numbers the config describes before the model is built (`check_size`), so a
config naming a huge head or bottleneck allocates nothing.
"""

import dataclasses
import json
from pathlib import Path

import numpy as onp

from ...core.counting import count_analytic, shapes_from_config
from ...core.layers import ACTIVATIONS
from ...core.blocks import block_path, blocks_of, map_blocks
from ...core.methods import PHM_ONLY, AdapterConfig
from ...core.model import init_model
from ...core.paths import ATTENTION_ADAPTER, FFN_ADAPTER, HEAD, RULES, SHARED, is_rule
from ...core.phm import ALGEBRAS, algebra_rule
from ...core.tree import flatten, leaves, merge, split
from .files import (FLAG, OBJECT, ExportError, FormatError, atomic_write, check_fields, check_tree,
                    integer, json_file, nullable, number, read_json_object, read_tensors,
                    refuse_pickle, tensor_bytes, text)

CONFIG, WEIGHTS, PICKLE = "adapter_config.json", "adapter.safetensors", "pytorch_adapter.bin"
HEAD_CONFIG, HEAD_WEIGHTS, HEAD_PICKLE = ("head_config.json", "model_head.safetensors",
                                          "pytorch_model_head.bin")
SLOTS = (ATTENTION_ADAPTER, FFN_ADAPTER)
VERSION = "adapters.1.3.0"          # the release whose files these are (and were checked with)
READS = "adapters.1."               # the releases whose files are read
FIX = "the files are not an adapter as AdapterHub's adapters 1.x saves one (save_adapter)."

# BnConfig fields that must have exactly these values: with them, a block is one of the two
# above. (original_ln_before is free, and residual_before_ln must be True when it is set.)
FIXED = {"original_ln_after": True, "adapter_residual_before_ln": False, "ln_before": False,
         "ln_after": False, "is_parallel": False, "scaling": 1.0, "use_gating": False,
         "dropout": 0.0, "cross_adapter": False, "inv_adapter": None,
         "inv_adapter_reduction_factor": None, "stochastic_depth": 0.0, "residual_before_ln": True}
# fields that describe only how the weights were first drawn, which a trained adapter no
# longer depends on
INIT_ONLY = ("init_weights", "init_weights_seed")
# BnConfig field -> AdapterConfig field, the same value; and what each may be
SAME = {"mh_adapter": FLAG, "output_adapter": FLAG, "reduction_factor": integer(1),
        "non_linearity": text(), "original_ln_before": FLAG, "phm_dim": integer(1),
        "phm_rank": integer(1), "shared_phm_rule": FLAG, "factorized_phm_W": FLAG,
        "phm_c_init": text(), "phm_init_range": number(0), "hypercomplex_nonlinearity": text(),
        "phm_bias": FLAG, "factorized_phm_rule": FLAG, "shared_W_phm": FLAG}
# adapter_config.json's own fields
META = {"config": OBJECT, "name": text(), "version": text(), "model_type": text()}
META_OPTIONAL = {"hidden_size": integer(1), "model_class": text(), "model_name": nullable(text())}
# head_config.json's "config"
HEAD_FIELDS = {"head_type": text(), "num_labels": integer(1), "layers": integer(1)}
HEAD_OPTIONAL = {"activation_function": nullable(text()), "use_pooler": FLAG, "bias": FLAG,
                 "label2id": nullable(OBJECT), "dropout_prob": nullable(number(0, 1))}
# learn_phm: AdapterHub's bool is AdapterConfig.rule_trained (True read as None, the default).
# Its factorized rule has rank 1 (phm_rule_left (n, n, 1)); its PHMLayer has no fixed algebra
# rule, but an algebra's rules written with learn_phm False compute the same (`as_algebra`).
# (AdapterHub 1.3.0's train_adapter sets requires_grad on every adapter and shared
# parameter, learn_phm's rules too: learn_phm False holds only until train_adapter is called.)


def is_adapterhub(directory):
    """An AdapterHub adapter directory: adapter_config.json as save_adapter writes it (its
    BnConfig under "config", its model_class and version), of any release: a file of another
    release, or a damaged one, is then refused by `read_meta` with the reason, not taken for
    another format. (peft's has a peft_type; minicompacter 0.1.0's a method.)"""
    config = json_file(Path(directory) / CONFIG)
    return isinstance(config, dict) and "peft_type" not in config and "method" not in config \
        and any(k in config for k in ("config", "model_class", "version"))


def read_meta(source, family, width):
    """adapter_config.json, every field checked: written by adapters 1.x, for this family's
    model of this width."""
    meta = read_json_object(source, META, optional=META_OPTIONAL, error=FormatError, fix=FIX)
    if not meta["version"].startswith(READS):
        raise FormatError(f"{source}: written by {meta['version']!r}; minicompacter reads the "
                          f"files of AdapterHub's adapters 1.x (version \"adapters.1.*\"): load the "
                          f"adapter with adapters 1.x and save it again (save_adapter).")
    if meta["model_type"] != family.adapterhub.model_type:
        raise FormatError(f"{source}: an adapter for a {meta['model_type']} model "
                          f"({meta.get('model_class')}), and the base model is a "
                          f"{family.model_type} ({family.adapterhub.model_class}); load it on the "
                          f"model it was trained on (--model).")
    if meta.get("hidden_size", width) != width:
        raise FormatError(f"{source}: an adapter for a model of width {meta['hidden_size']}, and "
                          f"the base model given has width {width}; load it on the model it was "
                          f"trained on (--model).")
    return meta


# --- the config ---------------------------------------------------------------------------

def method_config(bn, source):
    """The AdapterConfig that computes what a BnConfig (a dict) computes; FormatError naming
    the first field it cannot honour or whose value is of the wrong type."""
    architecture = bn.get("architecture", "bottleneck")
    if architecture != "bottleneck":
        raise FormatError(f"{source}: architecture {architecture!r}; minicompacter reads "
                          f"bottleneck adapters only (Houlsby, Pfeiffer, Compacter, Compacter++).")
    for field, value in FIXED.items():
        if field in bn and bn[field] != value and not (
                field == "residual_before_ln" and not bn.get("original_ln_before")):
            raise FormatError(f"{source}: {field} = {bn[field]!r}; minicompacter computes the "
                              f"blocks with {field} = {value!r} only (and original_ln_before "
                              f"either way), so it cannot load this adapter exactly.")
    known = set(FIXED) | set(INIT_ONLY) | set(SAME) | {"architecture", "phm_layer", "leave_out",
                                                       "learn_phm"}
    for field, value in bn.items():
        if field not in known and value not in (None, False, [], {}, 0, 0.0):
            raise FormatError(f"{source}: field {field} = {value!r} is unknown to minicompacter, "
                              f"which cannot tell what it computes.")
    if bn.get("non_linearity") not in ACTIVATIONS:
        raise FormatError(f"{source}: non_linearity {bn.get('non_linearity')!r} is not one "
                          f"minicompacter computes ({', '.join(sorted(ACTIVATIONS))}).")
    if not isinstance(bn.get("reduction_factor"), int) or isinstance(bn["reduction_factor"], bool):
        raise FormatError(f"{source}: reduction_factor {bn.get('reduction_factor')!r}; "
                          f"minicompacter needs one whole number for every layer.")
    check_fields(bn, optional={**SAME, "phm_layer": FLAG, "learn_phm": FLAG},
                 source=f"{source}'s config", error=FormatError, fix=FIX)
    fields = {f: bn[f] for f in SAME if f in bn}
    fields["projection"] = "phm" if bn.get("phm_layer") else "dense"
    if fields["projection"] != "phm":                 # AdapterHub ignores them there
        fields = {k: v for k, v in fields.items() if k not in PHM_ONLY}
    elif bn.get("learn_phm", True) is False:
        fields["learn_phm"] = False
    fields["leave_out"] = read_leave_out(bn.get("leave_out"), source)
    try:
        return AdapterConfig(method=preset_name(fields), train_layer_norms=False, **fields)
    except ValueError as e:
        raise FormatError(f"{source}: {e}") from None


def read_leave_out(blocks, source):
    """BnConfig's leave_out (the blocks without adapters) as a tuple; FormatError unless it is
    a list of block indices."""
    if blocks is None:
        return ()
    if not isinstance(blocks, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in blocks):
        raise FormatError(f"{source}: leave_out = {blocks!r}; it must be a list of block indices "
                          f"(whole numbers from 0).")
    return tuple(blocks)


def preset_name(fields):
    """The minicompacter method whose preset this adapter is closest to (its name only: the
    fields themselves are what is computed)."""
    if fields["projection"] == "dense":
        if fields.get("leave_out") and fields.get("mh_adapter", True):
            return "adapterdrop"
        return "adapter" if fields.get("mh_adapter", True) else "pfeiffer"
    if fields.get("factorized_phm_W", True) and fields.get("shared_phm_rule", True):
        return "compacter" if fields.get("mh_adapter", True) else "compacter++"
    if fields.get("phm_dim") == 1 and fields.get("factorized_phm_W", True):
        return "adapter-lowrank"
    return "phm-adapter"


def bn_config(cfg, num_layers):
    """A minicompacter AdapterConfig on a model of `num_layers` blocks as AdapterHub's BnConfig
    fields (a dict); leave_out lists every block without adapters (leave_out_lower's too).
    ExportError naming an option AdapterHub's files cannot hold."""
    if cfg.projection == "low-rank":
        # a rank-r weight s t is a PHM layer with n = 1 and the rule A = [[[1]]]
        cfg = AdapterConfig(**{**cfg.__dict__, "projection": "phm", "phm_dim": 1,
                               "shared_phm_rule": False, "factorized_phm_W": True})
    check_exportable(cfg)
    bn = {**FIXED, **{f: getattr(cfg, f) for f in SAME}, "learn_phm": cfg.rule_trained,
          "phm_layer": cfg.projection == "phm", "init_weights": "bert", "init_weights_seed": None,
          "leave_out": sorted(cfg.left_out(num_layers))}
    return dict(sorted(bn.items()))


def check_exportable(cfg):
    """ExportError for the PHM options AdapterHub 1.3.0 cannot compute."""
    if cfg.factorized_phm_rule and cfg.phm_rule_rank != 1:
        raise ExportError(f"phm_rule_rank {cfg.phm_rule_rank}: AdapterHub's factorized_phm_rule "
                          f"has rank 1 only (phm_rule_left (n, n, 1)); export a rank-1 rule.")
    if cfg.shared_W_phm and not cfg.factorized_phm_W:
        raise ExportError("shared_W_phm with factorized_phm_W False: AdapterHub 1.3.0 cannot "
                          "build it (its init_shared_parameters fails with a NameError on "
                          "_in_feats_per_axis); export shared factored weights (s, t) instead.")


# --- tensor names ---------------------------------------------------------------------------

# AdapterHub's PHMLayer names -> minicompacter's leaves (the rules, the weights, the bias)
PHM_NAMES = (("W_left", "s"), ("W_right", "t"), ("W", "B"), ("b", "b"), ("phm_rule", "A"),
             ("phm_rule_left", "A_left"), ("phm_rule_right", "A_right"))


def _projection_names(prefix, projection, p):
    """{AdapterHub name: minicompacter leaf name} of one projection (D or U)."""
    if projection == "dense":
        return {prefix + "weight": "w", prefix + "bias": "b"}
    return {prefix + k: v for k, v in PHM_NAMES if v in p}


def shared_names(shared, name, family):
    """{AdapterHub name: (dotted path, False)} of what the model's PHM layers share: the rule
    (phm_rule, or phm_rule_left and _right) and, with shared_W_phm, W_down_left, W_down_right,
    W_up_left, W_up_right (or W_down, W_up)."""
    base = family.adapterhub_shared(name)
    out = {base + theirs: (f"{SHARED}.{ours}", False) for theirs, ours in PHM_NAMES
           if ours in RULES and ours in shared}
    for part in ("down", "up"):
        for theirs, ours in (("left", "s"), ("right", "t"), ("", "B")):
            if ours in shared.get(part, {}):
                key = f"W_{part}_{theirs}" if theirs else f"W_{part}"
                out[base + key] = (f"{SHARED}.{part}.{ours}", False)
    return out


def adapter_names(trainable, cfg, name, family):
    """{AdapterHub tensor name: (minicompacter dotted path, transpose?)} for every adapter
    leaf of a trainable tree (and the shared rule), under the family's names."""
    dense = cfg.projection == "dense"
    out = {}
    for stack, i, layer in blocks_of(trainable):
        for slot in SLOTS:
            if slot not in layer:
                continue
            base = family.adapterhub_prefix(i, slot, name, stack)
            for part, prefix in (("down", "adapter_down.0."), ("up", "adapter_up.")):
                for theirs, ours in _projection_names(base + prefix, cfg.projection,
                                                      layer[slot].get(part, {})).items():
                    out[theirs] = (f"{block_path(stack, i)}.{slot}.{part}.{ours}",
                                   dense and ours == "w")
    if SHARED in trainable:
        out.update(shared_names(trainable[SHARED], name, family))
    return out


def head_names(head, name):
    """{AdapterHub head tensor name: (minicompacter dotted path, transpose?)}"""
    if "hidden" in head:
        return {f"heads.{name}.1.weight": (f"{HEAD}.hidden.w", True),
                f"heads.{name}.1.bias": (f"{HEAD}.hidden.b", False),
                f"heads.{name}.4.weight": (f"{HEAD}.w", True),
                f"heads.{name}.4.bias": (f"{HEAD}.b", False)}
    return {f"heads.{name}.1.weight": (f"{HEAD}.w", True), f"heads.{name}.1.bias": (f"{HEAD}.b", False)}


def head_config(num_labels, layers, label_names=()):
    """head_config.json's "config" for minicompacter's head on [CLS]."""
    names = list(label_names) or [f"LABEL_{i}" for i in range(num_labels)]
    return {"activation_function": "tanh", "bias": True, "dropout_prob": None,
            "head_type": "classification", "label2id": {n: i for i, n in enumerate(names)},
            "layers": layers, "num_labels": num_labels, "use_pooler": False}


def read_head_config(config, source):
    """(num_labels, layers, label names) of a head minicompacter computes exactly (head_config
    .json's "config", every field checked); FormatError for any other head."""
    check_fields(config, HEAD_FIELDS, HEAD_OPTIONAL, source=f"{source}'s config",
                 error=FormatError, fix=FIX)
    wanted = {"head_type": ("classification",), "use_pooler": (False,), "bias": (True,),
              "layers": (1, 2)}
    for field, allowed in wanted.items():
        if config.get(field, allowed[0]) not in allowed:
            raise FormatError(f"{source}: {field} = {config.get(field)!r}; minicompacter computes "
                              f"AdapterHub's classification heads on [CLS] with 1 or 2 layers "
                              f"(and a bias) only. Load the adapter without its head (remove "
                              f"{HEAD_CONFIG}) to get its hidden states.")
    if config["layers"] == 2 and config.get("activation_function") != "tanh":
        raise FormatError(f"{source}: a two-layer head with activation_function "
                          f"{config.get('activation_function')!r}; minicompacter computes tanh.")
    return config["num_labels"], config["layers"], label_order(config.get("label2id"),
                                                             config["num_labels"], source)


def label_order(label2id, num_labels, source):
    """The label names of a label2id object, in id order: every id a distinct integer from 0
    to num_labels - 1 ([] when there is none)."""
    if not label2id:
        return []
    ids = list(label2id.values())
    if len(ids) != num_labels or any(not isinstance(v, int) or isinstance(v, bool) for v in ids) \
            or sorted(ids) != list(range(num_labels)):
        raise FormatError(f"{source}: label2id {json.dumps(label2id)[:60]} does not give each of "
                          f"the {num_labels} labels one id from 0 to {num_labels - 1}; {FIX}")
    return [n for n, _ in sorted(label2id.items(), key=lambda item: item[1])]


# --- Adapter-LowRank as a PHM layer with n = 1 ---------------------------------------------

def lowrank_as_phm(cfg, trainable):
    """(config, tree) of a rank-r adapter written as AdapterHub's PHM layer with n = 1:
    W = kron([[1]], s t) = s t, s -> W_left (1, d_in, r), t -> W_right (1, r, d_out), A = 1."""
    phm = dataclasses.replace(cfg, projection="phm", phm_dim=1, shared_phm_rule=False,
                              factorized_phm_W=True, phm_bias=True)

    def convert(p):
        return {"s": p["s"][None], "t": p["t"][None], "b": p["b"],
                "A": onp.ones((1, 1, 1), p["s"].dtype)}
    return phm, map_blocks(trainable, lambda layer: {
        slot: {part: convert(q) for part, q in adapter.items()} if slot in SLOTS else adapter
        for slot, adapter in layer.items()})


def phm_as_lowrank(cfg, trainable):
    """The inverse of `lowrank_as_phm`, when every rule is exactly 1 (else None)."""
    projections = [q for _, _, layer in blocks_of(trainable) for slot, adapter in layer.items()
                   if slot in SLOTS for q in adapter.values()]
    if cfg.phm_dim != 1 or cfg.shared_phm_rule or not cfg.factorized_phm_W or \
            not cfg.rule_trained or cfg.factorized_phm_rule or cfg.shared_W_phm or \
            any(not onp.all(q["A"] == 1) or "b" not in q for q in projections):
        return None
    low = dataclasses.replace(cfg, method="adapter-lowrank", projection="low-rank", phm_dim=4)
    return low, map_blocks(trainable, lambda layer: {
        slot: {part: {"s": q["s"][0], "t": q["t"][0], "b": q["b"]} for part, q in adapter.items()}
        if slot in SLOTS else adapter for slot, adapter in layer.items()})


def as_algebra(cfg, tree):
    """The config with phm_rule set to the algebra whose rules every rule of `tree` is exactly,
    when they are fixed (learn_phm False); else None. An algebra's rules are exported as
    AdapterHub's phm_rule with learn_phm False; this reads them back as what they are."""
    if cfg.rule_trained or cfg.factorized_phm_rule:
        return None
    rules = [leaf for path, leaf in leaves(tree) if is_rule(path)]
    for algebra, n in ALGEBRAS.items():
        if n == cfg.phm_dim and rules and all(onp.array_equal(A, algebra_rule(algebra))
                                              for A in rules):
            return dataclasses.replace(cfg, phm_rule=algebra, learn_phm=None,
                                       method=preset_name_fixed(cfg, algebra))
    return None


def preset_name_fixed(cfg, algebra):
    """quaternion-adapter for its preset's shape (full B, n = 4), else the learned name."""
    if algebra == "quaternion" and not cfg.factorized_phm_W:
        return "quaternion-adapter"
    return cfg.method


# --- reading and writing --------------------------------------------------------------------

def read_head(directory):
    """(num_labels, layers, label names, {name: array}) of the head saved with an adapter
    (0, 1, [], {} without one)."""
    if not (directory / HEAD_CONFIG).exists():
        return 0, 1, [], {}
    refuse_pickle(directory, HEAD_PICKLE, HEAD_WEIGHTS)
    config = read_json_object(directory / HEAD_CONFIG, {"config": OBJECT}, error=FormatError,
                              fix=FIX)["config"]
    num_labels, layers, labels = read_head_config(config, directory / HEAD_CONFIG)
    return num_labels, layers, labels, read_tensors(directory / HEAD_WEIGHTS, error=FormatError,
                                                    fix=FIX)


def check_size(tensors, cfg, pretrained, num_labels, layers, source):
    """FormatError unless the files hold as many numbers as the adapter and head the configs
    describe on this model: checked before the model is built, so that a config naming a
    huge head or bottleneck never allocates it."""
    d = pretrained.config.hidden_size
    held_too = dataclasses.replace(cfg, learn_phm=True) if cfg.projection == "phm" else cfg
    want = sum(count_analytic(held_too, shapes_from_config(pretrained.config),   # fixed rules
                              num_labels).values())                            # are held too
    want += d * (d + 1) if num_labels and layers == 2 else 0
    held = sum(t.size for t in tensors.values())
    if held != want:
        raise FormatError(f"{source}: the files hold {held:,} numbers, and a {cfg.method} adapter "
                          f"(reduction_factor {cfg.reduction_factor}, phm_dim {cfg.phm_dim}) with "
                          f"a head of {num_labels} labels on this model has {want:,}; the configs "
                          f"and the weights do not belong together.")


def read(directory, pretrained, family):
    """(model, trainable, frozen, info) of an AdapterHub adapter directory on a pretrained
    model of the family. info: what load_adapter returns as the config (format, head, base
    model)."""
    directory = Path(directory)
    refuse_pickle(directory, PICKLE, WEIGHTS)
    source = directory / CONFIG
    meta = read_meta(source, family, pretrained.config.hidden_size)
    cfg, name = method_config(meta["config"], source), meta["name"]
    beyond = [i for i in cfg.leave_out if i >= pretrained.config.num_layers]
    if beyond:
        raise FormatError(f"{source}: leave_out names blocks {beyond}, which a "
                          f"{pretrained.config.num_layers}-block base model does not have; "
                          f"was it saved for another model?")
    tensors = read_tensors(directory / WEIGHTS, error=FormatError, fix=FIX)
    num_labels, layers, labels, head = read_head(directory)
    try:
        check_size({**tensors, **head}, cfg, pretrained, num_labels, layers, directory)
    except ValueError as e:                      # the bottleneck does not fit this model
        raise FormatError(f"{source}: {e}") from None
    tensors.update(head)
    model, skeleton, frozen = init_model(onp.random.default_rng(0), pretrained, cfg,
                                         num_labels=num_labels, pooling="cls", head_layers=layers)
    fixed, frozen = split(frozen, model.method.fixed)       # learn_phm False: rules in frozen
    skeleton = merge(skeleton, fixed)
    names = adapter_names(skeleton, cfg, name, family)
    if num_labels:
        names.update(head_names(skeleton[HEAD], name))
    extra = sorted(set(tensors) - set(names))
    if extra:
        raise FormatError(f"{directory}: tensors {extra[:3]} are not part of a {cfg.method} "
                          f"adapter named {name!r} as {source} describes it.")
    missing = sorted(set(names) - set(tensors))
    if missing:
        raise FormatError(f"{directory}: {missing[:3]} missing; the files are incomplete.")
    flat = {ours: (tensors[theirs].T if transpose else tensors[theirs])
            for theirs, (ours, transpose) in names.items()}
    trainable = check_tree(skeleton, flat, directory)
    low = phm_as_lowrank(cfg, trainable) if cfg.projection == "phm" else None
    cfg_fixed = as_algebra(cfg, trainable) if low is None and cfg.projection == "phm" else None
    if low is not None or cfg_fixed is not None:
        cfg = low[0] if low is not None else cfg_fixed
        trainable = low[1] if low is not None else trainable
        model, _, frozen = init_model(onp.random.default_rng(0), pretrained, cfg,
                                      num_labels=num_labels, pooling="cls", head_layers=layers)
        frozen = split(frozen, model.method.fixed)[1]
    fixed, trainable = split(trainable, model.method.fixed)
    frozen = merge(frozen, fixed)
    info = {"format": "adapterhub", "adapter_name": name, "method": cfg.method, "task": None,
            "num_labels": num_labels, "pooling": "cls", "head_layers": layers,
            "label_names": labels, "base_model": {"name": meta.get("model_name"),
                                                  "hub_id": meta.get("model_name")}}
    return model, trainable, frozen, info


def write(out, trainable, model, *, family, name, model_name, label_names=()):
    """AdapterHub's files for a minicompacter adapter on a model of the family (and its head,
    which must read [CLS]): adapter_config.json, adapter.safetensors, and head_config.json +
    model_head.safetensors. Every tensor is written finite or not at all."""
    cfg = model.method.config
    if cfg.projection == "low-rank":
        cfg, trainable = lowrank_as_phm(cfg, trainable)
    flat = flatten(trainable)
    meta = {"hidden_size": model.encoder_config.hidden_size,
            "model_class": family.adapterhub.model_class, "model_name": model_name,
            "model_type": family.adapterhub.model_type, "name": name, "version": VERSION}

    def tensors(names):
        return tensor_bytes({theirs: flat[ours].T if transpose else flat[ours]
                             for theirs, (ours, transpose) in names.items()})
    out = Path(out)
    atomic_write(out / WEIGHTS, tensors(adapter_names(trainable, cfg, name, family)))
    atomic_write(out / CONFIG, json.dumps({"config": bn_config(cfg, model.encoder_config.num_layers),
                                           **meta}, indent=2))
    if HEAD in trainable:
        head = head_config(model.num_labels, model.head_layers, label_names)
        atomic_write(out / HEAD_WEIGHTS, tensors(head_names(trainable[HEAD], name)))
        atomic_write(out / HEAD_CONFIG, json.dumps({"config": head, **meta}, indent=2))
    return [CONFIG, WEIGHTS] + ([HEAD_CONFIG, HEAD_WEIGHTS] if HEAD in trainable else [])
