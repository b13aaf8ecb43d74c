"""The method family on the encoder: what each one trains, that the encoder starts at
(or near) the pretrained model, gradient checks of every slot function and of the
encoder with each method plugged in, float32 gradients, training only what is
trainable, and bad input."""


import numpy as onp
import pytest
from autograd.test_util import check_grads

import minicompacter as mc
from minicompacter.core.layers import ACTIVATIONS, activation, use_layers
from minicompacter.core.methods import adapter, init_adapter
from minicompacter.core.model import init_model
from minicompacter.core.phm import low_rank_B, phm_weight
from minicompacter.core.tree import count, flatten, leaves, merge, unflatten

from conftest import backward_dtypes, needs_minilm

ADAPTERS = ("adapter", "pfeiffer", "adapter-lowrank", "phm-adapter", "compacter", "compacter++")
TINY_LAYERS = 2


def tiny_config(name, **kw):
    """A method's preset made to fit the tiny encoder (width 32): bottleneck 4, n = 2 or 4."""
    preset = mc.method_config(name)
    if isinstance(preset, mc.AdapterConfig):
        kw.setdefault("reduction_factor", 8)
        if preset.projection == "phm":
            kw.setdefault("phm_dim", 2 if name == "phm-adapter" else 4)
    return mc.method_config(name, **kw)


@pytest.fixture(scope="module")
def tiny64():
    return mc.load_pretrained("tiny", dtype=onp.float64)


def tiny_batch(pretrained, labels=(0, 1)):
    b = mc.tokenize(pretrained.tokenizer, ["the film was very good", "not bad at all"])
    b["labels"] = onp.array(labels)
    return b


def encode(pretrained, model, trainable, frozen, batch):
    return mc.encoder(merge(frozen, trainable), batch, pretrained.config, hooks=model.method.hooks)


# --- what each method trains ------------------------------------------------------------

def paths(tree):
    return {".".join(map(str, p)) for p, _ in leaves(tree)}


@pytest.mark.parametrize("name", mc.METHODS)
def test_trainable_and_frozen_partition_the_model(tiny64, name):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, tiny_config(name))
    t, f, base = paths(trainable), paths(frozen), paths(tiny64.params)
    assert not t & f
    assert {p for p in t if p.startswith("head.")} == {"head.w", "head.b"}
    unfrozen = t & base
    assert unfrozen | (f & base) == base
    # the frozen tree holds the base model and nothing else, but Intrinsic-SAID's projections
    # and a rule the method keeps fixed (the quaternion-adapter's quaternion rule)
    if name == "intrinsic-said":
        assert {p.split(".")[0] for p in f - base} == {"fastfood"}
    else:
        assert f - base == ({"shared.A"} if name == "quaternion-adapter" else set())
    is_ln = lambda p: p.split(".")[-2] in ("ln", "attention_ln", "ffn_ln")
    if name == "full":
        assert unfrozen == base and not f
    elif name == "bitfit":
        assert unfrozen == {p for p in base if p.endswith(".b")} and t - base == {"head.w", "head.b"}
    elif name == "lora":
        assert not unfrozen
        assert t - base - {"head.w", "head.b"} == {f"layers.{i}.lora.{m}.{w}" for i in range(TINY_LAYERS)
                                                  for m in ("query", "value") for w in "AB"}
    elif name.startswith("prompt-tuning"):
        assert not unfrozen and t == {"prompt", "head.w", "head.b"}
    elif name == "intrinsic-said":
        assert not unfrozen and t == {"intrinsic.theta", "intrinsic.lambda", "head.w", "head.b"}
        # one projection per base tensor, each of B, Pi and G
        assert f - base == {f"fastfood.{part}.{p}" for part in ("B", "Pi", "G") for p in base}
    elif name == "lokr":                                  # d = 32 = 4 x 8, r = 8: full W1, W2
        assert not unfrozen
        assert t - base - {"head.w", "head.b"} == {f"layers.{i}.lokr.{m}.{w}" for i in range(TINY_LAYERS)
                                                  for m in ("query", "value") for w in ("w1", "w2")}
    elif name == "phm-lora":
        assert not unfrozen
        assert t - base - {"head.w", "head.b"} == {"shared.A"} | {
            f"layers.{i}.phm_lora.{m}.{w}" for i in range(TINY_LAYERS)
            for m in ("query", "value") for w in "st"}
    else:
        assert unfrozen == {p for p in base if is_ln(p)}
        slots = {p.split(".")[2] for p in t if p.startswith("layers.") and "adapter" in p}
        assert slots == ({"ffn_adapter"} if name in ("pfeiffer", "compacter++")
                         else {"attention_adapter", "ffn_adapter"})
        # AdapterDrop leaves the lower round_half_up(5/12 x 2) = 1 of tiny's 2 blocks out
        with_adapters = {int(p.split(".")[1]) for p in t if p.startswith("layers.") and "adapter" in p}
        assert with_adapters == ({1} if name == "adapterdrop" else set(range(TINY_LAYERS)))
        shared = {p for p in t if p.startswith("shared.")}
        assert shared == ({"shared.A"} if name.startswith("compacter") else set())


