"""Tasks and data: GLUE (a local directory or the hub), the synthetic suite, tokenising
and length-bucketed batches.

Splits, as the Compacter paper made them (its appendix; GLUE's test labels are hidden):
  - tasks with fewer than 10,000 training examples (CoLA, MRPC, RTE, STS-B, WNLI): the dev
    file is shuffled with SPLIT_SEED and cut in halves, validation (model selection) and
    test (reported);
  - the larger tasks (SST-2, QNLI, QQP, MNLI): 1,000 training examples, drawn with
    SPLIT_SEED, are held out as validation, and the whole dev file is the test set.
`train_size` then takes a seeded subset of what remains of train, stratified by label
(STS-B: by the score rounded to an integer). Model selection never sees the test split.

A local GLUE directory holds one folder per task (CoLA, SST-2, MRPC, QQP, STS-B, MNLI,
QNLI, RTE, WNLI) with train.tsv and dev.tsv (MNLI: dev_matched.tsv): UTF-8 (a byte-order
mark is allowed), tab-separated, one header row, no quoting, columns `sentence, label` or
`sentence1, sentence2, label`, integer labels as in the Hugging Face `glue` dataset, float
scores in [0, 5] for STS-B, written in ASCII digits ("1", "3.8", "4e-1"; not "0_5" or
"१"). Blank lines at the end of a file are ignored. A field may be of any length (csv's
131,072-character limit does not apply: lines are split on tabs here). A data file must be
a regular file: a directory or a FIFO is refused by name, never read or waited on.

Labels are checked where they enter, whatever the source (a file, the hub, the synthetic
suite): a class id in range, or a finite score in SCORE_RANGE.
"""

import dataclasses
import math
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as onp

from ..formats.files import read_bytes
from .synthetic import SYNTHETIC_TASKS, load_synthetic

SPLIT_SEED = 42           # fixes the validation / test split of every task
LARGE_TASK_HOLDOUT = 1000
SCORE_RANGE = (0.0, 5.0)  # the similarity scores of STS-B and synthetic-similarity


@dataclasses.dataclass(frozen=True)
class Task:
    """What a task is: its columns, labels and metric."""
    name: str                  # as the Hugging Face glue dataset spells it
    columns: tuple             # ("sentence",) or ("sentence1", "sentence2")
    num_labels: int            # 1 for regression
    label_names: tuple         # index = label id
    metric: str                # a metrics.METRIC_KINDS entry
    folder: str = ""           # folder in a local GLUE directory
    dev_file: str = "dev.tsv"
    large: bool = False        # 10,000 training examples or more
    hub_columns: tuple = ()    # the hub's names for the text columns, if not ours
    synthetic: bool = False

    @property
    def is_regression(self):
        return self.num_labels == 1


PAIR = ("sentence1", "sentence2")
GLUE_TASKS = {t.name: t for t in [
    Task("cola", ("sentence",), 2, ("unacceptable", "acceptable"), "matthews", "CoLA"),
    Task("sst2", ("sentence",), 2, ("negative", "positive"), "accuracy", "SST-2", large=True),
    Task("mrpc", PAIR, 2, ("not_equivalent", "equivalent"), "accuracy_f1", "MRPC"),
    Task("qqp", PAIR, 2, ("not_duplicate", "duplicate"), "accuracy_f1", "QQP", large=True,
         hub_columns=("question1", "question2")),
    Task("stsb", PAIR, 1, (), "pearson_spearman", "STS-B"),
    Task("mnli", PAIR, 3, ("entailment", "neutral", "contradiction"), "accuracy", "MNLI",
         dev_file="dev_matched.tsv", large=True, hub_columns=("premise", "hypothesis")),
    Task("qnli", PAIR, 2, ("entailment", "not_entailment"), "accuracy", "QNLI", large=True,
         hub_columns=("question", "sentence")),
    Task("rte", PAIR, 2, ("entailment", "not_entailment"), "accuracy", "RTE"),
    Task("wnli", PAIR, 2, ("not_entailment", "entailment"), "accuracy", "WNLI"),
]}


def tasks():
    """Every task name: the nine GLUE tasks and the synthetic suite's."""
    return list(GLUE_TASKS) + list(SYNTHETIC_TASKS)


def get_task(name):
    if name in GLUE_TASKS:
        return GLUE_TASKS[name]
    if name in SYNTHETIC_TASKS:
        s = SYNTHETIC_TASKS[name]
        return Task(name, tuple(s.columns), s.num_labels, tuple(s.label_names), s.metric,
                    synthetic=True)
    raise ValueError(f"Unknown task {name!r}; the tasks are: {', '.join(tasks())}.")


class DataError(ValueError):
    """A data file or split that cannot be used; the message says why and what to do."""


