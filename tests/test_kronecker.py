"""The Kronecker family: the fixed hypercomplex rules (the quaternion layer against the
Hamilton product written out), the reference's PHM options (learn_phm, factorized_phm_rule,
shared_W_phm), LoKr and the PHM update, and merging updates into the weights; each with
float64 gradient checks and counts, and against files and numbers AdapterHub 1.3.0 and peft
0.21.2 made themselves (tests/fixtures/kronecker, made by make_kronecker_fixtures.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as onp
import pytest
from autograd.test_util import check_grads
from safetensors.numpy import load_file

import minicompacter as mc
from minicompacter.core.counting import count_analytic, count_measured, shapes_from_config
from minicompacter.core.methods import adapter, init_adapter
from minicompacter.core.model import hidden_states, init_model, kept_fixed
from minicompacter.core.phm import ALGEBRAS, algebra_rule, cayley_dickson_product, rule
from minicompacter.core.paths import is_layer_norm
from minicompacter.core.tree import flatten, merge, tree_map, undotted
from minicompacter.core.updates import factorization, lokr_delta, merge_updates, phm_lora_delta
from minicompacter.harness.formats import adapterhub
from minicompacter.harness.formats import peft as peft_files
from minicompacter.harness.formats.dispatch import ExportError, export_adapter
from minicompacter.harness.formats.families import FAMILIES
from minicompacter.harness.formats.native import WEIGHTS, save_adapter
from minicompacter.harness.pretrained import base_identity, load_pretrained

from conftest import needs_minilm

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "kronecker"
REPORT = json.loads((FIXTURES / "outputs.json").read_text())
RNG = onp.random.default_rng(0)


@pytest.fixture(scope="module")
def outputs():
    return onp.load(FIXTURES / "outputs.npz")


def hamilton(p, q, mul=lambda u, v: u * v):
    """The quaternion product pq written out; mul multiplies a component of p by one of q."""
    p0, p1, p2, p3 = p
    q0, q1, q2, q3 = q
    return [mul(p0, q0) - mul(p1, q1) - mul(p2, q2) - mul(p3, q3),
            mul(p0, q1) + mul(p1, q0) + mul(p2, q3) - mul(p3, q2),
            mul(p0, q2) - mul(p1, q3) + mul(p2, q0) + mul(p3, q1),
            mul(p0, q3) + mul(p1, q2) - mul(p2, q1) + mul(p3, q0)]


# --- the algebras' rules ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(ALGEBRAS))
def test_algebra_rules_are_signed_permutation_matrices(name):
    A = algebra_rule(name)
    n = ALGEBRAS[name]
    assert A.shape == (n, n, n)
    assert set(onp.unique(A)) <= {-1.0, 0.0, 1.0}
    assert (onp.abs(A).sum(axis=1) == 1).all() and (onp.abs(A).sum(axis=2) == 1).all()
    onp.testing.assert_array_equal(A[0], onp.eye(n))            # e_0 = 1 multiplies as 1


def test_sum_of_q_i_A_i_is_left_multiplication_by_q_in_the_row_vector_convention():
    A = algebra_rule("quaternion")
    q, x = RNG.standard_normal(4), RNG.standard_normal(4)
    onp.testing.assert_allclose(x @ onp.einsum("i,iac->ac", q, A), hamilton(q, x), atol=1e-14)
    # and the complex numbers: x (q_0 A_0 + q_1 A_1) = q x
    z, w = complex(*RNG.standard_normal(2)), complex(*RNG.standard_normal(2))
    M = onp.einsum("i,iac->ac", [z.real, z.imag], algebra_rule("complex"))
    onp.testing.assert_allclose(onp.array([w.real, w.imag]) @ M, [(z * w).real, (z * w).imag])


def test_the_quaternion_rule_is_the_one_adapterhubs_fixture_was_made_with(outputs):
    onp.testing.assert_array_equal(algebra_rule("quaternion"), outputs["quaternion_rule"])


def test_octonions_compose_norms_are_alternative_and_not_associative():
    p, q, r = (RNG.standard_normal(8) for _ in range(3))
    mul = cayley_dickson_product
    assert onp.isclose(onp.linalg.norm(mul(p, q)), onp.linalg.norm(p) * onp.linalg.norm(q))
    onp.testing.assert_allclose(mul(mul(p, p), q), mul(p, mul(p, q)), atol=1e-12)
    assert onp.abs(mul(mul(p, q), r) - mul(p, mul(q, r))).max() > 1e-3
    e = onp.eye(8)
    assert all(onp.array_equal(mul(e[i], e[i]), -e[0]) for i in range(1, 8))


@pytest.mark.parametrize("layers", ["plain", "fast"])
@pytest.mark.parametrize("build_W", [True, False])
def test_a_phm_layer_with_the_quaternion_rule_is_a_quaternion_linear_layer(layers, build_W):
    """y = w x, the Hamilton product of the weight w = sum_i B_i e_i (on the left) and the
    input x = sum_a X_a e_a, each product of components the matrix product X_a B_i."""
    p, q, r = 5, 3, 2
    s, t = RNG.standard_normal((4, p, r)), RNG.standard_normal((4, r, q))
    B = s @ t                                      # the factored product needs B_i = s_i t_i^T
    x = RNG.standard_normal((2, 6, 4 * p))
    X = onp.split(x, 4, axis=-1)
    written_out = onp.concatenate(hamilton(B, X, mul=lambda Bi, Xa: Xa @ Bi), axis=-1)
    params = {"B": B} if build_W else {"s": s, "t": t}
    with mc.use_layers(layers):
        y = mc.phm_linear(params, x, shared_A=algebra_rule("quaternion"), build_W=build_W)
    onp.testing.assert_allclose(y, written_out, atol=1e-12)


def test_the_fixed_rule_options_that_do_not_fit_are_refused_by_name():
    with pytest.raises(ValueError, match="phm_rule 'quaternion' is the rule of a 4-dimensional "
                                         "algebra; set phm_dim 4"):
        mc.method_config("compacter", phm_rule="quaternion", phm_dim=8)
    with pytest.raises(ValueError, match="not of the form a_i b_i\\^T; drop factorized_phm_rule"):
        mc.method_config("compacter", phm_rule="quaternion", factorized_phm_rule=True)
    with pytest.raises(ValueError, match="learn_phm applies to PHM projections only"):
        mc.method_config("adapter", learn_phm=False)
    with pytest.raises(ValueError, match="shared_W_phm applies to PHM projections only"):
        mc.method_config("adapter-lowrank", shared_W_phm=True)
    with pytest.raises(ValueError, match="phm_rule 'sedenion' is unknown"):
        mc.method_config("compacter", phm_rule="sedenion")
    with pytest.raises(ValueError, match="phm_rule_rank must be at least 1"):
        mc.method_config("compacter", factorized_phm_rule=True, phm_rule_rank=0)


# --- the options on the encoder: gradients, counts, what is trained -----------------------------

def config(name, **kw):
    """A preset fitted to the tiny encoder (width 32): bottleneck 4 for the adapters."""
    preset = mc.method_config(name)
    if isinstance(preset, mc.AdapterConfig):
        kw.setdefault("reduction_factor", 8)
        if name == "phm-adapter":
            kw.setdefault("phm_dim", 4)
    return mc.method_config(name, **kw)


OPTIONS = [("compacter", {"learn_phm": False}), ("compacter", {"factorized_phm_rule": True}),
           ("compacter", {"factorized_phm_rule": True, "phm_rule_rank": 2, "learn_phm": False}),
           ("phm-adapter", {"factorized_phm_rule": True, "phm_rule_rank": 2}),
           ("phm-adapter", {"learn_phm": False}),
           ("compacter", {"shared_W_phm": True}), ("compacter", {"shared_W_phm": True, "phm_rank": 2}),
           ("phm-adapter", {"shared_W_phm": True}),
           ("compacter", {"shared_W_phm": True, "phm_bias": False}),
           ("compacter", {"phm_rule": "quaternion"}), ("compacter", {"phm_rule": "quaternion",
                                                                      "learn_phm": True}),
           ("quaternion-adapter", {}), ("phm-adapter", {"phm_dim": 2, "phm_rule": "complex"}),
           ("lokr", {}), ("lokr", {"r": 1, "decompose_both": True, "decompose_factor": 4}),
           ("lokr", {"r": 2, "alpha": 3.0, "target_modules": ("query", "key", "value", "output")}),
           ("phm-lora", {}), ("phm-lora", {"r": 1, "phm_dim": 2}),
           ("phm-lora", {"phm_rule": "quaternion"}), ("phm-lora", {"learn_phm": False})]
OPTION_IDS = [f"{m}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for m, o in OPTIONS]


def off_start(trainable):
    """Every trained number moved off its start (LoKr's W1 = 0, the PHM update's t = 0)."""
    rng = onp.random.default_rng(5)
    return tree_map(lambda v: v + 0.3 * rng.standard_normal(v.shape).astype(v.dtype), trainable)


def tiny_batch(pretrained):
    b = mc.tokenize(pretrained.tokenizer, ["the film was very good", "not bad at all"])
    b["labels"] = onp.array([0, 1])
    return b


@pytest.mark.parametrize("name,options", OPTIONS, ids=OPTION_IDS)
def test_each_option_passes_a_float64_gradient_check_on_the_encoder(tiny64, name, options):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, config(name, **options))
    batch = tiny_batch(tiny64)
    check_grads(lambda t: mc.loss(t, frozen, batch, model, rng=onp.random.default_rng(3)),
                modes=["rev"], order=1)(off_start(trainable))


@pytest.mark.parametrize("name,options", OPTIONS, ids=OPTION_IDS)
def test_each_option_is_counted_analytically_as_its_tree_measures(tiny, name, options):
    cfg = config(name, **options)
    for labels in (1, 3):
        _, trainable, _ = init_model(onp.random.default_rng(0), tiny, cfg, num_labels=labels)
        assert count_measured(trainable, cfg) == count_analytic(cfg, shapes_from_config(tiny.config), labels)


@pytest.mark.parametrize("layers", ["plain", "fast"])
@pytest.mark.parametrize("name,options", OPTIONS, ids=OPTION_IDS)
def test_each_option_gives_the_same_loss_and_gradients_on_both_layer_sets(tiny64, layers, name,
                                                                          options):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, config(name, **options))
    trainable, batch = off_start(trainable), tiny_batch(tiny64)
    with mc.use_layers("plain"):
        want = mc.loss_and_grad(trainable, frozen, batch, model, onp.random.default_rng(3))
    with mc.use_layers(layers):
        got = mc.loss_and_grad(trainable, frozen, batch, model, onp.random.default_rng(3))
    onp.testing.assert_allclose(got[0], want[0], rtol=1e-10)
    for key, g in flatten(want[1]).items():
        onp.testing.assert_allclose(flatten(got[1])[key], g, rtol=1e-8, atol=1e-12, err_msg=key)


def test_learn_phm_false_keeps_the_rule_out_of_the_trainable_tree_at_its_start(tiny):
    cfg = config("compacter", learn_phm=False)
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny, cfg)
    _, learned, _ = init_model(onp.random.default_rng(0), tiny, config("compacter"))
    assert "shared.A" not in flatten(trainable) and "shared.A" in flatten(frozen)
    onp.testing.assert_array_equal(frozen["shared"]["A"], learned["shared"]["A"])   # the same start
    assert list(flatten(kept_fixed(model, frozen))) == ["shared.A"]
    assert count_measured(trainable, cfg)["shared A"] == 0
    assert "shared.A" not in flatten(mc.loss_grad(trainable, frozen, tiny_batch(tiny), model))


def test_an_algebra_rule_is_fixed_unless_learn_phm_says_otherwise(tiny):
    _, trainable, frozen = init_model(onp.random.default_rng(0), tiny, config("quaternion-adapter"))
    onp.testing.assert_array_equal(frozen["shared"]["A"], algebra_rule("quaternion"))
    assert "shared" not in trainable
    _, trainable, _ = init_model(onp.random.default_rng(0), tiny,
                                 config("compacter", phm_rule="quaternion", learn_phm=True))
    onp.testing.assert_array_equal(trainable["shared"]["A"], algebra_rule("quaternion"))


def test_a_factorized_rule_is_a_i_times_b_i_transposed(tiny):
    _, trainable, _ = init_model(onp.random.default_rng(0), tiny,
                                 config("compacter", factorized_phm_rule=True, phm_rule_rank=2))
    left, right = trainable["shared"]["A_left"], trainable["shared"]["A_right"]
    assert left.shape == (4, 4, 2) and right.shape == (4, 2, 4)
    want = onp.stack([sum(onp.outer(left[i][:, j], right[i][j]) for j in range(2)) for i in range(4)])
    onp.testing.assert_allclose(rule(trainable["shared"]), want, rtol=1e-6)


def test_shared_W_phm_is_one_set_of_B_for_every_D_and_one_for_every_U(tiny64):
    """The model with shared weights equals the model with its own weights in every layer
    when each layer's are copies of the shared ones."""
    shared_cfg = config("compacter", shared_W_phm=True)
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, shared_cfg)
    trainable = off_start(trainable)
    own_model, own, _ = init_model(onp.random.default_rng(0), tiny64, config("compacter"))
    layers = [{slot: {part: {**trainable["shared"][part], "b": adapter_[part]["b"]}
                      for part in ("down", "up")} for slot, adapter_ in layer.items()
               if slot.endswith("adapter")} for layer in trainable["layers"]]
    copies = merge({k: v for k, v in trainable.items() if k not in ("layers", "shared")},
                   {"layers": [dict(l, **{k: v for k, v in t.items() if not k.endswith("adapter")})
                               for l, t in zip(layers, trainable["layers"])],
                    "shared": {"A": trainable["shared"]["A"]}})
    batch = tiny_batch(tiny64)
    onp.testing.assert_allclose(mc.predict(trainable, frozen, batch, model),
                                mc.predict(copies, frozen, batch, own_model), rtol=1e-12)
    assert set(trainable["shared"]) == {"A", "down", "up"}
    assert trainable["shared"]["down"]["s"].shape == (4, 8, 1)          # d/n = 8, rank 1
    assert trainable["shared"]["up"]["t"].shape == (4, 1, 8)


