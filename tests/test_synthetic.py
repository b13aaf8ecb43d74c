"""The synthetic GLUE-like suite: determinism, shapes, balance, labels that follow the
documented rules (checked by re-deriving them from the text), no leaks between splits,
no unknown words, the errors, and baselines that show the tasks are not trivial."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minicompacter.harness.data import synthetic as syn
from minicompacter.harness.pretrained import tiny_tokenizer
from minicompacter.harness.data.synthetic import SYNTHETIC_TASKS, load_synthetic, sentiment_label, vocabulary

TASKS = sorted(SYNTHETIC_TASKS)


@pytest.fixture(scope="module")
def data():
    """Every task at the default sizes and seed, made once."""
    return {name: load_synthetic(name) for name in TASKS}


def digest(dataset_dict):
    """A hash of every split's rows and features."""
    blob = {split: {"rows": ds.to_dict(), "features": str(ds.features)}
            for split, ds in dataset_dict.items()}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def texts(ds, columns):
    return [tuple(row[c] for c in columns) for row in ds]


# --- an independent parse of the pair tasks' sentences ----------------------------------

def forms_index(table, column_of_forms):
    """{surface form: canonical index} over every form of every entry."""
    return {form: i for i, entry in enumerate(table) for form in column_of_forms(entry)}


NOUN_OF = forms_index(syn.NOUNS, lambda entry: entry)
VERB_OF = forms_index(syn.VERBS, lambda entry: [f for forms in entry for f in forms])
ADJUNCTS = [(slot, form, i) for slot, table in (("place", syn.PLACES), ("time", syn.TIMES))
            for i, forms in enumerate(table) for form in forms]


def parse_phrase(words):
    """(noun index, count, colour) from ["the", count?, colour?, noun]."""
    assert words[0] == "the", words
    count = next((w for w in words if w in syn.COUNTS), "")
    colour = next((w for w in words if w in syn.COLOURS), "")
    return (NOUN_OF[words[-1]], count, colour)


def meaning(sentence):
    """The clause a pair-task sentence means, parsed from its text alone: an adjunct may
    stand in front ("yesterday , ..."), the others end the sentence; "was/were ... by"
    marks the passive."""
    clause = {"place": None, "time": None}
    front, _, rest = sentence.rpartition(" , ")
    rest = f" {rest}"
    for _ in range(2):                                   # adjuncts at the end, last first
        for slot, form, i in ADJUNCTS:
            if clause[slot] is None and rest.endswith(f" {form}"):
                clause[slot], rest = i, rest[:-len(form) - 1]
                break
    if front:
        slot, i = next((slot, i) for slot, form, i in ADJUNCTS if form == front)
        assert clause[slot] is None
        clause[slot] = i
    words = rest.split()
    verb_at = next(j for j, w in enumerate(words) if w in VERB_OF)
    clause["verb"] = VERB_OF[words[verb_at]]
    clause["negated"] = "not" in words
    before = [w for w in words[:verb_at] if w not in ("did", "not", "was", "were")]
    after = words[verb_at + 1:]
    if after[0] == "by":                                 # passive: the object comes first
        clause["object"], clause["subject"] = parse_phrase(before), parse_phrase(after[1:])
    else:
        clause["subject"], clause["object"] = parse_phrase(before), parse_phrase(after)
    return clause


def is_passive(sentence):
    return " was " in f" {sentence} " or " were " in f" {sentence} "


# --- the tests -----------------------------------------------------------------------------

def test_registry():
    assert TASKS == ["synthetic-paraphrase", "synthetic-sentiment", "synthetic-similarity"]
    s, p, r = (SYNTHETIC_TASKS[n] for n in ("synthetic-sentiment", "synthetic-paraphrase",
                                            "synthetic-similarity"))
    assert (s.columns, s.num_labels, s.label_names, s.metric) == (
        ("sentence",), 2, ("negative", "positive"), "accuracy")
    assert (p.columns, p.num_labels, p.label_names, p.metric) == (
        ("sentence1", "sentence2"), 2, ("not_equivalent", "equivalent"), "accuracy_f1")
    assert (r.columns, r.num_labels, r.label_names, r.metric) == (
        ("sentence1", "sentence2"), 1, (), "pearson_spearman")


