"""Your own data end to end, on the tiny model: a CSV, a JSON Lines file with string labels
and a TSV with two text columns each train, evaluate and predict from the command line and
from Python; a DatasetDict (in memory and saved) trains from Python; compare takes files.
The command-line runs and whole runs are slow; the unknown-flag message is not."""

import csv
import json
import re
import subprocess
import sys

import datasets
import pytest

import minicompacter as mc
from minicompacter.harness.data.tasks import DataError
from minicompacter.harness.formats.native import CONFIG
from minicompacter.harness.training.evaluate import predict_texts
from minicompacter.harness.training.watch import CURVES, LOG

SMALL = ("--model", "tiny", "--epochs", "2", "--batch-size", "8", "--max-length", "32")
CFG = mc.TrainConfig(epochs=2, batch_size=8, max_length=32, progress=False)
WORDS = {"positive": ["good", "great", "witty", "warm"], "negative": ["bad", "dull", "tedious", "flat"]}


def sentence(i, label):
    return f"a {WORDS[label][i % 4]} film, number {i}"


def labelled(n, start=0):
    return [(sentence(i, ("negative", "positive")[i % 2]), ("negative", "positive")[i % 2])
            for i in range(start, start + n)]


def write_csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter, lineterminator="\n").writerows([header, *rows])
    return path