# --- the PHM update and LoKr -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["lokr", "phm-lora"])
def test_lokr_and_the_phm_update_start_exactly_at_the_base(tiny, name):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny, name)
    batch = tiny_batch(tiny)
    onp.testing.assert_array_equal(hidden_states(trainable, frozen, batch, model),
                                   mc.encoder(tiny.params, batch, tiny.config))


def test_the_phm_update_is_its_sum_of_kronecker_products_and_its_hook_applies_it(tiny64):
    cfg = config("phm-lora", r=2)
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, cfg)
    params = merge(frozen, off_start(trainable))
    A, p = params["shared"]["A"], params["layers"][1]["phm_lora"]["value"]
    want = sum(onp.kron(A[i], p["s"][i] @ p["t"][i]) for i in range(4)) * (cfg.alpha / cfg.r)
    dW = phm_lora_delta(cfg, params, 1, "value")
    onp.testing.assert_allclose(dW, want, atol=1e-12)
    assert phm_lora_delta(cfg, params, 1, "key") is None
    x, y = RNG.standard_normal((2, 3, 32)), RNG.standard_normal((2, 3, 32))
    onp.testing.assert_allclose(model.method.hooks.attention_projection(params, 1, "value", x, y),
                                y + x @ want, atol=1e-12)