# --- reading ------------------------------------------------------------------------------

def read_tsv(path, task):
    """{column: list} from one normalised GLUE TSV file, every row checked."""
    path = Path(path)
    needs = (f"A GLUE directory needs {task.folder}/train.tsv and {task.folder}/{task.dev_file} "
             f"(tab-separated, a header row with {', '.join(task.columns + ('label',))}).")
    if not path.exists():
        raise DataError(f"{path} does not exist. {needs}")
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO or a device)"
        raise DataError(f"{path} is {kind}; it must be a file. {needs}")
    rows = read_rows(path)
    if not rows:
        raise DataError(f"{path} is empty; expected a header row and examples.")
    header, body = rows[0], rows[1:]
    missing = [c for c in task.columns + ("label",) if c not in header]
    if missing:
        raise DataError(f"{path} has no column {missing} (its header: {header}); {task.name} "
                        f"needs {list(task.columns + ('label',))}, tab-separated.")
    if not body:
        raise DataError(f"{path} has a header but no examples.")
    where = {c: header.index(c) for c in task.columns + ("label",)}
    out = {c: [] for c in where}
    for line, row in enumerate(body, start=2):
        if not row:
            raise DataError(f"{path}, line {line} is blank; remove it (only blank lines at the "
                            f"end of a file are ignored).")
        if len(row) != len(header):
            raise DataError(f"{path}, line {line}: {len(row)} fields, the header has "
                            f"{len(header)}; is the file tab-separated without quoting?")
        for c in task.columns:
            out[c].append(row[where[c]])
        out["label"].append(parse_label(row[where["label"]], task, f"{path}, line {line}"))
    return out


def utf8_text(path, raw):
    """A file's bytes as UTF-8 text (a byte-order mark dropped); DataError naming the line and
    the byte that is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: byte 0x{raw[e.start]:02x} is not UTF-8; the file "
                        f"must be UTF-8 (convert it, e.g. iconv -f latin1 -t utf-8).") from None


def read_rows(path):
    """The rows of a tab-separated file, read as UTF-8 (a byte-order mark is dropped);
    blank lines at the end are dropped. A file that is not UTF-8 is an error naming the
    line and the byte."""
    text = utf8_text(path, read_bytes(path))
    rows = [line.split("\t") if line else [] for line in LINE_END.split(text)]
    while rows and not rows[-1]:
        rows.pop()
    return rows


LINE_END = re.compile(r"\r\n|\r|\n")      # the line ends csv's reader knows, and only they
# labels as the GLUE files write them: ASCII digits only (int() and float() also take "0_5",
# "١" and " 1 ")
CLASS_ID = re.compile(r"-?[0-9]+", re.ASCII)
SCORE = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", re.ASCII)


def expected_labels(task):
    """What the labels of a task may be, in words."""
    if task.is_regression:
        return f"a score from {SCORE_RANGE[0]:g} to {SCORE_RANGE[1]:g}"
    return ", ".join(f"{i} ({n})" for i, n in enumerate(task.label_names))


def valid_label(value, task):
    """Whether value is a label of the task: a class id in range, or a finite score in
    SCORE_RANGE (in float32 too: 1e300 is not)."""
    if task.is_regression:
        return (isinstance(value, (int, float, onp.floating, onp.integer))
                and math.isfinite(value) and SCORE_RANGE[0] <= value <= SCORE_RANGE[1])
    return (isinstance(value, (int, onp.integer)) and not isinstance(value, bool)
            and 0 <= value < task.num_labels)


def parse_label(text, task, where):
    """The label in a file's field `text`; a DataError naming `where` if it is not one."""
    pattern = SCORE if task.is_regression else CLASS_ID
    value = None
    if pattern.fullmatch(text):
        value = float(text) if task.is_regression else int(text)
    if value is None or not valid_label(value, task):
        raise DataError(f"{where}: unknown label {text!r} for {task.name}; expected "
                        f"{expected_labels(task)}.")
    return value


def check_labels(splits, task, source):
    """Every label of every split valid (the hub's and the synthetic suite's, which no
    file line names)."""
    for split, ds in splits.items():
        for row, value in enumerate(ds["label"]):
            if not valid_label(value, task):
                raise DataError(f"{source}, {split} split, row {row}: label {value!r} is not one "
                                f"of {task.name}'s; expected {expected_labels(task)}.")


def glue_dir(data_dir=None):
    """--data-dir, else $GLUE_DIR, else None (the hub)."""
    d = data_dir or os.environ.get("GLUE_DIR")
    return Path(d).expanduser() if d else None