@pytest.mark.parametrize("name", TASKS)
def test_columns_dtypes_and_sizes(data, name):
    task, dd = SYNTHETIC_TASKS[name], data[name]
    assert list(dd) == ["train", "validation", "test"]
    assert [len(dd[s]) for s in dd] == [2000, 500, 500]
    for ds in dd.values():
        assert ds.column_names == list(task.columns) + ["label"]
        for c in task.columns:
            assert ds.features[c].dtype == "string"
            assert all(isinstance(t, str) and t == t.strip() and "  " not in t for t in ds[c])
        if task.num_labels > 1:
            assert ds.features["label"].dtype == "int64"
            assert ds.features["label"].names == list(task.label_names)
            assert set(ds["label"]) == set(range(task.num_labels))
        else:
            assert ds.features["label"].dtype == "float32"
            assert all(isinstance(y, float) for y in ds["label"])


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_data_different_seed_different_data(data, name):
    small = (50, 20, 20)
    assert digest(load_synthetic(name)) == digest(data[name])
    assert digest(load_synthetic(name, seed=1, sizes=small)) == digest(
        load_synthetic(name, seed=1, sizes=small))
    assert digest(load_synthetic(name, seed=2, sizes=small)) != digest(
        load_synthetic(name, seed=1, sizes=small))
    assert load_synthetic(name, seed=1)["train"]["label"] != data[name]["train"]["label"]


@pytest.mark.slow
def test_same_data_in_another_process(data):
    """Byte-identical across processes, whatever Python's string hash seed."""
    code = ("import json; from minicompacter.harness.data.synthetic import load_synthetic, SYNTHETIC_TASKS; "
            "from tests.test_synthetic import digest; "
            "print(json.dumps({n: digest(load_synthetic(n)) for n in sorted(SYNTHETIC_TASKS)}))")
    ours = {name: digest(data[name]) for name in TASKS}
    for hash_seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed},
                             cwd=Path(__file__).parents[1])
        assert json.loads(out.stdout) == ours


@pytest.mark.parametrize("name", TASKS)
def test_no_example_in_two_splits(data, name):
    columns = SYNTHETIC_TASKS[name].columns
    keys = {split: texts(ds, columns) for split, ds in data[name].items()}
    for split, rows in keys.items():
        assert len(set(rows)) == len(rows), split
    assert not set(keys["train"]) & set(keys["test"])
    assert not set(keys["train"]) & set(keys["validation"])
    assert not set(keys["validation"]) & set(keys["test"])


@pytest.mark.parametrize("name", ["synthetic-sentiment", "synthetic-paraphrase"])
def test_classes_balanced_and_majority_class_weak(data, name):
    for split, ds in data[name].items():
        share = sum(ds["label"]) / len(ds)
        assert 0.35 <= share <= 0.65, (split, share)
    test_labels = data[name]["test"]["label"]
    majority = max(set(test_labels), key=test_labels.count)
    assert sum(y == majority for y in test_labels) / len(test_labels) <= 0.65


def test_sentiment_rule_on_hand_written_sentences():
    assert sentiment_label("the movie was not good") == 0
    assert sentiment_label("the movie was very good") == 1
    assert sentiment_label("the movie was somewhat bad") == 0
    assert sentiment_label("the food was bad but the service was excellent") == 1
    assert sentiment_label("the food was excellent but the service was bad") == 0
    assert sentiment_label("the phone is far from great") == 0
    assert sentiment_label("the plot was hardly terrible") == 1
    assert sentiment_label("the soup was never bad but the waiter was not extremely nice") == 0


def test_sentiment_labels_follow_the_rules(data):
    for ds in data["synthetic-sentiment"].values():
        assert [sentiment_label(s) for s in ds["sentence"]] == ds["label"]
    sentences = data["synthetic-sentiment"]["train"]["sentence"]
    for word in syn.NEGATORS + syn.INTENSIFIERS + syn.DOWNTONERS + ("but",):
        assert any(f" {word} " in s for s in sentences), word         # every rule is exercised


def test_bag_of_words_cannot_solve_sentiment(data):
    """Positive minus negative words, blind to negation and "but", is far from perfect."""
    ds = data["synthetic-sentiment"]["test"]
    def bag_of_words(sentence):
        words = sentence.split()
        return int(sum(w in syn.POSITIVE for w in words) >= sum(w in syn.NEGATIVE for w in words))
    accuracy = sum(bag_of_words(s) == y for s, y in zip(ds["sentence"], ds["label"])) / len(ds)
    assert accuracy < 0.85


