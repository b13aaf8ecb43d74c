"""Your own data: files (CSV, TSV, JSON, JSON Lines) and DatasetDicts made tasks, read as
written, labels interpreted, the validation hold-out, what a run records, and every bad
file refused with its line named. Fast: no training here (tests/test_own_data.py trains)."""

import csv
import json
from collections import Counter

import datasets
import numpy as onp
import pytest

from minicompacter.harness.data.files import read_file
from minicompacter.harness.data.tasks import DataError
from minicompacter.harness.data.labels import HOLDOUT_MAX, holdout_size
from minicompacter.harness.data.userdata import (TaskData, as_source, describe, from_identity,
                                                 identity, read_texts, resolve)

REVIEWS = [("a gorgeous, witty movie", "positive"), ("dull and lifeless", "negative"),
           ('she said "wow", twice', "positive"), ("NA", "negative"), ("007", "positive"),
           ("line one\nline two", "negative")]


def write_csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter, lineterminator="\n").writerows([header, *rows])
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def rows(n, label=lambda i: ("neg", "pos")[i % 2]):
    return [(f"sentence number {i}", label(i)) for i in range(n)]


# --- reading -----------------------------------------------------------------------------

def test_csv_fields_are_read_exactly_as_written(tmp_path):
    table = read_file(write_csv(tmp_path / "r.csv", ["text", "label"], REVIEWS))
    assert table.columns == {"text": [t for t, _ in REVIEWS], "label": [l for _, l in REVIEWS]}
    # the quoted line break: row 6 starts on line 7 and ends on line 8
    assert table.places == [2, 3, 4, 5, 6, 7] and table.where(5) == f"{tmp_path / 'r.csv'}, line 7"


def test_the_four_formats_make_the_same_task(tmp_path):
    records = [{"text": t, "label": l} for t, l in rows(20)]
    paths = [write_csv(tmp_path / "a.csv", ["text", "label"], rows(20)),
             write_csv(tmp_path / "a.tsv", ["text", "label"], rows(20), delimiter="\t"),
             write_jsonl(tmp_path / "a.jsonl", records)]
    (tmp_path / "a.json").write_text(json.dumps(records))
    made = [resolve(TaskData(train=str(p))) for p in paths + [tmp_path / "a.json"]]
    for task, splits in made:
        assert task.label_names == ("neg", "pos") and task.metric == "accuracy_macro_f1"
        assert {s: splits[s][:] for s in splits} == {s: made[0][1][s][:] for s in made[0][1]}


def test_tsv_has_no_quoting_and_a_bom_and_crlf_are_read(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_bytes('\ufefftext\tlabel\r\n"quoted" start\t1\r\nplain\t0\r\n'.encode())
    assert read_file(path).columns == {"text": ['"quoted" start', "plain"], "label": ["1", "0"]}


def test_datasets_progress_bars_are_as_they_were(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["text", "label"], rows(4))
    before = datasets.are_progress_bars_disabled()
    read_file(path)
    assert datasets.are_progress_bars_disabled() == before


# --- labels ------------------------------------------------------------------------------

def test_integer_labels_are_classes_sorted_by_value(tmp_path):
    path = write_csv(tmp_path / "n.csv", ["text", "label"], rows(40, lambda i: str([9, 10, 2][i % 3])))
    task, splits = resolve(TaskData(train=str(path)))
    assert task.label_names == ("2", "9", "10") and not task.is_regression
    assert set(splits["train"]["label"]) == {0, 1, 2}


def test_fractions_are_regression_and_task_type_says_otherwise(tmp_path):
    path = write_csv(tmp_path / "s.csv", ["text", "score"], rows(30, lambda i: str(i / 4)))
    task, splits = resolve(TaskData(train=str(path), label_column="score"))
    assert task.is_regression and task.metric == "pearson_spearman"
    assert sorted(list(splits["train"]["label"]) + list(splits["validation"]["label"])) == [
        i / 4 for i in range(30)]
    ints = write_csv(tmp_path / "i.csv", ["text", "label"], rows(30, lambda i: str(i % 5)))
    assert resolve(TaskData(train=str(ints), task_type="regression"))[0].is_regression
    whole = write_csv(tmp_path / "w.csv", ["text", "label"], rows(30, lambda i: f"{i % 2}.0"))
    task, _ = resolve(TaskData(train=str(whole), task_type="classification"))
    assert task.label_names == ("0", "1")                     # 1.0 is the class 1


def test_a_classlabel_keeps_its_names_and_order():
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["pos", "neg", "mixed"])})
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"text": [f"t{i}" for i in range(30)], "label": [i % 3 for i in range(30)]}, features=features)})
    task, splits = resolve(dd)
    assert task.label_names == ("pos", "neg", "mixed")
    assert list(splits["train"]["label"]) == [i % 3 for i in range(30) if i not in held(splits, 30)]


