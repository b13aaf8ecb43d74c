"""Scoring and predicting: a model's metrics on a split, a saved checkpoint's metrics, and a
checkpoint's predictions for any texts.

    evaluate(trainable, frozen, encoded, model, task)   the task's metrics on one split
    evaluate_checkpoint(DIR)                            validation and test, as finetune reported
    predict_texts(DIR, texts, pairs)                    labels and probabilities (or scores)
    trainable_line(trainable, model, pretrained)        peft's line of parameter counts

A checkpoint trained on the user's data records them (their files, columns and labels), so
`evaluate_checkpoint(DIR)` reads the same files again; other data (a TaskData) are read
with the checkpoint's labels.

On T5 (text to text, data/text2text.py) a split is scored by greedy generation: each answer
is the label word it spells, or invalid (wrong, and counted: "invalid_answers").

Outputs that are not finite (nan or inf) are never scored or printed as if they were
numbers: `predictions` and `predict_texts` raise NonFiniteError, naming how many rows
(files.finite_outputs: the message `encode` and `export` give too). A checkpoint is scored
or asked only about inputs of the kind it was trained on: the task it records, or one with
the same labels and as many texts per input.
"""

import dataclasses
import warnings

import numpy as onp

from ...core.counting import count_measured, peft_line, summary
from ...core.model import generate, predict
from ...core.paths import HEAD
from ...core.threads import parallel
from ...core.tree import count, merge
from ..data.batches import (EVAL_BATCH_SIZE, MAX_LENGTH, Encoded, batch_order, encode, pad_id,
                            tokenize)
from ..data.metrics import glue_metrics
from ..data.tasks import DataError, Task, get_task, tasks
from ..data.text2text import (adds_prefix, answer_ids, answer_index, answer_metrics,
                              encode_splits_text2text, input_text, label_words)
from ..data.userdata import TaskData, as_source, from_identity, identity, read_texts, resolve
from ..formats.dispatch import checkpoint_base, checkpoint_format, label_names, load_adapter
from ..formats.files import NonFiniteError, finite_outputs
from ..formats.native import read_config
from . import checks

__all__ = ["NonFiniteError", "encode_splits", "predictions", "evaluate", "evaluate_checkpoint",
           "predict_texts", "file_inputs", "trainable_line"]


def encode_splits(splits, pretrained, task, max_length, method_config=None):
    """{split name: Encoded} of a DatasetDict, tokenised once, padded with the tokenizer's
    pad token (its family's). On T5, Text2TextEncoded: input texts and label words, the task
    prefix as the method has it (text2text.adds_prefix)."""
    if pretrained.seq2seq:
        return encode_splits_text2text(splits, pretrained.tokenizer, task,
                                       prefix=adds_prefix(method_config), max_length=max_length)
    pad = pad_id(pretrained.tokenizer)
    return {name: Encoded(encode(ds, pretrained.tokenizer, task, max_length=max_length), pad,
                          task.is_regression)
            for name, ds in splits.items()}


def predictions(trainable, frozen, encoded, model, batch_size=EVAL_BATCH_SIZE):
    """Predicted labels (argmax) or scores for every row of an Encoded split, in its order.
    Raises NonFiniteError if any row's logits (or score) are not finite: the argmax of nan
    is a label like any other, and would be scored as one."""
    logits = onp.zeros((len(encoded), max(model.num_labels, 1)), onp.float64)
    trainable, frozen, model = weights_made_once(trainable, frozen, model)
    with onp.errstate(all="ignore"):             # an overflow is refused below, not printed
        for idx in batch_order(encoded.lengths, batch_size):
            logits[idx] = predict(trainable, frozen, encoded.batch(idx), model)   # (B, C)
    finite_outputs(logits)
    return logits[:, 0] if model.num_labels == 1 else onp.argmax(logits, axis=1).astype(onp.float64)


