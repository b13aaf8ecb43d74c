"""T5 in the harness: tasks as text to text (data/text2text.py), load_pretrained on T5
directories and the tiny-t5 model, the public names for checks from outside, training and
evaluation by generation (the loop, checkpoints, resume, the command line), and AdapterHub's
and peft's T5 adapters read and written (the fixtures of tests/fixtures/t5/, made by those
libraries: tests/fixtures/t5/README.md).

The training test: tiny-t5 (random weights, 2 + 2 blocks of width 32) fine-tuned in full on
synthetic-sentiment (2,000 training examples, 8 epochs, lr 3e-3, no dropout) answers "0" or
"1" correctly for 87.4% of the 500 test sentences (measured; asserted: at least 80%, against
a majority class of about 50%)."""

import json
import shutil
from pathlib import Path

import numpy as onp
import pytest

import minicompacter as mc
from minicompacter.core.model import hidden_states, predict
from minicompacter.harness.data import text2text
from minicompacter.harness.data.tasks import get_task
from minicompacter.harness.formats import adapterhub, families, peft
from minicompacter.harness.formats.dispatch import export_adapter, load_adapter
from minicompacter.harness.training.evaluate import evaluate_checkpoint, predict_texts
from minicompacter.harness.training.train import TrainConfig, finetune

from conftest import stop_after
from test_train import cli

FIXTURES = Path(__file__).parent / "fixtures" / "t5"
REF = onp.load(FIXTURES / "reference.npz")
INFO = json.loads((FIXTURES / "reference.json").read_text())
TASK = "synthetic-sentiment"
CFG = TrainConfig(epochs=2, batch_size=16, max_length=32, progress=False)


@pytest.fixture(scope="module")
def tiny_t5():
    return mc.load_pretrained("tiny-t5")


@pytest.fixture(scope="module")
def v1_0():
    return mc.load_pretrained(FIXTURES / "t5_v1_0")


