"""The user's own data as a task: data files (CSV, TSV, JSON, JSON Lines), a
`datasets.DatasetDict` (or the path of one saved with `save_to_disk`), or a dataset of the
Hugging Face hub, made into a `Task` and its splits, so that training, evaluation and the
checkpoint treat it as they treat a GLUE task.

    data = TaskData(train="reviews.csv", test="test.csv", text_columns=("review",))
    task, splits = resolve(data)        # Task, DatasetDict(train, validation[, test])
    task, splits = resolve("sst2")      # a task name: GLUE or synthetic (tasks.load_task)

Reading. Files are read and checked by data/files.py (CSV, TSV, JSON, JSON Lines, through
`datasets`' loaders); a DatasetDict's train, validation and test splits are used as they
are (other splits are not). Either way the labels are interpreted here, the same way.

Columns. `text_columns` names one text column, or two for pairs; by default the first of
("sentence1", "sentence2"), ("premise", "hypothesis"), ("text",), ("sentence",) that the
training data hold, else the only column besides the label. `label_column` is "label" by
default.

Labels and the task type (data/labels.py). Integers or strings are classes (names sorted:
numbers by value, strings alphabetically; a `ClassLabel` keeps its own names and order);
floats are regression targets; `task_type` says otherwise (integer scores as regression).
Numbers mixed with words in one label column are refused, not guessed at. The metric is
accuracy and macro F1 for classification (score: their mean), Pearson and Spearman for
regression (score: their mean), as for GLUE (metrics.py); `metric` may name another kind
("matthews" for the Matthews correlation).

Splits. Without a validation file (or split), 10% of the training rows, at least one per
class and at most 1,000, are held out as validation (labels.hold_out), stratified by label
and drawn with tasks.SPLIT_SEED, so every --seed selects on the same rows. Without a test
file there is no test split and no test metric; a test split is never drawn from the
training data.

Checks. Besides the files' own (data/files.py), each of these is a DataError naming the
file and line (a JSON file: the record; a DatasetDict: the split and row) before any work
is spent: a missing column (the columns there are listed), an empty split, a missing,
empty or blank text, a missing label, labels that mix numbers and words, a non-finite
regression target (in float32), a single class, a label in validation or test never seen
in training.
"""

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from .files import FORMATS, Table, read_bytes, read_file
from .labels import (HOLDOUT_FRACTION, class_ids, class_names, hold_out, no_mixture,
                     parsed_labels, strata, targets, task_type)
from .metrics import METRIC_KINDS
from .tasks import SPLIT_SEED, DataError, Task, get_task, load_task, stratified_subset, tasks

SPLITS = ("train", "validation", "test")
TASK_TYPES = ("classification", "regression")
DEFAULT_METRIC = {"classification": "accuracy_macro_f1", "regression": "pearson_spearman"}
TEXT_DEFAULTS = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("text",), ("sentence",))


@dataclasses.dataclass(frozen=True)
class TaskData:
    """A task made from the user's data: files, or a dataset (see the module docstring)."""
    train: Optional[str] = None        # a .csv, .tsv, .json or .jsonl file
    validation: Optional[str] = None   # default: held out of train
    test: Optional[str] = None         # default: no test split, no test metrics
    dataset: Any = None                # a DatasetDict, the path of a saved one, or a hub name
    text_columns: tuple = ()           # one, or two for pairs; () = the defaults
    label_column: str = "label"
    task_type: Optional[str] = None    # classification or regression; None = from the labels
    metric: Optional[str] = None       # a metrics.METRIC_KINDS entry; None = the type's default
    name: Optional[str] = None         # the task's name in outputs; default: the train file's stem

    def __post_init__(self):
        if isinstance(self.text_columns, str):
            object.__setattr__(self, "text_columns", (self.text_columns,))
        object.__setattr__(self, "text_columns", tuple(self.text_columns))
        check_request(self)

    def files(self):
        """{split: path} of the files given."""
        return {s: getattr(self, s) for s in SPLITS if getattr(self, s) is not None}