def test_the_rank_each_update_can_reach(tiny64):
    """At d = 32: LoRA's dW has rank r; the PHM update's min(d, n^2 r) (each A_i kron s_i t_i^T
    has rank n r, n of them); LoKr's rank(W1) rank(W2) (32 = 4 x 8: 4 r with W2 factored)."""
    def rank_of(name, **kw):
        cfg = config(name, **kw)
        model, trainable, frozen = init_model(onp.random.default_rng(0), tiny64, cfg)
        params = merge(frozen, off_start(trainable))
        return onp.linalg.matrix_rank(model.method.delta(params, 0, "query"))
    assert rank_of("lora", r=1) == 1
    assert rank_of("phm-lora", r=1) == 16 and rank_of("phm-lora", r=2) == 32
    assert rank_of("phm-lora", r=1, phm_dim=2) == 4
    assert rank_of("lokr", r=1) == 4 and rank_of("lokr", r=8) == 32      # r >= 4: W2 full


@pytest.mark.parametrize("width", REPORT["factorization"])
def test_factorization_is_pefts(width):
    for factor, pair in REPORT["factorization"][width].items():
        if int(factor) == -1 or int(factor) >= 1:
            assert list(factorization(int(width), int(factor))) == pair, (width, factor)


@needs_minilm
@pytest.mark.parametrize("fixture", ["peft_lokr", "peft_lokr_both"])
def test_lokr_delta_is_pefts_get_delta_weight(minilm, outputs, fixture):
    model, trainable, frozen, _ = mc.load_adapter(FIXTURES / fixture, minilm)
    key = next(k for k in outputs if k.startswith(fixture + "_delta_") and k.endswith("_rows"))
    module = key[len(fixture + "_delta_"):-len("_rows")]
    name = {v: k for k, v in FAMILIES["bert"].peft.modules.items()}[module]
    dW = lokr_delta(model.method.config, merge(frozen, trainable), 0, name).T.astype(onp.float64)
    onp.testing.assert_allclose(dW[:48], outputs[key], atol=1e-7)
    onp.testing.assert_allclose(dW.sum(1), outputs[key.replace("_rows", "_row_sums")], atol=1e-5)
    onp.testing.assert_allclose(dW.sum(0), outputs[key.replace("_rows", "_col_sums")], atol=1e-5)


