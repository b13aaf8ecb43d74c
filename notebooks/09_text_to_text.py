# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 · One text-to-text step on T5
#
# The paper's numbers are T5-base's, and T5 does not classify: it reads a text and writes
# one. A GLUE example becomes an input text, its label a word the model must write, and an
# answer that is not a label word counts as wrong. This notebook walks one example through
# that on `tiny-t5`, a random T5 of width 32 with its own small tokenizer (no T5 weights can
# be downloaded here; `mc.load_pretrained("t5-small")` gives the real one where the hub is
# reachable): the input words, the label words, teacher forcing and its loss written out,
# greedy generation written out, an invalid answer, and a short training run after which
# the answers are label words.

# %%
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np

plt.rcParams["figure.dpi"] = 100                 # figures at 100 dpi (tests/test_figures.py)
warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm without ipywidgets

import minicompacter as mc
from minicompacter.core import t5
from minicompacter.core.model import loss_and_grad
from minicompacter.core.optim import adamw_update, init_adamw
from minicompacter.harness.data import text2text
from minicompacter.harness.data.tasks import get_task

SMALL = os.environ.get("MINICOMPACTER_NOTEBOOK_SIZE", "full") == "small"
TASK = "synthetic-sentiment"
pretrained = mc.load_pretrained("tiny-t5")
cfg, tok = pretrained.config, pretrained.tokenizer
print(f"tiny-t5: {cfg.num_layers} encoder and {cfg.num_decoder_layers} decoder blocks, width "
      f"{cfg.d_model}, {cfg.num_heads} heads of {cfg.d_kv}, vocabulary {cfg.vocab_size}")

# %% [markdown]
# ## The input words and the label words
#
# `minicompacter/harness/data/text2text.py` writes each task as the Compacter reference code
# does (its `seq2seq/data/tasks.py`): the text columns behind their names, the label id as a
# word. The synthetic sentiment task is written as SST-2 is: `sentence: ...`, answer `0`
# (negative) or `1` (positive). STS-B's scores become 26 words, `0.0`, `0.2`, ..., `5.0`. The
# reference puts the task's name first unless it trains adapters; so do we
# (`adds_prefix`).

# %%
task = get_task(TASK)
example = mc.load_task(TASK)["train"][0]
for method in ("compacter", "full"):
    print(f"{method:<10} input: {text2text.input_text(task, [example['sentence']], text2text.adds_prefix(mc.method_config(method)))!r}")
print(f"label {example['label']} ({task.label_names[example['label']]}) -> answer "
      f"{text2text.label_word(task, example['label'])!r}")
print(f"the label words of {TASK}: {text2text.label_words(task)}; of stsb: "
      f"{', '.join(text2text.label_words(get_task('stsb'))[:4])}, ..., "
      f"{text2text.label_words(get_task('stsb'))[-1]}")

source = text2text.input_text(task, [example["sentence"]], prefix=False)
answer = text2text.label_word(task, example["label"])
enc, target = tok.encode(source), tok.encode(answer)
print("\ninput tokens: ", enc.tokens)
print("answer tokens:", target.tokens, "ids", target.ids)

# %% [markdown]
# T5's tokenizer appends `</s>` (EOS, id 1) to every text and adds nothing in front; the
# answer is the label word and its EOS, so the model must also learn to stop.
#
# ## Teacher forcing
#
# Training shows the decoder the right answer shifted by one, the start token (T5's is the
# pad token, id 0) first, and asks it at each position for the next token:
#
# | position | the decoder reads | it must predict |
# |---|---|---|
# | 0 | `<pad>` (the start) | the label word |
# | 1 | the label word | `</s>` |
#
# The loss is the mean over the answer's tokens of $-\log p(\text{token} \mid \text{input},
# \text{tokens before it})$: cross-entropy over the label tokens only.

# %%
batch = {"input_ids": np.array([enc.ids]), "attention_mask": np.ones((1, len(enc.ids)), int),
         "labels": np.array([target.ids])}
decoder_input_ids = t5.shift_right(batch["labels"], cfg)
print("labels:            ", batch["labels"][0].tolist(), tok.decode(batch["labels"][0], skip_special_tokens=False))
print("decoder_input_ids: ", decoder_input_ids[0].tolist())

logits = mc.seq2seq_logits(pretrained.params, {**batch, "decoder_input_ids": decoder_input_ids}, cfg)
log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
    - logits.max(-1, keepdims=True)                                     # (1, T_dec, V)
by_hand = -np.mean([log_p[0, t, token] for t, token in enumerate(target.ids)])
print(f"\nlogits {logits.shape}; loss by hand {by_hand:.5f}, t5.seq2seq_loss "
      f"{float(t5.seq2seq_loss(pretrained.params, batch, cfg)):.5f} "
      f"(log of the vocabulary: {np.log(cfg.vocab_size):.3f}, what a guess would cost)")
assert abs(by_hand - float(t5.seq2seq_loss(pretrained.params, batch, cfg))) < 1e-5

