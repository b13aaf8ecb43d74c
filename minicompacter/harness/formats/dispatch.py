"""The one door in and out: which format a directory holds, `load_adapter` for every format,
the base model a checkpoint names, and `export_adapter` to every target.

    load_adapter(DIR)          minicompacter's checkpoint (native.py; 0.1.0's too),
                               AdapterHub's adapter (adapterhub.py), peft's (peft.py), on a
                               base model of any encoder family (families.py)
    checkpoint_base(DIR)       the pretrained model a checkpoint of any of these formats names
    export_adapter(DIR, "adapters", out)      AdapterHub: the bottleneck methods (AdapterDrop too)
    export_adapter(DIR, "peft", out)          peft: LoRA, LoKr, prompt tuning
    export_adapter(DIR, "transformers", out)  the family's bare model: full, BitFit, every update
                                              beside a weight (LoRA, LoKr, the PHM update) merged
                                              into it, Intrinsic-SAID's moved weights
                                              (core/updates.merge_updates)

The format modules below import only the file layer (files.py) and the families' data
(families.py), never each other or this module; this module imports them all.

A directory holds one format: the files of two (a native checkpoint beside a peft config)
are refused, never resolved by an order. What a target cannot hold is carried another way,
and the summary `export_adapter` returns (which `python -m minicompacter export` prints)
says how:
  - trained layer norms (the adapter methods train them, as the paper does): AdapterHub's
    files hold only the adapter, so the base model with the trained layer norms is written
    beside it, in out/base/, as the family's model directory for
    `{Family}AdapterModel.from_pretrained`; the export's README.md and
    minicompacter_export.json say that the adapter needs it, and `load_adapter` refuses the
    adapter on another base model;
  - the head, where the target has no head of its own (peft, transformers) or none that
    reads the mean of the tokens (AdapterHub's read [CLS]): head.py's two files in out/;
  - LoRA, LoKr and the PHM update for transformers: merged into the weights, W + dW (peft's
    merge_and_unload for the first two); an adapter cannot be, it is nonlinear;
  - Intrinsic-SAID for transformers: the weights it computes with, theta_0 + lambda_i
    P_i(theta_d), written as a whole model (neither AdapterHub nor peft has the method).
A method the target has no counterpart for is refused with the reason and the target that
takes it (prompt tuning is not AdapterHub's: its PromptTuningConfig puts the prompt after the
embedding layer, core/prompts.py).
Adapter-LowRank goes to AdapterHub as a PHM layer with n = 1 (W = 1 kron s t).

An export directory belongs to one export. `--out` that holds files no export of
minicompacter wrote is refused, naming them; an earlier export there is replaced only with
`replace` (its manifest, minicompacter_export.json, lists the files it wrote). The export is
written to a sibling temporary directory and renamed into place whole (`staging`), so an
interrupted or failed export leaves the earlier one, or nothing, never half; and it never
writes inside (or around) the checkpoint it reads or the base model it names.
"""

import json
import os
import re
import secrets
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as onp

from ...core.methods import (AdapterConfig, BitFitConfig, IntrinsicConfig, LoKrConfig, LoRAConfig,
                             PromptConfig)
from ...core.model import kept_fixed
from ...core.paths import HEAD, is_layer_norm
from ...core.tree import flatten, merge, split
from ...core.updates import merge_refusal, merge_updates
from ..data.tasks import get_task
from ..pretrained import BUILTIN, HUB_IDS, base_identity, load_pretrained, weights_digest
from . import adapterhub, families, native, peft
from .files import CheckpointError, ExportError, LoadError, json_file, read_json_object
from .head import HEAD_INFO, HEAD_WEIGHTS, read_head, write_head
from .t5 import write_t5_directory
from .transformers import write_directory

TARGETS = ("adapters", "peft", "transformers")
BASE = "base"            # out/base/: the base model with the trained layer norms, beside an adapter
FOREIGN = {"adapterhub": adapterhub, "peft": peft}
MANIFEST, README = "minicompacter_export.json", "README.md"     # written in every export


def family_of(pretrained):
    """The families.Family of a Pretrained (families.T5 for a T5)."""
    return families.T5 if pretrained.seq2seq else families.FAMILIES[pretrained.family]


