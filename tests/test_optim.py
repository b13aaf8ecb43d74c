"""AdamW, the schedule and clipping, against steps computed by hand."""

import math

import numpy as onp
import pytest

from minicompacter.core.optim import (adamw_update, clip_by_global_norm, decays, global_norm,
                                 init_adamw, linear_schedule)


def test_two_adamw_steps_by_hand():
    params = {"w": onp.array([1.0]), "b": onp.array([1.0])}
    state = init_adamw(params)
    lr, wd, b1, b2, eps = 0.1, 0.01, 0.9, 0.999, 1e-8
    g1 = {"w": onp.array([0.5]), "b": onp.array([0.5])}
    p1, s1 = adamw_update(params, g1, state, lr, weight_decay=wd)
    # step 1: m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 0.00025
    #         m_hat = 0.05 / 0.1 = 0.5, v_hat = 0.00025 / 0.001 = 0.25, update = 0.5 / (0.5 + eps)
    #         w: 1 * (1 - 0.1 * 0.01) - 0.1 * update = 0.999 - 0.1 * 0.99999998 ;  b: no decay
    upd1 = 0.5 / (0.5 + eps)
    assert p1["w"][0] == pytest.approx(0.999 - 0.1 * upd1, abs=1e-15)
    assert p1["b"][0] == pytest.approx(1.0 - 0.1 * upd1, abs=1e-15)
    assert s1["step"] == 1 and s1["m"]["w"][0] == pytest.approx(0.05) and s1["v"]["w"][0] == pytest.approx(0.00025)
    g2 = {"w": onp.array([-1.0]), "b": onp.array([-1.0])}
    p2, s2 = adamw_update(p1, g2, s1, lr, weight_decay=wd)
    # step 2: m = 0.9 * 0.05 + 0.1 * (-1) = -0.055, v = 0.999 * 0.00025 + 0.001 * 1 = 0.00124975
    #         m_hat = -0.055 / (1 - 0.81) = -0.289473..., v_hat = 0.00124975 / (1 - 0.998001)
    m, v = -0.055, 0.00124975
    m_hat, v_hat = m / (1 - b1 ** 2), v / (1 - b2 ** 2)
    upd2 = m_hat / (math.sqrt(v_hat) + eps)
    assert s2["m"]["w"][0] == pytest.approx(m) and s2["v"]["w"][0] == pytest.approx(v)
    assert p2["w"][0] == pytest.approx(p1["w"][0] * (1 - lr * wd) - lr * upd2, abs=1e-14)
    assert p2["b"][0] == pytest.approx(p1["b"][0] - lr * upd2, abs=1e-14)
    assert params["w"][0] == 1.0 and state["step"] == 0          # inputs untouched


def test_no_weight_decay_on_biases_and_layer_norms():
    assert decays(("layers", 0, "ffn", "in", "w"))
    assert not decays(("layers", 0, "ffn", "in", "b"))
    assert not decays(("layers", 0, "ffn_ln", "g"))
    assert not decays(("embeddings", "ln", "g"))
    assert decays(("shared", "A")) and decays(("layers", 1, "ffn_adapter", "down", "s"))


def test_state_is_a_plain_tree_and_float32_stays_float32():
    params = {"layers": [{"a": onp.ones((2, 3), onp.float32)}], "head": {"w": onp.ones(2, onp.float32)}}
    state = init_adamw(params)
    assert set(state) == {"step", "m", "v"} and state["m"]["layers"][0]["a"].shape == (2, 3)
    grads = {"layers": [{"a": onp.full((2, 3), 0.1, onp.float32)}], "head": {"w": onp.ones(2, onp.float32)}}
    new, state = adamw_update(params, grads, state, 1e-3, weight_decay=0.1)
    assert new["layers"][0]["a"].dtype == onp.float32 and state["v"]["head"]["w"].dtype == onp.float32


def test_linear_schedule_by_hand():
    # 10 steps, 2 of warm-up, peak 1.0: 0.5, 1.0, then (10 - s) / 8
    lrs = [linear_schedule(s, 10, 2, 1.0) for s in range(1, 11)]
    assert lrs == pytest.approx([0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0])
    assert linear_schedule(1, 4, 0, 2.0) == pytest.approx(1.5)


def test_clipping_by_global_norm():
    grads = {"a": onp.array([3.0]), "b": [onp.array([4.0])]}
    assert global_norm(grads) == 5.0
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert norm == 5.0 and global_norm(clipped) == pytest.approx(1.0, abs=1e-6)
    assert clipped["a"][0] / clipped["b"][0][0] == pytest.approx(0.75)
    same, _ = clip_by_global_norm(grads, 10.0)
    assert same is grads