def held(splits, n):
    """The training rows the hold-out took (the texts are t0, t1, ...)."""
    return {int(t[1:]) for t in splits["validation"]["text"]}


def test_metric_on_request(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["text", "label"], rows(20))
    assert resolve(TaskData(train=str(path), metric="matthews"))[0].metric == "matthews"
    with pytest.raises(ValueError, match="does not suit a regression task"):
        TaskData(train=str(path), task_type="regression", metric="accuracy")
    with pytest.raises(ValueError, match="does not suit a classification task"):
        resolve(TaskData(train=str(path), metric="pearson_spearman"))


# --- splits ------------------------------------------------------------------------------

def test_holdout_size():
    assert holdout_size(10, 2) == 2              # 10% is 1: at least one per class
    assert holdout_size(500, 2) == 50
    assert holdout_size(10 ** 6, 2) == HOLDOUT_MAX


def test_the_holdout_is_stratified_fixed_and_disjoint(tmp_path):
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 9 + ["d"]     # d: a single row
    path = write_csv(tmp_path / "r.csv", ["text", "label"], [(f"t{i}", l) for i, l in enumerate(labels)])
    task, splits = resolve(TaskData(train=str(path)))
    names = task.label_names
    counts = Counter(names[i] for i in splits["validation"]["label"])
    assert counts == {"a": 6, "b": 3, "c": 1}                # 10 of 100, in proportion
    assert "d" in {names[i] for i in splits["train"]["label"]}
    assert set(splits["train"]["text"]) | set(splits["validation"]["text"]) == {f"t{i}" for i in range(100)}
    assert not set(splits["train"]["text"]) & set(splits["validation"]["text"])
    assert "test" not in splits                              # never drawn from training data
    again = resolve(TaskData(train=str(path)), seed=5)[1]      # the run's seed does not move it
    assert again["validation"]["text"] == splits["validation"]["text"]
    assert describe(TaskData(train=str(path)), splits)[1].startswith("validation: 10 rows held out")
    assert describe(TaskData(train=str(path)), splits)[2] == "test: none (no test data given: no test metrics)"


def test_given_validation_and_test_files_are_used_whole(tmp_path):
    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows(20))
    dev = write_csv(tmp_path / "dev.csv", ["text", "label"], rows(6))
    test = write_csv(tmp_path / "test.csv", ["text", "label"], rows(4))
    task, splits = resolve(TaskData(train=str(train), validation=str(dev), test=str(test)),
                           train_size=8, seed=1)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [8, 6, 4]
    assert Counter(splits["train"]["label"]) == {0: 4, 1: 4}   # stratified subset


def test_too_few_rows_for_a_holdout(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["text", "label"], rows(3))
    with pytest.raises(DataError, match="too few to hold out a validation split.*--validation-file"):
        resolve(TaskData(train=str(path)))


# --- columns -----------------------------------------------------------------------------

def test_text_columns_by_default_and_by_name(tmp_path):
    pairs = [{"premise": f"p{i}", "hypothesis": f"h{i}", "id": i, "label": i % 2} for i in range(20)]
    task, splits = resolve(TaskData(train=str(write_jsonl(tmp_path / "p.jsonl", pairs))))
    assert task.columns == ("premise", "hypothesis") and splits["train"].column_names == [
        "premise", "hypothesis", "label"]
    named = [{"a": f"x{i}", "b": f"y{i}", "y": "pos" if i % 2 else "neg"} for i in range(20)]
    path = write_jsonl(tmp_path / "n.jsonl", named)
    with pytest.raises(DataError, match="which columns hold the text.*a, b, y.*--text-column"):
        resolve(TaskData(train=str(path), label_column="y"))
    task, _ = resolve(TaskData(train=str(path), text_columns=("b",), label_column="y"))
    assert task.columns == ("b",)
    assert read_texts(path, ("a", "b")) == [[f"x{i}" for i in range(20)], [f"y{i}" for i in range(20)]]