# --- the libraries' files ------------------------------------------------------------------------

FILES = ["adapterhub_shared_W", "adapterhub_layer_rules", "adapterhub_quaternion", "peft_lokr",
         "peft_lokr_both"]


def fixture_batch(outputs, group):
    return {k: outputs[f"{group}_{k}"] for k in ("input_ids", "token_type_ids", "attention_mask")}


@needs_minilm
@pytest.mark.parametrize("fixture", FILES)
def test_importing_gives_the_librarys_hidden_states(minilm, outputs, fixture):
    model, trainable, frozen, info = mc.load_adapter(FIXTURES / fixture, minilm)
    for group in ("single", "pair"):
        batch = fixture_batch(outputs, group)
        real = batch["attention_mask"].astype(bool)
        want = outputs[f"{fixture}_{group}_hidden"]
        # through the encoder's hooks with the two trees merged, as the issue asks
        hidden = mc.encoder(merge(frozen, trainable), batch, model.encoder_config,
                            hooks=model.method.hooks)
        assert onp.abs(hidden - want)[real].max() < 1e-5
        assert onp.abs(outputs[f"base_{group}_hidden"] - want)[real].max() > 1e-2


@needs_minilm
def test_the_options_are_read_as_adapterhub_wrote_them(minilm):
    shared = mc.load_adapter(FIXTURES / "adapterhub_shared_W", minilm)
    assert shared[0].method.config.shared_W_phm and shared[0].method.config.factorized_phm_rule
    assert {"A_left", "A_right", "down", "up"} == set(shared[1]["shared"])
    layer = mc.load_adapter(FIXTURES / "adapterhub_layer_rules", minilm)
    assert layer[0].method.config.learn_phm is False
    assert "A_left" in layer[2]["layers"][0]["ffn_adapter"]["down"]          # frozen
    assert "A_left" not in layer[1]["layers"][0]["ffn_adapter"]["down"]
    quaternion = mc.load_adapter(FIXTURES / "adapterhub_quaternion", minilm)
    assert quaternion[0].method.config.phm_rule == "quaternion"
    assert quaternion[0].method.config.method == "quaternion-adapter"


