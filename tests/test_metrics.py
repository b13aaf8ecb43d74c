"""The GLUE metrics: against scikit-learn and SciPy on random inputs (several seeds,
binary and 3-class, ties for Spearman), against small cases worked out by hand, and the
key names, the averaged score, the degenerate cases and the errors.

scikit-learn is only a test dependency: its tests skip without it."""

import math
import warnings

import numpy as onp
import pytest
import scipy.stats

from minicompacter.harness.data import metrics
from minicompacter.harness.data.metrics import (METRIC_KINDS, accuracy, f1, glue_metrics,
                                   macro_f1, majority_baseline, matthews_correlation, pearson,
                                   spearmanr)

SEEDS = [0, 1, 2, 3, 4]
KEYS = {"matthews": {"matthews_correlation", "score"},
        "accuracy": {"accuracy", "score"},
        "accuracy_f1": {"accuracy", "f1", "score"},
        "accuracy_macro_f1": {"accuracy", "macro_f1", "score"},
        "pearson_spearman": {"pearson", "spearmanr", "score"}}


def random_labels(seed, num_labels, n=60):
    """Predictions that agree with the references more often than chance."""
    rng = onp.random.default_rng(seed)
    refs = rng.integers(0, num_labels, n)
    preds = onp.where(rng.random(n) < 0.6, refs, rng.integers(0, num_labels, n))
    return preds, refs


# --- against scikit-learn and SciPy ------------------------------------------------------

@pytest.fixture(scope="module")
def sk():
    return pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_labels", [2, 3])