def write_model(out, params, pretrained):
    """The base model's transformers directory with these parameters: T5's
    (T5ForConditionalGeneration) or the encoder family's bare model. Returns the names written."""
    if pretrained.seq2seq:
        return write_t5_directory(out, params, pretrained)
    return write_directory(out, params, pretrained)


# --- reading ---------------------------------------------------------------------------------

def checkpoint_format(directory):
    """"minicompacter", "minicompacter-0.1", "adapterhub", "peft", or None (nothing here).
    A directory that holds the files of two formats is refused (CheckpointError): which one
    was meant cannot be told."""
    directory = Path(directory)
    found = [kind for kind, present in (
        ("minicompacter", native.kind(directory) == "minicompacter"),
        ("adapterhub", adapterhub.is_adapterhub(directory)), ("peft", peft.is_peft(directory)),
        ("minicompacter-0.1", native.kind(directory) == "minicompacter-0.1")) if present]
    if "minicompacter" in found and "minicompacter-0.1" in found:
        found.remove("minicompacter-0.1")           # 0.1.0's config beside this version's: an old run
    if len(found) > 1:
        raise CheckpointError(f"{directory} holds the files of {' and '.join(found)} checkpoints "
                              f"({native.CONFIG} and {adapterhub.CONFIG}); a directory holds one "
                              f"checkpoint, and which one is meant cannot be told: move one of "
                              f"them to a directory of its own.")
    return found[0] if found else None


def load_adapter(directory, pretrained=None):
    """(model, trainable, frozen, config) from a checkpoint directory: minicompacter's own
    (this version's or 0.1.0's), AdapterHub's or peft's. The base model is found from what
    the checkpoint records (checkpoint_base) unless given; it must be the one the
    checkpoint was trained on (an exported adapter that needs its base/ is refused on any
    other). For another library's adapter, config says what was read (its "format",
    "num_labels" and "label_names" of the head it carried, none: 0), and a head written
    beside it by `export_adapter` is loaded too."""
    directory = Path(directory)
    kind = checkpoint_format(directory)
    if kind is None:
        unknown_checkpoint(directory)
    if pretrained is None:
        pretrained = checkpoint_base(directory)
    else:
        check_export_base(directory, pretrained)
    if kind in FOREIGN:
        return read_head(directory, *FOREIGN[kind].read(directory, pretrained,
                                                       family_of(pretrained)))
    return native.read(directory, pretrained)


def unknown_checkpoint(directory):
    """The error for a directory that holds no checkpoint of a format load_adapter reads:
    what is wrong with its adapter_config.json, if it has one."""
    config = directory / adapterhub.CONFIG
    if config.is_file():
        value = read_json_object(config, error=CheckpointError,
                                 fix="the file is damaged: save the adapter again.")
        raise CheckpointError(f"{config} is neither AdapterHub's (its BnConfig under \"config\", "
                              f"its model_class and version) nor peft's (its peft_type): keys "
                              f"{sorted(value)[:8]}. Give the directory the library saved.")
    raise CheckpointError(f"{directory / native.CONFIG} does not exist; give the directory "
                          f"finetune --out wrote, or an AdapterHub or peft adapter directory.")


def read_manifest(directory):
    """An export's minicompacter_export.json, or None when there is none (or it is not one)."""
    manifest = json_file(Path(directory) / MANIFEST)
    if not (isinstance(manifest, dict) and manifest.get("format") == "minicompacter-export"
            and isinstance(manifest.get("files"), list)
            and all(isinstance(f, str) for f in manifest["files"])):
        return None
    return manifest


def needs_base(directory):
    """The digest of the base model an exported adapter needs (its base/), or None."""
    base = (read_manifest(directory) or {}).get("needs_base")
    return base.get("digest") if isinstance(base, dict) else None


def check_export_base(directory, pretrained):
    """CheckpointError when an exported adapter needs its base/ (the trained layer norms)
    and the model given has other weights: the outputs would differ without an error."""
    digest = needs_base(directory)
    if digest is not None and weights_digest(pretrained.params) != digest:
        raise CheckpointError(f"{directory} is an adapter trained together with its base "
                              f"model's layer norms, which are in {Path(directory) / BASE}; the "
                              f"model given ({pretrained.name!r}) has other weights, so its "
                              f"outputs would differ. Load it without a base model (its base/ "
                              f"is used), or on {Path(directory) / BASE}.")