def load_raw(task, data_dir=None):
    """DatasetDict(train, dev) of a GLUE task, from a local directory or the hub."""
    root = glue_dir(data_dir)
    if root is not None:
        if not root.is_dir():
            what = "is a file, not a directory" if root.exists() else "does not exist"
            raise DataError(f"GLUE directory {root} {what}; give --data-dir (or set "
                            f"GLUE_DIR) to a folder holding {task.folder}/train.tsv.")
        columns = {"train": read_tsv(root / task.folder / "train.tsv", task),
                   "dev": read_tsv(root / task.folder / task.dev_file, task)}
        from datasets import Dataset, DatasetDict        # (deferred: datasets takes ~1 s to import)
        return DatasetDict({split: Dataset.from_dict(c) for split, c in columns.items()})
    from datasets import DatasetDict, load_dataset      # (deferred: datasets takes ~1 s to import)
    try:
        hub = load_dataset("nyu-mll/glue", task.name)
    except Exception as e:
        raise DataError(f"{task.name}: no GLUE directory given (--data-dir or GLUE_DIR) and the "
                        f"Hugging Face hub could not provide it ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}).") from None
    dev = "validation_matched" if task.name == "mnli" else "validation"
    out = DatasetDict({"train": hub["train"], "dev": hub[dev]})
    for ours, theirs in zip(PAIR, task.hub_columns):
        out = out.rename_column(theirs, ours)
    return out.select_columns(list(task.columns) + ["label"])


# --- splits -------------------------------------------------------------------------------

def paper_splits(task, raw):
    """DatasetDict(train, validation, test) as the paper made them (module docstring)."""
    from datasets import DatasetDict                    # (deferred: datasets takes ~1 s to import)

    rng = onp.random.default_rng(SPLIT_SEED)
    if task.large:
        if len(raw["train"]) <= LARGE_TASK_HOLDOUT:
            raise DataError(f"{task.name}: the training file has {len(raw['train']):,} rows, and "
                            f"{LARGE_TASK_HOLDOUT:,} of them are held out as the validation split "
                            f"(the paper's split for the large tasks), which leaves none to "
                            f"train on; it needs more than {LARGE_TASK_HOLDOUT:,} rows.")
        order = rng.permutation(len(raw["train"]))
        held, rest = order[:LARGE_TASK_HOLDOUT], order[LARGE_TASK_HOLDOUT:]
        return DatasetDict({"train": raw["train"].select(onp.sort(rest)),
                            "validation": raw["train"].select(onp.sort(held)),
                            "test": raw["dev"]})
    order = rng.permutation(len(raw["dev"]))
    half = len(order) // 2
    return DatasetDict({"train": raw["train"],
                        "validation": raw["dev"].select(onp.sort(order[:half])),
                        "test": raw["dev"].select(onp.sort(order[half:]))})


def stratified_subset(labels, size, seed, regression=False):
    """Indices of a seeded subset of `size`, each label (regression: rounded score) kept
    in proportion (largest remainders)."""
    labels = onp.asarray(labels)
    keys = onp.rint(labels).astype(int) if regression else labels
    rng = onp.random.default_rng(seed)
    groups = {k: rng.permutation(onp.flatnonzero(keys == k)) for k in onp.unique(keys)}
    exact = {k: size * len(g) / len(labels) for k, g in groups.items()}
    take = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - take[k]), k))[:size - sum(take.values())]:
        take[k] += 1
    return onp.sort(onp.concatenate([groups[k][:take[k]] for k in groups]))


def load_task(name, *, data_dir=None, train_size=None, seed=0):
    """DatasetDict(train, validation, test) of any task, with `label` and the text columns."""
    task = get_task(name)
    if train_size is not None and train_size < 1:
        raise DataError(f"--train-size must be at least 1, got {train_size}.")
    if task.synthetic:
        splits = load_synthetic(name, seed=SPLIT_SEED)
        check_labels(splits, task, f"the synthetic task {name}")
    else:
        raw = load_raw(task, data_dir)
        if glue_dir(data_dir) is None:
            check_labels(raw, task, f"{name} from the Hugging Face hub")
        splits = paper_splits(task, raw)
    for split, ds in splits.items():
        if len(ds) == 0:
            halves = "" if task.large or split == "train" else (
                f" (the dev file's {len(splits['validation']) + len(splits['test'])} rows are "
                f"cut in halves, validation and test: it needs at least 2)")
            raise DataError(f"{name}: the {split} split is empty{halves}; check the data files.")
    if train_size is not None:
        n = len(splits["train"])
        if train_size < n:
            idx = stratified_subset(splits["train"]["label"], train_size, seed, task.is_regression)
            splits["train"] = splits["train"].select(idx)
        elif train_size > n:
            warnings.warn(f"{name}: --train-size {train_size} is more than the {n} training "
                          f"examples left after the validation split; using all {n}.")
    return splits