def test_layer_norms_frozen_on_request(tiny64):
    cfg = tiny_config("compacter", train_layer_norms=False)
    _, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, cfg)
    ln_names = ("ln", "attention_ln", "ffn_ln")
    assert not [p for p in paths(trainable) if p.split(".")[-2] in ln_names]
    assert {"embeddings.ln.g", "layers.1.ffn_ln.b"} <= paths(frozen)


def test_compacter_shares_one_A_across_every_layer_and_projection(tiny64):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, tiny_config("compacter"))
    for path, _ in leaves(trainable["layers"]):
        assert path[-1] != "A"                         # no per-layer A
    batch = tiny_batch(tiny64)
    g = mc.loss_grad(trainable, frozen, batch, model)["shared"]["A"]
    assert g.shape == (4, 4, 4) and onp.abs(g).max() > 0
    # a change of A reaches every layer's adapters: each slot's output moves
    seen = {}
    def spy(key):
        def run(params, i, x, h, norm):
            y = adapter(model.method.config, params["layers"][i][key], x, params["shared"]["A"])
            seen[(key, i)] = y
            return y
        return run
    hooks = mc.Hooks(attention_output=spy("attention_adapter"), ffn_output=spy("ffn_adapter"))
    mc.encoder(merge(frozen, trainable), batch, tiny64.config, hooks=hooks)
    before = dict(seen)
    moved = dict(trainable, shared={"A": trainable["shared"]["A"] + 0.1})
    mc.encoder(merge(frozen, moved), batch, tiny64.config, hooks=hooks)
    assert all(onp.abs(seen[k] - before[k]).max() > 1e-6 for k in before)


# --- the encoder at initialisation ----------------------------------------------------------

def zero_up(trainable, name):
    """The same tree with the up-projection's weight (or, for Compacter, the shared A) zero."""
    out = {k: v for k, v in trainable.items()}
    if name.startswith("compacter"):
        out["shared"] = {"A": onp.zeros_like(trainable["shared"]["A"])}
        return out
    weight = {"adapter": "w", "pfeiffer": "w", "adapter-lowrank": "t", "phm-adapter": "A"}[name]
    layers = []
    for layer in trainable["layers"]:
        layer = dict(layer)
        for key in ("attention_adapter", "ffn_adapter"):
            if key in layer:
                up = dict(layer[key]["up"], **{weight: onp.zeros_like(layer[key]["up"][weight])})
                layer[key] = dict(layer[key], up=up)
        layers.append(layer)
    out["layers"] = layers
    return out


@pytest.mark.parametrize("name", ADAPTERS)
def test_zero_up_projection_gives_the_base_encoder_exactly(tiny64, name):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, tiny_config(name))
    batch = tiny_batch(tiny64)
    base = mc.encoder(tiny64.params, batch, tiny64.config)
    out = encode(tiny64, model, zero_up(trainable, name), frozen, batch)
    onp.testing.assert_array_equal(out, base)
    assert onp.abs(encode(tiny64, model, trainable, frozen, batch) - base).max() > 0


