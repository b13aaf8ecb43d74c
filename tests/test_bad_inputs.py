"""The battery: bad inputs and faults, each through the command line in a process of its
own, on the tiny model and small data.

  bad input       exit code 2 (argparse's own errors too), stderr names the problem with
                  no traceback, and every file that was there before is byte-identical
                  after (the only file a refused run may leave is an output directory's
                  lock file);
  interruption    SIGINT, SIGTERM and SIGKILL at several points, some in the middle of a
                  checkpoint write (MINICOMPACTER_PAUSE_WRITE pauses inside the write): the
                  exit code says which, the message says what is on disk, the best
                  checkpoint loads, and --resume ends with exactly the uninterrupted run;
  two writers     the second run into a directory in use is refused and the first run's
                  files are untouched; the first then finishes as if alone.

The bad inputs run a few at a time (a module fixture), each in a workspace of its own.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as onp
import pytest
from safetensors.numpy import load_file, save_file

import minicompacter as mc
from minicompacter.core.encoder import init_encoder
from minicompacter.harness.formats.dispatch import load_adapter
from minicompacter.harness.formats.files import PAUSE_READ, PAUSE_WRITE
from minicompacter.harness.formats.native import CONFIG, LAST, WEIGHTS
from minicompacter.harness.training.rundir import HISTORY, LOCK, METRICS
from minicompacter.harness.training.train import TrainConfig

from conftest import finished_and_unfinished, write_checkpoint, write_tsv

pytestmark = pytest.mark.slow        # command-line batteries and whole runs: python -m pytest -m "not slow" skips them

TASK = "synthetic-sentiment"
# the run every fault interrupts, and the settings of the runs the bad inputs meet
COMMON = ("--task", TASK, "--model", "tiny", "--train-size", "64", "--epochs", "3",
          "--batch-size", "16", "--max-length", "32", "--reduction-factor", "8", "--no-progress")
RUN = ("--method", "compacter++") + COMMON
METHOD = mc.method_config("compacter++", reduction_factor=8)
CFG = TrainConfig(epochs=3, batch_size=16, max_length=32, progress=False)
FT = ("finetune",) + RUN
OUT = ("--out", "{ws}/out")
GLUE_RUN = ("finetune", "--method", "bitfit", "--model", "tiny", "--epochs", "1",
            "--max-length", "32", "--no-progress", "--data-dir", "{ws}/data") + OUT
OWN = ("finetune", "--method", "bitfit", "--model", "tiny", "--epochs", "1", "--max-length", "32") + OUT
TRAIN_CSV = ("--train-file", "{ws}/d/train.csv")


def command(argv, fsize=None):
    """python -m minicompacter ARGV, under a file-size limit if given."""
    if fsize is None:
        return [sys.executable, "-m", "minicompacter", *argv]
    return [sys.executable, "-c", "import resource, runpy, sys; "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize})); "
            "sys.argv = ['minicompacter'] + sys.argv[1:]; "
            "runpy.run_module('minicompacter', run_name='__main__')", *argv]


def cli(*argv, cwd=None, env=None, fsize=None):
    return subprocess.run(command(argv, fsize), capture_output=True, text=True, cwd=cwd,
                          timeout=300, env=env)


def files(root):
    """{relative path: bytes} of every file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


# --- what the cases start from ----------------------------------------------------------------

class World(NamedTuple):
    finished: Path             # a finished run with RUN's settings
    unfinished: Path           # the same run, stopped after 5 steps
    model: Path                # tiny as a Hugging Face directory
    other_model: Path          # a one-layer encoder as a Hugging Face directory
    reference: dict            # metrics.json of the finished run
    history: list


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    tiny = mc.load_pretrained("tiny")
    finished_and_unfinished(root, tiny, TASK, METHOD, CFG, 64, stop_at=5)
    write_checkpoint(root / "model", tiny)
    one_layer = tiny.config.__class__(**{**vars(tiny.config), "num_layers": 1})
    write_checkpoint(root / "other", tiny._replace(
        config=one_layer, params=init_encoder(onp.random.default_rng(1), one_layer)))
    return World(root / "finished", root / "unfinished", root / "model", root / "other",
                 json.loads((root / "finished" / METRICS).read_text()),
                 json.loads((root / "finished" / HISTORY).read_text()))


def copy(source, dest):
    shutil.copytree(source, dest)
    (dest / LOCK).unlink(missing_ok=True)
    return dest


def with_run(kind="finished", edit=None):
    """A setup: the world's finished (or unfinished) run in ws/out, then edit(ws/out)."""
    def setup(ws, world):
        out = copy(getattr(world, kind), ws / "out")
        if edit:
            edit(out)
    return setup


def with_model(edit=None):
    """A setup: tiny's directory in ws/model, then edit(ws/model)."""
    def setup(ws, world):
        model = copy(world.model, ws / "model")
        if edit:
            edit(model)
    return setup


def json_edit(name, change):
    """An edit that replaces the JSON in a file by change(its value)."""
    def edit(d):
        (d / name).write_text(json.dumps(change(json.loads((d / name).read_text()))))
    return edit


def without(key):
    return lambda value: {k: v for k, v in value.items() if k != key}