def same_tensors(ours, theirs):
    a, b = load_file(str(ours)), load_file(str(theirs))
    assert a.keys() == b.keys()
    for name in b:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        onp.testing.assert_array_equal(a[name], b[name], err_msg=name)


@needs_minilm
@pytest.mark.parametrize("fixture", FILES)
def test_exporting_imported_weights_writes_the_librarys_own_files(minilm, tmp_path, fixture):
    model, trainable, frozen, info = mc.load_adapter(FIXTURES / fixture, minilm)
    if fixture.startswith("adapterhub"):
        adapterhub.write(tmp_path, merge(trainable, kept_fixed(model, frozen)), model,
                         family=FAMILIES["bert"], name=info["adapter_name"], model_name=info["base_model"]["name"])
        same_tensors(tmp_path / adapterhub.WEIGHTS, FIXTURES / fixture / adapterhub.WEIGHTS)
        assert json.loads((tmp_path / adapterhub.CONFIG).read_text()) == json.loads(
            (FIXTURES / fixture / adapterhub.CONFIG).read_text())
        return
    peft_files.write(tmp_path, trainable, model, family=FAMILIES["bert"], base_model_name_or_path=info["base_model"]["name"])
    same_tensors(tmp_path / peft_files.WEIGHTS, FIXTURES / fixture / peft_files.WEIGHTS)
    ours = json.loads((tmp_path / peft_files.CONFIG).read_text())
    theirs = json.loads((FIXTURES / fixture / peft_files.CONFIG).read_text())
    assert set(ours) <= set(theirs)
    for field in set(ours) - {"target_modules"}:
        assert ours[field] == theirs[field], field
    assert set(ours["target_modules"]) == set(theirs["target_modules"])


