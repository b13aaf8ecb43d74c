"""Tasks and data: the real GLUE files through GLUE_DIR, the other tasks' formats with
small files written here, the paper's splits, stratified subsets, bad files, and the
length-bucketed batches."""

import os
from pathlib import Path

import numpy as onp
import pytest

import minicompacter as mc
from minicompacter.harness.data.batches import Encoded, batch_order, encode
from minicompacter.harness.data.tasks import (GLUE_TASKS, DataError, get_task, load_task,
                                              stratified_subset, tasks)

from conftest import write_tsv

GLUE_DIR = os.environ.get("GLUE_DIR")
needs_glue = pytest.mark.skipif(not GLUE_DIR or not Path(GLUE_DIR).is_dir(),
                                reason="set GLUE_DIR to a GLUE directory")


def test_task_registry():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]
    assert {"synthetic-sentiment", "synthetic-paraphrase", "synthetic-similarity"} <= set(tasks())
    assert get_task("stsb").is_regression and get_task("mnli").num_labels == 3
    assert get_task("cola").metric == "matthews" and get_task("mrpc").metric == "accuracy_f1"
    with pytest.raises(ValueError, match="Unknown task 'sst3'; the tasks are: cola, sst2"):
        get_task("sst3")


# --- the real files ---------------------------------------------------------------------

@pytest.mark.slow
@needs_glue
def test_sst2_large_task_split():
    d = load_task("sst2")
    assert (len(d["train"]), len(d["validation"]), len(d["test"])) == (67349 - 1000, 1000, 872)
    assert d["train"].column_names == ["sentence", "label"]
    train, val = set(d["train"]["sentence"]), set(d["validation"]["sentence"])
    assert len(val - train) > 900            # held out (SST-2 repeats some phrases verbatim)
    again = load_task("sst2")
    assert again["validation"]["sentence"] == d["validation"]["sentence"]


@needs_glue
@pytest.mark.parametrize("name,dev", [("cola", 1043), ("stsb", 1500), ("wnli", 71)])
def test_small_task_dev_split_in_halves(name, dev):
    d = load_task(name)
    assert len(d["validation"]) == dev // 2 and len(d["test"]) == dev - dev // 2
    key = lambda ds: [tuple(r[c] for c in ds.column_names) for r in ds]
    assert not set(key(d["validation"])) & set(key(d["test"])) or name == "wnli"
    if name == "stsb":
        assert isinstance(d["train"]["label"][0], float)


@needs_glue
def test_train_size_is_seeded_and_stratified():
    full = load_task("cola")
    a, b, c = (load_task("cola", train_size=500, seed=s) for s in (0, 0, 1))
    assert a["train"]["sentence"] == b["train"]["sentence"] != c["train"]["sentence"]
    assert len(a["train"]) == 500
    share = onp.mean(full["train"]["label"])
    assert abs(onp.mean(a["train"]["label"]) - share) <= 1 / 500 + 1e-12
    assert a["test"]["sentence"] == full["test"]["sentence"]        # test is untouched
    s = load_task("stsb", train_size=300, seed=0)["train"]["label"]
    assert len(s) == 300 and 0 <= min(s) and max(s) <= 5


@needs_glue
def test_qnli_without_its_train_file_is_a_clear_error():
    with pytest.raises(DataError, match=r"QNLI/train.tsv does not exist.*sentence1, sentence2, label"):
        load_task("qnli")


# --- the other tasks' formats, in small files ----------------------------------------------

@pytest.fixture
def glue(tmp_path):
    pair = ["sentence1", "sentence2", "label"]
    rows = lambda n, k: [[f"first {i} \"quoted", f"second {i}", str(i % k)] for i in range(n)]
    for folder, k in (("MRPC", 2), ("RTE", 2), ("QQP", 2)):
        write_tsv(tmp_path / folder / "train.tsv", pair, rows(1200 if folder == "QQP" else 40, k))
        write_tsv(tmp_path / folder / "dev.tsv", pair, rows(20, k))
    write_tsv(tmp_path / "MNLI" / "train.tsv", pair, rows(1100, 3))
    write_tsv(tmp_path / "MNLI" / "dev_matched.tsv", pair, rows(30, 3))
    return tmp_path