# --- where the data come from, and what a run records -------------------------------------

def test_as_source():
    assert as_source("sst2") == "sst2"
    assert as_source("x.csv") == TaskData(train="x.csv")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"], "label": [0]})})
    assert as_source(dd).dataset is dd
    with pytest.raises(ValueError, match="Unknown task 'sst3'.*--train-file"):
        as_source("sst3")


def test_identity_names_the_files_and_their_contents(tmp_path):
    path = write_csv(tmp_path / "r.csv", ["text", "label"], rows(20))
    data = TaskData(train=str(path), text_columns=("text",), name="mine")
    record = identity(data)
    assert record["files"]["train"]["path"] == str(path.resolve()) and record["name"] == "mine"
    assert from_identity(record) == TaskData(train=str(path.resolve()), text_columns=("text",),
                                             name="mine")
    write_csv(path, ["text", "label"], rows(20)[:-1] + [("changed", "pos")])
    assert identity(data)["files"]["train"]["sha256"] != record["files"]["train"]["sha256"]


def test_a_saved_datasetdict_is_read_and_identified_by_content(tmp_path):
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict(
        {"text": [f"{s} {i}" for i in range(n)], "label": [i % 2 for i in range(n)]})
        for s, n in (("train", 20), ("test", 6))})
    dd.save_to_disk(str(tmp_path / "saved"))
    task, splits = resolve(str(tmp_path / "saved"))
    assert len(splits["test"]) == 6 and len(splits["validation"]) == 2
    assert identity(dd)["sha256"] == identity(str(tmp_path / "saved"))["sha256"]
    edited = datasets.DatasetDict({**dd, "test": dd["test"].map(
        lambda row, i: {"text": row["text"] + "!" if i == 5 else row["text"]}, with_indices=True)})
    assert identity(edited)["sha256"] != identity(dd)["sha256"]        # the content, not a repr
    with pytest.raises(DataError, match="cannot be read again from its record"):
        from_identity(identity(dd))


# --- bad data: each refused, its place named (the battery runs them through the CLI) ------

def bad(tmp_path, name, content, **data):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(DataError) as info:
        resolve(TaskData(train=str(path), **data))
    return str(info.value).replace(str(tmp_path) + "/", "")


