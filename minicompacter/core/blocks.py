"""Where a method's per-block entries go, for every model: one unnamed stack of blocks in the
BERT-style encoder (tree["layers"]), T5's encoder and decoder (tree["encoder"]["layers"],
tree["decoder"]["layers"]). A method's `init` builds its entries with `per_block`; the
harness walks any such tree with `blocks_of`; the projections a block holds, and their
shapes, come from `projection_shapes`.
"""

from typing import NamedTuple, Optional

from .paths import CROSS
from .t5 import DECODER, ENCODER, T5Config, stacks


class Block(NamedTuple):
    """One transformer block as a method's init sees it."""
    stack: Optional[str]      # None: the BERT-style encoder's; T5's "encoder" or "decoder"
    index: int                # i in params[stack]["layers"][i] (in params["layers"] if None)
    number: int               # counted over the whole model, a decoder's after the encoder's
    cross: bool               # the block has cross-attention (T5's decoder)


def model_stacks(cfg):
    """A model's stacks of blocks, (name, blocks, cross-attention?): one unnamed stack for
    the BERT-style encoder, T5's encoder and decoder (t5.stacks) for a T5Config."""
    return stacks(cfg) if isinstance(cfg, T5Config) else ((None, cfg.num_layers, False),)


def all_blocks(cfg):
    """Every Block of a model, the encoder's first."""
    out, first = [], 0
    for stack, n, cross in model_stacks(cfg):
        out += [Block(stack, i, first + i, cross) for i in range(n)]
        first += n
    return out


def per_block(cfg, rng, make):
    """A method's entries for every block, where the model's hooks look for them: make(g, block)
    for each Block, with its own generator g, gathered as
        {"layers": [...]}                                       the encoder (encoder.py)
        {"encoder": {"layers": [...]}, "decoder": {"layers": [...]}}   T5 (t5.stack_view)
    One stack draws its generators from rng itself, several from one child generator each."""
    parts = model_stacks(cfg)
    gens = [rng] if len(parts) == 1 else rng.spawn(len(parts))
    out, first = {}, 0
    for (stack, n, cross), g in zip(parts, gens):
        layers = [make(r, Block(stack, i, first + i, cross)) for i, r in enumerate(g.spawn(n))]
        first += n
        if stack is None:
            out["layers"] = layers
        else:
            out[stack] = {"layers": layers}
    return out


def blocks_of(tree):
    """(stack, i, entries) of every block of a tree laid out as `per_block` lays it out (a
    method's tree, a trainable tree, a model's parameters): stack None for tree["layers"],
    "encoder" and "decoder" for T5's, in that order."""
    if "layers" in tree:
        return [(None, i, layer) for i, layer in enumerate(tree["layers"])]
    return [(stack, i, layer) for stack in (ENCODER, DECODER) if stack in tree
            for i, layer in enumerate(tree[stack]["layers"])]


def block_path(stack, i):
    """The dotted path of a block in a tree: "layers.3", or "decoder.layers.3" in T5."""
    return f"layers.{i}" if stack is None else f"{stack}.layers.{i}"


def map_blocks(tree, fn):
    """The tree with every block's entries replaced by fn(entries) (`blocks_of`'s blocks)."""
    if "layers" in tree:
        return dict(tree, layers=[fn(layer) for layer in tree["layers"]])
    return dict(tree, **{stack: dict(tree[stack], layers=[fn(layer) for layer in
                                                          tree[stack]["layers"]])
                         for stack in (ENCODER, DECODER) if stack in tree})


def projection_shapes(cfg, names, block):
    """{projection name: (d_in, d_out)} of the attention projections `names` (query, key,
    value, output) in a block, and, in a block with cross-attention, of the same projections
    there (cross_query, ...): queries, keys and values d -> inner, the output inner -> d
    (inner = num_heads * d_kv in T5; d in the encoder)."""
    d = cfg.hidden_size
    inner = cfg.inner_dim if isinstance(cfg, T5Config) else d
    shape = {"query": (d, inner), "key": (d, inner), "value": (d, inner), "output": (inner, d)}
    prefixes = ("", CROSS) if block.cross else ("",)
    return {prefix + name: shape[name] for prefix in prefixes for name in names}
