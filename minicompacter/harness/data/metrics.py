"""GLUE metrics in NumPy, with the key names of the Hugging Face `glue` metric.

CoLA reports the Matthews correlation; SST-2, MNLI, QNLI, RTE and WNLI accuracy; MRPC
and QQP accuracy and the F1 of class 1; STS-B the Pearson and Spearman correlations.
Each result also carries `score`, the single number per task that the Compacter paper
averages over GLUE (the mean of the two numbers for MRPC, QQP and STS-B). A task made from
the user's data (data/userdata.py) reports accuracy and the macro F1 (the mean of every
class's F1), scored by the same rule: their mean.

Predictions are labels (argmax of the logits) or, for STS-B, scores. Inputs may be lists
or arrays; everything is float64 inside and every value returned is a Python float.
The definitions, and the degenerate cases, follow scikit-learn (`accuracy_score`,
`f1_score`, `matthews_corrcoef`) and SciPy (`pearsonr`, `spearmanr`); tests/test_metrics.py
checks them against both.

References: Wang et al., "GLUE", arXiv 1804.07461 (the tasks and their metrics);
Matthews (1975) and Gorodkin (2004) for the multi-class MCC; Mahabadi et al.,
"Compacter", arXiv 2106.04647, Section 4 (the averaged score); the `glue` metric in
huggingface/evaluate, `metrics/glue/glue.py` (the key names).
"""

import math

import numpy as onp

METRIC_KINDS = ("matthews", "accuracy", "accuracy_f1", "accuracy_macro_f1", "pearson_spearman")


def _pair(predictions, references):
    """Both as 1-D float64 arrays of the same, non-zero length (N,)."""
    p = onp.asarray(predictions, dtype=onp.float64)
    r = onp.asarray(references, dtype=onp.float64)
    if p.ndim != 1 or r.ndim != 1:
        raise ValueError(f"predictions and references must be 1-D, got shapes {p.shape} "
                         f"and {r.shape}")
    if len(p) != len(r):
        raise ValueError(f"predictions and references differ in length: {len(p)} != {len(r)}")
    if len(p) == 0:
        raise ValueError("predictions and references are empty: a metric needs examples")
    return p, r


def _check_kind(kind):
    if kind not in METRIC_KINDS:
        raise ValueError(f"unknown metric kind {kind!r}; "
                         f"known kinds: {', '.join(METRIC_KINDS)}")


def accuracy(predictions, references):
    """acc = (1/N) sum_i [y_hat_i == y_i]."""
    p, r = _pair(predictions, references)
    return float(onp.mean(p == r))


def f1(predictions, references):
    """Binary F1 of the positive class 1 (every other label is negative), as sklearn's
    `f1_score` default and HF glue's MRPC and QQP:
        F1 = 2 P R / (P + R) = 2 TP / (2 TP + FP + FN).
    With no predicted and no true positives (TP + FP + FN = 0) F1 is 0/0; it is defined
    as 0.0 here, as scikit-learn does (zero_division's default)."""
    p, r = _pair(predictions, references)
    tp = onp.sum((p == 1) & (r == 1))
    fp = onp.sum((p == 1) & (r != 1))
    fn = onp.sum((p != 1) & (r == 1))
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator > 0 else 0.0


def macro_f1(predictions, references):
    """The macro-averaged F1, as sklearn's `f1_score(average="macro")`: every class c that
    occurs in the predictions or the references is in turn the positive one,
        F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c),    macro F1 = (1/K) sum_c F1_c,
    so a rare class weighs as much as a common one."""
    p, r = _pair(predictions, references)
    classes = onp.union1d(p, r)                                         # (K,)
    tp = onp.array([onp.sum((p == c) & (r == c)) for c in classes])      # (K,)
    fp = onp.array([onp.sum((p == c) & (r != c)) for c in classes])
    fn = onp.array([onp.sum((p != c) & (r == c)) for c in classes])
    return float(onp.mean(2 * tp / (2 * tp + fp + fn)))        # each class occurs: never 0/0


def matthews_correlation(predictions, references):
    """The Matthews correlation coefficient, binary or multi-class (Gorodkin's R_K), as
    sklearn's `matthews_corrcoef`. With C the K x K confusion matrix, N = sum C, c = tr C
    (correct), t_k = sum_j C_kj (true k), p_k = sum_i C_ik (predicted k):
        MCC = (c N - t.p) / sqrt((N^2 - p.p) (N^2 - t.t)).
    For K = 2 this is (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
    When the denominator is 0 (all predictions, or all references, one class) the MCC
    is 0.0, as scikit-learn returns."""
    p, r = _pair(predictions, references)
    labels = onp.union1d(p, r)                                          # (K,)
    t = onp.bincount(onp.searchsorted(labels, r), minlength=len(labels)).astype(onp.float64)
    q = onp.bincount(onp.searchsorted(labels, p), minlength=len(labels)).astype(onp.float64)
    n, c = float(len(p)), float(onp.sum(p == r))
    denominator = (n * n - q @ q) * (n * n - t @ t)
    return float((c * n - t @ q) / onp.sqrt(denominator)) if denominator > 0 else 0.0