@pytest.mark.parametrize("name", ["lora", "bitfit", "full"])
def test_lora_bitfit_full_start_exactly_at_the_base(tiny64, name):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, tiny_config(name))
    batch = tiny_batch(tiny64)
    onp.testing.assert_array_equal(encode(tiny64, model, trainable, frozen, batch),
                                   mc.encoder(tiny64.params, batch, tiny64.config))


def relative_deviation(pretrained, name, config=None):
    model, trainable, frozen = init_model(onp.random.default_rng(0), pretrained,
                                          config or mc.method_config(name))
    batch = mc.tokenize(pretrained.tokenizer, ["The movie was not good at all.",
                                               "A gorgeous, witty, seductive movie."])
    real = batch["attention_mask"].astype(bool)
    base = mc.encoder(pretrained.params, batch, pretrained.config)[real]
    out = encode(pretrained, model, trainable, frozen, batch)[real]
    return onp.linalg.norm(out - base) / onp.linalg.norm(base)


@needs_minilm
@pytest.mark.parametrize("name", ["compacter", "compacter++"])
def test_compacter_at_the_paper_init_is_within_1e_3_of_minilm(minilm, name):
    assert relative_deviation(minilm, name) < 1e-3


@pytest.mark.parametrize("name", ["compacter", "compacter++"])
def test_compacter_at_the_paper_init_is_within_1e_3_of_tiny(tiny64, name):
    assert relative_deviation(tiny64, name, tiny_config(name)) < 1e-3


def spectral(W):
    return onp.linalg.norm(W, 2)


def projection_matrix(cfg, p, shared_A):
    if cfg.projection == "dense":
        return p["w"]
    if cfg.projection == "low-rank":
        return p["s"] @ p["t"]
    B = p["B"] if "B" in p else low_rank_B(p["s"], p["t"])
    return phm_weight(p["A"] if shared_A is None else shared_A, B)


@pytest.mark.parametrize("name", ADAPTERS)
def test_each_slot_at_init_moves_its_input_at_most_by_the_derived_bound(tiny64, name):
    """With zero biases and |f(z)| <= |z| (true of GELU, both forms, ReLU and swish),
    ||A(x) - x|| = ||U f(D x)|| <= ||W_U||_2 ||W_D||_2 ||x|| for every token x."""
    cfg = tiny_config(name)
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, cfg)
    shared_A = trainable.get("shared", {}).get("A")
    ratios = []
    def spy(key):
        def run(params, i, x, h, norm):
            p = params["layers"][i][key]
            y = adapter(cfg, p, x, shared_A)
            bound = spectral(projection_matrix(cfg, p["up"], shared_A)) * spectral(
                projection_matrix(cfg, p["down"], shared_A))
            moved = onp.linalg.norm(y - x, axis=-1) / onp.linalg.norm(x, axis=-1)    # (B, T)
            assert moved.max() <= bound * (1 + 1e-9), (moved.max(), bound)
            ratios.append(moved.max())
            return y
        return run
    hooks = mc.Hooks(attention_output=spy("attention_adapter") if cfg.mh_adapter else None,
                     ffn_output=spy("ffn_adapter"))
    mc.encoder(merge(frozen, trainable), tiny_batch(tiny64), tiny64.config, hooks=hooks)
    assert len(ratios) == TINY_LAYERS * (1 + cfg.mh_adapter) and max(ratios) > 0


@pytest.mark.parametrize("layers", ["plain", "fast"])
def test_activations_are_bounded_by_the_identity(layers):
    z = onp.linspace(-20, 20, 4001)
    with use_layers(layers):
        for name in ACTIVATIONS:
            assert onp.all(onp.abs(activation(name)(z)) <= onp.abs(z) + 1e-15), name


# --- gradient checks (float64) ----------------------------------------------------------

