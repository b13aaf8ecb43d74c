"""Scoring and predicting: a model's metrics on a split, a saved checkpoint's metrics, and a
checkpoint's predictions for any texts.

    evaluate(trainable, frozen, encoded, model, task)   the task's metrics on one split
    evaluate_checkpoint(DIR)                            validation and test, as finetune reported
    predict_texts(DIR, texts, pairs)                    labels and probabilities (or scores)

Outputs that are not finite (nan or inf) are never scored or printed as if they were
numbers: `predictions` raises NonFiniteError, naming how many rows.
"""

import numpy as onp

from ...core.model import predict
from ...core.paths import HEAD
from ...core.threads import parallel
from ...core.tree import merge
from ..data.batches import EVAL_BATCH_SIZE, MAX_LENGTH, Encoded, batch_order, encode, tokenize
from ..data.metrics import glue_metrics
from ..data.tasks import get_task, load_task
from ..formats.dispatch import checkpoint_base, label_names, load_adapter


class NonFiniteError(ValueError):
    """A model whose outputs are not finite numbers (nan or inf): nothing to score."""


def encode_splits(splits, pretrained, task, max_length):
    """{split name: Encoded} of a DatasetDict, tokenised once."""
    pad = pretrained.tokenizer.token_to_id("[PAD]")
    return {name: Encoded(encode(ds, pretrained.tokenizer, task, max_length=max_length), pad,
                          task.is_regression)
            for name, ds in splits.items()}


def predictions(trainable, frozen, encoded, model, batch_size=EVAL_BATCH_SIZE):
    """Predicted labels (argmax) or scores for every row of an Encoded split, in its order.
    Raises NonFiniteError if any row's logits (or score) are not finite: the argmax of nan
    is a label like any other, and would be scored as one."""
    out = onp.zeros(len(encoded), onp.float64)
    bad = 0
    trainable, frozen, model = weights_made_once(trainable, frozen, model)
    for idx in batch_order(encoded.lengths, batch_size):
        y = predict(trainable, frozen, encoded.batch(idx), model)            # (B, C)
        bad += int(onp.sum(~onp.isfinite(y).all(axis=1)))
        out[idx] = y[:, 0] if model.num_labels == 1 else onp.argmax(y, axis=1)
    if bad:
        raise NonFiniteError(f"the model gives non-finite outputs (nan or inf) for {bad} of "
                             f"{len(encoded)} rows; its weights have diverged (train again with a "
                             f"smaller --lr) or are damaged.")
    return out


def weights_made_once(trainable, frozen, model):
    """(trainable, frozen, model) that compute what the given ones do, with a method's
    `weights` hook (Intrinsic-SAID's theta_0 + lambda_i P_i(theta_d)) applied once, for a
    whole split, rather than once per batch: the head, the moved tree, the hook left out."""
    hooks = model.method.hooks
    if hooks.weights is None:
        return trainable, frozen, model
    params = hooks.weights(merge(frozen, trainable))
    method = model.method._replace(hooks=hooks._replace(weights=None))
    return ({HEAD: params[HEAD]}, {k: v for k, v in params.items() if k != HEAD},
            model._replace(method=method))


def evaluate(trainable, frozen, encoded, model, task, batch_size=EVAL_BATCH_SIZE):
    """The task's metrics (Hugging Face glue keys and `score`) on an Encoded split."""
    preds = predictions(trainable, frozen, encoded, model, batch_size)
    labels = encoded.labels.astype(onp.float64)
    return glue_metrics(task.metric, preds if task.is_regression else preds.astype(int),
                        labels if task.is_regression else labels.astype(int))


def evaluate_checkpoint(directory, task_name=None, *, data_dir=None, pretrained=None):
    """{"validation": ..., "test": ...} of a saved checkpoint, computed as finetune reported
    them (same splits, maximum length and batches). The task defaults to the checkpoint's."""
    pretrained = pretrained or checkpoint_base(directory)
    model, trainable, frozen, config = load_adapter(directory, pretrained)
    task_name = task_name or config.get("task")
    if task_name is None:
        raise ValueError(f"{directory} holds a {config['format']} adapter, which records no task; "
                         f"name the task to evaluate it on (--task).")
    task = get_task(task_name)
    if task.num_labels != config["num_labels"]:
        held = (f"a head with {config['num_labels']} outputs" if config["num_labels"]
                else "no head")
        raise ValueError(f"{directory} holds {held}" + (f", trained on {config['task']}"
                         if config.get("task") else "") + f"; {task_name} needs "
                         f"{task.num_labels} output{'s' if task.num_labels > 1 else ''}.")
    splits = load_task(task_name, data_dir=data_dir)
    encoded = encode_splits({s: splits[s] for s in ("validation", "test")}, pretrained, task,
                            config.get("max_length", MAX_LENGTH))
    with parallel():
        return {s: evaluate(trainable, frozen, encoded[s], model, task,
                            config.get("eval_batch_size", EVAL_BATCH_SIZE))
                for s in ("validation", "test")}


def predict_texts(directory, texts, pairs=None, *, pretrained=None, batch_size=EVAL_BATCH_SIZE):
    """Each text's (or pair's) prediction by a checkpoint (any format load_adapter reads, with
    a head): [{"label": name, "probabilities": {name: p}} ...] for classification,
    [{"score": s} ...] for regression."""
    pretrained = pretrained or checkpoint_base(directory)
    model, trainable, frozen, config = load_adapter(directory, pretrained)
    if not model.num_labels:
        raise ValueError(f"{directory} holds an adapter without a head: it gives hidden states, "
                         f"not predictions. Export or train it with a head to predict.")
    names = label_names(config)
    if len(names) != model.num_labels:
        names = [f"LABEL_{i}" for i in range(model.num_labels)]
    max_length = min(config.get("max_length", MAX_LENGTH), pretrained.config.max_positions)
    out = []
    with parallel():
        for i in range(0, len(texts), batch_size):
            batch = tokenize(pretrained.tokenizer, texts[i:i + batch_size],
                             None if pairs is None else pairs[i:i + batch_size],
                             max_length=max_length)
            logits = onp.asarray(predict(trainable, frozen, batch, model))
            out += [_prediction(row, names) for row in logits]
    return out


def _prediction(logits, names):
    if len(logits) == 1:
        return {"score": float(logits[0])}
    p = onp.exp(logits - logits.max())
    p /= p.sum()
    return {"label": names[int(onp.argmax(logits))],
            "probabilities": {n: round(float(v), 6) for n, v in zip(names, p)}}