def check_request(data):
    """A TaskData whose parts fit together (nothing read yet)."""
    files = data.files()
    if data.dataset is not None and files:
        raise ValueError("give data files (train, validation, test) or a dataset, not both.")
    if data.dataset is None and not files:
        raise ValueError("no data: give a training file (--train-file), or a dataset.")
    for split, path in files.items():
        if not str(path).strip():
            raise ValueError(f"the {split} file's name is empty (--{split}-file).")
    if not 1 <= len(data.text_columns) <= 2 and data.text_columns:
        raise ValueError(f"--text-column names one text column, or two for pairs; got "
                         f"{list(data.text_columns)}.")
    if len(set(data.text_columns)) != len(data.text_columns):
        raise ValueError(f"--text-column names {data.text_columns[0]!r} twice; a pair needs two "
                         f"columns.")
    if not data.label_column:
        raise ValueError("--label-column is empty; give the column that holds the labels.")
    if data.label_column in data.text_columns:
        raise ValueError(f"{data.label_column!r} is given as both a text column and the label "
                         f"column (--text-column, --label-column).")
    if data.task_type not in (None,) + TASK_TYPES:
        raise ValueError(f"--task-type must be one of {', '.join(TASK_TYPES)}, got "
                         f"{data.task_type!r}.")
    if data.metric is not None:
        check_metric(data.metric, data.task_type)


def check_metric(metric, task_type):
    """A metric kind that exists and suits the task type (None: either)."""
    if metric not in METRIC_KINDS:
        raise ValueError(f"--metric must be one of {', '.join(METRIC_KINDS)}, got {metric!r}.")
    regression = metric == "pearson_spearman"
    if task_type is not None and regression != (task_type == "regression"):
        raise ValueError(f"--metric {metric} does not suit a {task_type} task; use "
                         + ("pearson_spearman." if task_type == "regression" else
                            ", ".join(k for k in METRIC_KINDS if k != "pearson_spearman") + "."))


# --- the one door: a task name or the user's data ------------------------------------------

def as_source(task):
    """What `task` names: a task name (str), or a TaskData (given, or made from a DatasetDict,
    a data file's path or a saved DatasetDict's directory)."""
    if isinstance(task, TaskData):
        return task
    if isinstance(task, (str, Path)) and str(task) in tasks():
        return str(task)
    if type(task).__name__ in ("DatasetDict", "Dataset"):   # (by name: datasets is slow to import)
        return TaskData(dataset=task)
    path = Path(str(task)).expanduser()
    if isinstance(task, (str, Path)) and (path.suffix.lower() in FORMATS or path.is_file()):
        return TaskData(train=str(task))
    if isinstance(task, (str, Path)) and path.is_dir():
        return TaskData(dataset=str(task))
    if not isinstance(task, (str, Path)):
        raise TypeError(f"a task is a name, a TaskData or a DatasetDict, got "
                        f"{type(task).__name__}.")
    try:
        return get_task(str(task))
    except ValueError as e:
        raise ValueError(f"{e} Your own data: a data file (.csv, .tsv, .json, .jsonl) with "
                         f"--train-file, or from Python a TaskData, a DatasetDict or the "
                         f"directory of a saved one.") from None


def task_name(source):
    """The name a run records for its task."""
    if isinstance(source, str):
        return source
    if source.name:
        return source.name
    if source.train is not None:
        return Path(source.train).stem
    if isinstance(source.dataset, (str, Path)):
        return Path(str(source.dataset)).name or str(source.dataset)
    return "dataset"


def resolve(source, *, data_dir=None, train_size=None, seed=0, known=None):
    """(Task, DatasetDict(train, validation[, test])) of a task name or a TaskData, every
    row checked; `train_size` a stratified subset of the training split, seeded by `seed`.
    known: the Task a checkpoint was trained on, whose labels the data must use (then the
    data need no training split)."""
    source = as_source(source)
    if isinstance(source, str):
        return get_task(source), load_task(source, data_dir=data_dir, train_size=train_size,
                                           seed=seed)
    task, splits = read_data(source, known)
    if train_size is not None:
        splits["train"] = train_subset(splits["train"], task, train_size, seed)
    return task, splits


def train_subset(train, task, train_size, seed):
    """A stratified subset of `train_size` training rows, as load_task takes one."""
    if train_size < 1:
        raise DataError(f"--train-size must be at least 1, got {train_size}.")
    if train_size >= len(train):
        return train
    keys = strata(train["label"][:], task.is_regression)
    return train.select(stratified_subset(keys, train_size, seed))


# --- what a run records ------------------------------------------------------------------