@pytest.mark.parametrize("name", ["mrpc", "rte", "qqp", "mnli"])
def test_formats_of_other_tasks(glue, name):
    d = load_task(name, data_dir=glue)
    assert d["train"].column_names == ["sentence1", "sentence2", "label"]
    assert d["train"][0]["sentence1"].endswith('"quoted')           # no quoting
    if name in ("qqp", "mnli"):
        assert len(d["validation"]) == 1000 and len(d["test"]) in (20, 30)
    else:
        assert len(d["validation"]) == 10 and len(d["test"]) == 10
    assert set(d["train"]["label"]) == set(range(get_task(name).num_labels))


def test_glue_dir_from_the_environment(glue, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(glue))
    assert len(load_task("rte")["train"]) == 40


@pytest.mark.parametrize("rows,header,message", [
    ([["a", "b", "1"]], ["sentence1", "text", "label"], r"has no column \['sentence2'\]"),
    ([["a", "b", "2"]], ["sentence1", "sentence2", "label"], r"line 2: unknown label '2' for rte; expected 0 \(entailment\), 1 \(not_entailment\)"),
    ([["a", "b", "yes"]], ["sentence1", "sentence2", "label"], "unknown label 'yes'"),
    ([], ["sentence1", "sentence2", "label"], "has a header but no examples"),
    ([["a", "1"]], ["sentence1", "sentence2", "label"], "line 2: 2 fields, the header has 3"),
])
def test_bad_files(glue, rows, header, message):
    write_tsv(glue / "RTE" / "dev.tsv", header, rows)
    with pytest.raises(DataError, match=message):
        load_task("rte", data_dir=glue)


def test_missing_glue_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist; give --data-dir"):
        load_task("rte", data_dir=tmp_path / "nowhere")


def test_stratified_subset_keeps_proportions():
    labels = onp.array([0] * 70 + [1] * 20 + [2] * 10)
    idx = stratified_subset(labels, 10, seed=3)
    assert sorted(onp.bincount(labels[idx])) == [1, 2, 7]
    assert len(set(idx)) == 10
    scores = onp.linspace(0, 5, 101)
    idx = stratified_subset(scores, 20, seed=0, regression=True)
    assert len(idx) == 20 and len(onp.unique(onp.rint(scores[idx]))) == 6


def test_synthetic_tasks_load_with_train_size():
    d = load_task("synthetic-paraphrase", train_size=100, seed=1)
    assert len(d["train"]) == 100 and len(d["validation"]) == 500
    assert d["train"].column_names == ["sentence1", "sentence2", "label"]


# --- tokenising and batching ----------------------------------------------------------------

@pytest.fixture(scope="module")
def encoded():
    tiny = mc.load_pretrained("tiny")
    task = get_task("synthetic-paraphrase")
    ds = load_task("synthetic-paraphrase", train_size=300)["train"]
    return tiny, task, ds, Encoded(encode(ds, tiny.tokenizer, task, max_length=64), 0)


def test_encode_once_matches_tokenize(encoded):
    tiny, task, ds, enc = encoded
    direct = mc.tokenize(tiny.tokenizer, ds["sentence1"][:5], ds["sentence2"][:5], max_length=64)
    b = enc.batch(onp.arange(5))
    onp.testing.assert_array_equal(b["input_ids"], direct["input_ids"])
    onp.testing.assert_array_equal(b["token_type_ids"], direct["token_type_ids"])
    onp.testing.assert_array_equal(b["attention_mask"], direct["attention_mask"])
    onp.testing.assert_array_equal(b["labels"], ds["label"][:5])