# %% [markdown]
# ## Greedy generation, and an invalid answer
#
# To answer, the decoder starts from the start token alone, takes the most likely next
# token, appends it and goes on until it writes `</s>` (or a limit: the longest label word's
# tokens). Written out below with the whole decoder run again at each step; `mc.generate`
# does the same with a key/value cache, each step running the decoder on the newest token
# only.

# %%
tokens = [cfg.decoder_start_token_id]
for _ in range(2 + 2):
    step = mc.seq2seq_logits(pretrained.params, {**batch, "decoder_input_ids": np.array([tokens])}, cfg)
    tokens.append(int(np.argmax(step[0, -1])))
    if tokens[-1] == cfg.eos_token_id:
        break
generated = mc.generate(pretrained, batch["input_ids"], batch["attention_mask"], max_new_tokens=4)
print("by hand:     ", tokens[1:])
print("mc.generate: ", generated[0].tolist(), repr(tok.decode(generated[0].tolist())))
assert generated[0].tolist()[:len(tokens) - 1] == tokens[1:]

answers = text2text.answer_ids(tok, task)            # each label word's tokens, EOS last
index = text2text.answer_index(generated[0], answers, cfg.eos_token_id)
predictions, invalid = text2text.score_answers([index], task, [example["label"]])
print(f"\nlabel words as tokens: {answers}; this answer is label word {index} "
      f"({'invalid' if index < 0 else 'valid'}); scored as label {predictions[0]} "
      f"against the true {example['label']}: invalid answers {invalid}")

# %% [markdown]
# The random model writes words of its vocabulary, not a label word: the answer is invalid.
# An invalid answer is scored as wrong (as the label the reference is not: $1 - y$ on a
# binary task, T5's `f1_score_with_invalid`; a score of $-1$ on STS-B) and counted:
# `metrics.json` reports `invalid_answers` beside the accuracy.
#
# ## Training: the answers become words, then right words
#
# One run of `mc.finetune` with full fine-tuning (the loop, the checkpoints and the command
# line are the encoder's; only the data are text and the scoring generates). After each
# epoch the validation answers are generated and scored.

# %%
sizes = dict(train_size=200, epochs=3) if SMALL else dict(train_size=None, epochs=8)
run = mc.finetune(pretrained, TASK, "full",
                  mc.TrainConfig(epochs=sizes["epochs"], lr=3e-3, dropout=False, progress=False),
                  train_size=sizes["train_size"])
validations = [h["validation"] for h in run["history"] if "validation" in h]
losses = [h["loss"] for h in run["history"] if "loss" in h]
for epoch, v in enumerate(validations, 1):
    print(f"epoch {epoch}: validation accuracy {v['accuracy']:.3f}, invalid answers "
          f"{v['invalid_answers']} of 500")
print(f"test: accuracy {run['test']['accuracy']:.3f}, invalid answers "
      f"{run['test']['invalid_answers']}")

fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(10, 3.4))
ax_l.plot(np.arange(1, len(losses) + 1), losses, lw=1)
ax_l.set_yscale("log"); ax_l.set_xlabel("step"); ax_l.set_ylabel("teacher-forced loss")
ax_l.set_title("training loss (per answer token)", fontsize=10)
epochs = np.arange(1, len(validations) + 1)
ax_v.plot(epochs, [v["accuracy"] for v in validations], "o-", label="accuracy")
ax_v.plot(epochs, [v["invalid_answers"] / 500 for v in validations], "s--",
          label="invalid answers (share)")
ax_v.set_ylim(-0.05, 1.05); ax_v.set_xlabel("epoch"); ax_v.legend(fontsize=8)
ax_v.set_title("validation (500 sentences), answers generated", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# *Figure: left, the loss of every step; right, after each epoch, the validation accuracy of
# the generated answers and the share of answers that were no label word.* The loss first
# falls to about $\frac{1}{2}\log 2$: the model has learned the answer's form (a label word,
# then `</s>`: one sure token and one coin flip) before it has learned which word; from then
# on no answer is invalid, and only later does the accuracy rise above a coin flip, as the
# model learns to read the sentence (the full run: about 87% on the test split,
# tests/test_t5_text.py). The same example, answered again:

# %%
params = run["trainable"]          # full fine-tuning: the best tree is the whole model
again = t5.generate(params, cfg, batch["input_ids"], batch["attention_mask"], 4)
index = text2text.answer_index(again[0], answers, cfg.eos_token_id)
print(f"{source!r}\n -> {tok.decode(again[0].tolist())!r}: label word {index}, the true label "
      f"{example['label']}")
assert index >= 0

# %% [markdown]
# One optimiser step, taken by hand, on the one example: the gradient of the teacher-forced
# loss with respect to every weight, and AdamW's update (what each step of `finetune`
# does, with a batch of 32).

# %%
model, trainable, frozen = mc.init_model(np.random.default_rng(0), pretrained, "full")
before, grads = loss_and_grad(trainable, frozen, batch, model)
trainable, _ = adamw_update(trainable, grads, init_adamw(trainable), 1e-3)
after = mc.loss(trainable, frozen, batch, model)
print(f"loss on the example: {float(before):.4f} before the step, {float(after):.4f} after")
assert after < before