def tensors_edit(name, change):
    """An edit of a safetensors file: change({name: array}) -> {name: array}."""
    def edit(d):
        save_file(change(load_file(str(d / name))), str(d / name))
    return edit


def scaled(factor, key="head.w"):
    return lambda t: {**t, key: (t[key] * factor).astype(onp.float32)}


PAIR = ["sentence1", "sentence2", "label"]
SINGLE = ["sentence", "label"]


def rows(n, label=lambda i: str(i % 2), pair=True):
    return [([f"first sentence {i}", f"second sentence {i}"] if pair else [f"a sentence {i}"])
            + [label(i)] for i in range(n)]


def with_glue(folder="RTE", train=None, dev=None, header=PAIR, dev_file="dev.tsv"):
    """A setup: ws/data/FOLDER/train.tsv and dev.tsv, 40 and 20 good rows unless given
    (rows, or raw bytes)."""
    def setup(ws, world):
        d = ws / "data" / folder
        for name, content, n in (("train.tsv", train, 40), (dev_file, dev, 20)):
            if isinstance(content, bytes):
                d.mkdir(parents=True, exist_ok=True)
                (d / name).write_bytes(content)
            elif content != "absent":
                write_tsv(d / name, header, content if content is not None
                          else rows(n, pair=len(header) == 3))
    return setup


