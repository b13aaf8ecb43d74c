"""Prompt tuning (Lester, Al-Rfou and Constant 2021, arXiv 2104.08691): P trained vectors
put before the input's word embeddings, read by the frozen model as P more tokens.

    x    = [p_1, ..., p_P, w(t_1), ..., w(t_T)]        (B, P + T, E)   p_j: rows of the prompt
    mask = [1, ..., 1,     m_1, ..., m_T]              (B, P + T)

Then positions, token types, the embeddings' layer norm and the blocks run as on any input,
and every block attends over the P + T positions. Only the prompt (P, E) and the head train.

Placement, as peft 0.21 places prompt tuning on an encoder (PeftModelForFeatureExtraction,
whose files minicompacter reads and writes): the prompt lives in the word-embedding space,
before [CLS]; the attention mask gets P ones in front; the positions are numbered over the
prompt and the input together, 0 .. P+T-1 (RoBERTa and XLM-R: from padding_idx + 1, as
transformers numbers `inputs_embeds`), so the input's [CLS] sits at position P; and the
token types are dropped, so every token, the second text of a pair included, reads type 0
(a pair is told apart by its [SEP] alone; peft's sequence-classification wrapper keeps the
types, with zeros for the prompt, but its files of a bare encoder come from the other one).
The Compacter reference (rabeehk/compacter, T5Stack's prefix_emb) puts the same P vectors
before the input embeddings of T5's encoder, which has no position table. AdapterHub's
PromptTuningConfig places them elsewhere: after the whole embedding layer (positions, token
types, layer norm), so its vectors skip the position table and the layer norm and the input
keeps positions 0 .. T-1; its files are not this method's.

Initialisation (`PromptConfig.prompt_init`):
  "random"  (Prompt Tuning-R)  U(-0.5, 0.5), the reference's init_prefix_weights (AdapterHub's
            random_uniform_scale is 0.5 too; peft's RANDOM is N(0, 1))
  "vocab"   (Prompt Tuning-T)  copies of the word embeddings of `init_token_ids`, repeated to
            P rows (peft's TEXT); with none given, of P tokens drawn uniformly from the
            vocabulary (peft's SAMPLE_VOCAB). The reference copies T5's first 100 rows, its
            most frequent pieces (SentencePiece numbers them by frequency); the training loop
            gives the ids of the most frequent English words (harness/pretrained.py)

Cost: every block now works on P + T positions instead of T: the linear layers' work grows
by (P + T) / T and attention's by ((P + T) / T)^2, and the backward pass runs through every
block down to the embeddings.
"""

import autograd.numpy as np
import numpy as onp

from .paths import PROMPT

INIT_RANGE = 0.5          # -R: U(-INIT_RANGE, INIT_RANGE), the reference's random_range


def init_prompt(cfg, rng, base, dtype=onp.float32):
    """({"prompt": (P, E)}, {}): the trained vectors, as `cfg.prompt_init` says (module
    docstring), and no frozen constants. base: the pretrained tree (its word embeddings)."""
    word = base["embeddings"]["word"]                            # (V, E)
    P, (V, E) = cfg.prompt_length, word.shape
    if cfg.prompt_init == "random":
        prompt = rng.uniform(-INIT_RANGE, INIT_RANGE, (P, E))    # (P, E)
    else:
        ids = onp.asarray(cfg.init_token_ids, onp.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise ValueError(f"init_token_ids must be token ids below the vocabulary's size {V}, "
                             f"got {ids.min()} .. {ids.max()}.")
        rows = onp.resize(ids, P) if ids.size else rng.integers(0, V, P)     # (P,)
        prompt = word[rows]                                      # (P, E)
    return {PROMPT: onp.array(prompt, dtype)}, {}


def prepend_prompt(params, w, batch):
    """The `input_embeddings` hook of prompt tuning: the prompt before every row's word
    embeddings, P ones before the attention mask, the token types dropped.
    w: (B, T, E) -> ((B, P + T, E), the batch with attention_mask (B, P + T))"""
    prompt = params[PROMPT]                                      # (P, E)
    B, T, _ = w.shape
    P = prompt.shape[0]
    x = np.concatenate([np.broadcast_to(prompt[None], (B,) + prompt.shape), w], axis=1)  # (B, P+T, E)
    mask = batch.get("attention_mask")
    mask = onp.ones((B, T), onp.int64) if mask is None else onp.asarray(mask)
    extended = {k: v for k, v in batch.items() if k != "token_type_ids"}
    extended["attention_mask"] = onp.concatenate([onp.ones((B, P), mask.dtype), mask], axis=1)
    return x, extended
