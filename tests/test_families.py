"""RoBERTa, XLM-RoBERTa, DistilBERT and ELECTRA read through harness/formats/families.py, against
what transformers, AdapterHub and peft computed on small random-weight models of each family
(tests/fixtures/families/, made by make_family_fixtures.py there; no torch here):

  - the hidden states of the core encoder equal transformers' (float64 reference) within 1e-4
    in float32 and 1e-10 in float64, at every position, padded rows included (padding on the
    right and on the left);
  - tokenizers.Tokenizer.from_file(tokenizer.json) gives transformers' fast tokenizer's ids,
    type ids and masks on sentences with accents, emoji and pairs;
  - the names families.py gives AdapterHub's and peft's tensors are the ones the libraries
    wrote, and the core reproduces the adapters' outputs from those files;
  - config.json and checkpoint errors name the field or tensor.

The measured differences are printed with -s (pytest -s tests/test_families.py)."""

import json
from pathlib import Path

import numpy as onp
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

import minicompacter as mc
from minicompacter.core.encoder import pool
from minicompacter.core.model import init_model
from minicompacter.core.paths import ATTENTION_ADAPTER, FFN_ADAPTER, HEAD, SHARED
from minicompacter.core.tree import flatten, leaves, unflatten
from minicompacter.harness.formats import adapterhub, families
from minicompacter.harness.formats.families import FAMILIES, FamilyError
from minicompacter.harness.pretrained import Pretrained

HERE = Path(__file__).parent / "fixtures" / "families"
DIRS = {"roberta": "roberta", "xlm-roberta": "xlm_roberta", "distilbert": "distilbert",
        "electra": "electra"}
GROUPS = ("single", "pair", "single_left")
OUTPUTS = onp.load(HERE / "outputs.npz")
META = json.loads((HERE / "outputs.json").read_text())


def read_json(path):
    return json.loads(Path(path).read_text())


def load(model_type, dtype=onp.float32):
    """(family, config, params, tokenizer) of a fixture directory, read as the harness will."""
    directory = HERE / DIRS[model_type]
    hf = read_json(directory / "config.json")
    family = families.family_of(hf)
    cfg = families.encoder_config(hf)
    params = families.params_from_tensors(load_file(str(directory / "model.safetensors")),
                                          family, cfg, dtype=dtype)
    return family, cfg, params, Tokenizer.from_file(str(directory / "tokenizer.json"))


def batch(model_type, group):
    key = DIRS[model_type]
    return {k: OUTPUTS[f"{key}_{group}_{k}"] for k in ("input_ids", "token_type_ids",
                                                        "attention_mask")}


def reference(model_type, group, precision="float64"):
    return OUTPUTS[f"{DIRS[model_type]}_{group}_hidden_{precision}"]


# --- hidden states ------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", DIRS)
def test_hidden_states_equal_transformers(model_type):
    diffs = {}
    for dtype, tol in ((onp.float32, 1e-4), (onp.float64, 1e-10)):
        _, cfg, params, _ = load(model_type, dtype)
        worst = 0.0
        for g in GROUPS:
            out = mc.encoder(params, batch(model_type, g), cfg)
            assert out.dtype == dtype and out.shape == reference(model_type, g).shape
            worst = max(worst, float(onp.abs(out - reference(model_type, g)).max()))
        diffs[onp.dtype(dtype).name] = worst
        assert worst < tol, (model_type, dtype, worst)
    print(f"\n{model_type}: max |ours - transformers float64| over {', '.join(GROUPS)}, every "
          f"position: float32 run {diffs['float32']:.2e}, float64 run {diffs['float64']:.2e}")


