"""Texts to batches: tokenising, a split held as token ids, and length-bucketed batches.

    tokenize(tokenizer, texts, pairs)   padded (B, T) arrays for the encoder
    pad_token(tokenizer)                the (token, id) it pads with: the model family's
    encode(dataset, tokenizer, task)    a split's rows as unpadded token ids, once
    Encoded(columns, pad_id).batch(index)       rows padded to the longest of them, with the labels
    batch_order(lengths, batch_size)    rows grouped into batches of similar length

The lengths every run and tool defaults to are defined here, once.
"""

import numpy as onp

MAX_LENGTH = 128          # tokens per row after truncation (the paper's maximum length)
MIN_LENGTH = 8            # the shortest max_length accepted: the special tokens take 2 or 3
EVAL_BATCH_SIZE = 64      # rows per batch when evaluating or predicting


def pad_token(tokenizer):
    """(token, id) a tokenizer pads with: the padding `load_pretrained` set on it, the
    model family's pad token ([PAD] for BERT, <pad> for RoBERTa, ...)."""
    padding = tokenizer.padding
    if padding is None:
        raise ValueError("The tokenizer has no pad token set; use the tokenizer of a model "
                         "that load_pretrained returned (it pads with the model family's pad "
                         "token), or call tokenizer.enable_padding(pad_id=..., pad_token=...).")
    return padding["pad_token"], padding["pad_id"]


def tokenize(tokenizer, texts, pairs=None, *, max_length=MAX_LENGTH, padding=True):
    """Tokenise single texts or (text, pair) pairs with a `tokenizers.Tokenizer` (as
    `load_pretrained` returns it: padding with its family's pad token, `pad_token`).

    Returns {"input_ids", "token_type_ids", "attention_mask"}: with padding, (B, T) int64
    arrays, T the longest row after truncation to max_length (a pair is truncated
    longest-first), padded on the right; without, lists of lists."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if pairs is not None:
        pairs = [pairs] if isinstance(pairs, str) else list(pairs)
        if len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs; give one second text "
                             f"per first text, or pairs=None.")
    for t in texts + (pairs or []):
        if not isinstance(t, str):
            raise TypeError(f"texts must be strings, got {type(t).__name__}: {t!r}")
    if max_length < MIN_LENGTH:
        raise ValueError(f"max_length {max_length} leaves too little room for the text besides "
                         f"the special tokens (2 or 3 of a row); use at least {MIN_LENGTH}.")
    token, pad_id = pad_token(tokenizer)
    tokenizer.enable_truncation(max_length)
    if padding:
        tokenizer.enable_padding(pad_id=pad_id, pad_token=token)   # to the longest, on the right
    else:
        tokenizer.no_padding()
    try:
        encodings = tokenizer.encode_batch(texts if pairs is None else list(zip(texts, pairs)))
    finally:                                     # as load_pretrained left it
        tokenizer.enable_padding(pad_id=pad_id, pad_token=token)
    out = {"input_ids": [e.ids for e in encodings], "token_type_ids": [e.type_ids for e in encodings],
           "attention_mask": [e.attention_mask for e in encodings]}
    if padding:
        out = {k: onp.array(v, dtype=onp.int64) for k, v in out.items()}
    return out


def pad_id(tokenizer):
    """The id of the tokenizer's padding token (every batch is padded with it)."""
    return pad_token(tokenizer)[1]


def encode(dataset, tokenizer, task, *, max_length=MAX_LENGTH, chunk=1000):
    """The split's columns as token ids: {"input_ids", "token_type_ids": one list per row,
    unpadded, "label": the labels}, tokenised `chunk` rows at a time."""
    first = dataset[task.columns[0]]
    second = dataset[task.columns[1]] if len(task.columns) > 1 else None
    out = {"input_ids": [], "token_type_ids": []}
    for start in range(0, len(first), chunk):
        part = tokenize(tokenizer, first[start:start + chunk],
                        None if second is None else second[start:start + chunk],
                        max_length=max_length, padding=False)
        out["input_ids"] += part["input_ids"]
        out["token_type_ids"] += part["token_type_ids"]
    out["label"] = list(dataset["label"][:])          # [:]: one batch, not row by row
    return out


class Encoded:
    """A tokenised split held as NumPy arrays, ready to be cut into padded batches.
    columns: what `encode` returns (input_ids, token_type_ids, label); pad_id: the id rows
    are padded with (the tokenizer's, `pad_token`: 0 for BERT's [PAD], 1 for RoBERTa's)."""

    def __init__(self, columns, pad_id, regression=False):
        self.ids = [onp.asarray(x, onp.int64) for x in columns["input_ids"]]
        self.types = [onp.asarray(x, onp.int64) for x in columns["token_type_ids"]]
        self.labels = onp.asarray(columns["label"], onp.float32 if regression else onp.int64)
        self.lengths = onp.array([len(x) for x in self.ids])
        self.pad_id = pad_id

    def __len__(self):
        return len(self.ids)

    def batch(self, index):
        """Rows `index`, padded to the longest of them."""
        T = int(self.lengths[index].max())
        B = len(index)
        ids = onp.full((B, T), self.pad_id, onp.int64)
        types = onp.zeros((B, T), onp.int64)
        mask = onp.zeros((B, T), onp.int64)
        for row, i in enumerate(index):
            n = self.lengths[i]
            ids[row, :n], types[row, :n], mask[row, :n] = self.ids[i], self.types[i], 1
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
                "labels": self.labels[index]}


def batch_order(lengths, batch_size, *, seed=None, pool=50):
    """Row indices grouped into batches of similar length.

    Training (seed given): shuffle the rows, cut them into pools of `pool` batches, sort
    each pool by length, cut it into batches, shuffle the batches: each batch is nearly
    uniform in length (little padding) and the order is random, deterministic for a seed.
    Evaluation (seed None): sorted by length, no shuffling."""
    lengths = onp.asarray(lengths)
    if seed is None:
        order = onp.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng = onp.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    batches = []
    step = batch_size * pool
    for start in range(0, len(order), step):
        chunk = order[start:start + step]
        chunk = chunk[onp.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