def test_paraphrase_labels_follow_the_meaning(data):
    kinds = set()
    for ds in data["synthetic-paraphrase"].values():
        for s1, s2, y in zip(ds["sentence1"], ds["sentence2"], ds["label"]):
            m1, m2 = meaning(s1), meaning(s2)
            assert s1 != s2 and y == int(m1 == m2), (s1, s2, y)
            if m2 == {**m1, "subject": m1["object"], "object": m1["subject"]}:
                kinds.add("swap")
            if m2["negated"] != m1["negated"]:
                kinds.add("negation")
            if y and is_passive(s1) != is_passive(s2):
                kinds.add("passive")
    assert kinds == {"swap", "negation", "passive"}


def test_word_overlap_cannot_solve_paraphrase(data):
    """No threshold on the words two sentences share (Jaccard) tells the classes apart."""
    ds = data["synthetic-paraphrase"]["test"]
    overlaps = [len(set(a.split()) & set(b.split())) / len(set(a.split()) | set(b.split()))
                for a, b in zip(ds["sentence1"], ds["sentence2"])]
    for threshold in sorted(set(overlaps)):
        accuracy = sum((o >= threshold) == y for o, y in zip(overlaps, ds["label"])) / len(ds)
        assert 0.35 < accuracy < 0.65, (threshold, accuracy)


def test_paraphrase_parser_on_hand_written_sentences():
    active = meaning("yesterday , the dog chased the two cats by the river")
    assert active == meaning("the two kitties were pursued by the dog by the river yesterday")
    assert active != meaning("the two cats chased the dog by the river yesterday")
    assert active != meaning("the dog did not chase the two cats by the river yesterday")


def test_similarity_scores_follow_the_shared_slots(data):
    scores = []
    for ds in data["synthetic-similarity"].values():
        for s1, s2, y in zip(ds["sentence1"], ds["sentence2"], ds["label"]):
            m1, m2 = meaning(s1), meaning(s2)
            slots = [s for s in syn.SIMILARITY_SLOTS if m1[s] is not None]
            assert [s for s in syn.SIMILARITY_SLOTS if m2[s] is not None] == slots
            shared = sum(m1[s] == m2[s] for s in slots)
            assert y == pytest.approx(round(5 * shared / len(slots) + 1e-9, 1), abs=1e-6)
            assert s1 != s2
            scores.append(y)
    assert min(scores) == 0.0 and max(scores) == 5.0
    assert all(0.0 <= y <= 5.0 for y in scores)
    assert len({round(y, 1) for y in scores}) >= 10               # the whole range, not two ends
    assert sum(y == 0 for y in scores) > 100 and sum(y == 5 for y in scores) > 100


def test_vocabulary_covers_every_generated_word(data):
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    known = set(vocab)
    tokenizer = tiny_tokenizer(vocab)
    unk = tokenizer.token_to_id("[UNK]")
    for name in TASKS:
        for ds in data[name].values():
            for column in SYNTHETIC_TASKS[name].columns:
                sentences = ds[column]
                assert {w for s in sentences for w in s.split()} <= known
                assert not any(unk in e.ids for e in tokenizer.encode_batch(sentences))


def test_errors():
    with pytest.raises(ValueError, match="synthetic-sentiment.*synthetic-paraphrase"):
        load_synthetic("sst2")
    for bad in [(0, 10, 10), (10, 10), (10, -1, 10), (10.0, 10, 10), (True, 10, 10)]:
        with pytest.raises(ValueError, match="three positive integers"):
            load_synthetic("synthetic-sentiment", sizes=bad)
    with pytest.raises(ValueError, match="at most"):
        load_synthetic("synthetic-paraphrase", sizes=(10**6, 10, 10))


def test_too_many_for_the_templates(monkeypatch):
    """A task whose templates give only three distinct examples cannot fill five rows."""
    few = SYNTHETIC_TASKS["synthetic-sentiment"].__class__(
        ("sentence",), 2, ("negative", "positive"), "accuracy",
        lambda rng: {"sentence": f"the movie was good {int(rng.integers(3))}", "label": 1})
    monkeypatch.setitem(SYNTHETIC_TASKS, "few", few)
    assert len(load_synthetic("few", sizes=(1, 1, 1))["test"]) == 1
    with pytest.raises(ValueError, match="only 3 distinct examples"):
        load_synthetic("few", sizes=(3, 1, 1))


def test_generation_is_fast():
    start = time.perf_counter()
    for name in TASKS:
        load_synthetic(name, seed=3)
    assert time.perf_counter() - start < 20      # about 1 s on a laptop