def identity(source):
    """What identifies the data in a run's settings: the request, and each file's absolute
    path and SHA-256 (a dataset: where it came from and a SHA-256 of the columns used).
    None for a task name. Reads every file once (a missing one is a DataError)."""
    source = as_source(source)
    if isinstance(source, str):
        return None
    record = {"name": task_name(source), "text_columns": list(source.text_columns),
              "label_column": source.label_column, "task_type": source.task_type,
              "metric": source.metric}
    if source.dataset is None:
        record["files"] = {split: {"path": str(Path(path).expanduser().resolve()),
                                   "sha256": hashlib.sha256(read_bytes(path)).hexdigest()}
                           for split, path in source.files().items()}
        return record
    dataset = open_dataset(source.dataset)
    record["dataset"] = (str(source.dataset) if isinstance(source.dataset, (str, Path))
                         else "a DatasetDict in memory")
    record["sha256"] = dataset_digest(dataset, source)
    return record


def from_identity(record):
    """The TaskData a run's recorded identity describes (its files, read again)."""
    if "files" not in record:
        raise DataError(f"the run was trained on {record.get('dataset', 'a dataset')}, which "
                        f"cannot be read again from its record; give the data (--validation-file, "
                        f"--test-file, or a TaskData).")
    return TaskData(**{split: f["path"] for split, f in record["files"].items()},
                    text_columns=tuple(record["text_columns"]), label_column=record["label_column"],
                    task_type=record["task_type"], metric=record["metric"], name=record["name"])


def dataset_digest(dataset, source):
    """SHA-256 of the splits' text and label columns (those present), in order."""
    digest = hashlib.sha256()
    for split in SPLITS:
        if split not in dataset:
            continue
        names = dataset[split].column_names
        for column in list(source.text_columns or names) + [source.label_column]:
            if column in names:
                values = dataset[split][column][:]
                digest.update(json.dumps([split, column, values], default=str).encode())
    return digest.hexdigest()


# --- reading a dataset -------------------------------------------------------------------

def open_dataset(dataset):
    """A DatasetDict from a DatasetDict (a Dataset is its train split), the directory of one
    saved with save_to_disk, or a name on the Hugging Face hub."""
    import datasets                     # (deferred: datasets takes ~1 s to import)
    if isinstance(dataset, datasets.Dataset):
        return datasets.DatasetDict({"train": dataset})
    if isinstance(dataset, datasets.DatasetDict):
        return dataset
    path = Path(str(dataset)).expanduser()
    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(str(dataset))
    except Exception as e:
        where = f"the directory {path}" if path.is_dir() else f"{dataset!r} on the Hugging Face hub"
        raise DataError(f"cannot read {where} as a dataset ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); give a DatasetDict, the "
                        f"directory of one saved with save_to_disk, or a hub dataset's name.") from None
    return open_dataset(loaded)


def dataset_tables(dataset):
    """{split: Table} of a DatasetDict's train, validation and test splits (others are not
    used); a ClassLabel column comes as its names (-1, no label, as None), and `order` maps a
    column to its ClassLabel names."""
    import datasets                     # (deferred: datasets takes ~1 s to import)
    dataset = open_dataset(dataset)
    if "train" not in dataset:
        raise DataError(f"the dataset has no train split (its splits: {list(dataset)}).")
    tables, order = {}, {}
    for split in SPLITS:
        if split not in dataset:
            continue
        ds = dataset[split]
        columns = {}
        for name in ds.column_names:
            feature = ds.features[name]
            values = ds[name][:]                  # [:]: in one batch, not row by row
            if isinstance(feature, datasets.ClassLabel):
                values = [None if v is None or v < 0 else feature.names[v] for v in values]
                order[name] = list(feature.names)
            columns[name] = values
        tables[split] = Table(columns, f"the {split} split", "row", list(range(len(ds))))
    return tables, order


# --- checking and interpreting -----------------------------------------------------------