BAD = [
    ("quote-not-closed.csv", 'text,label\n"open,1\nb,0\n', {}, "line 2: the row starting on this line opens a quoted field that is never closed"),
    ("quote-then-text.csv", 'text,label\nok,1\n"a"b,0\n', {}, "line 3: a quoting error"),
    ("extra-field.csv", "text,label\na,1\nb,0,x\n", {}, "line 3: 3 fields, the header has 2"),
    ("missing-field.tsv", "text\tlabel\na\t1\nb\n", {}, "line 3: 1 field, the header has 2"),
    ("no-label-column.csv", "text,sentiment\na,1\n", {}, "has no column 'label' (its columns: text, sentiment); give --label-column"),
    ("no-text-column.csv", "review,label\na,1\n", {"text_columns": ("text",)}, "has no column 'text' (its columns: review, label); give --text-column"),
    ("header-only.csv", "text,label\n", {}, "has a header but no examples"),
    ("empty.csv", "", {}, "is empty"),
    ("blank-text.csv", "text,label\na,1\n   ,0\n", {}, "line 3: the text in column 'text' is blank"),
    ("empty-text.jsonl", '{"text": "a", "label": 1}\n{"text": "", "label": 0}\n', {}, "line 2: the text in column 'text' is empty"),
    ("null-text.json", '[{"text": "a", "label": 1}, {"text": null, "label": 0}]', {}, "record 2: no text in column 'text'"),
    ("number-text.jsonl", '{"text": 4, "label": 1}\n\n{"text": 5, "label": 0}\n', {}, "line 1: column 'text' holds 4, not a text"),
    ("mixed-text.jsonl", '{"text": "a", "label": 1}\n\n{"text": 5, "label": 0}\n', {}, "line 3: column 'text' holds a number, and a string on line 1: mixed types"),
    ("no-label.csv", "text,label\na,1\nb,\n", {}, "line 3: no label in column 'label'"),
    ("mixed-labels.csv", "text,label\na,1\nb,0\nc,pos\n", {}, "line 4: mixed label types"),
    ("mixed-labels.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n', {}, "mixed"),
    ("nan-target.csv", "text,label\na,0.5\nb,nan\n", {}, "line 3: the regression target nan is not a finite number"),
    ("huge-target.csv", "text,label\na,0.5\nb,1e300\n", {}, "line 3: the regression target 1e+300 is not a finite number (in float32"),
    ("word-target.csv", "text,label\na,low\nb,high\n", {"task_type": "regression"}, "line 2: the label 'low' is not a number"),
    ("mixed-target.csv", "text,label\na,0.5\nb,high\n", {}, "line 3: mixed label types: the label 'high' (line 3) is a word and 0.5 (line 2) a number"),
    ("one-class.csv", "text,label\na,pos\nb,pos\n", {}, "every training label is 'pos'; a classifier needs at least two classes"),
    ("latin1.csv", "text,label\ncaf\xe9,1\n".encode("latin-1"), {}, "line 2: byte 0xe9 is not UTF-8"),
    ("sheet.csv", b"PK\x03\x04rest of a zip", {}, "is a ZIP archive (an Excel .xlsx file is one), not CSV text"),
    ("data.xlsx", "text,label\na,1\n", {}, "unsupported format '.xlsx'; give a CSV (.csv)"),
    ("bad.json", '[{"text": "a", "label": 1},]', {}, "line 1, column 28: not valid JSON"),
    ("lines.json", '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n', {}, "not valid JSON (Extra data) (one object per line is JSON Lines: name the file .jsonl)"),
    ("object.json", '{"text": ["a"], "label": [1]}', {}, "holds a JSON object; a .json data file holds an array of records"),
    ("not-objects.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', {}, "line 2: a JSON array, not an object"),
    ("bad-line.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0\n', {}, "line 2: not valid JSON"),
    ("twice.csv", "text,text,label\na,b,1\n", {}, "line 1: the header names ['text'] more than once"),
]


@pytest.mark.parametrize("name, content, data, says", BAD, ids=[b[0] for b in BAD])
def test_bad_data_is_refused_naming_the_place(tmp_path, name, content, data, says):
    message = bad(tmp_path, name, content, **data)
    assert message.startswith(name) and says in message, message


def test_a_validation_label_never_seen_in_training(tmp_path):
    train = write_csv(tmp_path / "train.csv", ["text", "label"], rows(10))
    dev = write_csv(tmp_path / "dev.csv", ["text", "label"], [("a", "pos"), ("b", "maybe")])
    with pytest.raises(DataError, match=r"dev.csv, line 3: the label 'maybe' never appears in "
                                        r"training \(the training labels: neg, pos\)"):
        resolve(TaskData(train=str(train), validation=str(dev)))
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(DataError, match="nowhere.csv does not exist"):
        resolve(TaskData(train=str(train), test=str(missing)))


def test_arguments_that_do_not_fit_together():
    with pytest.raises(ValueError, match="no data"):
        TaskData()
    with pytest.raises(ValueError, match="one text column, or two"):
        TaskData(train="a.csv", text_columns=("a", "b", "c"))
    with pytest.raises(ValueError, match="both a text column and the label column"):
        TaskData(train="a.csv", text_columns=("label",))
    with pytest.raises(ValueError, match="--task-type must be one of"):
        TaskData(train="a.csv", task_type="ranking")
    assert TaskData(train="a.csv", text_columns="review").text_columns == ("review",)
    assert onp.all([holdout_size(n, 2) <= n // 2 for n in range(4, 50)])