def cli(*argv, cwd):
    done = subprocess.run([sys.executable, "-m", "minicompacter", *argv], capture_output=True,
                          text=True, cwd=cwd, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_an_unknown_flag_shows_the_command_s_usage(tmp_path):
    done = cli("finetune", "--method", "lora", "--out", "x", "--patiense", "3", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: python -m minicompacter finetune ")
    assert done.stderr.rstrip().endswith("error: unrecognized arguments: --patiense 3 (did you mean "
                                         "--patience?)")
    assert not (tmp_path / "x").exists()


# --- the command line ----------------------------------------------------------------------

@pytest.mark.slow
def test_a_csv_trains_evaluates_and_predicts_from_the_command_line(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled(40))
    write_csv(tmp_path / "test.csv", ["text", "label"], labelled(10, start=40))
    run = cli("finetune", "--train-file", "train.csv", "--test-file", "test.csv", "--method",
              "bitfit", *SMALL, "--out", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stdout + run.stderr                 # no progress bars in a file
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"] == "train" and set(metrics["test"]) == {"accuracy", "macro_f1", "score"}
    assert len([l for l in run.stdout.splitlines() if l.startswith("epoch ")]) == 2
    assert "data: validation: 4 rows held out of the training data" in run.stdout
    assert (tmp_path / "run" / LOG).exists() and (tmp_path / "run" / CURVES).exists()
    config = json.loads((tmp_path / "run" / CONFIG).read_text())
    assert config["label_names"] == ["negative", "positive"] and config["text_columns"] == ["text"]
    assert config["data"]["files"]["train"]["path"] == str((tmp_path / "train.csv").resolve())

    again = cli("evaluate", "--checkpoint", "run", cwd=tmp_path)       # the recorded files
    assert again.returncode == 0, again.stderr
    assert last_json(again.stdout) == {"validation": metrics["validation"], "test": metrics["test"]}
    assert f"test: accuracy {metrics['test']['accuracy']:.4f}, macro_f1" in again.stdout
    other = cli("evaluate", "--checkpoint", "run", "--test-file", "train.csv", cwd=tmp_path)
    assert other.returncode == 0 and last_json(other.stdout)["validation"] is None

    said = cli("predict", "--checkpoint", "run", "--text", "a warm film", cwd=tmp_path)
    assert said.returncode == 0 and re.match(r"(negative|positive)\tnegative=0\.\d+ positive=0\.\d+\t"
                                             r"a warm film\n$", said.stdout), said.stdout
    rows = cli("predict", "--checkpoint", "run", "--test-file", "test.csv", "--json", cwd=tmp_path)
    assert [json.loads(l)["text"] for l in rows.stdout.splitlines()] == [t for t, _ in labelled(10, 40)]


@pytest.mark.slow
def test_json_lines_with_string_labels_and_no_test_data(tmp_path):
    lines = lambda rows: "".join(json.dumps({"review": t, "sentiment": l}) + "\n" for t, l in rows)
    (tmp_path / "train.jsonl").write_text(lines(labelled(40)))
    (tmp_path / "dev.jsonl").write_text(lines(labelled(8, start=40)))
    run = cli("finetune", "--task", "reviews", "--train-file", "train.jsonl", "--validation-file",
              "dev.jsonl", "--text-column", "review", "--label-column", "sentiment", "--method",
              "lora", *SMALL, "--out", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "data: test: none (no test data given: no test metrics)" in run.stdout
    assert "no test data, no test score" in run.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"] == "reviews" and metrics["test"] is None
    again = cli("evaluate", "--checkpoint", "run", cwd=tmp_path)
    assert last_json(again.stdout) == {"validation": metrics["validation"], "test": None}
    assert "test: no data" in again.stdout
    said = cli("predict", "--checkpoint", "run", "--test-file", "dev.jsonl", cwd=tmp_path)
    assert said.returncode == 0 and len(said.stdout.splitlines()) == 8
    assert all(l.split("\t")[0] in ("negative", "positive") for l in said.stdout.splitlines())


@pytest.mark.slow
def test_a_tsv_with_two_text_columns_as_regression(tmp_path):
    pairs = [(f"first {i}", f"second {i % 7}", f"{(i % 5) * 1.25:g}") for i in range(40)]
    write_csv(tmp_path / "pairs.tsv", ["premise", "hypothesis", "similarity"], pairs, "\t")
    write_csv(tmp_path / "test.tsv", ["premise", "hypothesis", "similarity"], pairs[:10], "\t")
    run = cli("finetune", "--train-file", "pairs.tsv", "--test-file", "test.tsv", "--label-column",
              "similarity", "--method", "compacter++", "--reduction-factor", "8", *SMALL,
              "--patience", "1", "--out", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"pearson", "spearmanr", "score"}
    assert metrics["config"]["train"]["patience"] == 1
    again = cli("evaluate", "--checkpoint", "run", cwd=tmp_path)
    assert last_json(again.stdout) == {"validation": metrics["validation"], "test": metrics["test"]}
    said = cli("predict", "--checkpoint", "run", "--text", "first 3", "--pair", "second 3",
               cwd=tmp_path)
    assert said.returncode == 0 and re.fullmatch(r"-?\d+\.\d{4}\tfirst 3 \| second 3\n", said.stdout)


@pytest.mark.slow
def test_compare_takes_data_files(tmp_path):
    write_csv(tmp_path / "train.csv", ["text", "label"], labelled(24))
    done = cli("compare", "--train-file", "train.csv", "--methods", "bitfit,lora", "--model", "tiny",
               "--epochs", "1", "--max-length", "32", "--out", "cmp", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "score: the validation split's (there is no test data" in done.stdout
    assert [r["method"] for r in json.loads((tmp_path / "cmp" / "compare.json").read_text())] == [
        "bitfit", "lora"]
    assert len(re.findall(r"^epoch 1/1 step", done.stdout, flags=re.M)) == 2     # each run's line


# --- from Python ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return mc.load_pretrained("tiny")


@pytest.mark.slow
def test_files_from_python(tiny, tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in labelled(30)))
    data = mc.TaskData(train=str(path), test=str(path), name="mine")
    m = mc.finetune(tiny, data, "bitfit", CFG, out=tmp_path / "run")
    assert m["task"] == "mine" and m["config"]["data"]["name"] == "mine"
    assert mc.evaluate_checkpoint(tmp_path / "run") == {"validation": m["validation"], "test": m["test"]}
    out = predict_texts(tmp_path / "run", ["a good film"])
    assert set(out[0]["probabilities"]) == {"negative", "positive"}
    plain = mc.finetune(tiny, str(path), "bitfit", CFG)          # a path names the data too
    assert plain["task"] == "reviews" and plain["test"] is None
    with open(path, "a") as f:                                   # the data change
        f.write(json.dumps({"text": "one more", "label": "positive"}) + "\n")
    with pytest.warns(UserWarning, match="the train, test data of .* changed since it was trained"):
        mc.evaluate_checkpoint(tmp_path / "run")
    with pytest.raises(ValueError, match=r"other settings \(data.files.test.sha256: .*data.files"
                                         r".train.sha256: "):
        mc.finetune(tiny, data, "bitfit", CFG, out=tmp_path / "run")


@pytest.mark.slow
def test_a_datasetdict_in_memory_and_saved(tiny, tmp_path):
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    def split(rows):
        return datasets.Dataset.from_dict({"text": [t for t, _ in rows],
                                           "label": [int(l == "positive") for _, l in rows]},
                                          features=features)
    dd = datasets.DatasetDict({"train": split(labelled(30)), "test": split(labelled(8, 30)),
                               "unsupervised": split(labelled(4, 50))})
    m = mc.finetune(tiny, dd, "lora", CFG, out=tmp_path / "memory")
    assert m["config"]["data"]["dataset"] == "a DatasetDict in memory"
    with pytest.raises(DataError, match="cannot be read again from its record"):
        mc.evaluate_checkpoint(tmp_path / "memory")
    assert mc.evaluate_checkpoint(tmp_path / "memory", dd) == {"validation": m["validation"],
                                                                "test": m["test"]}
    dd.save_to_disk(str(tmp_path / "saved"))
    saved = mc.finetune(tiny, str(tmp_path / "saved"), "lora", CFG)
    assert saved["test"] == m["test"] and saved["validation"] == m["validation"]
    assert saved["config"]["data"]["sha256"] == m["config"]["data"]["sha256"]


@pytest.mark.slow
def test_a_regression_checkpoint_of_a_file_predicts_and_exports(tiny, tmp_path):
    path = write_csv(tmp_path / "scores.csv", ["sentence", "score"],
                     [(f"sentence {i}", f"{i / 10}") for i in range(30)])
    mc.finetune(tiny, mc.TaskData(train=str(path), label_column="score"),
                mc.method_config("compacter++", reduction_factor=8), CFG, out=tmp_path / "run")
    assert set(predict_texts(tmp_path / "run", ["sentence 3"])[0]) == {"score"}
    summary = mc.export_adapter(tmp_path / "run", "adapters", tmp_path / "exported")
    assert summary["written"]