def fixture_batch():
    return {k: REF[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}


# --- tasks as text --------------------------------------------------------------------------

def test_the_references_input_texts_and_label_words():
    sst2, mnli, qnli, stsb = (get_task(n) for n in ("sst2", "mnli", "qnli", "stsb"))
    assert text2text.input_text(sst2, ["a fine film"], prefix=False) == "sentence: a fine film"
    assert text2text.input_text(sst2, ["a fine film"], prefix=True) == "sst2 sentence: a fine film"
    assert text2text.input_text(mnli, ["p", "h"], prefix=False) == "premise: p hypothesis h"
    assert text2text.input_text(qnli, ["q", "s"], prefix=False) == "question: q sentence: s"
    assert text2text.label_words(mnli) == ("0", "1", "2")
    words = text2text.label_words(stsb)
    assert len(words) == 26 and words[0] == "0.0" and words[1] == "0.2" and words[-1] == "5.0"
    # rounded to the nearest 0.2, halves up: the synthetic task's 1.7 and 3.3 as well
    rounded = {0.0: "0.0", 0.09: "0.0", 0.1: "0.2", 1.7: "1.8", 3.3: "3.4", 3.8: "3.8",
               2.5: "2.6", 4.99: "5.0", 5.0: "5.0"}
    assert {s: text2text.label_word(stsb, s) for s in rounded} == rounded
    assert text2text.label_word(sst2, 1) == "1"


def test_the_task_prefix_is_for_the_methods_that_train_no_adapter():
    assert not text2text.adds_prefix(mc.method_config("compacter"))
    assert not text2text.adds_prefix(mc.method_config("pfeiffer"))
    assert all(text2text.adds_prefix(mc.method_config(m)) for m in ("full", "bitfit", "lora"))


def test_invalid_answers_are_wrong_and_counted():
    sst2, mnli, stsb = get_task("sst2"), get_task("mnli"), get_task("stsb")
    # answers as label-word indices, -1 for an answer that is none of them
    m = text2text.answer_metrics(sst2, [1, -1, 0, -1], [1, 1, 0, 0])
    assert m == {"accuracy": 0.5, "score": 0.5, "invalid_answers": 2}
    preds, invalid = text2text.score_answers([-1, -1, 2], mnli, [0, 2, 2])
    assert invalid == 2 and list(preds) == [1, 0, 2]             # wrong, whatever the label
    preds, invalid = text2text.score_answers([25, -1, 4], stsb, [5.0, 3.0, 0.8])
    assert invalid == 1 and list(preds) == [5.0, -1.0, 0.8]
    # every answer the same (all invalid): correlation 0, not nan, so training goes on
    m = text2text.answer_metrics(stsb, [-1, -1, -1], [1.0, 2.0, 3.0])
    assert m == {"pearson": 0.0, "spearmanr": 0.0, "score": 0.0, "invalid_answers": 3}


def test_answers_are_read_off_the_generated_ids(tiny_t5):
    task = get_task("stsb")
    answers = text2text.answer_ids(tiny_t5.tokenizer, task)
    assert len(answers) == 26 and all(a[-1] == 1 for a in answers)     # EOS last
    eos, pad = 1, 0
    three_eight = answers[19]
    assert text2text.answer_index(list(three_eight) + [pad, pad], answers, eos) == 19
    assert text2text.answer_index(list(three_eight[:-1]), answers, eos) == -1     # no EOS
    assert text2text.answer_index([three_eight[0], 7, eos], answers, eos) == -1
    assert text2text.answer_index([eos], answers, eos) == -1                       # empty


def test_a_split_as_text_to_text_batches(tiny_t5):
    splits = mc.load_task("synthetic-paraphrase")
    task = get_task("synthetic-paraphrase")
    encoded = text2text.encode_splits_text2text({"validation": splits["validation"]},
                                                tiny_t5.tokenizer, task, prefix=False,
                                                max_length=64)["validation"]
    b = encoded.batch(onp.arange(4))
    assert b["labels"].shape == (4, 2) and (b["labels"][:, -1] == 1).all()   # word, EOS
    first = tiny_t5.tokenizer.decode(list(b["input_ids"][0][b["attention_mask"][0] == 1]))
    row = splits["validation"][0]
    assert first == f"sentence1: {row['sentence1']} sentence2: {row['sentence2']}"
    assert encoded.max_answer_tokens == 2


# --- loading, and the public names -----------------------------------------------------------

def test_load_pretrained_reads_a_t5_directory_and_makes_tiny_t5(v1_0, tiny_t5, tmp_path):
    assert v1_0.seq2seq and v1_0.family == "t5" and v1_0.config.d_model == 32
    assert v1_0.path == str((FIXTURES / "t5_v1_0").resolve())
    assert tiny_t5.seq2seq and tiny_t5.config.vocab_size == tiny_t5.tokenizer.get_vocab_size()
    for word in ("sentence1:", "premise:", "3.8", "synthetic-sentiment"):      # one piece each
        assert len(tiny_t5.tokenizer.encode(word).ids) == 2, word
    bare = tmp_path / "bare"
    shutil.copytree(FIXTURES / "t5_v1_0", bare)
    (bare / "tokenizer.json").unlink()
    loaded = mc.load_pretrained(bare)
    assert loaded.tokenizer is None and loaded.seq2seq
    with pytest.raises(ValueError, match="has no tokenizer"):
        finetune(loaded, TASK, "lora", CFG, train_size=16)


def test_public_names_equal_transformers_on_the_fixtures(v1_0):
    logits = mc.seq2seq_logits(v1_0.params, fixture_batch(), v1_0.config)
    assert logits.dtype == onp.float32 and logits.shape == (3, 8, 128)
    onp.testing.assert_allclose(logits, REF["t5_v1_0_logits_f64"], atol=1e-4)
    ids = mc.generate(v1_0, REF["generate_input_ids"], REF["generate_attention_mask"],
                      max_new_tokens=8)
    assert ids.tolist() == INFO["generate"]["t5_v1_0"]["f32"]["batch"]
    with pytest.raises(ValueError, match="needs a T5"):
        mc.generate(mc.load_pretrained("tiny"), REF["input_ids"])


# --- training, checkpoints, the command line --------------------------------------------------

@pytest.mark.slow
def test_full_fine_tuning_teaches_a_random_t5_the_sentiment_task(tiny_t5):
    m = finetune(tiny_t5, TASK, "full", TrainConfig(epochs=8, lr=3e-3, dropout=False,
                                                    progress=False))
    assert m["test"]["accuracy"] >= 0.8 and m["test"]["invalid_answers"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["compacter", "lora", "bitfit"])
def test_parameter_efficient_methods_train_on_t5_the_loss_falls(tiny_t5, method):
    """60 steps on the random tiny-t5 (measured: the mean loss of the first five steps 6.8,
    6.7, 6.6 and of the last five 2.9, 2.5, 2.9 for Compacter, LoRA and BitFit)."""
    config = mc.method_config(method, **({"reduction_factor": 8} if method == "compacter" else {}))
    m = finetune(tiny_t5, TASK, config, TrainConfig(epochs=3, batch_size=16, lr=1e-2,
                                                    dropout=False, progress=False),
                 train_size=320)
    losses = [h["loss"] for h in m["history"] if "loss" in h]
    assert onp.mean(losses[-5:]) < 0.5 * onp.mean(losses[:5])
    assert set(m["validation"]) == {"accuracy", "score", "invalid_answers"}


@pytest.mark.slow
def test_checkpoint_evaluate_and_resume_on_t5(tiny_t5, tmp_path):
    method = mc.method_config("compacter++", reduction_factor=8)
    reference = finetune(tiny_t5, TASK, method, CFG, train_size=96, out=tmp_path / "whole")
    written = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert written["test"]["invalid_answers"] == reference["test"]["invalid_answers"]
    again = evaluate_checkpoint(tmp_path / "whole")
    assert again == {"validation": written["validation"], "test": written["test"]}
    config = json.loads((tmp_path / "whole" / "minicompacter_adapter.json").read_text())
    assert config["base_architecture"] == "t5" and config["base_config"]["d_model"] == 32
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_t5, TASK, method, CFG, train_size=96, out=tmp_path / "cut",
                 on_step=stop_after(5))
    resumed = finetune(tiny_t5, TASK, method, CFG, train_size=96, out=tmp_path / "cut",
                       resume=True)
    assert resumed["history"] == reference["history"]
    assert resumed["test"] == reference["test"]


