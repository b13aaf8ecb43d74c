"""What a label column means, and the validation split held out by label (userdata.py
makes a task of the user's data with these).

    parsed = parsed_labels(table, "label")       # [(kind, value)]: "int", "float" or "word"
    task_type(None, table, parsed)               # "classification" or "regression"
    class_names(table, parsed, None)             # ["2", "9", "10"], ["neg", "pos"]
    class_ids(table, parsed, names, False)       # each label's index; targets(...) for regression
    hold_out(splits, task, source)               # a validation split held out of train

A CSV field that reads as a number is that number; a JSON value keeps its type (a
boolean is the word "true" or "false"). Integers and words are classes, named by their
values (numbers in numeric order, words alphabetically, a ClassLabel in its own order);
fractions are regression targets, which must be finite in float32. Numbers mixed with
words are refused.

The hold-out: HOLDOUT_FRACTION of the training rows, at least one per class and at most
HOLDOUT_MAX, stratified by class (regression: by decile of the target) and drawn with
tasks.SPLIT_SEED; a class with a single row stays in training.
"""

import math
import re

import numpy as onp

from .tasks import SPLIT_SEED, DataError, stratified_subset

HOLDOUT_FRACTION = 0.1    # of the training rows, held out as validation when none is given
HOLDOUT_MAX = 1000        # the paper's hold-out for the large GLUE tasks
FLOAT32_MAX = float(onp.finfo(onp.float32).max)
INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)",
                   re.ASCII | re.IGNORECASE)


def parse_label(value):
    """(kind, value) of one label: kind "int", "float" or "word"; None if it is missing.
    A string that reads as a number (a CSV field) is that number."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "word", "true" if value else "false"
    if isinstance(value, (int, onp.integer)):
        return "int", int(value)
    if isinstance(value, (float, onp.floating)):
        return "float", float(value)
    if not isinstance(value, str):
        return "other", value
    text = value.strip()
    if not text:
        return None
    if INT.fullmatch(text):
        return "int", int(text)
    if FLOAT.fullmatch(text):
        return "float", float(text)
    return "word", text


def parsed_labels(table, column):
    """[(kind, value)] of a table's label column; a missing label or an array is an error."""
    out = []
    for i, value in enumerate(table.columns[column]):
        parsed = parse_label(value)
        if parsed is None:
            raise DataError(f"{table.where(i)}: no label in column {column!r}.")
        if parsed[0] == "other":
            raise DataError(f"{table.where(i)}: the label {value!r} is not a number or a word.")
        out.append(parsed)
    return out


def no_mixture(table, parsed):
    """A DataError if a split's labels mix numbers and words (naming one row of each)."""
    number = next((i for i, (k, _) in enumerate(parsed) if k != "word"), None)
    word = next((i for i, (k, _) in enumerate(parsed) if k == "word"), None)
    if number is not None and word is not None:
        raise DataError(f"{table.where(max(number, word))}: mixed label types: the label "
                        f"{parsed[word][1]!r} ({table.unit} {table.places[word]}) is a word and "
                        f"{parsed[number][1]!r} ({table.unit} {table.places[number]}) a number; "
                        f"make the labels all words or all numbers.")


def task_type(requested, table, parsed):
    """classification or regression: the type requested (None: none), else from the
    training labels."""
    kinds = {k for k, _ in parsed}
    if requested == "regression" and "word" in kinds:
        i = next(i for i, (k, _) in enumerate(parsed) if k == "word")
        raise DataError(f"{table.where(i)}: the label {parsed[i][1]!r} is not a number; a "
                        f"regression task needs numbers.")
    if requested is not None:
        return requested
    return "regression" if "float" in kinds else "classification"


def class_key(kind, value):
    """A class's name: the number written plainly (1.0 is 1), or the word."""
    if kind == "float" and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def class_names(table, parsed, order):
    """The classes of the training labels: a ClassLabel's names in its order, else the
    numbers by value or the words alphabetically. At least two."""
    keys = {class_key(k, v): (k, v) for k, v in parsed}
    if order is not None:
        names = order
    elif all(k != "word" for k, _ in keys.values()):
        names = sorted(keys, key=lambda n: keys[n][1])
    else:
        names = sorted(keys)
    if len(keys) < 2:
        raise DataError(f"{table.source}: every training label is {next(iter(keys))!r}; a "
                        f"classifier needs at least two classes (for numeric targets, "
                        f"--task-type regression).")
    return names


def class_ids(table, parsed, names, from_checkpoint):
    """Each label's index in `names`; a label not among them is an error."""
    index = {n: i for i, n in enumerate(names)}
    ids = []
    for i, (kind, value) in enumerate(parsed):
        key = class_key(kind, value)
        if key not in index:
            seen = ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + ", ..."
            source = "the checkpoint's labels" if from_checkpoint else "the training labels"
            raise DataError(f"{table.where(i)}: the label {key!r} never appears in training "
                            f"({source}: {seen}); a model cannot predict a class it was never "
                            f"shown.")
        ids.append(index[key])
    return ids


def targets(table, parsed):
    """Each label as a regression target: a number, finite in float32."""
    out = []
    for i, (kind, value) in enumerate(parsed):
        if kind == "word":
            raise DataError(f"{table.where(i)}: the label {value!r} is not a number; a regression "
                            f"task needs numbers.")
        if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise DataError(f"{table.where(i)}: the regression target {value!r} is not a finite "
                            f"number (in float32, what the model computes in).")
        out.append(float(value))
    return out


# --- the validation hold-out -------------------------------------------------------------

def strata(labels, regression):
    """The groups a split is stratified by: the class, or the target's decile."""
    labels = onp.asarray(labels)
    if not regression:
        return labels
    edges = onp.quantile(labels, onp.linspace(0.1, 0.9, 9))
    return onp.searchsorted(edges, labels, side="right")


def holdout_size(n, num_classes):
    """Rows held out as validation from n training rows: HOLDOUT_FRACTION, at least one per
    class, at most HOLDOUT_MAX."""
    return min(HOLDOUT_MAX, max(math.ceil(HOLDOUT_FRACTION * n), num_classes))


def hold_out(splits, task, source):
    """splits with a validation split held out of train, stratified and drawn with SPLIT_SEED;
    a class with a single row stays in training (module docstring)."""
    train = splits["train"]
    keys = strata(train["label"][:], task.is_regression)
    values, counts = onp.unique(keys, return_counts=True)
    eligible = onp.flatnonzero(onp.isin(keys, values[counts >= 2]) if not task.is_regression
                               else onp.ones(len(keys), bool))
    size = holdout_size(len(train), 1 if task.is_regression else task.num_labels)
    if size > len(eligible) // 2:
        raise DataError(f"{source} has {len(train)} rows: too few to hold out a validation split "
                        f"of {size} (10%, at least one row per class) and keep the rest of each "
                        f"class to train on; give a validation file (--validation-file).")
    held = eligible[stratified_subset(keys[eligible], size, SPLIT_SEED)]
    rest = onp.setdiff1d(onp.arange(len(train)), held)
    return {**splits, "train": train.select(rest), "validation": train.select(held)}