def test_accuracy_and_mcc_match_sklearn(sk, seed, num_labels):
    preds, refs = random_labels(seed, num_labels)
    assert accuracy(preds, refs) == pytest.approx(sk.accuracy_score(refs, preds), abs=1e-12)
    assert matthews_correlation(preds, refs) == pytest.approx(
        sk.matthews_corrcoef(refs, preds), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_f1_matches_sklearn(sk, seed):
    preds, refs = random_labels(seed, 2)
    assert f1(preds, refs) == pytest.approx(sk.f1_score(refs, preds), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_correlations_match_scipy(seed):
    rng = onp.random.default_rng(seed)
    refs = rng.uniform(0, 5, 80)                                  # STS-B-like scores
    preds = refs + rng.normal(0, 1.5, 80)
    assert pearson(preds, refs) == pytest.approx(scipy.stats.pearsonr(preds, refs)[0],
                                                 abs=1e-12)
    assert spearmanr(preds, refs) == pytest.approx(
        scipy.stats.spearmanr(preds, refs)[0], abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_spearman_with_ties_matches_scipy(seed):
    rng = onp.random.default_rng(seed)
    refs = rng.integers(0, 6, 50).astype(float)                   # many ties in both
    preds = onp.round(refs + rng.normal(0, 1.0, 50))
    assert len(onp.unique(refs)) < 50 and len(onp.unique(preds)) < 50
    assert spearmanr(preds, refs) == pytest.approx(
        scipy.stats.spearmanr(preds, refs)[0], abs=1e-12)


# --- by hand ---------------------------------------------------------------------------

# TP = 3, FN = 1, FP = 2, TN = 4 (N = 10)
HAND_REFS = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
HAND_PREDS = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]


def test_binary_by_hand():
    # accuracy = (TP + TN) / N = 7 / 10
    assert accuracy(HAND_PREDS, HAND_REFS) == pytest.approx(0.7)
    # F1 = 2 TP / (2 TP + FP + FN) = 6 / (6 + 2 + 1) = 2/3
    assert f1(HAND_PREDS, HAND_REFS) == pytest.approx(2 / 3)
    # MCC = (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))
    #     = (12 - 2) / sqrt(5 * 4 * 6 * 5) = 10 / sqrt(600) = 10 / (10 sqrt 6) = 1 / sqrt 6
    assert matthews_correlation(HAND_PREDS, HAND_REFS) == pytest.approx(1 / math.sqrt(6))


def test_three_class_mcc_by_hand():
    refs = [0, 1, 2, 0, 1, 2]
    preds = [0, 1, 2, 0, 2, 1]
    # N = 6, c = 4 correct, t = p = (2, 2, 2), t.p = t.t = p.p = 12
    # MCC = (c N - t.p) / sqrt((N^2 - p.p)(N^2 - t.t)) = (24 - 12) / sqrt(24 * 24) = 1/2
    assert matthews_correlation(preds, refs) == pytest.approx(0.5)


def test_pearson_by_hand():
    # dx = (-1, 0, 1), dy = (-1, 1, 0): r = 1 / sqrt(2 * 2) = 1/2
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_spearman_with_ties_by_hand():
    # ranks of x = (1, 2, 2, 3): (1, 2.5, 2.5, 4)   ranks of y = (1, 3, 2, 4)
    # both mean 2.5: dx = (-1.5, 0, 0, 1.5), dy = (-1.5, 0.5, -0.5, 1.5)
    # sum dx dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5: rho = 4.5 / sqrt(22.5) = sqrt(0.9)
    assert spearmanr([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))


# --- glue_metrics: keys and score -------------------------------------------------------

def test_metric_kinds():
    assert METRIC_KINDS == tuple(KEYS)


@pytest.mark.parametrize("kind", METRIC_KINDS)
def test_glue_metrics_keys_and_plain_floats(kind):
    out = glue_metrics(kind, HAND_PREDS, HAND_REFS)
    assert set(out) == KEYS[kind]
    assert all(type(v) is float for v in out.values())


def test_glue_metrics_scores():
    assert glue_metrics("matthews", HAND_PREDS, HAND_REFS)["score"] == pytest.approx(
        1 / math.sqrt(6))
    assert glue_metrics("accuracy", HAND_PREDS, HAND_REFS)["score"] == pytest.approx(0.7)
    # (acc + F1) / 2 = (7/10 + 2/3) / 2 = 41/60
    assert glue_metrics("accuracy_f1", HAND_PREDS, HAND_REFS) == pytest.approx(
        {"accuracy": 0.7, "f1": 2 / 3, "score": 41 / 60})
    # (r + rho) / 2 with r = 1/2 and rho = 1/2 (no ties: the ranks are the values)
    assert glue_metrics("pearson_spearman", [1, 2, 3], [1, 3, 2]) == pytest.approx(
        {"pearson": 0.5, "spearmanr": 0.5, "score": 0.5})


def test_lists_and_arrays_agree():
    rng = onp.random.default_rng(7)
    preds, refs = rng.normal(size=20), rng.normal(size=20)
    for kind in METRIC_KINDS:
        as_arrays = glue_metrics(kind, onp.round(preds), onp.round(refs))
        as_lists = glue_metrics(kind, list(onp.round(preds)), list(onp.round(refs)))
        assert as_arrays == as_lists


# --- degenerate cases -------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_labels", [2, 3, 5])
def test_macro_f1_matches_sklearn(sk, seed, num_labels):
    preds, refs = random_labels(seed, num_labels)
    assert macro_f1(preds, refs) == pytest.approx(sk.f1_score(refs, preds, average="macro"))
    preds[preds == 0] = 1                               # a class only the references hold
    assert macro_f1(preds, refs) == pytest.approx(sk.f1_score(refs, preds, average="macro"))


def test_macro_f1_by_hand():
    # refs (0, 0, 1, 2), preds (0, 1, 1, 1): class 0: TP 1, FN 1 -> 2/3; class 1: TP 1,
    # FP 2 -> 1/2; class 2: FN 1 -> 0. Mean: (2/3 + 1/2 + 0) / 3 = 7/18; acc 2/4
    assert macro_f1([0, 1, 1, 1], [0, 0, 1, 2]) == pytest.approx(7 / 18)
    assert glue_metrics("accuracy_macro_f1", [0, 1, 1, 1], [0, 0, 1, 2]) == pytest.approx(
        {"accuracy": 0.5, "macro_f1": 7 / 18, "score": (0.5 + 7 / 18) / 2})


def test_f1_without_positives_is_zero():
    assert f1([0, 0, 0], [0, 0, 0]) == 0.0


def test_degenerate_cases_match_sklearn(sk):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                           # sklearn warns; we do not
        assert sk.f1_score([0, 0, 0], [0, 0, 0]) == 0.0
    assert sk.matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0
    assert sk.matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0


def test_f1_treats_other_labels_as_negative():
    # class 1 positive; 0 and 2 negative: TP = 1, FP = 1 (pred 1, ref 2), FN = 0 -> 2/3
    assert f1([1, 1, 2], [1, 2, 0]) == pytest.approx(2 / 3)


def test_mcc_with_zero_denominator_is_zero():
    # every prediction one class: N^2 - p.p = 0
    assert matthews_correlation([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
    # every reference one class, and both: also 0
    assert matthews_correlation([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0
    assert matthews_correlation([2, 2], [2, 2]) == 0.0


@pytest.mark.parametrize("fn", [pearson, spearmanr])
def test_constant_input_gives_nan_without_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # no 0/0 RuntimeWarning
        assert math.isnan(fn([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]))
        assert math.isnan(fn([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]))
        assert math.isnan(fn([1.0], [2.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                           # SciPy's ConstantInputWarning
        scipy_fn = {pearson: scipy.stats.pearsonr, spearmanr: scipy.stats.spearmanr}[fn]
        assert math.isnan(scipy_fn([0.1, 0.1, 0.1], [1.0, 2.0, 3.0])[0])


def test_correlations_stay_in_range():
    x = onp.linspace(0, 1, 1000) * 1e-3 + 1e3                     # large mean, small spread
    assert 1.0 - 1e-12 <= pearson(x, x) <= 1.0
    assert -1.0 <= pearson(x, -x) <= -1.0 + 1e-12


# --- the majority baseline --------------------------------------------------------------

def test_majority_baseline_classification():
    train = [0, 1, 1, 1]                                          # majority label 1
    refs = [1, 0, 1, 0]
    # predict 1 everywhere: acc = 2/4, TP = 2, FP = 2, FN = 0, F1 = 4 / 6 = 2/3
    # score = (1/2 + 2/3) / 2 = 7/12; MCC: all predictions one class -> 0
    assert majority_baseline("accuracy_f1", train, refs) == pytest.approx(
        {"accuracy": 0.5, "f1": 2 / 3, "score": 7 / 12})
    assert majority_baseline("matthews", train, refs) == {"matthews_correlation": 0.0,
                                                          "score": 0.0}
    assert majority_baseline("accuracy", [2, 0, 2, 1], [2, 2, 0]) == pytest.approx(
        {"accuracy": 2 / 3, "score": 2 / 3})                      # 3-class: majority 2


def test_majority_baseline_tie_goes_to_smallest_label():
    assert majority_baseline("accuracy", [1, 0, 1, 0], [0, 0, 1]) == pytest.approx(
        {"accuracy": 2 / 3, "score": 2 / 3})                      # predicts 0


def test_majority_baseline_regression_has_no_correlation():
    out = majority_baseline("pearson_spearman", [0.5, 2.0, 4.5], [1.0, 3.0, 2.0, 5.0])
    assert out == {"pearson": 0.0, "spearmanr": 0.0, "score": 0.0}
    assert all(type(v) is float for v in out.values())


# --- errors -----------------------------------------------------------------------------

def test_unknown_kind_names_the_known_kinds():
    with pytest.raises(ValueError, match="accuracy_f1") as info:
        glue_metrics("f1_macro", [0, 1], [0, 1])
    assert all(kind in str(info.value) for kind in METRIC_KINDS)
    with pytest.raises(ValueError, match="pearson_spearman"):
        majority_baseline("mse", [0, 1], [0, 1])


@pytest.mark.parametrize("fn", [accuracy, f1, macro_f1, matthews_correlation, pearson, spearmanr])
def test_length_mismatch_and_empty_raise(fn):
    with pytest.raises(ValueError, match="differ in length: 3 != 2"):
        fn([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])


@pytest.mark.parametrize("kind", METRIC_KINDS)
def test_glue_metrics_and_baseline_raise_on_bad_inputs(kind):
    with pytest.raises(ValueError, match="differ in length"):
        glue_metrics(kind, [0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        glue_metrics(kind, [], [])
    with pytest.raises(ValueError, match="empty"):
        majority_baseline(kind, [0, 1], [])
    with pytest.raises(ValueError, match="train_labels"):
        majority_baseline(kind, [], [0, 1])


def test_two_dimensional_inputs_raise():
    # a (N, 1) regression output against (N,) labels would broadcast to (N, N) silently
    with pytest.raises(ValueError, match="1-D"):
        pearson(onp.zeros((3, 1)), onp.zeros(3))
    assert metrics._pair([1, 2], (3, 4))[0].dtype == onp.float64


def test_wilson_interval_against_the_formula_and_its_edges():
    # Wilson (1927): 8 of 10 at z = 1.96 is [0.4902, 0.9433] (worked by hand from the formula)
    low, high = metrics.wilson_interval(0.8, 10)
    assert abs(low - 0.4902) < 1e-4 and abs(high - 0.9433) < 1e-4
    low, high = metrics.wilson_interval(1.0, 500)
    assert high == 1.0 and abs(low - 0.99239) < 1e-4     # not empty at p = 1
    with pytest.raises(ValueError, match="at least one example"):
        metrics.wilson_interval(0.5, 0)
