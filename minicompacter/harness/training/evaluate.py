"""Scoring and predicting: a model's metrics on a split, a saved checkpoint's metrics, and a
checkpoint's predictions for any texts.

    evaluate(trainable, frozen, encoded, model, task)   the task's metrics on one split
    evaluate_checkpoint(DIR)                            validation and test, as finetune reported
    predict_texts(DIR, texts, pairs)                    labels and probabilities (or scores)
    trainable_line(trainable, model, pretrained)        peft's line of parameter counts

A checkpoint trained on the user's data records them (their files, columns and labels), so
`evaluate_checkpoint(DIR)` reads the same files again; other data (a TaskData) are read
with the checkpoint's labels.

Outputs that are not finite (nan or inf) are never scored or printed as if they were
numbers: `predictions` raises NonFiniteError, naming how many rows.
"""

import dataclasses
import warnings

import numpy as onp

from ...core.counting import count_measured, peft_line, summary
from ...core.model import predict
from ...core.threads import parallel
from ...core.tree import count
from ..data.batches import (EVAL_BATCH_SIZE, MAX_LENGTH, Encoded, batch_order, encode, pad_id,
                            tokenize)
from ..data.metrics import glue_metrics
from ..data.tasks import DataError, Task, get_task
from ..data.userdata import TaskData, as_source, from_identity, identity, read_texts, resolve
from ..formats.dispatch import checkpoint_base, checkpoint_format, label_names, load_adapter
from ..formats.native import read_config


class NonFiniteError(ValueError):
    """A model whose outputs are not finite numbers (nan or inf): nothing to score."""


def encode_splits(splits, pretrained, task, max_length):
    """{split name: Encoded} of a DatasetDict, tokenised once."""
    pad = pad_id(pretrained.tokenizer)
    return {name: Encoded(encode(ds, pretrained.tokenizer, task, max_length=max_length), pad,
                          task.is_regression)
            for name, ds in splits.items()}


def predictions(trainable, frozen, encoded, model, batch_size=EVAL_BATCH_SIZE):
    """Predicted labels (argmax) or scores for every row of an Encoded split, in its order.
    Raises NonFiniteError if any row's logits (or score) are not finite: the argmax of nan
    is a label like any other, and would be scored as one."""
    out = onp.zeros(len(encoded), onp.float64)
    bad = 0
    for idx in batch_order(encoded.lengths, batch_size):
        y = predict(trainable, frozen, encoded.batch(idx), model)            # (B, C)
        bad += int(onp.sum(~onp.isfinite(y).all(axis=1)))
        out[idx] = y[:, 0] if model.num_labels == 1 else onp.argmax(y, axis=1)
    if bad:
        raise NonFiniteError(f"the model gives non-finite outputs (nan or inf) for {bad} of "
                             f"{len(encoded)} rows; its weights have diverged (train again with a "
                             f"smaller --lr) or are damaged.")
    return out


def evaluate(trainable, frozen, encoded, model, task, batch_size=EVAL_BATCH_SIZE):
    """The task's metrics (Hugging Face glue keys and `score`) on an Encoded split."""
    preds = predictions(trainable, frozen, encoded, model, batch_size)
    labels = encoded.labels.astype(onp.float64)
    return glue_metrics(task.metric, preds if task.is_regression else preds.astype(int),
                        labels if task.is_regression else labels.astype(int))


def evaluate_checkpoint(directory, task=None, *, data_dir=None, pretrained=None, log=None):
    """{"validation": ..., "test": ...} of a saved checkpoint, computed as finetune reported
    them (same splits, maximum length and batches); a split the data lack is None. The task
    defaults to the checkpoint's (a checkpoint of the user's data: the same files, read
    again); `task` may be a name or the user's data (userdata.TaskData, scored with the
    checkpoint's labels). `log(line)`, if given, gets peft's line of parameter counts."""
    pretrained = pretrained or checkpoint_base(directory)
    model, trainable, frozen, config = load_adapter(directory, pretrained)
    task, splits = checkpoint_data(directory, config, task, data_dir)
    if log is not None:
        log(trainable_line(trainable, model, pretrained))
    present = [s for s in ("validation", "test") if s in splits]
    encoded = encode_splits({s: splits[s] for s in present}, pretrained, task,
                            config.get("max_length", MAX_LENGTH))
    with parallel():
        return {s: evaluate(trainable, frozen, encoded[s], model, task,
                            config.get("eval_batch_size", EVAL_BATCH_SIZE)) if s in present
                else None for s in ("validation", "test")}