@pytest.mark.parametrize("name", ADAPTERS)
def test_adapter_slot_function_grads(name):
    cfg = tiny_config(name)
    p = init_adapter(onp.random.default_rng(0), cfg, 32, dtype=onp.float64)
    x = onp.random.default_rng(1).standard_normal((2, 3, 32))
    if cfg.projection == "phm" and cfg.shared_phm_rule:
        A = onp.random.default_rng(2).standard_normal((4, 4, 4)) * 0.5
        check_grads(lambda p, x, A: adapter(cfg, p, x, A), argnum=(0, 1, 2), modes=["rev"],
                    order=1)(p, x, A)
    else:
        check_grads(lambda p, x: adapter(cfg, p, x), argnum=(0, 1), modes=["rev"], order=1)(p, x)


def test_lora_projection_hook_grads(tiny64):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, "lora")
    params = merge(frozen, trainable)
    x = onp.random.default_rng(1).standard_normal((2, 3, 32))
    lora = {k: {"A": v["A"], "B": v["A"].T * 0.3} for k, v in trainable["layers"][0]["lora"].items()}
    def f(lora, x):
        layer = dict(params["layers"][0], lora=lora)
        p = dict(params, layers=[layer] + params["layers"][1:])
        y = x @ params["layers"][0]["attention"]["value"]["w"]
        return model.method.hooks.attention_projection(p, 0, "value", x, y)
    check_grads(f, argnum=(0, 1), modes=["rev"], order=1)(lora, x)


@pytest.mark.parametrize("name", mc.METHODS)
def test_encoder_with_each_method_grads_wrt_the_trainable_tree(tiny64, name):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, tiny_config(name))
    if name == "lora":                                  # B = 0 at init: move off it
        trainable = merge({k: v for k, v in trainable.items() if k != "layers"},
                          {"layers": [{"lora": {m: {"A": v["A"], "B": v["A"].T * 0.5}
                                                for m, v in l["lora"].items()}}
                                      for l in trainable["layers"]]})
    batch = tiny_batch(tiny64)
    check_grads(lambda t: mc.loss(t, frozen, batch, model, rng=onp.random.default_rng(3)),
                modes=["rev"], order=1)(trainable)


# --- float32 ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", mc.METHODS)
def test_float32_gradients_for_every_method(tiny, name):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny, tiny_config(name))
    batch = tiny_batch(tiny)
    g = mc.loss_grad(trainable, frozen, batch, model, onp.random.default_rng(0))
    assert paths(g) == paths(trainable)
    assert {leaf.dtype for _, leaf in leaves(g)} == {onp.dtype(onp.float32)}
    flowing = backward_dtypes(mc.loss, trainable, frozen, batch, model, onp.random.default_rng(0))
    assert set(flowing) == {onp.dtype(onp.float32)}


# --- training only what is trainable ------------------------------------------------------

@pytest.mark.parametrize("name", ["compacter++", "lora", "bitfit"])
def test_a_training_step_leaves_the_frozen_tree_untouched(tiny, name):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny, tiny_config(name))
    batch = tiny_batch(tiny)
    frozen_before = {k: v.copy() for k, v in flatten(frozen).items()}
    ids_before = {k: id(v) for k, v in flatten(frozen).items()}
    loss0 = mc.loss(trainable, frozen, batch, model)
    for _ in range(3):                                   # plain gradient descent
        g = mc.loss_grad(trainable, frozen, batch, model)
        flat_t, flat_g = flatten(trainable), flatten(g)
        trainable = unflatten({k: flat_t[k] - 0.01 * flat_g[k] for k in flat_t})
    for k, v in flatten(frozen).items():
        assert id(v) == ids_before[k]
        onp.testing.assert_array_equal(v, frozen_before[k])
    assert mc.loss(trainable, frozen, batch, model) < loss0


def test_regression_head_uses_mse(tiny):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny, tiny_config("compacter"),
                                          num_labels=1, pooling="mean")
    batch = tiny_batch(tiny)
    batch["labels"] = onp.array([3.5, 1.0], onp.float32)
    pred = mc.predict(trainable, frozen, batch, model)
    assert pred.shape == (2, 1)
    expected = onp.mean((pred[:, 0] - batch["labels"]) ** 2)
    onp.testing.assert_allclose(mc.loss(trainable, frozen, batch, model), expected, rtol=1e-6)


