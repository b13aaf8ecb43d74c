"""Text to model inputs.

`tokenize` turns texts (or text pairs) into the NumPy arrays the encoder reads:
input ids, token type ids (0 for the first text, 1 for the second) and the attention
mask (1 real token, 0 padding), padded to the longest row of the batch and truncated to
`max_length` tokens. (The GLUE tasks, the synthetic suite and batching come here too.)
"""

import numpy as onp

MAX_LENGTH = 128          # the paper's maximum sequence length


def tokenize(tokenizer, texts, pairs=None, *, max_length=MAX_LENGTH):
    """Tokenise single texts or (text, pair) pairs with a `tokenizers.Tokenizer`.

    Returns {"input_ids", "token_type_ids", "attention_mask"}, each (B, T) int64, with
    T the longest row after truncation to max_length (a pair is truncated longest-first)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if pairs is not None:
        pairs = [pairs] if isinstance(pairs, str) else list(pairs)
        if len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs; give one second text "
                             f"per first text, or pairs=None.")
    for t in texts + (pairs or []):
        if not isinstance(t, str):
            raise TypeError(f"texts must be strings, got {type(t).__name__}: {t!r}")
    if max_length < 2 + (pairs is not None):
        raise ValueError(f"max_length {max_length} leaves no room for the text besides the "
                         f"special tokens; use at least 8.")
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        raise ValueError("The tokenizer has no [PAD] token; minicompacter expects a BERT-style "
                         "WordPiece tokenizer.")
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")   # to the longest in the batch
    enc = tokenizer.encode_batch(texts if pairs is None else list(zip(texts, pairs)))
    return {"input_ids": onp.array([e.ids for e in enc], dtype=onp.int64),
            "token_type_ids": onp.array([e.type_ids for e in enc], dtype=onp.int64),
            "attention_mask": onp.array([e.attention_mask for e in enc], dtype=onp.int64)}