def test_the_fixtures_test_what_they_should():
    """Positions matter (RoBERTa's offset, left padding), token types matter (ELECTRA's pairs),
    so a family read with BERT's conventions would fail the comparison above."""
    import dataclasses
    _, cfg, params, _ = load("roberta", onp.float64)
    as_bert = dataclasses.replace(cfg, padding_idx=None)
    b = batch("roberta", "single_left")
    assert onp.abs(mc.encoder(params, b, as_bert) - reference("roberta", "single_left")).max() > 0.1
    _, cfg, params, _ = load("electra", onp.float64)
    b = dict(batch("electra", "pair"), token_type_ids=onp.zeros_like(batch("electra", "pair")[
        "input_ids"]))
    assert onp.abs(mc.encoder(params, b, cfg) - reference("electra", "pair")).max() > 0.1


def test_each_fixture_is_the_family_it_says():
    expected = {"roberta": dict(padding_idx=1, type_vocab_size=1, max_positions=66,
                                layer_norm_eps=1e-5),
                "xlm-roberta": dict(padding_idx=1, type_vocab_size=1, max_positions=66),
                "distilbert": dict(padding_idx=None, type_vocab_size=0,
                                   attention_output_dropout=False, sinusoidal_positions=False),
                "electra": dict(padding_idx=None, type_vocab_size=2, embedding_size=16,
                                hidden_size=32)}
    for model_type, fields in expected.items():
        _, cfg, params, _ = load(model_type)
        assert {k: getattr(cfg, k) for k in fields} == fields, model_type
        assert cfg.max_length == 64
        assert ("project" in params["embeddings"]) == (model_type == "electra")


def test_sinusoidal_table_equals_distilberts():
    cfg = families.encoder_config(dict(read_json(HERE / "distilbert" / "config.json"),
                                       sinusoidal_pos_embds=True))
    table = mc.init_encoder(onp.random.default_rng(0), cfg)["embeddings"]["position"]
    onp.testing.assert_allclose(table, OUTPUTS["distilbert_sinusoidal_table"], atol=1e-6)


# --- tokenizers -------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", DIRS)
def test_tokenizer_json_gives_transformers_ids(model_type):
    family, cfg, _, tok = load(model_type)
    directory = HERE / DIRS[model_type]
    token, pad_id = families.pad_token(tok, family, cfg,
                                       read_json(directory / "tokenizer_config.json"))
    assert (token, pad_id) == (family.tokens.pad, family.tokens.pad_id)
    families.check_post_processor(tok, family)
    texts = {"single": (META["sentences"], None), "single_left": (META["sentences"], None),
             "pair": ([a for a, _ in META["pairs"]], [b for _, b in META["pairs"]])}
    for g in GROUPS:
        first, second = texts[g]
        tok.enable_padding(pad_id=pad_id, pad_token=token,
                           direction="left" if g.endswith("left") else "right")
        enc = tok.encode_batch(first if second is None else list(zip(first, second)))
        ours = {"input_ids": [e.ids for e in enc], "token_type_ids": [e.type_ids for e in enc],
                "attention_mask": [e.attention_mask for e in enc]}
        for k, v in ours.items():
            onp.testing.assert_array_equal(onp.array(v), batch(model_type, g)[k],
                                           err_msg=f"{model_type} {g} {k}")
    facts = META["families"][DIRS[model_type]]["tokenizer"]
    assert (facts["pad_token"], facts["pad_token_id"]) == (token, pad_id)
    assert (facts["cls_token"], facts["sep_token"]) == (family.tokens.cls, family.tokens.sep)
    assert ("token_type_ids" in facts["model_input_names"]) == family.tokens.returns_type_ids


def test_pair_templates_are_the_families():
    for model_type in DIRS:
        family, _, _, tok = load(model_type)
        tokens = META["families"][DIRS[model_type]]["tokenizer"]["pair_tokens"]
        assert tok.encode("a", "b").tokens == tokens
        assert " ".join(t.lstrip("▁") for t in tokens).replace("</s> </s>", "</s></s>") == \
            family.tokens.pair.replace("A", "a").replace("B", "b")