def _correlation(x, y):
    """r = sum (x - mean x)(y - mean y) / sqrt(sum (x - mean x)^2 sum (y - mean y)^2),
    clipped to [-1, 1] against rounding; nan when x or y is constant (0/0), as SciPy."""
    if onp.all(x == x[0]) or onp.all(y == y[0]):
        return float("nan")
    dx, dy = x - onp.mean(x), y - onp.mean(y)                           # (N,)
    r = (dx @ dy) / onp.sqrt((dx @ dx) * (dy @ dy))
    return float(onp.clip(r, -1.0, 1.0))


def pearson(predictions, references):
    """The Pearson correlation of predictions and references (SciPy's `pearsonr`):
        r = cov(y_hat, y) / (std(y_hat) std(y)).
    Constant input (including N = 1) gives nan, as SciPy."""
    return _correlation(*_pair(predictions, references))


def spearmanr(predictions, references):
    """The Spearman rank correlation (SciPy's `spearmanr`): the Pearson correlation of
    the ranks, rho = r(rank(y_hat), rank(y)), where tied values share the average of the
    ranks they span (`rankdata`'s "average"). Constant input gives nan, as SciPy."""
    from scipy.stats import rankdata          # here: scipy.stats takes most of a second to import
    p, r = _pair(predictions, references)
    return _correlation(rankdata(p), rankdata(r))


def glue_metrics(kind, predictions, references):
    """The HF glue keys for one kind of task, plus `score`, the number the paper averages:
        matthews         -> matthews_correlation;            score = MCC
        accuracy         -> accuracy;                        score = acc
        accuracy_f1      -> accuracy, f1;                    score = (acc + F1) / 2
        accuracy_macro_f1 -> accuracy, macro_f1;             score = (acc + macro F1) / 2
        pearson_spearman -> pearson, spearmanr;              score = (r + rho) / 2"""
    _check_kind(kind)
    _pair(predictions, references)                  # the errors, before any metric
    if kind == "matthews":
        mcc = matthews_correlation(predictions, references)
        return {"matthews_correlation": mcc, "score": mcc}
    if kind == "accuracy":
        acc = accuracy(predictions, references)
        return {"accuracy": acc, "score": acc}
    if kind == "accuracy_f1":
        acc, f = accuracy(predictions, references), f1(predictions, references)
        return {"accuracy": acc, "f1": f, "score": (acc + f) / 2}
    if kind == "accuracy_macro_f1":
        acc, f = accuracy(predictions, references), macro_f1(predictions, references)
        return {"accuracy": acc, "macro_f1": f, "score": (acc + f) / 2}
    r, rho = pearson(predictions, references), spearmanr(predictions, references)
    return {"pearson": r, "spearmanr": rho, "score": (r + rho) / 2}


def wilson_interval(p, n, z=1.96):
    """The Wilson score interval of a proportion p observed on n examples (95% for z =
    1.96): (centre -+ half) / (1 + z^2/n) with centre = p + z^2/(2n) and half =
    z sqrt(p (1 - p) / n + z^2 / (4 n^2)). Unlike p -+ z sqrt(p (1 - p) / n) it is not empty
    at p = 1: 500 of 500 right gives [0.992, 1]."""
    if n < 1:
        raise ValueError(f"an interval needs at least one example, got n = {n}.")
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    # it always holds p; min and max only keep float rounding (at p = 0 or 1) from moving it
    return max(0.0, min(p, (centre - half) / scale)), min(1.0, max(p, (centre + half) / scale))


def majority_baseline(kind, train_labels, references):
    """The metrics of a model that ignores its input: it always predicts the most frequent
    training label (classification; a tie goes to the smallest label) or the training
    mean (regression). A task is not trivial when a model beats this.

    A constant prediction has no correlation with anything: Pearson and Spearman are 0/0
    for it (nan in SciPy). Here they are defined as 0.0, whatever the mean, so that the
    baseline is a number a table can show. (MCC is 0.0 by its own degenerate case.)"""
    _check_kind(kind)
    train = onp.asarray(train_labels, dtype=onp.float64)
    if train.ndim != 1 or len(train) == 0:
        raise ValueError(f"train_labels must be 1-D and non-empty, got shape {train.shape}")
    refs = onp.asarray(references, dtype=onp.float64)
    if kind == "pearson_spearman":
        _pair(onp.full(refs.shape, onp.mean(train)), refs)          # the errors only
        return {"pearson": 0.0, "spearmanr": 0.0, "score": 0.0}
    values, counts = onp.unique(train, return_counts=True)          # values sorted
    majority = values[onp.argmax(counts)]                           # first max: smallest
    return glue_metrics(kind, onp.full(refs.shape, majority), refs)