@pytest.mark.slow
def test_the_command_line_on_tiny_t5(tmp_path):
    out = cli("finetune", "--model", "tiny-t5", "--task", "synthetic-similarity", "--method",
              "lora", "--train-size", "64", "--epochs", "1", "--no-progress", "--out",
              str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"pearson", "spearmanr", "score", "invalid_answers"}
    said = cli("predict", "--checkpoint", str(tmp_path / "run"), "--text", "the cat ran",
               "--pair", "the kitty ran", "--json")
    assert said.returncode == 0, said.stderr
    answer = json.loads(said.stdout)
    assert set(answer) == {"text", "pair", "answer", "score"}
    exported = cli("export", "--checkpoint", str(tmp_path / "run"), "--to", "peft", "--out",
                   str(tmp_path / "peft"))
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["task_type"] == \
        "SEQ_2_SEQ_LM"
    refused = cli("export", "--checkpoint", str(tmp_path / "run"), "--to", "adapters", "--out",
                  str(tmp_path / "x"))
    assert refused.returncode == 2 and "peft" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_predict_texts_answers_in_words(tiny_t5, tmp_path):
    finetune(tiny_t5, TASK, "lora", CFG, train_size=32, out=tmp_path / "run")
    answers = predict_texts(tmp_path / "run", ["the movie was good", "the food was awful"])
    assert len(answers) == 2 and all(set(a) == {"answer", "label"} for a in answers)
    for a in answers:       # a label name when the answer is a label word, None otherwise
        word = a["answer"]
        expected = get_task(TASK).label_names[int(word)] if word in ("0", "1") else None
        assert a["label"] == expected


# --- AdapterHub's and peft's T5 adapters ------------------------------------------------------

ADAPTERHUB = ("adapterhub_compacter", "adapterhub_compacterpp",
              "adapterhub_compacterpp_equivalent", "adapterhub_houlsby")