def checkpoint_data(directory, config, task, data_dir):
    """(Task, splits) to evaluate a checkpoint on: `task` (a name or the user's data), else
    the data the checkpoint records; the task's outputs must be the head's."""
    if task is None and "data" in config:
        task = recorded_data(directory, config)
    task = task if task is not None else config.get("task")
    if task is None:
        raise ValueError(f"{directory} holds a {config['format']} adapter, which records no task; "
                         f"name the task to evaluate it on (--task), or give data files.")
    source = as_source(task)
    if isinstance(source, TaskData):
        return resolve(with_checkpoint_columns(source, config),
                       known=checkpoint_task(directory, config))
    spec = get_task(source)
    if spec.num_labels != config["num_labels"]:
        held = (f"a head with {config['num_labels']} outputs" if config["num_labels"]
                else "no head")
        raise ValueError(f"{directory} holds {held}" + (f", trained on {config['task']}"
                         if config.get("task") else "") + f"; {source} needs "
                         f"{spec.num_labels} output{'s' if spec.num_labels > 1 else ''}.")
    return resolve(source, data_dir=data_dir)


def recorded_data(directory, config):
    """The TaskData of the files a checkpoint was trained on, read again (a warning if
    their bytes changed since)."""
    data = from_identity(config["data"])
    try:
        now = identity(data)["files"]
    except DataError as e:
        raise DataError(f"{directory} was trained on data files it reads again to be evaluated, "
                        f"and {e} Give the data to evaluate on (--validation-file, "
                        f"--test-file).") from None
    changed = [s for s, f in now.items() if f["sha256"] != config["data"]["files"][s]["sha256"]]
    if changed:
        warnings.warn(f"the {', '.join(changed)} data of {directory} changed since it was "
                      f"trained (the files' SHA-256 differ); the scores are the files' now.")
    return data


def with_checkpoint_columns(data, config):
    """The user's data with the checkpoint's text columns and label column where the data
    do not name their own."""
    recorded = config.get("data") or {}
    if not data.text_columns and config.get("text_columns"):
        data = dataclasses.replace(data, text_columns=tuple(config["text_columns"]))
    if data.label_column == "label" and recorded.get("label_column"):
        data = dataclasses.replace(data, label_column=recorded["label_column"])
    return data


def checkpoint_task(directory, config):
    """The Task a checkpoint's head answers: its number of outputs, its labels' names, the
    metric of the data it was trained on."""
    if not config.get("num_labels"):
        raise ValueError(f"{directory} holds an adapter without a head: it gives hidden states, "
                         f"not predictions, and cannot be scored.")
    names = label_names(config)
    regression = config["num_labels"] == 1
    if not regression and len(names) != config["num_labels"]:
        raise ValueError(f"{directory} records no names for its {config['num_labels']} labels, so "
                         f"the labels of a data file cannot be matched to its outputs.")
    metric = (config.get("data") or {}).get("metric") or (
        "pearson_spearman" if regression else "accuracy_macro_f1")
    return Task(config.get("task") or "data", (), config["num_labels"],
                () if regression else tuple(names), metric)


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


def file_inputs(directory, path, text_columns=()):
    """(texts, pairs or None) from a data file's text columns, for predict_texts: the columns
    given, else those the checkpoint was trained on, else userdata's defaults."""
    config = read_config(directory) if checkpoint_format(directory) == "minicompacter" else {}
    columns = tuple(text_columns) or tuple(config.get("text_columns") or ())
    texts = read_texts(path, columns)
    return texts[0], (texts[1] if len(texts) == 2 else None)


def trainable_line(trainable, model, pretrained):
    """peft's print_trainable_parameters line: "trainable params: T || all params: A ||
    trainable%: T / A", A being the base model's parameters plus what the method and the
    head add (the paper's percentage divides by the base model's alone: metrics.json's)."""
    return peft_line(summary(count_measured(trainable, model.method.config), count(pretrained.params)))


def _prediction(logits, names):
    if len(logits) == 1:
        return {"score": float(logits[0])}
    p = onp.exp(logits - logits.max())
    p /= p.sum()
    return {"label": names[int(onp.argmax(logits))],
            "probabilities": {n: round(float(v), 6) for n, v in zip(names, p)}}
