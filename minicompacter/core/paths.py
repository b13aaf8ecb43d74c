"""The names in a model's parameter tree, and the questions asked of a leaf's path.

The encoder builds its tree with these names (encoder.py), the methods add theirs
(methods.py), and whatever asks what a leaf is (which weights a method unfreezes, which
decay in AdamW, how counting files a parameter, how a checkpoint format names it) asks
the predicates below, so that every name is written once.

A path is a tuple of str (dict keys) and int (list indices) parts, as tree.leaves gives it:
("layers", 3, "ffn_adapter", "down", "s") is layers.3.ffn_adapter.down.s in a checkpoint.
"""

# the encoder's layer norms: embeddings.ln, layers[i].attention_ln, layers[i].ffn_ln
EMBEDDING_LN, ATTENTION_LN, FFN_LN = "ln", "attention_ln", "ffn_ln"
# and T5's (t5.py), besides attention_ln and ffn_ln in every block: the decoder blocks'
# decoder.layers[i].cross_attention_ln and each stack's last, encoder.final_ln, decoder.final_ln
CROSS_ATTENTION_LN, FINAL_LN = "cross_attention_ln", "final_ln"
LAYER_NORMS = (EMBEDDING_LN, ATTENTION_LN, FFN_LN, CROSS_ATTENTION_LN, FINAL_LN)
# T5's decoder names its cross-attention's projections as the self-attention's, prefixed:
# cross_query, cross_key, cross_value, cross_output (the attention-projection hook sees them so)
CROSS = "cross_"
BIAS = "b"                        # every bias leaf, encoder and methods alike

# what methods add: per layer, an adapter in each slot, or the factors of an update beside
# the attention projections (LoRA's, LoKr's, the PHM update's)
ATTENTION_ADAPTER, FFN_ADAPTER = "attention_adapter", "ffn_adapter"
ADAPTERS = (ATTENTION_ADAPTER, FFN_ADAPTER)
LORA, LOKR, PHM_LORA = "lora", "lokr", "phm_lora"
# at the top of the tree: what every layer shares (Compacter's A, shared B factors), and the
# task head
SHARED, HEAD = "shared", "head"
# and the methods that act on the whole model (core/prompts.py, core/intrinsic.py): prompt
# tuning's virtual tokens; Intrinsic-SAID's trained numbers ("intrinsic": theta_d and the
# lambdas) and its fixed random projections (the frozen tree's "fastfood")
PROMPT, INTRINSIC, FASTFOOD = "prompt", "intrinsic", "fastfood"
# the leaves that hold PHM rules: A, or the factors of a factored rule A_i = a_i b_i^T
RULES = ("A", "A_left", "A_right")


def is_layer_norm(path):
    """A layer norm's weight or bias."""
    return len(path) >= 2 and path[-2] in LAYER_NORMS


def is_bias(path):
    """A bias: of a linear layer, a layer norm, an adapter or the head."""
    return path[-1] == BIAS


def is_adapter(path):
    """A leaf of an adapter (either slot)."""
    return any(part in ADAPTERS for part in path)


def is_lora(path):
    return LORA in path


def is_lokr(path):
    return LOKR in path


def is_phm_lora(path):
    return PHM_LORA in path


def is_rule(path):
    """A PHM rule (A, A_left or A_right) of an adapter, an update, or the shared entry."""
    return path[-1] in RULES and (is_shared(path) or is_adapter(path) or is_phm_lora(path))


def is_added(path):
    """A leaf that a method or the task adds to the encoder's own tree."""
    return (is_adapter(path) or is_lora(path) or is_lokr(path) or is_phm_lora(path)
            or is_shared(path) or is_head(path) or is_prompt(path) or is_intrinsic(path)
            or path[0] == FASTFOOD)


def projection_kind(name):
    """query, key, value or output: what an attention projection is, in self- or
    cross-attention ("cross_query" -> "query")."""
    return name[len(CROSS):] if name.startswith(CROSS) else name


def projection_path(name):
    """Where an attention projection's weights sit in a block: ("attention", "query"), or
    ("cross_attention", "query") for "cross_query"."""
    kind = projection_kind(name)
    return ("cross_attention" if kind != name else "attention", kind)


def is_shared(path):
    return path[0] == SHARED


def is_head(path):
    return path[0] == HEAD


def is_prompt(path):
    return path[0] == PROMPT


def is_intrinsic(path):
    return path[0] == INTRINSIC


def decays(path):
    """AdamW's weight decay applies to weights, not to biases or layer norms."""
    return not is_bias(path) and not is_layer_norm(path)


def train_everything(path):
    """The `unfreezes` of full fine-tuning."""
    return True


def train_nothing(path):
    """The `unfreezes` of methods that train only what they add."""
    return False