def test_what_adapterhub_does_with_learn_phm_and_shared_W_is_recorded():
    """AdapterHub 1.3.0's train_adapter turns learn_phm=False's rule trainable again, and it
    cannot build shared_W_phm with full W: both measured by the fixture script."""
    checks = REPORT["checks"]
    assert checks["learn_phm_after_train_adapter"]["requires_grad after add_adapter"] is False
    assert checks["learn_phm_after_train_adapter"]["requires_grad after train_adapter"] is True
    assert "_in_feats_per_axis" in checks["shared_W_phm_with_factorized_phm_W_False"]


# --- checkpoints, export, refusals -------------------------------------------------------------

def native(tiny, tmp_path, name, **options):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny, config(name, **options))
    trainable = off_start(trainable)
    out = tmp_path / "native"
    save_adapter(out, trainable, model, base_identity(tiny, "tiny"), "synthetic-sentiment",
                 {"max_length": 32}, frozen=frozen)
    return out, model, trainable, frozen


@pytest.mark.parametrize("name,options", [("compacter", {"learn_phm": False}),
                                          ("phm-adapter", {"learn_phm": False,
                                                           "factorized_phm_rule": True}),
                                          ("quaternion-adapter", {})])
def test_a_fixed_rule_is_recorded_in_the_checkpoint_and_reloads_exactly(tiny, tmp_path, name, options):
    out, model, trainable, frozen = native(tiny, tmp_path, name, **options)
    kept = flatten(kept_fixed(model, frozen))
    assert kept and set(kept) <= set(load_file(str(out / WEIGHTS)))
    _, loaded, loaded_frozen, _ = mc.load_adapter(out, tiny)
    assert flatten(loaded).keys() == flatten(trainable).keys()
    for key, value in kept.items():
        onp.testing.assert_array_equal(flatten(loaded_frozen)[key], value)