def weights_made_once(trainable, frozen, model):
    """(trainable, frozen, model) that compute what the given ones do, with a method's
    `weights` hook (Intrinsic-SAID's theta_0 + lambda_i P_i(theta_d)) applied once, for a
    whole split, rather than once per batch: the head, the moved tree, the hook left out."""
    hooks = model.method.hooks
    if hooks.weights is None:
        return trainable, frozen, model
    params = hooks.weights(merge(frozen, trainable))
    method = model.method._replace(hooks=hooks._replace(weights=None))
    head = {HEAD: params[HEAD]} if HEAD in params else {}           # T5 has none
    return (head, {k: v for k, v in params.items() if k != HEAD},
            model._replace(method=method))


def generated_answers(trainable, frozen, encoded, model, batch_size=EVAL_BATCH_SIZE):
    """T5: which label word each row's greedy answer is (its index in encoded.answers, -1 when
    it is none), in the split's order. Generation stops at the longest label word's length."""
    out = onp.zeros(len(encoded), onp.int64)
    eos = model.encoder_config.eos_token_id
    trainable, frozen, model = weights_made_once(trainable, frozen, model)
    with onp.errstate(all="ignore"):
        for idx in batch_order(encoded.lengths, batch_size):
            ids = generate(trainable, frozen, encoded.batch(idx), model, encoded.max_answer_tokens)
            out[idx] = [answer_index(row, encoded.answers, eos) for row in ids]
    return out


def evaluate(trainable, frozen, encoded, model, task, batch_size=EVAL_BATCH_SIZE):
    """The task's metrics (Hugging Face glue keys and `score`) on an Encoded split; on T5 also
    "invalid_answers", the rows whose answer was no label word (scored wrong)."""
    if model.seq2seq:
        return answer_metrics(task, generated_answers(trainable, frozen, encoded, model,
                                                      batch_size), encoded.labels)
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
                            max_length_of(config, pretrained), model.method.config)
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
    task_fits(directory, config, get_task(source))
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


def task_fits(directory, config, task):
    """ValueError unless the checkpoint's head can score `task`: as many outputs, and, when the
    checkpoint records the task it was trained on, that task or one with the same labels and
    as many texts per input (a CoLA head scores acceptability, not WNLI's entailment)."""
    held = config.get("task")
    if task.num_labels != config["num_labels"]:
        head = (f"a head with {config['num_labels']} outputs" if config["num_labels"]
                else "no head")
        raise ValueError(f"{directory} holds {head}" + (f", trained on {held}" if held else "")
                         + f"; {task.name} needs {task.num_labels} "
                         f"output{'s' if task.num_labels > 1 else ''}.")
    trained = get_task(held) if held and held != task.name and held in tasks() else None
    if trained is not None and (trained.label_names, len(trained.columns)) != \
            (task.label_names, len(task.columns)):
        raise ValueError(f"{directory} was trained on {held} ({describe(trained)}); {task.name} is "
                         f"{describe(task)}, so its head would score labels it was not trained "
                         f"for. Evaluate it on {held} (leave out --task).")


def describe(task):
    """A task's inputs and labels, in a few words."""
    texts = "sentence pairs" if len(task.columns) == 2 else "single sentences"
    return f"{texts}, " + ("a score" if task.is_regression else
                           f"labels {', '.join(task.label_names)}")


def inputs_fit(directory, config, pairs):
    """ValueError when the checkpoint records a single-sentence task and pairs are given,
    or a sentence-pair task and none are."""
    if config.get("task") not in tasks():
        return                          # no task recorded, or the user's data (any columns)
    task = get_task(config["task"])
    if pairs is not None and len(task.columns) == 1:
        raise ValueError(f"{directory} was trained on {task.name}, a single-sentence task; give "
                         f"no second text (--pair, or a tab in --file).")
    if pairs is None and len(task.columns) == 2:
        raise ValueError(f"{directory} was trained on {task.name}, a sentence-pair task; give a "
                         f"second text for each (--pair, or two texts separated by a tab in "
                         f"--file).")