def test_tokenizer_errors():
    family, cfg, _, tok = load("roberta")
    with pytest.raises(FamilyError, match="pads with '<s>' = 0, but config.json's pad_token_id "
                                          "is 1"):
        families.pad_token(tok, family, cfg, {"pad_token": "<s>"})
    with pytest.raises(FamilyError, match="has no pad token '\\[PAD\\]'"):
        families.pad_token(tok, FAMILIES["bert"], cfg)
    plain = json.loads(tok.to_str())
    plain["post_processor"] = None
    with pytest.raises(FamilyError, match="not as <s> A </s></s> B </s>, the roberta template"):
        families.check_post_processor(Tokenizer.from_str(json.dumps(plain)), family)
    with pytest.raises(FamilyError, match="the bert template"):
        families.check_post_processor(tok, FAMILIES["bert"])


# --- tensor names -----------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", DIRS)
def test_every_tensor_is_read_or_skipped_on_purpose_and_written_back(model_type):
    family, cfg, params, _ = load(model_type)
    tensors = load_file(str(HERE / DIRS[model_type] / "model.safetensors"))
    short = {k[len(family.prefix):] if k.startswith(family.prefix) else k: v
             for k, v in tensors.items()}
    back = families.tensors_from_params(params, family, cfg)
    skipped = sorted(set(short) - set(back))
    assert all(k.startswith(family.skipped) for k in skipped)
    assert set(back) <= set(short)
    for name, value in back.items():
        onp.testing.assert_array_equal(value, short[name], err_msg=name)
    prefixed = any(k.startswith(family.prefix) for k in tensors)
    print(f"\n{model_type}: prefix {family.prefix!r} {'present' if prefixed else 'absent'}; "
          f"skipped on purpose: {skipped}")


def test_with_and_without_the_prefix_read_the_same():
    family, cfg, params, _ = load("roberta")
    tensors = load_file(str(HERE / "roberta" / "model.safetensors"))
    prefixed = {"roberta." + k: v for k, v in tensors.items()}
    prefixed["lm_head.bias"] = onp.zeros(cfg.vocab_size, onp.float32)
    again = families.params_from_tensors(prefixed, family, cfg)
    for (p1, a), (p2, b) in zip(leaves(params), leaves(again)):
        assert p1 == p2
        onp.testing.assert_array_equal(a, b)


def test_the_bert_family_reads_what_the_bert_loader_wrote(tiny, tmp_path):
    """A BERT directory written by export (transformers.write_directory) reads back, through
    the BERT family, as the same config and tree."""
    from minicompacter.harness.formats.transformers import write_directory
    write_directory(tmp_path, tiny.params, tiny)
    hf = read_json(tmp_path / "config.json")
    assert families.family_of(hf) is FAMILIES["bert"] and families.encoder_config(hf) == tiny.config
    again = mc.load_pretrained(tmp_path)
    for (p1, a), (p2, b) in zip(leaves(tiny.params), leaves(again.params)):
        assert p1 == p2
        onp.testing.assert_array_equal(a, b)


def test_minilm_reads_the_same_through_the_bert_family(minilm):
    from minicompacter.harness.pretrained import minilm_dir
    directory = minilm_dir()
    hf = read_json(directory / "config.json")
    family, cfg = families.family_of(hf), families.encoder_config(hf)
    assert family.model_type == "bert" and cfg == minilm.config
    params = families.params_from_tensors(load_file(str(directory / "model.safetensors")),
                                          family, cfg)
    ours, theirs = flatten(params), flatten(minilm.params)
    assert ours.keys() == theirs.keys()
    for k in ours:
        onp.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    families.check_post_processor(minilm.tokenizer, family)
    assert families.pad_token(minilm.tokenizer, family, cfg) == ("[PAD]", 0)


def tensors_of(model_type):
    return load_file(str(HERE / DIRS[model_type] / "model.safetensors"))