def checkpoint_base(directory):
    """The pretrained model a checkpoint directory names (any of the formats load_adapter
    reads), found as `load_base` finds it; an export's base/ when it has one."""
    directory = Path(directory)
    kind = checkpoint_format(directory)
    if kind in FOREIGN:
        base = directory / BASE
        if needs_base(directory) is not None and not (base / "config.json").exists():
            raise LoadError(f"{base} is missing: {directory} is an adapter trained together with "
                            f"its base model's layer norms, which the export wrote there. "
                            f"Export the checkpoint again.")
        if (base / "config.json").exists():                 # written beside it by export
            return load_pretrained(base)
        return load_base(foreign_identity(directory, kind), source=str(directory))
    if kind is None:
        unknown_checkpoint(directory)
    base, _, _ = native.parts(directory, native.read_config(directory))
    return load_base(base, source=str(directory))


def foreign_identity(directory, kind):
    """The base model an AdapterHub or peft directory names: an export's recorded identity,
    else the library's own field (model_name, base_model_name_or_path)."""
    recorded = (read_manifest(directory) or {}).get("base_model")
    if isinstance(recorded, dict):
        return recorded
    config = json_file(directory / FOREIGN[kind].CONFIG) or {}
    name = config.get("model_name" if kind == "adapterhub" else "base_model_name_or_path")
    name = name if isinstance(name, str) else None
    return {"name": name, "hub_id": name}


def base_candidates(identity):
    """The ways to find a recorded base model, in the order they are tried: a built-in name
    (the packaged copy), the built-in model whose hub id it is, the recorded directory, the
    hub id (the only one that needs the hub)."""
    name, hub_id, path = (identity.get(k) if isinstance(identity.get(k), str) else None
                          for k in ("name", "hub_id", "path"))
    by_hub = {v: k for k, v in HUB_IDS.items()}
    out = []
    for candidate in (name if name in BUILTIN else None, by_hub.get(hub_id), by_hub.get(name),
                      path if path and Path(path).is_dir() else None, hub_id):
        if candidate and candidate not in out:
            out.append(candidate)
    return out


def load_base(identity, *, source="the checkpoint", dtype=onp.float32):
    """The pretrained model a checkpoint's identity names: the first candidate that loads and
    whose weights have the recorded digest (any, if none was recorded)."""
    tried = []
    for candidate in base_candidates(identity):
        try:
            pretrained = load_pretrained(candidate, dtype=dtype)
        except LoadError as e:
            tried.append(f"{candidate!r}: {str(e).split(';')[0]}")
            continue
        if identity.get("digest") in (None, weights_digest(pretrained.params)):
            return pretrained._replace(name=identity.get("name") or pretrained.name)
        tried.append(f"{candidate!r}: other weights (digest differs)")
    raise LoadError(f"{source} was trained on base model {identity.get('name')!r}, which could "
                    f"not be found here ({'; '.join(tried) or 'nothing to try'}). Give the base "
                    f"model explicitly (--model DIR, or the `pretrained` argument).")


# --- the export directory ----------------------------------------------------------------------

class Target(NamedTuple):
    """Where an export is written (dir: the staging directory) and where it will be (shown:
    --out, for the summary and the notes)."""
    dir: Path
    shown: Path


def entries(directory):
    """Every file and directory under `directory`, as relative paths (symbolic links are not
    followed)."""
    out = []
    for root, dirs, names in os.walk(directory):
        rel = Path(root).relative_to(directory)
        out += [str(rel / n) for n in dirs + names]
    return sorted(out)


def overlaps(out, path):
    """How `out` overlaps `path` ("is", "is inside", "holds"), or None."""
    a, b = Path(out).resolve(), Path(path).resolve()
    if a == b:
        return "is"
    return "is inside" if b in a.parents else "holds" if a in b.parents else None


