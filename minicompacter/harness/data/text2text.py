"""Tasks as text to text, for T5: each example one input text, each label a word.

T5 answers in words. An example becomes the input text the Compacter reference code writes
(rabeehk/compacter, seq2seq/data/tasks.py), and its label the word the model must generate:

    task                         input text                                       label words
    cola, sst2                   sentence: S                                      "0", "1"
    mrpc, rte, wnli              sentence1: S1 sentence2: S2                      "0", "1"
    qqp                          question1: S1 question2: S2                      "0", "1"
    qnli                         question: S1 sentence: S2                        "0", "1"
    mnli                         premise: S1 hypothesis S2                        "0", "1", "2"
    stsb                         sentence1: S1 sentence2: S2                      "0.0", "0.2", ..., "5.0"
    synthetic-sentiment          as sst2;  synthetic-paraphrase as mrpc;  synthetic-similarity as stsb
    the user's data              sentence: S, or sentence1: S1 sentence2: S2      "0", "1", ... (label ids)

The label words are the label ids written as numbers (the reference's str(label)), not their
names; MNLI's "hypothesis" has no colon, as in the reference. A score (STS-B,
synthetic-similarity) is rounded to the nearest multiple of 0.2 and written with one
decimal, one of 26 words (T5's rule; the reference's round_stsb_target, meant to do the
same, rounds to 0.1).

The task prefix: the reference puts the task's name first ("sst2 sentence: ...") unless it
trains adapters (run_seq2seq.py: add_prefix = not train_task_adapters). So here the adapter
methods (AdapterConfig) read the text without it and every other method with it
(`adds_prefix`).

Training is teacher-forced cross-entropy over the label word's tokens (EOS included:
core/t5.seq2seq_loss); evaluation generates greedily, at most as many tokens as the
longest label word has, and an answer that is not exactly one label word's tokens is
invalid: counted wrong and counted (`score_answers`; metrics.json's "invalid_answers").
When every answer is the same (all invalid, early in training), a correlation is 0, not nan,
as the reference's metrics have it (`answer_metrics`).
"""

import math

import numpy as onp

from ...core.methods import AdapterConfig
from .batches import MAX_LENGTH, pad_token, tokenize
from .metrics import glue_metrics

IGNORE = -100             # a label position the loss skips (padding of shorter answers)
SCORE_STEP = 0.2          # STS-B's answers: 0.0, 0.2, ..., 5.0
SCORE_WORDS = tuple(f"{i * SCORE_STEP:.1f}" for i in range(26))
INVALID_SCORE = -1.0      # the score an invalid answer gets (T5's string_to_float default)

# task -> the words before each text column (the reference's; the synthetic tasks as the
# GLUE task each mirrors)
FIELDS = {"cola": ("sentence:",), "sst2": ("sentence:",),
          "mrpc": ("sentence1:", "sentence2:"), "rte": ("sentence1:", "sentence2:"),
          "wnli": ("sentence1:", "sentence2:"), "stsb": ("sentence1:", "sentence2:"),
          "qqp": ("question1:", "question2:"), "qnli": ("question:", "sentence:"),
          "mnli": ("premise:", "hypothesis"),
          "synthetic-sentiment": ("sentence:",),
          "synthetic-paraphrase": ("sentence1:", "sentence2:"),
          "synthetic-similarity": ("sentence1:", "sentence2:")}


def adds_prefix(method_config):
    """Whether the input starts with the task's name: not for the adapter methods, as the
    reference trains its adapters without it; for every other method."""
    return not isinstance(method_config, AdapterConfig)


def label_words(task):
    """The words a task's answers may be: "0", "1", ... (one per label id), or the 26 scores."""
    if task.is_regression:
        return SCORE_WORDS
    return tuple(str(i) for i in range(task.num_labels))


def label_word(task, label):
    """The answer for a label: the id as a word, or the score rounded to the nearest 0.2
    (halves up) with one decimal: 3.8 -> "3.8", 1.7 -> "1.8"."""
    if task.is_regression:
        steps = math.floor(float(label) / SCORE_STEP + 0.5 + 1e-6)      # (1e-6: 1.7 / 0.2 = 8.499..)
        return SCORE_WORDS[min(max(steps, 0), len(SCORE_WORDS) - 1)]
    return str(int(label))


def fields(task):
    """The words before each text column: the task's (FIELDS), else sentence: / sentence1:,
    sentence2: (the user's data)."""
    if task.name in FIELDS:
        return FIELDS[task.name]
    return ("sentence:",) if len(task.columns) == 1 else ("sentence1:", "sentence2:")


def input_text(task, texts, prefix):
    """An example's input: "[task ]field1: text1[ field2: text2]"."""
    parts = [task.name] if prefix else []
    for field, text in zip(fields(task), texts):
        parts += [field, text]
    return " ".join(parts)