def test_checkpoint_errors_name_the_tensor():
    family, cfg, _, _ = load("electra")
    tensors = tensors_of("electra")
    cases = [
        ({k: v for k, v in tensors.items() if "embeddings_project.weight" not in k},
         "has no tensor 'embeddings_project.weight'"),
        (dict(tensors, **{"electra.embeddings.word_embeddings.weight": onp.zeros(
            (cfg.vocab_size, 32), onp.float32)}),
         rf"'embeddings.word_embeddings.weight' has shape \({cfg.vocab_size}, 32\), but "
         rf"config.json implies \({cfg.vocab_size}, 16\)"),
        (dict(tensors, **{"electra.encoder.layer.0.output.dense.bias": onp.full(32, onp.nan,
                                                                               onp.float32)}),
         "'encoder.layer.0.output.dense.bias' is not finite"),
        (dict(tensors, **{"electra.encoder.layer.2.output.dense.bias": onp.zeros(32, onp.float32)}),
         r"does not have: \['encoder.layer.2.output.dense.bias'\]"),
        (dict(tensors, **{"embeddings.LayerNorm.bias": onp.zeros(16, onp.float32)}),
         "holds 'embeddings.LayerNorm.bias' twice"),
    ]
    for bad, message in cases:
        with pytest.raises(FamilyError, match=message):
            families.params_from_tensors(bad, family, cfg)


# --- config.json --------------------------------------------------------------------------------

def test_config_errors_name_the_field():
    roberta = read_json(HERE / "roberta" / "config.json")
    distil = read_json(HERE / "distilbert" / "config.json")
    V = roberta["vocab_size"]
    cases = [
        (dict(roberta, model_type="gpt2"), "model_type 'gpt2' is not supported; minicompacter "
                                           "reads the encoder families bert, roberta"),
        (dict(roberta, vocab_size=str(V)), f"vocab_size = '{V}' is not valid; it must be a "
                                           "positive integer"),
        (dict(roberta, num_hidden_layers=True), "num_hidden_layers = True is not valid"),
        (dict(roberta, hidden_dropout_prob=1.5), "hidden_dropout_prob = 1.5 is not valid; it "
                                                 "must be a probability in \\[0, 1\\)"),
        (dict(roberta, layer_norm_eps=0), "layer_norm_eps = 0 is not valid"),
        (dict(roberta, layer_norm_eps=float("nan")), "layer_norm_eps = nan is not valid"),
        (dict(roberta, hidden_act="quick_gelu"), "hidden_act = 'quick_gelu' is not valid; it "
                                                 "must be one of"),
        (dict(roberta, position_embedding_type="relative_key"),
         "position_embedding_type = 'relative_key' is not supported"),
        (dict(roberta, is_decoder=True), "is_decoder = True is not supported"),
        (dict(roberta, pruned_heads={"0": [1]}), "pruned_heads = {'0': \\[1\\]} is not supported"),
        (dict(roberta, pad_token_id=V), f"pad_token_id {V} is not below vocab_size {V}"),
        (dict(roberta, pad_token_id=-1), "pad_token_id = -1 is not valid"),
        (dict(roberta, max_position_embeddings=2), "leave room in the 2 positions"),
        (dict(roberta, num_attention_heads=5), "hidden_size 32 is not a multiple of num_heads 5"),
        ({k: v for k, v in roberta.items() if k != "hidden_size"}, "has no 'hidden_size'"),
        ({k: v for k, v in distil.items() if k != "dim"}, "has no 'dim'"),
        (dict(distil, sinusoidal_pos_embds="yes"), "sinusoidal_pos_embds = 'yes' is not valid; "
                                                   "it must be true or false"),
        (dict(distil, activation="tanhh"), "activation = 'tanhh' is not valid"),
        (dict(read_json(HERE / "electra" / "config.json"), embedding_size=0),
         "embedding_size = 0 is not valid"),
        ([1, 2], "holds list, not a JSON object"),
        (dict(roberta, model_type=["roberta"]), "model_type \\['roberta'\\] is not supported"),
        (dict(roberta, hidden_act=["gelu"]), "hidden_act = \\['gelu'\\] is not valid"),
    ]
    for hf, message in cases:
        with pytest.raises(FamilyError, match=message):
            families.encoder_config(hf, source="config.json")