EXPORTS = [("adapters", "compacter", {"learn_phm": False}),
           ("adapters", "compacter", {"factorized_phm_rule": True}),
           ("adapters", "phm-adapter", {"factorized_phm_rule": True, "learn_phm": False,
                                        "shared_phm_rule": False}),
           ("adapters", "compacter", {"shared_W_phm": True}),
           ("adapters", "quaternion-adapter", {}),
           ("peft", "lokr", {}), ("peft", "lokr", {"r": 1, "decompose_both": True,
                                                  "decompose_factor": 4}),
           ("transformers", "lokr", {}), ("transformers", "phm-lora", {}),
           ("transformers", "lora", {})]


@pytest.mark.parametrize("to,name,options", EXPORTS, ids=lambda x: str(x))
def test_export_then_import_gives_the_same_model(tiny, tmp_path, to, name, options):
    out, model, trainable, frozen = native(tiny, tmp_path, name, **options)
    export_adapter(out, to, tmp_path / "exported")
    batch = tiny_batch(tiny)
    want = hidden_states(trainable, frozen, batch, model)
    if to == "transformers":                     # the update merged into a plain BertModel
        base = load_pretrained(tmp_path / "exported")
        got = mc.encoder(base.params, batch, base.config)
        assert onp.abs(got - want).max() < 1e-5
        return
    imported, i_trainable, i_frozen, _ = mc.load_adapter(tmp_path / "exported")
    assert imported.method.config.method == model.method.config.method
    for key, value in flatten(merge(trainable, kept_fixed(model, frozen))).items():
        if not key.startswith("head") and not is_layer_norm(undotted(key)):   # those go beside
            onp.testing.assert_array_equal(flatten(merge(i_trainable, kept_fixed(imported, i_frozen)))[key],
                                           value, err_msg=key)


@pytest.mark.parametrize("to,name,options,message", [
    ("adapters", "compacter", {"factorized_phm_rule": True, "phm_rule_rank": 2},
     "phm_rule_rank 2: AdapterHub's factorized_phm_rule has rank 1 only"),
    ("adapters", "compacter", {"shared_W_phm": True, "factorized_phm_W": False},
     "shared_W_phm with factorized_phm_W False: AdapterHub 1.3.0 cannot build it"),
    ("peft", "phm-lora", {}, "peft has no PHM update.*--to transformers"),
    ("transformers", "compacter", {}, "cannot be merged into the weights: its adapters compute "
                                      "f \\+ U\\(g\\(D\\(f\\)\\)\\).*nonlinear.*--to adapters"),
    ("adapters", "lokr", {}, "AdapterHub's bottleneck adapter files hold the adapter methods "
                             "only.*--to peft"),
])
def test_what_a_target_cannot_hold_is_refused_by_name(tiny, tmp_path, to, name, options, message):
    out, *_ = native(tiny, tmp_path, name, **options)
    with pytest.raises(ExportError, match=message):
        export_adapter(out, to, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# --- merging ---------------------------------------------------------------------------------------

MERGEABLE = [("lora", {}), ("lokr", {}), ("lokr", {"r": 1, "decompose_both": True}),
             ("phm-lora", {}), ("phm-lora", {"phm_rule": "quaternion"}), ("full", {}), ("bitfit", {})]


@pytest.mark.parametrize("name,options", MERGEABLE, ids=lambda x: str(x))
def test_the_merged_model_gives_the_unmerged_outputs_to_float32_rounding(tiny, name, options):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny, config(name, **options))
    trainable = off_start(trainable)
    merged = merge_updates(merge(frozen, trainable), model.method)
    assert flatten(merged).keys() == flatten(tiny.params).keys()           # a plain encoder
    batch = tiny_batch(tiny)
    unmerged = hidden_states(trainable, frozen, batch, model)
    got = mc.encoder(merged, batch, tiny.config)
    scale = onp.abs(unmerged).max()
    assert onp.abs(got - unmerged).max() <= 1e-5 * scale                 # float32 rounding
    assert onp.abs(unmerged - mc.encoder(tiny.params, batch, tiny.config)).max() > 1e-2