def claim_export_dir(out, protected, replace):
    """The manifest of the earlier export `out` holds (None: out is missing or empty), after
    refusing an --out the export cannot use: a file, under a file, the checkpoint or base
    model the export reads (or inside or around them: `protected`, {what: path}), a directory
    holding files no export of minicompacter wrote (named), or an earlier export without
    `replace`. Reads only."""
    for what, path in protected.items():
        how = path and overlaps(out, path)
        if how:
            raise ExportError(f"--out {out} {how} {what} {path}; an export never writes into the "
                              f"checkpoint it reads or the base model it names: give another "
                              f"--out.")
    existing = next(p for p in [out, *out.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise ExportError(f"--out {out}: {existing} is a file, not a directory; give a directory "
                          f"(it is created if missing).")
    present = entries(out) if existing == out else []
    if not present:
        return None
    manifest = read_manifest(out)
    ours = set(manifest["files"]) | {MANIFEST} if manifest else set()
    ours |= {str(Path(f).parent) for f in ours if Path(f).parent != Path(".")}
    foreign = [p for p in present if p not in ours]
    if foreign:
        raise ExportError(f"{out} holds files no export of minicompacter wrote: "
                          f"{', '.join(foreign[:8])}{' ...' if len(foreign) > 8 else ''}. An "
                          f"export directory belongs to one export (AdapterHub and peft would "
                          f"read stale files beside it): give another --out, or move them.")
    if not replace:
        raise ExportError(f"{out} holds an earlier export ({manifest.get('to')} of "
                          f"{manifest.get('checkpoint')}): --replace replaces it (the files it "
                          f"wrote, nothing else), or give another --out.")
    return manifest


def sibling(path, kind):
    """A new name beside `path`: .NAME.KIND-RANDOM."""
    return path.parent / f".{path.name}.{kind}-{secrets.token_hex(4)}"


@contextmanager
def staging(out):
    """A new directory beside `out` to write the export into (mode 0777 less the umask);
    when the block ends it becomes `out` whole (an earlier export there is renamed away
    and removed); when it fails, it is removed and `out` is as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(out, "export")
    os.mkdir(tmp, 0o777)
    try:
        yield tmp
        into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def into_place(tmp, out):
    """Rename `tmp` to `out`, the earlier `out` (if any) renamed away first and removed after;
    Ctrl-C and SIGTERM are held between the two renames, so `out` is never missing then."""
    old = sibling(out, "replaced") if out.exists() else None
    held = {signal.SIGINT, signal.SIGTERM}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        if old is not None:
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            if old is not None:
                os.rename(old, out)
            raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- writing ---------------------------------------------------------------------------------

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def export_adapter(checkpoint_dir, to, out, *, pretrained=None, name=None, replace=False):
    """Write the checkpoint in checkpoint_dir as `to` ("adapters", "peft", "transformers")
    loads it, into out (a new directory, or an earlier export there with `replace`). Returns
    {"written": [paths], "notes": [what was carried how], "needs_base": bool}."""
    if to not in TARGETS:
        raise ExportError(f"Unknown target {to!r}; export to one of {', '.join(TARGETS)}.")
    if name is not None and not NAME.match(name):
        raise ExportError(f"--name {name!r}: AdapterHub names an adapter's modules after it, so "
                          f"it must be letters, digits and underscores, not starting with a "
                          f"digit (no '.' or '-').")
    if not str(out).strip():
        raise ExportError("--out is empty; give the directory the export writes, such as "
                          "--out runs/sst2-adapterhub.")
    out = Path(out)
    pretrained = pretrained or checkpoint_base(checkpoint_dir)
    claim_export_dir(out, {"the checkpoint": str(checkpoint_dir), "the base model":
                           pretrained.path}, replace)
    model, trainable, frozen, config = load_adapter(checkpoint_dir, pretrained)
    check_target(model.method, to, pretrained)
    with staging(out) as tmp:
        target = Target(tmp, out)
        summary = write_target(target, to, trainable, frozen, model, pretrained, config, name)
        summary["written"].append(str(out / README))
        summary["written"].append(str(out / MANIFEST))
        write_manifest(target, to, checkpoint_dir, pretrained, summary)
    return summary


def write_target(target, to, trainable, frozen, model, pretrained, config, name):
    """The files of one target in target.dir: {"written", "notes", "needs_base"}."""
    method = model.method.config
    hub_id = pretrained.hub_id or (config.get("base_model") or {}).get("name") or pretrained.name
    labels = label_names(config)
    family = family_of(pretrained)
    if to == "adapters":                # with the rules the method keeps fixed (learn_phm False)
        return _to_adapterhub(target, merge(trainable, kept_fixed(model, frozen)), model,
                              pretrained, name or adapter_name(method, config), hub_id, labels)
    if to == "peft":
        written = peft.write(target.dir, trainable, model, family=family,
                             base_model_name_or_path=hub_id)
        return _with_head(target, written, trainable, model, labels, "peft")
    written = write_model(target.dir, merged_params(trainable, frozen, model), pretrained)
    notes = [MERGED[type(method)] if type(method) in MERGED
             else f"{method.method} merged into the weights: W + dW"] if (
        model.method.delta or model.method.hooks.weights) else []
    summary = _with_head(target, written, trainable, model, labels, "transformers")
    summary["notes"] = notes + summary["notes"]
    return summary


# the method configs each target takes ("transformers": whatever merges, `merge_refusal`)
TAKES = {"adapters": (AdapterConfig,), "peft": (LoRAConfig, LoKrConfig, PromptConfig)}
WHY_NOT = {"adapters": "AdapterHub's bottleneck adapter files hold the adapter methods only",
           "peft": "peft's files hold LoRA, LoKr and prompt tuning only (peft has no PHM update)"}
# why a method is not where one might look for it (else WHY_NOT[target])
WHY_NOT_METHOD = {
    (PromptConfig, "adapters"): "AdapterHub's PromptTuningConfig puts the prompt after the "
                                "embedding layer (after positions and its layer norm), not "
                                "before the word embeddings as peft and minicompacter do",
    (IntrinsicConfig, "adapters"): "neither AdapterHub nor peft has Intrinsic-SAID",
    (IntrinsicConfig, "peft"): "neither AdapterHub nor peft has Intrinsic-SAID"}
# what export --to transformers says it did with a method's trained numbers
MERGED = {LoRAConfig: "LoRA merged into the weights: W + (alpha / r) A B",
          IntrinsicConfig: "Intrinsic-SAID's weights written out: theta_0 + lambda_i P_i(theta_d)"}


def takes(method, to):
    """Whether a target takes a method (a Method): AdapterHub and peft by kind, transformers
    whatever merges into the weights."""
    if to == "transformers":
        return merge_refusal(method) is None
    return isinstance(method.config, TAKES[to])


def check_target(method, to, pretrained=None):
    """ExportError unless the target takes the method (a Method) on this base model, and holds
    its options; the message says why and names a target that takes it."""
    if pretrained is not None and pretrained.seq2seq and isinstance(method.config, BitFitConfig):
        raise ExportError(f"bitfit on T5 cannot be exported: T5 has no biases, and BitFit trains "
                          f"the ones the Compacter reference code adds, which neither "
                          f"transformers' T5 nor AdapterHub or peft can hold. Keep it in "
                          f"minicompacter's checkpoint (evaluate, predict).")
    if (pretrained is not None and pretrained.seq2seq and isinstance(method.config, PromptConfig)
            and to == "peft"):
        raise ExportError(f"{method.config.method} on T5 cannot be exported: minicompacter writes "
                          f"peft's prompt tuning of an encoder (FEATURE_EXTRACTION) only. Keep "
                          f"it in minicompacter's checkpoint (evaluate, predict).")
    if takes(method, to):
        if to == "adapters":
            try:
                adapterhub.check_exportable(method.config)
            except ExportError as e:
                raise ExportError(f"{method.config.method} cannot be exported to adapters: "
                                  f"{e}") from None
        return
    why = (f"it cannot be merged into the weights: {merge_refusal(method)}"
           if to == "transformers"
           else WHY_NOT_METHOD.get((type(method.config), to), WHY_NOT[to]))
    instead = next(t for t in TARGETS if takes(method, t))
    raise ExportError(f"{method.config.method} cannot be exported to {to}: {why.rstrip('.')}. "
                      f"Export it with --to {instead}.")


def adapter_name(method, config):
    """The adapter's name in AdapterHub's files: the task, else the method (no "+")."""
    return (config.get("task") or method.method).replace("+", "p").replace("-", "_")


def label_names(config):
    """The head's label names: those recorded (a checkpoint of this version's, an imported
    head's; none for regression), else the task's, or none."""
    if config.get("label_names") is not None:
        return list(config["label_names"])
    if config.get("task"):
        return list(get_task(config["task"]).label_names)
    return []


def _summary(target, written):
    return {"written": [str(target.shown / f) for f in written], "notes": [], "needs_base": False}


def _to_adapterhub(target, trainable, model, pretrained, name, hub_id, labels):
    norms, adapter = split(trainable, is_layer_norm)
    head_here = model.pooling == "cls" and HEAD in adapter
    written = adapterhub.write(target.dir, adapter if head_here else _without_head(adapter), model,
                               family=family_of(pretrained), name=name, model_name=hub_id,
                               label_names=labels)
    summary = _summary(target, written)
    if flatten(norms):
        base = merge(split(pretrained.params, is_layer_norm)[1], norms)
        files = write_model(target.dir / BASE, base, pretrained)
        summary["written"] += [str(target.shown / BASE / f) for f in files]
        summary["needs_base"] = weights_digest(base)
        summary["notes"].append(
            f"the trained layer norms: in {target.shown / BASE}, the base model to load the "
            f"adapter on ({family_of(pretrained).adapterhub.model_class}.from_pretrained("
            f"'{target.shown / BASE}')); AdapterHub's adapter files do not hold them, and on "
            f"{hub_id!r} itself the adapter gives other outputs (README.md there says so)")
    if HEAD in adapter and not head_here:
        summary = _head_beside(target, summary, adapter[HEAD], model, labels, "AdapterHub's heads "
                               "read [CLS], this one the mean over the tokens")
    elif head_here:
        summary["notes"].append(f"the head: AdapterHub's {model.head_layers}-layer classification "
                                f"head on [CLS]")
    return summary


def _without_head(tree):
    return {k: v for k, v in tree.items() if k != HEAD}


def _with_head(target, written, trainable, model, labels, what):
    summary = _summary(target, written)
    if HEAD in trainable:
        summary = _head_beside(target, summary, trainable[HEAD], model, labels,
                               f"{what}'s files have no place for minicompacter's head")
    return summary


def _head_beside(target, summary, head, model, labels, why):
    """The head beside the export (head.py), noted in the summary."""
    summary["written"] += [str(target.shown / f) for f in write_head(target.dir, head, model, labels)]
    summary["notes"].append(f"the head: in {target.shown / HEAD_WEIGHTS}, described in "
                            f"{target.shown / HEAD_INFO} ({why})")
    return summary


def write_manifest(target, to, checkpoint_dir, pretrained, summary):
    """README.md (how to load the export, and what it needs) and minicompacter_export.json
    (the files this export wrote, for --replace; the base model it needs) in target.dir."""
    files = [str(Path(p).relative_to(target.shown)) for p in summary["written"]]
    digest = summary["needs_base"]
    manifest = {"format": "minicompacter-export", "to": to,
                "checkpoint": str(Path(checkpoint_dir).resolve()), "files": files,
                "base_model": base_identity(pretrained),
                "needs_base": {"dir": BASE, "digest": digest} if digest else None,
                "notes": summary["notes"]}
    (target.dir / README).write_text(readme(to, pretrained, summary), encoding="utf-8")
    (target.dir / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    summary["needs_base"] = bool(digest)


def readme(to, pretrained, summary):
    """The export's README.md: what it holds and how to load it, in a few lines."""
    family = family_of(pretrained)
    loader = {"adapters": f"adapters.{family.adapterhub.model_class}.from_pretrained(BASE); "
                          f"model.load_adapter(THIS_DIRECTORY, use_safetensors=True)",
              "peft": f"peft.PeftModel.from_pretrained(transformers.{family.peft.base_class}"
                      f".from_pretrained(BASE), THIS_DIRECTORY)",
              "transformers": f"transformers.{family.peft.base_class}.from_pretrained("
                              f"THIS_DIRECTORY)"}[to]
    base = (f"BASE is this directory's base/ (and only it): the adapter was trained together with "
            f"the base model's layer norms, which are there and not in the adapter's files; on "
            f"{pretrained.hub_id or pretrained.name!r} itself it gives other outputs, without an "
            f"error." if summary["needs_base"] else
            f"BASE is the base model, {pretrained.hub_id or pretrained.name!r}.")
    lines = ["# An export of minicompacter", "", f"Load it with `{loader}`.", "",
             base if to != "transformers" else "The model is whole: it needs no other base.", ""]
    lines += [f"- carried: {note}" for note in summary["notes"]]
    return "\n".join(lines) + "\n"


def merged_params(trainable, frozen, model):
    """The encoder's parameters with what was trained put in (core/updates.merge_updates):
    the unfrozen pretrained weights (full fine-tuning, BitFit's biases) as trained, and every
    update beside a weight (LoRA, LoKr, the PHM update) merged into it, w + dW
    (w: (d_in, d_out), as minicompacter stores it)."""
    return merge_updates(merge(frozen, trainable), model.method)