@pytest.mark.parametrize("model_type", DIRS)
def test_config_json_is_the_inverse_of_encoder_config(model_type):
    family, cfg, _, _ = load(model_type)
    written = families.config_json(family, cfg)
    assert families.encoder_config(written) == cfg
    saved = read_json(HERE / DIRS[model_type] / "config.json")
    same = [k for k in written if k in saved and k != "architectures"]
    assert {k: written[k] for k in same} == {k: saved[k] for k in same}
    assert set(written) - set(saved) <= set(family.refused)     # defaults transformers omits


def test_transformers_defaults_fill_what_config_json_leaves_out():
    roberta = {k: v for k, v in read_json(HERE / "roberta" / "config.json").items()
               if k in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers",
                        "num_attention_heads", "intermediate_size")}
    cfg = families.encoder_config(roberta)
    assert (cfg.padding_idx, cfg.type_vocab_size, cfg.max_positions, cfg.layer_norm_eps) == \
        (1, 2, 512, 1e-12)                                     # RobertaConfig's defaults
    electra = {k: v for k, v in read_json(HERE / "electra" / "config.json").items()
               if k != "embedding_size"}
    assert families.encoder_config(electra).embedding_size == 128    # ElectraConfig's default
    distil = families.encoder_config(read_json(HERE / "distilbert" / "config.json"))
    assert (distil.hidden_size, distil.num_layers, distil.intermediate_size, distil.hidden_act) == \
        (32, 2, 64, "gelu")


# --- AdapterHub and peft -------------------------------------------------------------------

@pytest.mark.parametrize("model_type", DIRS)
def test_adapterhub_names_are_the_librarys(model_type):
    family = FAMILIES[model_type]
    directory = HERE / f"{DIRS[model_type]}_adapterhub"
    meta = read_json(directory / "adapter_config.json")
    assert (meta["model_class"], meta["model_type"]) == (family.adapterhub.model_class,
                                                         family.adapterhub.model_type)
    names = set(load_file(str(directory / "adapter.safetensors")))
    expected = {families.adapterhub_shared_rule(family, "compacter")}
    for i in range(2):
        for slot in (ATTENTION_ADAPTER, FFN_ADAPTER):
            prefix = families.adapterhub_prefix(family, i, slot, "compacter")
            expected |= {prefix + part + leaf for part in ("adapter_down.0.", "adapter_up.")
                         for leaf in ("W_left", "W_right", "b")}
    assert names == expected
    assert set(load_file(str(directory / "model_head.safetensors"))) == {
        "heads.compacter.1.weight", "heads.compacter.1.bias"}


@pytest.mark.parametrize("model_type", DIRS)
def test_peft_names_are_the_librarys(model_type):
    family = FAMILIES[model_type]
    directory = HERE / f"{DIRS[model_type]}_peft"
    meta = read_json(directory / "adapter_config.json")
    assert meta["auto_mapping"]["base_model_class"] == family.peft.base_class
    assert sorted(meta["target_modules"]) == sorted(
        families.peft_target_modules(family, ["query", "value"]))
    expected = {families.peft_module(family, i, p) + f".lora_{m}.weight"
                for i in range(2) for p in ("query", "value") for m in "AB"}
    assert set(load_file(str(directory / "adapter_model.safetensors"))) == expected
    assert families.peft_module(family, 1, "value", task_model=True).startswith(
        "base_model.model." + family.prefix)


def pretrained(model_type, dtype=onp.float64):
    _, cfg, params, tok = load(model_type, dtype)
    return Pretrained(cfg, params, tok, model_type)