def encode_text2text(dataset, tokenizer, task, *, prefix, max_length=MAX_LENGTH):
    """A split's examples as token ids: {"input_ids": the input texts (truncated to
    max_length, EOS last), "target_ids": the label words (EOS last), "label": the labels},
    one unpadded list per row."""
    columns = [dataset[c] for c in task.columns]
    texts = [input_text(task, row, prefix) for row in zip(*columns)]
    labels = list(dataset["label"])
    targets = [label_word(task, label) for label in labels]
    return {"input_ids": tokenize(tokenizer, texts, max_length=max_length,
                                  padding=False)["input_ids"],
            "target_ids": tokenize(tokenizer, targets, max_length=MAX_LENGTH,
                                   padding=False)["input_ids"],
            "label": labels}


def answer_ids(tokenizer, task):
    """Each label word's tokens as the model must generate them (EOS last), in label order."""
    ids = tokenize(tokenizer, list(label_words(task)), padding=False)["input_ids"]
    return [tuple(row) for row in ids]


class Text2TextEncoded:
    """A tokenised text-to-text split, cut into padded batches as data.batches.Encoded is:
    `lengths` (of the inputs), `labels`, `len()`, `batch(index)`; and `answers`, the label
    words' tokens (`answer_ids`), for scoring generated answers."""

    def __init__(self, columns, pad_id, answers, regression=False):
        self.ids = [onp.asarray(x, onp.int64) for x in columns["input_ids"]]
        self.targets = [onp.asarray(x, onp.int64) for x in columns["target_ids"]]
        self.labels = onp.asarray(columns["label"], onp.float32 if regression else onp.int64)
        self.lengths = onp.array([len(x) for x in self.ids])
        self.pad_id = pad_id
        self.answers = answers

    def __len__(self):
        return len(self.ids)

    def batch(self, index):
        """Rows `index`: "input_ids" and "attention_mask" (B, T) padded to the longest input,
        "labels" (B, T_dec) the answers' tokens padded with -100 (t5.seq2seq_loss skips them,
        and shift_right reads them as padding)."""
        T = int(self.lengths[index].max())
        T_dec = max(len(self.targets[i]) for i in index)
        B = len(index)
        ids = onp.full((B, T), self.pad_id, onp.int64)
        mask = onp.zeros((B, T), onp.int64)
        labels = onp.full((B, T_dec), IGNORE, onp.int64)
        for row, i in enumerate(index):
            n, m = self.lengths[i], len(self.targets[i])
            ids[row, :n], mask[row, :n], labels[row, :m] = self.ids[i], 1, self.targets[i]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    @property
    def max_answer_tokens(self):
        """Tokens the longest answer takes, EOS included: what generation needs at most."""
        return max(len(a) for a in self.answers)


def encode_splits_text2text(splits, tokenizer, task, *, prefix, max_length):
    """{split name: Text2TextEncoded} of a DatasetDict, tokenised once."""
    if tokenizer is None:
        raise ValueError(f"{task.name} is read as text, and this T5 has no tokenizer (its "
                         f"directory has no tokenizer.json); give a model directory with its "
                         f"tokenizer.json.")
    pad = pad_token(tokenizer)[1]
    answers = answer_ids(tokenizer, task)
    return {name: Text2TextEncoded(encode_text2text(ds, tokenizer, task, prefix=prefix,
                                                    max_length=max_length),
                                   pad, answers, task.is_regression)
            for name, ds in splits.items()}


def answer_index(row, answers, eos_id):
    """Which label word a generated row (ids, EOS and padding after it) is: its index in
    `answers`, or -1 when it is none of them (another word, or no EOS)."""
    row = [int(t) for t in row]
    end = row.index(eos_id) + 1 if eos_id in row else len(row) + 1
    try:
        return answers.index(tuple(row[:end]))
    except ValueError:
        return -1


def score_answers(indices, task, references):
    """(predictions as the metric reads them, invalid answers): each answer's label id (or
    score); an invalid answer (index -1) is made wrong: the label after the reference's
    (1 - label on a binary task, as T5's f1_score_with_invalid), or the score -1."""
    indices = onp.asarray(indices)
    invalid = indices < 0
    if task.is_regression:
        scores = onp.array([float(w) for w in SCORE_WORDS])
        return onp.where(invalid, INVALID_SCORE, scores[onp.maximum(indices, 0)]), int(invalid.sum())
    wrong = (onp.asarray(references, onp.int64) + 1) % task.num_labels
    return onp.where(invalid, wrong, indices), int(invalid.sum())


def answer_metrics(task, indices, references):
    """The task's metrics (glue_metrics' keys and score) of generated answers (label-word
    indices, -1 invalid: `score_answers`), plus "invalid_answers". A correlation of constant
    answers is 0.0 rather than nan (the reference's guard), so a validation in which every
    answer is the same scores, low, and training goes on."""
    predictions, invalid = score_answers(indices, task, references)
    references = onp.asarray(references, onp.float64 if task.is_regression else onp.int64)
    metrics = glue_metrics(task.metric, predictions, references)
    if task.is_regression and any(math.isnan(v) for v in metrics.values()):
        metrics = {k: 0.0 if math.isnan(v) else v for k, v in metrics.items() if k != "score"}
        metrics["score"] = (metrics["pearson"] + metrics["spearmanr"]) / 2
    return {**metrics, "invalid_answers": invalid}