@needs_minilm
@pytest.mark.parametrize("name", ["lora", "lokr", "phm-lora"])
def test_merging_on_minilm_changes_the_outputs_by_float32_rounding_only(minilm, name):
    model, trainable, frozen = init_model(onp.random.default_rng(0), minilm, name)
    rng = onp.random.default_rng(5)
    trainable = tree_map(lambda v: v + 0.05 * rng.standard_normal(v.shape).astype(v.dtype), trainable)
    batch = mc.tokenize(minilm.tokenizer, ["a gorgeous, witty film", "the plot was hardly coherent"])
    unmerged = hidden_states(trainable, frozen, batch, model)
    merged = mc.encoder(merge_updates(merge(frozen, trainable), model.method), batch, minilm.config)
    real = batch["attention_mask"].astype(bool)
    assert onp.abs(merged - unmerged)[real].max() < 2e-5


@pytest.mark.parametrize("name", ["adapter", "compacter", "phm-adapter", "quaternion-adapter"])
def test_a_bottleneck_adapter_cannot_be_merged_and_the_reason_is_given(tiny, name):
    model, trainable, frozen = init_model(onp.random.default_rng(0), tiny, config(name))
    with pytest.raises(ValueError, match=f"{name} cannot be merged into the weights: .*nonlinearity"):
        merge_updates(merge(frozen, trainable), model.method)


# --- training, from Python and from the command line --------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("flags", [
    ["--method", "lokr"], ["--method", "phm-lora", "--phm-rule", "quaternion"],
    ["--method", "compacter", "--reduction-factor", "8", "--no-learn-phm", "--factorized-phm-rule",
     "--shared-W-phm"],
    ["--method", "quaternion-adapter", "--reduction-factor", "8"]], ids=lambda f: " ".join(f[1:]))
def test_each_method_and_option_trains_from_the_command_line(tmp_path, flags):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "minicompacter", "finetune", "--model", "tiny",
                             "--task", "synthetic-sentiment", "--train-size", "48", "--epochs", "1",
                             "--max-length", "32", "--no-progress", "--out", str(out), *flags],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    model, trainable, frozen, _ = mc.load_adapter(out)
    assert model.method.config.method == flags[1]
    if "--no-learn-phm" in flags:                # the frozen rule came back exactly as it started
        cfg = model.method.config
        start = init_model(onp.random.default_rng([0, 0]), load_pretrained("tiny"), cfg)[2]
        onp.testing.assert_array_equal(frozen["shared"]["A_left"], start["shared"]["A_left"])


@pytest.mark.slow
def test_the_phm_update_and_lokr_train_from_python(tiny):
    """Trained from their zero start: the factor that starts at zero (the PHM update's t,
    LoKr's W1) has moved, and the run scored its validation split."""
    for name, zero in (("phm-lora", "t"), ("lokr", "w1")):
        m = mc.finetune(tiny, "synthetic-sentiment", name,
                        mc.TrainConfig(epochs=2, max_length=32, progress=False), train_size=64)
        factors = [p for layer in m["trainable"]["layers"] for p in layer[name.replace("-", "_")].values()]
        assert all(onp.abs(p[zero]).max() > 1e-4 for p in factors)
        assert onp.isfinite(m["validation"]["score"])