@pytest.mark.parametrize("model_type", DIRS)
def test_the_core_reproduces_adapterhubs_compacter_from_its_files(model_type):
    """The Compacter saved by AdapterHub on each family, mapped through families.py's names
    onto the core's tree: the same hidden states and logits (both slots, DistilBERT's own
    adapter modules included)."""
    family = FAMILIES[model_type]
    directory = HERE / f"{DIRS[model_type]}_adapterhub"
    meta = read_json(directory / "adapter_config.json")
    cfg = adapterhub.method_config(meta["config"], directory)
    base = pretrained(model_type)
    model, skeleton, frozen = init_model(onp.random.default_rng(0), base, cfg, num_labels=2)
    tensors = {**load_file(str(directory / "adapter.safetensors")),
               **load_file(str(directory / "model_head.safetensors"))}
    ours = {"W_left": "s", "W_right": "t", "b": "b"}
    flat = {f"{SHARED}.A": tensors[families.adapterhub_shared_rule(family, "compacter")],
            f"{HEAD}.w": tensors["heads.compacter.1.weight"].T,
            f"{HEAD}.b": tensors["heads.compacter.1.bias"]}
    for i in range(2):
        for slot in (ATTENTION_ADAPTER, FFN_ADAPTER):
            prefix = families.adapterhub_prefix(family, i, slot, "compacter")
            for part, theirs in (("down", "adapter_down.0."), ("up", "adapter_up.")):
                for leaf, name in ours.items():
                    flat[f"layers.{i}.{slot}.{part}.{name}"] = tensors[prefix + theirs + leaf]
    trained = flatten(skeleton)
    trained.update({k: v.astype(onp.float64) for k, v in flat.items()})
    trainable = unflatten(trained)
    key = DIRS[model_type]
    for g in ("single", "pair"):
        b = batch(model_type, g)
        hidden = mc.hidden_states(trainable, frozen, b, model)
        logits = mc.head(trainable[HEAD], pool(hidden, b["attention_mask"], "cls"))
        onp.testing.assert_allclose(hidden, OUTPUTS[f"{key}_adapterhub_{g}_hidden"], atol=1e-4)
        onp.testing.assert_allclose(logits, OUTPUTS[f"{key}_adapterhub_{g}_logits"], atol=1e-4)


@pytest.mark.parametrize("model_type", DIRS)
def test_the_core_reproduces_pefts_lora_from_its_files(model_type):
    family = FAMILIES[model_type]
    directory = HERE / f"{DIRS[model_type]}_peft"
    meta = read_json(directory / "adapter_config.json")
    by_module = {m.split(".")[-1]: ours for ours, m in family.peft.modules.items()}
    targets = tuple(p for p in ("query", "key", "value", "output")
                    if p in {by_module[t] for t in meta["target_modules"]})
    cfg = mc.LoRAConfig(r=meta["r"], alpha=float(meta["lora_alpha"]), target_modules=targets)
    model, skeleton, frozen = init_model(onp.random.default_rng(0), pretrained(model_type), cfg,
                                         num_labels=0)
    tensors = load_file(str(directory / "adapter_model.safetensors"))
    flat = {}
    for i in range(2):
        for p in targets:
            name = families.peft_module(family, i, p)
            flat[f"layers.{i}.lora.{p}.A"] = tensors[name + ".lora_A.weight"].T.astype(onp.float64)
            flat[f"layers.{i}.lora.{p}.B"] = tensors[name + ".lora_B.weight"].T.astype(onp.float64)
    assert flat.keys() == flatten(skeleton).keys()
    trainable = unflatten(flat)
    for g in GROUPS:
        hidden = mc.hidden_states(trainable, frozen, batch(model_type, g), model)
        onp.testing.assert_allclose(hidden, OUTPUTS[f"{DIRS[model_type]}_peft_{g}_hidden"],
                                    atol=1e-4)


def test_fixture_folder_is_small():
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file()
                and "__pycache__" not in p.parts)
    assert total < 1_500_000, total