@pytest.mark.parametrize("fixture", ADAPTERHUB + ("peft_lora",))
def test_adapterhub_and_peft_t5_adapters_load_and_compute_what_those_libraries_did(v1_0, fixture):
    model, trainable, frozen, info = load_adapter(FIXTURES / fixture, v1_0)
    assert info["format"] == ("peft" if fixture == "peft_lora" else "adapterhub")
    states = hidden_states(trainable, frozen, fixture_batch(), model)
    logits = predict(trainable, frozen, fixture_batch(), model)
    onp.testing.assert_allclose(states, REF[f"{fixture}_encoder"], atol=2e-5)
    onp.testing.assert_allclose(logits, REF[f"{fixture}_logits"], atol=5e-5)


@pytest.mark.parametrize("fixture", ADAPTERHUB + ("peft_lora",))
def test_t5_adapters_are_written_back_as_the_libraries_saved_them(v1_0, fixture, tmp_path):
    """Read, then written with the library's names: the same tensors (names, shapes, values)
    and the config fields that say what is computed."""
    from safetensors.numpy import load_file

    model, trainable, _, info = load_adapter(FIXTURES / fixture, v1_0)
    if fixture == "peft_lora":
        peft.write(tmp_path, trainable, model, family=families.T5,
                   base_model_name_or_path="t5_v1_0")
        weights, config = "adapter_model.safetensors", "adapter_config.json"
        fields = ("r", "lora_alpha", "task_type", "peft_type")
    else:
        adapterhub.write(tmp_path, trainable, model, family=families.T5,
                         name=info["adapter_name"], model_name="t5_v1_0")
        weights, config = "adapter.safetensors", "adapter_config.json"
        fields = ("model_class", "model_type", "name", "hidden_size")
    theirs, ours = load_file(FIXTURES / fixture / weights), load_file(tmp_path / weights)
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        onp.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    a = json.loads((FIXTURES / fixture / config).read_text())
    b = json.loads((tmp_path / config).read_text())
    assert {f: b[f] for f in fields} == {f: a[f] for f in fields}
    if fixture == "peft_lora":
        assert sorted(b["target_modules"]) == sorted(a["target_modules"]) == ["q", "v"]
    else:
        assert b["config"] == {k: v for k, v in a["config"].items() if k in b["config"]}


@pytest.mark.slow
def test_a_trained_t5_adapter_exported_reads_back_the_same(tiny_t5, tmp_path):
    finetune(tiny_t5, TASK, mc.method_config("compacter", reduction_factor=8), CFG,
             train_size=32, out=tmp_path / "run")
    summary = export_adapter(tmp_path / "run", "adapters", tmp_path / "ah")
    assert summary["needs_base"]                  # the trained layer norms, in ah/base/
    assert (tmp_path / "ah" / "base" / "config.json").exists()
    names = json.loads((tmp_path / "ah" / "adapter_config.json").read_text())
    assert names["model_class"] == "T5AdapterModel"
    a = load_adapter(tmp_path / "run")
    b = load_adapter(tmp_path / "ah")
    batch = {k: v[:2] for k, v in fixture_batch().items()}
    onp.testing.assert_array_equal(predict(a[1], a[2], batch, a[0]),
                                   predict(b[1], b[2], batch, b[0]))


def test_peft_targets_that_miss_an_attention_are_refused(v1_0, tmp_path):
    shutil.copytree(FIXTURES / "peft_lora", tmp_path / "p")
    config = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    config["target_modules"] = ["SelfAttention.q"]
    (tmp_path / "p" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="every attention"):
        load_adapter(tmp_path / "p", v1_0)
    config["target_modules"] = ["wo"]
    (tmp_path / "p" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="matches layer.1.DenseReluDense.wo"):
        load_adapter(tmp_path / "p", v1_0)


@pytest.mark.slow
def test_bitfit_on_t5_is_refused_by_every_export(tiny_t5, tmp_path):
    finetune(tiny_t5, TASK, "bitfit", CFG, train_size=32, out=tmp_path / "run")
    for target in ("adapters", "peft", "transformers"):
        with pytest.raises(ValueError, match="T5 has no biases"):
            export_adapter(tmp_path / "run", target, tmp_path / target)