def test_batches_cover_every_row_once_with_little_padding(encoded):
    _, _, _, enc = encoded
    order = batch_order(enc.lengths, 16, seed=[0, 1])
    assert sorted(onp.concatenate(order).tolist()) == list(range(len(enc)))
    padded = sum(len(b) * enc.lengths[b].max() for b in order)
    rng = onp.random.default_rng(0).permutation(len(enc))
    naive = sum(16 * enc.lengths[rng[i:i + 16]].max() for i in range(0, len(enc), 16))
    assert padded < 0.85 * naive                          # bucketing removes most padding
    assert all((a == b).all() for a, b in zip(order, batch_order(enc.lengths, 16, seed=[0, 1])))
    assert any((a != b).any() if len(a) == len(b) else True
               for a, b in zip(order, batch_order(enc.lengths, 16, seed=[0, 2])))
    evaluation = batch_order(enc.lengths, 16)
    assert onp.all(onp.diff(enc.lengths[onp.concatenate(evaluation)]) >= 0)


def test_batch_pads_to_the_longest_row(encoded):
    _, _, _, enc = encoded
    idx = onp.array([0, 1, 2])
    b = enc.batch(idx)
    T = enc.lengths[idx].max()
    assert b["input_ids"].shape == (3, T)
    onp.testing.assert_array_equal(b["attention_mask"].sum(1), enc.lengths[idx])
    assert (b["input_ids"][b["attention_mask"] == 0] == 0).all()


def test_a_byte_order_mark_and_blank_lines_at_the_end_are_accepted(glue):
    path = glue / "RTE" / "train.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes() + b"\n\n")
    d = load_task("rte", data_dir=glue)
    assert len(d["train"]) == 40 and d["train"].column_names == ["sentence1", "sentence2", "label"]


def test_a_file_that_is_not_utf8_names_the_line_and_the_byte(glue):
    (glue / "RTE" / "dev.tsv").write_bytes("sentence1\tsentence2\tlabel\nok\tok\t0\ncaf\xe9\tb\t1\n"
                                           .encode("latin-1"))
    with pytest.raises(DataError, match=r"RTE/dev.tsv, line 3: byte 0xe9 is not UTF-8.*iconv"):
        load_task("rte", data_dir=glue)


@pytest.mark.parametrize("score", ["-7", "5.01", "1e300", "nan", "-inf"])
def test_stsb_scores_outside_0_to_5_are_refused(glue, score):
    rows = [[f"a {i}", f"b {i}", "2.5"] for i in range(4)] + [["x", "y", score]]
    write_tsv(glue / "STS-B" / "train.tsv", ["sentence1", "sentence2", "label"], rows)
    write_tsv(glue / "STS-B" / "dev.tsv", ["sentence1", "sentence2", "label"], rows[:4])
    with pytest.raises(DataError, match=f"line 6: unknown label '{score}' for stsb; expected a "
                                        f"score from 0 to 5"):
        load_task("stsb", data_dir=glue)


def test_labels_from_the_hub_or_the_suite_are_checked_too():
    from minicompacter.harness.data.tasks import check_labels
    with pytest.raises(DataError, match=r"the hub, train split, row 1: label -1 is not one of rte's"):
        check_labels({"train": {"label": [0, -1]}}, get_task("rte"), "the hub")
    with pytest.raises(DataError, match="row 0: label inf"):
        check_labels({"validation": {"label": [float("inf")]}}, get_task("stsb"), "x")
    check_labels({"train": {"label": [0.0, 5.0, 2.4]}}, get_task("synthetic-similarity"), "x")


def test_a_large_task_needs_more_rows_than_its_held_out_validation(glue):
    with pytest.raises(DataError, match="has 1,000 rows, and 1,000 of them are held out"):
        load_task("qqp", data_dir=write_qqp(glue, 1000))
    assert len(load_task("qqp", data_dir=write_qqp(glue, 1001))["train"]) == 1


def write_qqp(glue, n):
    write_tsv(glue / "QQP" / "train.tsv", ["sentence1", "sentence2", "label"],
              [[f"q {i}", f"r {i}", str(i % 2)] for i in range(n)])
    return glue