def max_length_of(config, pretrained):
    """The tokens per row a checkpoint was trained with (its config's max_length, else the
    default), at most what the model's positions hold."""
    length = config.get("max_length", MAX_LENGTH)
    limit = checks.token_limit(pretrained.config)
    return length if limit is None else min(length, limit)


def predict_texts(directory, texts, pairs=None, *, pretrained=None, batch_size=EVAL_BATCH_SIZE):
    """Each text's (or pair's) prediction by a checkpoint (any format load_adapter reads, with
    a head): [{"label": name, "probabilities": {name: p}} ...] for classification,
    [{"score": s} ...] for regression."""
    pretrained = pretrained or checkpoint_base(directory)
    model, trainable, frozen, config = load_adapter(directory, pretrained)
    if model.seq2seq:
        return answer_texts(directory, texts, pairs, pretrained, model, trainable, frozen, config,
                            batch_size)
    if not model.num_labels:
        raise ValueError(f"{directory} holds an adapter without a head: it gives hidden states, "
                         f"not predictions. Export or train it with a head to predict.")
    inputs_fit(directory, config, pairs)
    names = label_names(config)
    if len(names) != model.num_labels:
        names = [f"LABEL_{i}" for i in range(model.num_labels)]
    max_length = max_length_of(config, pretrained)
    logits = []
    with parallel(), onp.errstate(all="ignore"):    # an overflow is refused below, not printed
        for i in range(0, len(texts), batch_size):
            batch = tokenize(pretrained.tokenizer, texts[i:i + batch_size],
                             None if pairs is None else pairs[i:i + batch_size],
                             max_length=max_length)
            logits.append(onp.asarray(predict(trainable, frozen, batch, model)))   # (B, C)
    logits = finite_outputs(onp.concatenate(logits), "texts")
    return [_prediction(row, names) for row in logits]


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


def answer_texts(directory, texts, pairs, pretrained, model, trainable, frozen, config,
                 batch_size=EVAL_BATCH_SIZE):
    """T5's answers: each input written as the task's input text (text2text.input_text; as it
    was, when the checkpoint records no task) and answered greedily:
    [{"answer": the generated text, "label": the label's name, or "score"; None when the
    answer is no label word}, ...]."""
    if pretrained.tokenizer is None:
        raise ValueError(f"{pretrained.name} has no tokenizer (tokenizer.json): it cannot read "
                         f"texts. Give the base model with its tokenizer (--model).")
    inputs_fit(directory, config, pairs)
    task = get_task(config["task"]) if config.get("task") else None
    answers = answer_ids(pretrained.tokenizer, task) if task else []
    rows = list(texts) if pairs is None else [list(p) for p in zip(texts, pairs)]
    sources = [input_text(task, [r] if pairs is None else r, adds_prefix(model.method.config))
               if task else (r if pairs is None else " ".join(r)) for r in rows]
    longest = max((len(a) for a in answers), default=20)
    out = []
    with parallel(), onp.errstate(all="ignore"):
        for i in range(0, len(sources), batch_size):
            batch = tokenize(pretrained.tokenizer, sources[i:i + batch_size],
                             max_length=max_length_of(config, pretrained))
            for row in generate(trainable, frozen, batch, model, longest):
                out.append(_answer(row, pretrained.tokenizer, task, answers,
                                   model.encoder_config.eos_token_id))
    return out


def _answer(row, tokenizer, task, answers, eos):
    text = tokenizer.decode([int(t) for t in row], skip_special_tokens=True).strip()
    if task is None:
        return {"answer": text}
    index = answer_index(row, answers, eos)
    word = None if index < 0 else label_words(task)[index]
    if task.is_regression:
        return {"answer": text, "score": None if word is None else float(word)}
    return {"answer": text, "label": None if word is None else task.label_names[index]}