def test_cross_entropy_matches_a_direct_formula():
    from minicompacter.core.nn import cross_entropy
    logits = onp.array([[2.0, -1.0, 0.5], [1000.0, 1001.0, 0.0]])
    labels = onp.array([2, 0])
    p0 = onp.exp(logits[0]) / onp.exp(logits[0]).sum()
    expected = (-onp.log(p0[2]) + (onp.log(1 + onp.exp(1.0)) + 0.0)) / 2     # row 2: log(e^0 + e^1) - 0
    onp.testing.assert_allclose(cross_entropy(logits, labels), expected, rtol=1e-12)


# --- counting, analytic against measured ---------------------------------------------------

@pytest.mark.parametrize("name", mc.METHODS)
@pytest.mark.parametrize("overrides", [{}, {"reduction_factor": 4}, {"phm_dim": 2}])
def test_analytic_count_equals_the_tree_on_tiny(tiny, name, overrides):
    from minicompacter.core.counting import count_analytic, count_measured, shapes_from_config
    preset = mc.method_config(name)
    overrides = {k: v for k, v in overrides.items() if hasattr(preset, k)
                 and (k != "phm_dim" or (getattr(preset, "projection", "phm") == "phm"
                                         and preset.phm_rule == "learned"))}
    cfg = tiny_config(name, **overrides)
    for labels in (1, 3):
        _, trainable, _ = init_model(onp.random.default_rng(0), tiny, cfg, num_labels=labels)
        analytic = count_analytic(cfg, shapes_from_config(tiny.config), labels)
        assert count_measured(trainable, cfg) == analytic
        assert sum(analytic.values()) == count(trainable)


@needs_minilm
@pytest.mark.parametrize("name", mc.METHODS)
def test_analytic_count_equals_the_tree_on_minilm(minilm, name):
    from minicompacter.core.counting import base_total, count_analytic, count_measured, shapes_from_config
    cfg = mc.method_config(name)
    _, trainable, frozen = init_model(onp.random.default_rng(0), minilm, cfg)
    shapes = shapes_from_config(minilm.config)
    assert count_measured(trainable, cfg) == count_analytic(cfg, shapes)
    assert base_total(shapes) == count(minilm.params) == 22_565_376


# --- bad input -------------------------------------------------------------------------------

def test_unknown_method_lists_the_methods():
    with pytest.raises(ValueError, match="Unknown method 'compactor'; the methods are: full, adapter"):
        mc.method_config("compactor")
    with pytest.raises(ValueError, match=r"has no option \['rank'\]"):
        mc.method_config("compacter", rank=2)


def test_bottleneck_of_zero_and_bad_phm_dim(tiny):
    with pytest.raises(ValueError, match="makes the bottleneck of a width-32 model zero"):
        init_model(onp.random.default_rng(0), tiny, mc.method_config("adapter", reduction_factor=64))
    with pytest.raises(ValueError, match=r"phm_dim 4 does not divide the widths \[32, 1\].*\[1\]"):
        init_model(onp.random.default_rng(0), tiny, "compacter")
    with pytest.raises(ValueError, match="phm_rank must be at least 1"):
        mc.method_config("compacter", phm_rank=0)
    with pytest.raises(ValueError, match="reduction_factor must be a positive integer"):
        mc.method_config("adapter", reduction_factor=0)
    with pytest.raises(ValueError, match="non_linearity 'quick_gelu' is unknown"):
        mc.method_config("adapter", non_linearity="quick_gelu")
    with pytest.raises(ValueError, match="LoRA rank r must be at least 1"):
        mc.method_config("lora", r=0)
    with pytest.raises(ValueError, match="Unknown pooling 'max'"):
        init_model(onp.random.default_rng(0), tiny, "lora", pooling="max")