def tsv_bytes(header, body, encoding="utf-8"):
    return ("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in body)).encode(encoding)


def write_file(relative, content):
    def setup(ws, world):
        (ws / relative).parent.mkdir(parents=True, exist_ok=True)
        (ws / relative).write_text(content)
    return setup


def write_bytes(relative, content):
    def setup(ws, world):
        (ws / relative).parent.mkdir(parents=True, exist_ok=True)
        (ws / relative).write_bytes(content)
    return setup


def csv_text(header, body):
    return "".join(",".join(r) + "\n" for r in [header] + body)


GOOD = [[f"sentence {i}", ("neg", "pos")[i % 2]] for i in range(20)]


def both(*setups):
    def setup(ws, world):
        for s in setups:
            s(ws, world)
    return setup


# --- the bad inputs -------------------------------------------------------------------------------

class Case(NamedTuple):
    id: str
    argv: tuple
    says: str                        # what stderr must contain (a fragment of the message)
    setup: Callable = lambda ws, world: None
    fsize: int = None                # a file-size limit (bytes) for the process


STSB = ("--task", "stsb")
RTE = ("--task", "rte")
EVAL = ("evaluate", "--checkpoint", "{ws}/out")
RESUME = FT + OUT + ("--resume",)

CASES = [
    # arguments
    Case("epochs-0", FT + OUT + ("--epochs", "0"), "epochs (--epochs) must be at least 1"),
    Case("batch-size-0", FT + OUT + ("--batch-size", "0"), "batch_size (--batch-size) must be at least 1"),
    Case("eval-batch-size-0", FT + OUT + ("--eval-batch-size", "0"), "eval_batch_size (--eval-batch-size)"),
    Case("max-length-2", FT + OUT + ("--max-length", "2"), "max_length (--max-length) must be at least 8"),
    Case("max-length-over-positions", FT + OUT + ("--max-length", "1000"),
         "exceeds the model's 128 position embeddings; use --max-length 128"),
    Case("lr-inf", FT + OUT + ("--lr", "inf"), "lr (--lr) must be a positive finite number"),
    Case("lr-nan", FT + OUT + ("--lr", "nan"), "lr (--lr) must be a positive finite number"),
    Case("lr-negative", FT + OUT + ("--lr=-1e-3",), "lr (--lr) must be a positive finite number"),
    Case("lr-zero", FT + OUT + ("--lr", "0"), "lr (--lr) must be a positive finite number"),
    Case("eval-every-negative", FT + OUT + ("--eval-every", "-1"), "eval_every (--eval-every) must be at least 1"),
    Case("eval-every-0", FT + OUT + ("--eval-every", "0"), "eval_every (--eval-every) must be at least 1"),
    Case("seed-negative", FT + OUT + ("--seed", "-1"), "seed (--seed) must be a non-negative integer"),
    Case("warmup-ratio-1.5", FT + OUT + ("--warmup-ratio", "1.5"), "warmup_ratio (--warmup-ratio) must be in [0, 1)"),
    Case("warmup-ratio-nan", FT + OUT + ("--warmup-ratio", "nan"), "warmup_ratio (--warmup-ratio)"),
    Case("weight-decay-negative", FT + OUT + ("--weight-decay", "-1"), "weight_decay (--weight-decay)"),
    Case("max-grad-norm-0", FT + OUT + ("--max-grad-norm", "0"), "max_grad_norm (--max-grad-norm)"),
    Case("max-grad-norm-inf", FT + OUT + ("--max-grad-norm", "inf"), "max_grad_norm (--max-grad-norm)"),
    Case("train-size-0", FT + OUT + ("--train-size", "0"), "--train-size must be at least 1"),
    Case("unknown-task", FT + OUT + ("--task", "sst3"), "Unknown task 'sst3'"),
    Case("unknown-method", FT + OUT + ("--method", "loraa"), "Unknown method 'loraa'"),
    Case("reduction-factor-0", FT + OUT + ("--reduction-factor", "0"), "reduction_factor must be a positive integer"),
    Case("bottleneck-zero", FT + OUT + ("--reduction-factor", "64"), "makes the bottleneck of a width-32 model zero"),
    Case("phm-dim-0", FT + OUT + ("--phm-dim", "0"), "phm_dim must be at least 1"),
    Case("phm-dim-3", FT + OUT + ("--phm-dim", "3"), "phm_dim 3 does not divide the widths [32, 4]"),
    Case("compacter-on-tiny", ("finetune", "--task", TASK, "--method", "compacter", "--model", "tiny")
         + OUT, "Or keep phm_dim 4 with reduction_factor 8 (--reduction-factor 8"),
    Case("out-empty", FT + ("--out", ""), "--out is empty"),
    Case("resume-and-replace", FT + OUT + ("--resume", "--replace"), "give one of them"),
    Case("resume-nothing", RESUME, "nothing to resume"),
    Case("epochs-not-a-number", FT + OUT + ("--epochs", "three"), "argument --epochs: invalid int value"),
    Case("pooling-unknown", FT + OUT + ("--pooling", "max"), "argument --pooling: invalid choice"),
    Case("out-missing", FT, "the following arguments are required: --out"),
    Case("compare-unknown-method", ("compare", "--methods", "bitfit,nope") + COMMON + OUT,
         "Unknown method 'nope'"),
    Case("compare-no-method", ("compare", "--task", TASK, "--methods", " , ", "--model", "tiny") + OUT,
         "names no method"),
    Case("compare-method-twice", ("compare", "--task", TASK, "--methods", "lora,lora",
                                  "--model", "tiny") + OUT, "['lora'] more than once"),
    Case("compare-later-method-invalid", ("compare", "--task", TASK, "--methods", "bitfit,compacter",
                                          "--model", "tiny", "--epochs", "1") + OUT,
         "--reduction-factor 8"),
    Case("compare-unknown-task", ("compare", "--task", "sst3", "--methods", "bitfit",
                                  "--model", "tiny") + OUT, "Unknown task 'sst3'"),
    Case("count-unknown-method", ("count", "--model", "tiny", "--method", "nope"), "Unknown method 'nope'"),
    Case("encode-unknown-model", ("encode", "--model", "no-such/model!"), "Unknown model 'no-such/model!'"),
    Case("demo-unknown-model", ("demo", "--model", "./nowhere") + OUT, "Unknown model './nowhere'"),
    Case("evaluate-no-checkpoint", EVAL, f"{CONFIG} does not exist"),
    Case("evaluate-wrong-task", EVAL + STSB, "holds a head with 2 outputs", with_run()),
    # data files (GLUE format, --data-dir)
    Case("data-dir-missing", GLUE_RUN + RTE, "GLUE directory {ws}/data does not exist"),
    Case("train-file-missing", GLUE_RUN + RTE, "RTE/train.tsv does not exist",
         with_glue(train="absent")),
    Case("column-missing", GLUE_RUN + RTE, "has no column ['sentence2']",
         with_glue(train=[["a", "b", "1"]], header=["sentence1", "text", "label"])),
    Case("field-count", GLUE_RUN + RTE, "line 3: 2 fields, the header has 3",
         with_glue(train=rows(1) + [["only one", "1"]])),
    Case("label-out-of-range", GLUE_RUN + RTE, "line 2: unknown label '2' for rte",
         with_glue(train=[["a", "b", "2"]])),
    Case("label-not-a-number", GLUE_RUN + RTE, "unknown label 'yes'", with_glue(dev=[["a", "b", "yes"]])),
    Case("label-empty", GLUE_RUN + RTE, "unknown label ''", with_glue(train=[["a", "b", ""]])),
    Case("label-float-for-classes", GLUE_RUN + ("--task", "sst2"), "unknown label '1.0' for sst2",
         with_glue("SST-2", train=[["a film", "1.0"]], header=SINGLE)),
    Case("stsb-negative", GLUE_RUN + STSB, "unknown label '-7' for stsb; expected a score from 0 to 5",
         with_glue("STS-B", train=rows(3, lambda i: "-7"))),
    Case("stsb-overflows-float32", GLUE_RUN + STSB, "unknown label '1e300'",
         with_glue("STS-B", train=rows(3, lambda i: "1e300"))),
    Case("stsb-nan", GLUE_RUN + STSB, "unknown label 'nan'", with_glue("STS-B", dev=rows(3, lambda i: "nan"))),
    Case("stsb-inf", GLUE_RUN + STSB, "unknown label 'inf'", with_glue("STS-B", train=rows(3, lambda i: "inf"))),
    Case("stsb-above-5", GLUE_RUN + STSB, "unknown label '5.5'", with_glue("STS-B", train=rows(3, lambda i: "5.5"))),
    Case("latin-1", GLUE_RUN + RTE, "line 3: byte 0xe9 is not UTF-8",
         with_glue(train=tsv_bytes(PAIR, [["ok", "ok", "0"], ["caf\u00e9", "b", "1"]], "latin-1"))),
    Case("empty-file", GLUE_RUN + RTE, "train.tsv is empty", with_glue(train=b"")),
    Case("header-only", GLUE_RUN + RTE, "has a header but no examples", with_glue(train=[])),
    Case("blank-line-inside", GLUE_RUN + RTE, "line 3 is blank",
         with_glue(train=tsv_bytes(PAIR, [["a", "b", "0"], [], ["c", "d", "1"]]))),
    Case("sst2-too-small", GLUE_RUN + ("--task", "sst2"), "1,000 of them are held out as the validation split",
         with_glue("SST-2", train=rows(1000, pair=False), header=SINGLE)),
    Case("dev-of-one-row", GLUE_RUN + RTE, "the validation split is empty",
         with_glue(dev=rows(1))),
    Case("mnli-dev-missing", GLUE_RUN + ("--task", "mnli"), "dev_matched.tsv does not exist",
         with_glue("MNLI", dev_file="dev_mismatched.tsv")),
    # your own data files (--train-file ...)
    Case("own-file-missing", OWN + ("--train-file", "{ws}/nowhere.csv"), "{ws}/nowhere.csv does not exist"),
    Case("own-format-unsupported", OWN + ("--train-file", "{ws}/d/train.xlsx"), "unsupported format '.xlsx'",
         write_file("d/train.xlsx", csv_text(["text", "label"], GOOD))),
    Case("own-file-a-spreadsheet", OWN + TRAIN_CSV, "is a ZIP archive (an Excel .xlsx file is one), not CSV text",
         write_bytes("d/train.csv", b"PK\x03\x04" + bytes(40))),
    Case("own-file-a-directory", OWN + ("--train-file", "{ws}/d/dir.csv"), "is a directory",
         lambda ws, world: (ws / "d" / "dir.csv").mkdir(parents=True)),
    Case("own-not-utf8", OWN + TRAIN_CSV, "train.csv, line 3: byte 0xe9 is not UTF-8",
         write_bytes("d/train.csv", csv_text(["text", "label"], GOOD[:1] + [["caf\u00e9", "pos"]]).encode("latin-1"))),
    Case("own-quote-not-closed", OWN + TRAIN_CSV, "train.csv, line 3: the row starting on this line opens a quoted field that is never closed",
         write_file("d/train.csv", csv_text(["text", "label"], GOOD[:1] + [['"open', "pos"]] + GOOD[1:]))),
    Case("own-quote-then-text", OWN + TRAIN_CSV, "train.csv, line 2: a quoting error",
         write_file("d/train.csv", csv_text(["text", "label"], [['"a" b', "pos"]] + GOOD))),
    Case("own-field-count", OWN + TRAIN_CSV, "train.csv, line 4: 3 fields, the header has 2",
         write_file("d/train.csv", csv_text(["text", "label"], GOOD[:2] + [["a", "b", "pos"]]))),
    Case("own-column-missing", OWN + TRAIN_CSV, "train.csv has no column 'label' (its columns: text, sentiment); give --label-column",
         write_file("d/train.csv", csv_text(["text", "sentiment"], GOOD))),
    Case("own-text-column-missing", OWN + TRAIN_CSV + ("--text-column", "review"),
         "has no column 'review' (its columns: text, label); give --text-column",
         write_file("d/train.csv", csv_text(["text", "label"], GOOD))),
    Case("own-empty-split", OWN + TRAIN_CSV + ("--test-file", "{ws}/d/test.csv"), "test.csv has a header but no examples",
         both(write_file("d/train.csv", csv_text(["text", "label"], GOOD)), write_file("d/test.csv", "text,label\n"))),
    Case("own-empty-file", OWN + TRAIN_CSV, "train.csv is empty", write_file("d/train.csv", "")),
    Case("own-label-unseen", OWN + TRAIN_CSV + ("--validation-file", "{ws}/d/dev.csv"),
         "dev.csv, line 3: the label 'maybe' never appears in training (the training labels: neg, pos)",
         both(write_file("d/train.csv", csv_text(["text", "label"], GOOD)),
              write_file("d/dev.csv", csv_text(["text", "label"], [["a", "pos"], ["b", "maybe"]])))),
    Case("own-labels-mixed", OWN + ("--train-file", "{ws}/d/train.jsonl"), "train.jsonl, line 3: mixed label types",
         write_file("d/train.jsonl", "".join(json.dumps({"text": f"t{i}", "label": [0, 1, "pos"][i % 3]}) + "\n"
                                             for i in range(9)))),
    Case("own-target-not-finite", OWN + TRAIN_CSV, "train.csv, line 4: the regression target inf is not a finite number",
         write_file("d/train.csv", csv_text(["text", "label"], [["a", "0.5"], ["b", "1.5"], ["c", "inf"]]))),
    Case("own-text-empty", OWN + TRAIN_CSV, "train.csv, line 3: the text in column 'text' is empty",
         write_file("d/train.csv", csv_text(["text", "label"], GOOD[:1] + [["", "pos"]] + GOOD[1:]))),
    Case("own-text-blank", OWN + TRAIN_CSV, "train.csv, line 3: the text in column 'text' is blank",
         write_file("d/train.csv", csv_text(["text", "label"], GOOD[:1] + [["   ", "pos"]] + GOOD[1:]))),
    Case("own-json-broken", OWN + ("--train-file", "{ws}/d/train.json"), "train.json, line 2, column 1: not valid JSON",
         write_file("d/train.json", '[{"text": "a", "label": 1}\n{"text": "b", "label": 0}]')),
    Case("own-jsonl-not-an-object", OWN + ("--train-file", "{ws}/d/train.jsonl"), "train.jsonl, line 2: a JSON array, not an object",
         write_file("d/train.jsonl", '{"text": "a", "label": 1}\n["b", 0]\n')),
    Case("own-flag-without-files", OWN + ("--task", TASK, "--text-column", "text"), "--text-column applies to data files"),
    Case("own-data-dir-with-files", OWN + TRAIN_CSV + ("--data-dir", "{ws}/d"), "--data-dir is a GLUE directory",
         write_file("d/train.csv", csv_text(["text", "label"], GOOD))),
    Case("own-no-task-no-file", OWN, "give --task (a GLUE or synthetic task) or --train-file"),
    Case("own-too-few-for-a-holdout", OWN + TRAIN_CSV, "too few to hold out a validation split",
         write_file("d/train.csv", csv_text(["text", "label"], GOOD[:3]))),
    Case("own-evaluate-bad-test-file", EVAL + ("--test-file", "{ws}/d/test.csv"), "test.csv, line 2: the label '7' never appears in training",
         both(with_run(), write_file("d/test.csv", csv_text(["sentence", "label"], [["a", "7"]])))),
    Case("own-predict-column-missing", ("predict", "--checkpoint", "{ws}/out", "--test-file", "{ws}/d/test.csv"),
         "test.csv has no column 'sentence' (its columns: review); give --text-column",
         both(with_run(), write_file("d/test.csv", "review\na film\n"))),
    Case("own-compare-bad-file", ("compare", "--methods", "bitfit,lora", "--model", "tiny", "--epochs", "1",
                                  "--train-file", "{ws}/d/train.csv") + OUT, "train.csv, line 3: 1 field, the header has 2",
         write_file("d/train.csv", csv_text(["text", "label"], GOOD[:1] + [["lonely"]] + GOOD[1:]))),
    Case("patience-0", FT + OUT + ("--patience", "0"), "patience (--patience) must be at least 1"),
    Case("unknown-flag", FT + OUT + ("--patiense", "2"), "unrecognized arguments: --patiense 2 (did you mean --patience?)"),
    # model directories (--model)
    Case("model-no-config", FT + OUT + ("--model", "{ws}/model"), "has no config.json",
         with_model(lambda d: (d / "config.json").unlink())),
    Case("model-config-not-json", FT + OUT + ("--model", "{ws}/model"), "config.json is not valid JSON",
         with_model(lambda d: (d / "config.json").write_text("{'hidden_size': 32"))),
    Case("model-config-a-list", FT + OUT + ("--model", "{ws}/model"), "config.json holds [1, 2], not a JSON object",
         with_model(lambda d: (d / "config.json").write_text("[1, 2]"))),
    Case("model-config-lacks-hidden-size", FT + OUT + ("--model", "{ws}/model"), "has no 'hidden_size'",
         with_model(json_edit("config.json", without("hidden_size")))),
    Case("model-type-gpt2", FT + OUT + ("--model", "{ws}/model"), "model_type 'gpt2' is not supported",
         with_model(json_edit("config.json", lambda c: {**c, "model_type": "gpt2"}))),
    Case("model-no-weights", FT + OUT + ("--model", "{ws}/model"), "has no model.safetensors",
         with_model(lambda d: (d / "model.safetensors").unlink())),
    Case("model-pickle-only", FT + OUT + ("--model", "{ws}/model"), "pytorch_model.bin, a pickle file",
         with_model(lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"))),
    Case("model-pickle-file-named", FT + OUT + ("--model", "{ws}/model/pytorch_model.bin"),
         "is a pickle file", with_model(lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"))),
    Case("model-weights-corrupt", FT + OUT + ("--model", "{ws}/model"), "cannot be read as safetensors",
         with_model(lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00garbage"))),
    Case("model-shard-outside", FT + OUT + ("--model", "{ws}/model"),
         "lists the shard '../../etc/passwd', which is not a file of",
         with_model(lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors.index.json")
                               .write_text(json.dumps({"weight_map": {"x": "../../etc/passwd"}}))))),
    Case("model-shard-absolute", FT + OUT + ("--model", "{ws}/model"), "which is not a file of",
         with_model(lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors.index.json")
                               .write_text(json.dumps({"weight_map": {"x": "/etc/hostname"}}))))),
    Case("model-shard-missing", FT + OUT + ("--model", "{ws}/model"), "is listed in model.safetensors.index.json but missing",
         with_model(lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors.index.json")
                               .write_text(json.dumps({"weight_map": {"x": "part-1.safetensors"}}))))),
    Case("model-index-without-weight-map", FT + OUT + ("--model", "{ws}/model"), "has no 'weight_map'",
         with_model(lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors.index.json")
                               .write_text("{}")))),
    Case("model-no-tokenizer", FT + OUT + ("--model", "{ws}/model"), "neither tokenizer.json nor vocab.txt",
         with_model(lambda d: (d / "tokenizer.json").unlink())),
    Case("model-shapes-differ", FT + OUT + ("--model", "{ws}/model"), "but config.json implies (48, 32)",
         with_model(json_edit("config.json", lambda c: {**c, "intermediate_size": 48}))),
    Case("model-weights-nan", FT + OUT + ("--model", "{ws}/model"), "holds non-finite values",
         with_model(tensors_edit("model.safetensors", scaled(onp.nan, "embeddings.LayerNorm.weight")))),
    Case("model-path-missing", FT + OUT + ("--model", "./no-model-here"), "Unknown model './no-model-here'"),
    Case("model-dir-max-length", FT + OUT + ("--model", "{ws}/model", "--max-length", "200"),
         "exceeds the model's 128 position embeddings", with_model()),
    # checkpoints (evaluate, --resume, an existing run)
    Case("checkpoint-config-null", EVAL, f"{CONFIG} holds null, not a JSON object",
         with_run(edit=lambda d: (d / CONFIG).write_text("null"))),
    Case("checkpoint-config-lacks-num-labels", EVAL, "has no 'num_labels'",
         with_run(edit=json_edit(CONFIG, without("num_labels")))),
    Case("checkpoint-config-not-json", EVAL, f"{CONFIG} is not valid JSON",
         with_run(edit=lambda d: (d / CONFIG).write_text('{"method": '))),
    Case("checkpoint-config-wrong-type", EVAL, "'num_labels' is \"two\", not an integer",
         with_run(edit=json_edit(CONFIG, lambda c: {**c, "num_labels": "two"}))),
    Case("checkpoint-weights-corrupt", EVAL, "cannot be read as safetensors",
         with_run(edit=lambda d: (d / WEIGHTS).write_bytes(b"\x00\x01garbage"))),
    Case("checkpoint-weights-missing", EVAL, f"{WEIGHTS} does not exist",
         with_run(edit=lambda d: (d / WEIGHTS).unlink())),
    Case("checkpoint-tensor-missing", EVAL, "missing tensors ['shared.A']",
         with_run(edit=tensors_edit(WEIGHTS, lambda t: {k: v for k, v in t.items() if k != "shared.A"}))),
    Case("checkpoint-weights-nan", EVAL, "head.w holds non-finite values",
         with_run(edit=tensors_edit(WEIGHTS, scaled(onp.nan)))),
    Case("checkpoint-outputs-overflow", EVAL, "the model gives non-finite outputs (nan or inf) for",
         with_run(edit=tensors_edit(WEIGHTS, lambda t: {k: v * onp.float32(1e30) for k, v in t.items()}))),
    Case("checkpoint-other-base-model", EVAL + ("--model", "{ws}/other"), "num_layers",
         both(with_run(), lambda ws, world: copy(world.other_model, ws / "other"))),
    Case("checkpoint-is-last", ("evaluate", "--checkpoint", "{ws}/out/" + LAST),
         f"{CONFIG} does not exist", with_run()),
    Case("state-lacks-step", RESUME, "state.json has no 'step'",
         with_run("unfinished", json_edit(f"{LAST}/state.json", without("step")))),
    Case("state-not-json", RESUME, "state.json is not valid JSON",
         with_run("unfinished", lambda d: (d / LAST / "state.json").write_text("{"))),
    Case("state-a-list", RESUME, "state.json holds [1, 2], not a JSON object",
         with_run("unfinished", lambda d: (d / LAST / "state.json").write_text("[1, 2]"))),
    Case("last-trainable-corrupt", RESUME, "trainable.safetensors cannot be read as safetensors",
         with_run("unfinished", lambda d: (d / LAST / "trainable.safetensors").write_bytes(b"xx"))),
    Case("last-optimizer-missing", RESUME, "optimizer.safetensors does not exist",
         with_run("unfinished", lambda d: (d / LAST / "optimizer.safetensors").unlink())),
    Case("metrics-damaged", FT + OUT, f"{METRICS} is not valid JSON",
         with_run(edit=lambda d: (d / METRICS).write_text("{"))),
    Case("results-line-a-list", ("study", "--report-only", "--quick", "--model", "tiny", "--data-dir", "{ws}/data",
                                 "--out", "{ws}/results", "--report", "{ws}/R.md"),
         "glue.jsonl, line 2: '[1, 2]' is not a run's record",
         both(with_glue("SST-2", header=SINGLE), write_file("results/glue.jsonl", '{"key": "a"}\n[1, 2]\n'))),
    Case("results-line-null", ("study", "--report-only", "--quick", "--model", "tiny", "--data-dir", "{ws}/data",
                               "--out", "{ws}/results", "--report", "{ws}/R.md"),
         "glue.jsonl, line 1: 'null' is not a run's record",
         both(with_glue("SST-2", header=SINGLE), write_file("results/glue.jsonl", "null\n"))),
    # --out
    Case("out-is-a-file", FT + OUT, "is a file, not a directory", write_file("out", "notes\n")),
    Case("out-under-a-file", FT + ("--out", "{ws}/notes/run"), "the directory cannot be created (Not a directory)",
         write_file("notes", "notes\n")),
    Case("out-dev-full", FT + ("--out", "/dev/full/x"), "the directory cannot be created (Not a directory)"),
    Case("out-proc", FT + ("--out", "/proc/minicompacter-run"), "the directory cannot be created"),
    Case("out-sys", FT + ("--out", "/sys/minicompacter-run"), "the directory cannot be created"),
    Case("out-file-size-limit", FT + OUT, "ulimit -f", fsize=20000),
    Case("out-finished-other-settings", FT + OUT + ("--seed", "1"),
         "holds a finished run with other settings (train.seed: 0 in the run, 1 now", with_run()),
    Case("out-unfinished-without-resume", FT + OUT, "holds an unfinished run (stopped at step 5, in epoch 2) "
         "with these settings", with_run("unfinished")),
    Case("out-unfinished-other-settings", FT + OUT + ("--lr", "0.01"),
         "holds an unfinished run (stopped at step 5, in epoch 2) with other settings (lr: 0.003 in the run, "
         "0.01 now; train.lr: null in the run, 0.01 now)", with_run("unfinished")),
    Case("resume-other-settings", RESUME + ("--seed", "2"), "train.seed: 0 in the run, 2 now",
         with_run("unfinished")),
    Case("resume-finished-other-settings", RESUME + ("--epochs", "4"), "train.epochs: 3 in the run, 4 now",
         with_run()),
    Case("out-checkpoint-without-last", FT + OUT, f"holds a minicompacter checkpoint without {LAST}/",
         with_run(edit=lambda d: (shutil.rmtree(d / LAST), (d / METRICS).unlink()))),
    Case("compare-out-is-a-file", ("compare", "--task", TASK, "--methods", "bitfit", "--model", "tiny")
         + OUT, "is a file, not a directory", write_file("out", "notes\n")),
    Case("compare-a-run-refused", ("compare", "--methods", "bitfit,compacter++", "--seed", "1")
         + COMMON + OUT, "compacter++ holds a finished run with other settings (train.seed: 0 in",
         lambda ws, world: copy(world.finished, ws / "out" / "compacter++")),
]


def run_case(case, base, world):
    ws = base / case.id
    ws.mkdir()
    case.setup(ws, world)
    before = files(ws)
    done = cli(*[a.format(ws=ws) for a in case.argv], cwd=ws, fsize=case.fsize)
    return done, before, files(ws), ws


@pytest.fixture(scope="module")
def outcomes(world, tmp_path_factory):
    base = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {c.id: pool.submit(run_case, c, base, world) for c in CASES}
        return {k: f.result() for k, f in futures.items()}


def test_the_battery_is_large_and_each_case_distinct():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_clearly_and_changes_nothing(case, outcomes):
    done, before, after, ws = outcomes[case.id]
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    assert "error:" in done.stderr and case.says.format(ws=ws) in done.stderr, done.stderr
    assert {k: after.get(k) for k in before} == before             # byte-identical
    assert all(Path(k).name == LOCK for k in set(after) - set(before)), sorted(set(after) - set(before))


def test_a_refused_run_leaves_no_directory_it_created(outcomes):
    for name in ("epochs-0", "unknown-task", "data-dir-missing", "model-no-config",
                 "compacter-on-tiny", "out-file-size-limit", "own-quote-not-closed",
                 "own-label-unseen", "own-compare-bad-file"):
        assert not (outcomes[name][3] / "out").exists(), name


def test_compare_trains_nothing_when_a_later_method_is_refused(outcomes):
    for name in ("compare-later-method-invalid", "compare-a-run-refused"):
        ws = outcomes[name][3]
        assert not (ws / "out" / "bitfit").exists(), name


# --- interruptions --------------------------------------------------------------------------------

def start(argv, cwd, pause=None):
    """The command running, stderr piped; pause: MINICOMPACTER_PAUSE_WRITE's value."""
    env = dict(os.environ, **({PAUSE_WRITE: pause} if pause else {}))
    return subprocess.Popen(command(argv), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_pause(proc):
    """Read stderr until the process says it paused in a write; the lines read."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "paused writing" in line:
            return seen
    raise AssertionError(f"never paused (exit code {proc.wait()}): {''.join(seen)}")


def interrupt(proc, sig):
    """Signal the process and wait: (exit code, the rest of stderr)."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def assert_resumes_as_the_uninterrupted_run(out, world, cwd, resume=True):
    """The best checkpoint (if there is one yet) loads, and finishing the run (--resume)
    gives the uninterrupted run's metrics and history exactly, with no temporary file left."""
    if (out / CONFIG).exists():
        load_adapter(out, mc.load_pretrained("tiny"))
    done = cli(*FT, "--out", str(out), *(["--resume"] if resume else []), cwd=cwd)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / METRICS).read_text())
    for key in ("validation", "test", "best_epoch", "trainable_params", "config"):
        assert metrics[key] == world.reference[key], key
    assert json.loads((out / HISTORY).read_text()) == world.history
    assert not list(out.rglob("*.tmp")) and not list(out.glob(LAST + ".*"))
    return done


# (signal, the write it interrupts as NAME:N, the exit code, what stderr says). The run
# writes last/ at its start and after each of its 3 epochs (4 steps each), the best
# checkpoint after epoch 1 and after each better one, history.json and metrics.json last.
FAULTS = [
    (signal.SIGINT, f"{WEIGHTS}:1", 130, "holds the run stopped at step 4, after epoch 1; continue"),
    (signal.SIGTERM, f"{WEIGHTS}:1", 143, "holds the run stopped at step 4, after epoch 1; continue"),
    (signal.SIGTERM, "optimizer.safetensors:3", 143, "holds the run stopped at step 8, after epoch 2"),
    (signal.SIGINT, "state.json:1", 130, "holds the run stopped at step 0, after epoch 0"),
    (signal.SIGINT, f"{HISTORY}:1", 130, "interrupted once the run had finished"),
    (signal.SIGKILL, f"{WEIGHTS}:1", -9, ""),
    (signal.SIGKILL, "state.json:2", -9, ""),
    (signal.SIGKILL, "trainable.safetensors:3", -9, ""),
    (signal.SIGKILL, "state.json:4", -9, ""),
    (signal.SIGKILL, f"{METRICS}:1", -9, ""),
]


@pytest.mark.parametrize("sig,pause,code,says", FAULTS,
                         ids=[f"{signal.Signals(f[0]).name}-in-{f[1]}" for f in FAULTS])
def test_an_interrupted_run_resumes_exactly(world, tmp_path, sig, pause, code, says):
    out = tmp_path / "out"
    proc = start(FT + ("--out", str(out)), tmp_path, pause)
    wait_for_pause(proc)
    got, err = interrupt(proc, sig)
    assert got == code and "Traceback" not in err and says in err, (got, err)
    assert_resumes_as_the_uninterrupted_run(out, world, tmp_path)


def test_killed_in_the_first_write_of_last_there_is_nothing_to_resume_and_a_new_run_is_the_same(
        world, tmp_path):
    out = tmp_path / "out"
    proc = start(FT + ("--out", str(out)), tmp_path, "state.json:1")
    wait_for_pause(proc)
    assert interrupt(proc, signal.SIGKILL)[0] == -9
    refused = cli(*FT, "--out", str(out), "--resume", cwd=tmp_path)
    assert refused.returncode == 2 and "nothing to resume" in refused.stderr, refused.stderr
    assert_resumes_as_the_uninterrupted_run(out, world, tmp_path, resume=False)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_while_the_data_load_nothing_is_claimed(tmp_path, sig, code):
    """The data load held by the test hook (MINICOMPACTER_PAUSE_READ) while the signal
    arrives: a FIFO would do it too, but a data file must be a regular file."""
    with_glue()(tmp_path, None)
    proc = subprocess.Popen(command([a.format(ws=tmp_path) for a in GLUE_RUN + RTE]), cwd=tmp_path,
                            env=dict(os.environ, **{PAUSE_READ: "train.tsv"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "paused reading" in line:
            break
    got, err = interrupt(proc, sig)
    assert got == code and "Traceback" not in err, err
    assert "interrupted before a run was saved" in err and "nothing to resume" in err, err
    assert not (tmp_path / "out").exists()


def test_compare_terminated_passes_sigterm_on_and_resumes(world, tmp_path):
    compare = ("compare", "--methods", "compacter++") + COMMON + ("--out", str(tmp_path / "cmp"))
    proc = start(compare, tmp_path, f"{WEIGHTS}:1")
    wait_for_pause(proc)
    got, err = interrupt(proc, signal.SIGTERM)
    assert got == 143 and "cmp/compacter++/last holds the run" in err and "--resume" in err, err
    done = cli(*compare, "--resume", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    row = json.loads((tmp_path / "cmp" / "compare.json").read_text())[0]
    for key in ("validation", "test", "best_epoch", "config"):
        assert row[key] == world.reference[key], key
    again = cli(*compare, cwd=tmp_path)                     # a second compare trains nothing
    assert again.returncode == 0 and "not trained again" in again.stdout, again.stderr
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())[0]["test"] == row["test"]


# --- two writers ----------------------------------------------------------------------------------

SECOND_WRITERS = [
    ("finetune", FT + ("--seed", "1")),
    ("finetune --replace", FT + ("--replace",)),
    ("finetune --resume", FT + ("--resume",)),
    ("the same settings", FT),
]


@pytest.mark.parametrize("name,second", SECOND_WRITERS, ids=[n for n, _ in SECOND_WRITERS])
def test_a_second_writer_is_refused_and_the_first_run_is_untouched(world, tmp_path, name, second):
    out = tmp_path / "out"
    first = start(FT + ("--out", str(out)), tmp_path)
    while not (out / CONFIG).exists():
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)                      # the first run holds still meanwhile
    try:
        before = files(out)
        refused = cli(*second, "--out", str(out), cwd=tmp_path)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert f"is in use by another run (process {first.pid})" in refused.stderr, refused.stderr
        assert files(out) == before
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=120) == 0, first.stderr.read()
    metrics = json.loads((out / METRICS).read_text())
    assert metrics["test"] == world.reference["test"] and metrics["config"] == world.reference["config"]
    assert json.loads((out / HISTORY).read_text()) == world.history


def test_compare_into_a_run_in_use_is_refused(world, tmp_path):
    out = tmp_path / "cmp" / "compacter++"
    first = start(FT + ("--out", str(out)), tmp_path)
    while not (out / CONFIG).exists():
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)
    try:
        before = files(out)
        refused = cli("compare", "--methods", "compacter++", *COMMON, "--resume",
                      "--out", str(tmp_path / "cmp"), cwd=tmp_path)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert "is in use by another run" in refused.stderr, refused.stderr
        assert files(out) == before
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=120) == 0
    assert json.loads((out / METRICS).read_text())["test"] == world.reference["test"]