def read_data(data, known=None):
    """(Task, DatasetDict) of a TaskData: the sources read, every row checked, the labels
    made ids (or float targets), validation held out of train if not given."""
    from datasets import Dataset, DatasetDict   # (deferred: datasets takes ~1 s to import)
    if data.dataset is not None:
        tables, order = dataset_tables(data.dataset)
    else:
        tables, order = {split: read_file(path) for split, path in data.files().items()}, {}
    if "train" not in tables and known is None:
        raise DataError("no training data: give a training file (--train-file).")
    first = tables["train"] if "train" in tables else next(iter(tables.values()))
    columns = text_columns(data, first)
    for table in tables.values():
        for column in columns + (data.label_column,):
            if column not in table.columns:
                raise DataError(f"{table.source} has no column {column!r} (its columns: "
                                f"{', '.join(table.columns)}); give "
                                + ("--label-column." if column == data.label_column
                                   else "--text-column."))
        if not table.places:
            raise DataError(f"{table.source} is empty: it holds no examples.")
    if "label" in columns:
        raise DataError(f"a text column is named 'label', which the splits keep for the labels "
                        f"(here column {data.label_column!r}); rename it.")
    texts = {split: checked_texts(table, columns) for split, table in tables.items()}
    task, labels = interpret_labels(data, tables, order.get(data.label_column), known)
    splits = {split: Dataset.from_dict({**dict(zip(columns, texts[split])), "label": labels[split]})
              for split in tables}
    if "validation" not in splits and "train" in splits:
        splits = hold_out(splits, task, tables["train"].source)
    return (dataclasses.replace(task, columns=tuple(columns)),
            DatasetDict({s: splits[s] for s in SPLITS if s in splits}))


def text_columns(data, table):
    """The text columns asked for, or the defaults the table holds (module docstring)."""
    if data.text_columns:
        return data.text_columns
    for candidate in TEXT_DEFAULTS:
        if all(c in table.columns for c in candidate):
            return candidate
    others = [c for c in table.columns if c != data.label_column]
    if len(others) == 1:
        return (others[0],)
    raise DataError(f"{table.source}: which columns hold the text? Its columns are "
                    f"{', '.join(table.columns)}; name one with --text-column (two for pairs).")


def read_texts(path, columns=()):
    """[values of each text column] of a data file (the labels, if any, are not read): the
    columns given, else the defaults; every text checked."""
    table = read_file(path)
    columns = text_columns(TaskData(train=str(path), text_columns=columns), table)
    for column in columns:
        if column not in table.columns:
            raise DataError(f"{table.source} has no column {column!r} (its columns: "
                            f"{', '.join(table.columns)}); give --text-column.")
    return checked_texts(table, columns)


def checked_texts(table, columns):
    """[values of each text column], every one a string that is not blank."""
    out = []
    for column in columns:
        values = table.columns[column]
        for i, value in enumerate(values):
            if value is None:
                raise DataError(f"{table.where(i)}: no text in column {column!r}.")
            if not isinstance(value, str):
                raise DataError(f"{table.where(i)}: column {column!r} holds {value!r}, not a text.")
            if not value.strip():
                raise DataError(f"{table.where(i)}: the text in column {column!r} is "
                                + ("empty." if not value else "blank (only spaces)."))
        out.append(list(values))
    return out


def interpret_labels(data, tables, order, known):
    """(Task without its columns, {split: labels}): class ids or float targets, the task type
    from the training labels (or data.task_type, or the checkpoint's), every label checked."""
    parsed = {split: parsed_labels(t, data.label_column) for split, t in tables.items()}
    for split, table in tables.items():
        no_mixture(table, parsed[split])
    if known is not None:
        regression, names = known.is_regression, list(known.label_names)
    else:
        train = tables["train"]
        regression = task_type(data.task_type, train, parsed["train"]) == "regression"
        names = None if regression else class_names(train, parsed["train"], order)
    labels = {split: (targets(tables[split], p) if regression else
                      class_ids(tables[split], p, names, known is not None))
              for split, p in parsed.items()}
    kind = "regression" if regression else "classification"
    metric = data.metric or (known.metric if known is not None else None) or DEFAULT_METRIC[kind]
    check_metric(metric, kind)
    task = Task(task_name(data), (), 1 if regression else len(names),
                () if regression else tuple(names), metric)
    return task, labels


def describe(source, splits):
    """Lines saying where each split of a run came from (and that there is no test split)."""
    source = as_source(source)
    if isinstance(source, str):
        return []
    given = (source.files() if source.dataset is None else
             {s: f"the dataset's {s} split" for s in open_dataset(source.dataset)})
    lines = [f"train: {len(splits['train']):,} rows of {given['train']}"]
    if "validation" not in given:
        lines.append(f"validation: {len(splits['validation']):,} rows held out of the training "
                     f"data ({HOLDOUT_FRACTION:.0%}, at least one per class, stratified, seed "
                     f"{SPLIT_SEED}): no validation data given")
    else:
        lines.append(f"validation: {len(splits['validation']):,} rows of {given['validation']}")
    lines.append(f"test: {len(splits['test']):,} rows of {given['test']}" if "test" in splits
                 else "test: none (no test data given: no test metrics)")
    return lines
