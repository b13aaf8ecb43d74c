"""Parameter trees: nested dicts (string keys) and lists of arrays.

A leaf's path is its name: ``params["layers"][3]["ffn"]["in"]["w"]`` is
``layers.3.ffn.in.w`` in a checkpoint. Lists give numeric path parts, dict keys are
never numeric, so a dotted name converts back to the same tree.
"""

import numpy as onp
from autograd.builtins import DictBox, SequenceBox
from autograd.tracer import getval


def leaves(tree, prefix=()):
    """Yield (path, leaf) pairs in a fixed order (dict keys sorted, lists in order);
    a path is a tuple of str and int parts."""
    if isinstance(tree, dict):
        for key in sorted(tree):
            yield from leaves(tree[key], prefix + (key,))
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            yield from leaves(item, prefix + (i,))
    else:
        yield prefix, tree


def dotted(path):
    """("layers", 3, "ffn") -> "layers.3.ffn" """
    return ".".join(str(p) for p in path)


def undotted(name):
    """"layers.3.ffn" -> ("layers", 3, "ffn") """
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


def flatten(tree):
    """{dotted path: leaf}"""
    return {dotted(path): leaf for path, leaf in leaves(tree)}


def unflatten(flat):
    """The tree back from {dotted path: leaf}; numeric parts become list indices."""
    root = {}
    for name, leaf in flat.items():
        set_path(root, undotted(name), leaf)
    return _lists(root)


def set_path(tree, path, leaf):
    """Put a leaf at a path in a tree of dicts, creating dicts on the way (integer parts
    make dict entries here; `unflatten` turns them into lists)."""
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = leaf


def _lists(node):
    if not isinstance(node, dict):
        return node
    if node and all(isinstance(k, int) for k in node):
        if sorted(node) != list(range(len(node))):
            raise ValueError(f"list indices {sorted(node)} are not 0..{len(node) - 1}")
        return [_lists(node[i]) for i in range(len(node))]
    return {k: _lists(v) for k, v in node.items()}


def tree_map(fn, tree, *rest):
    """The same tree with fn applied to every leaf: fn(leaf), or fn(leaf, *leaves) with the
    leaves at the same place of trees `rest` shaped like `tree` (as jax's tree_map)."""
    return path_map(lambda path, *leaves: fn(*leaves), tree, *rest)


def path_map(fn, tree, *rest, prefix=()):
    """tree_map whose fn also gets each leaf's path first: fn(path, leaf, *leaves)."""
    if isinstance(tree, dict):
        return {k: path_map(fn, v, *(r[k] for r in rest), prefix=prefix + (k,))
                for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(path_map(fn, v, *(r[i] for r in rest), prefix=prefix + (i,))
                          for i, v in enumerate(tree))
    return fn(prefix, tree, *rest)


def cast(tree, dtype):
    """Every floating-point leaf converted to dtype (float64 for gradient checks)."""
    return tree_map(lambda x: onp.asarray(x, dtype)
                    if onp.issubdtype(onp.asarray(x).dtype, onp.floating) else x, tree)


def count(tree):
    """The number of scalars in a tree."""
    return sum(int(onp.size(leaf)) for _, leaf in leaves(tree))


def split(tree, select, prefix=()):
    """(selected, rest): two trees of the same nesting, each with only some leaves.
    select(path) -> bool decides. Lists keep their length (an emptied item is {}), so
    `merge(rest, selected)` gives the tree back."""
    if isinstance(tree, dict):
        parts = {k: split(v, select, prefix + (k,)) for k, v in tree.items()}
        return ({k: a for k, (a, _) in parts.items() if not _empty(a)},
                {k: b for k, (_, b) in parts.items() if not _empty(b)})
    if isinstance(tree, list):
        parts = [split(v, select, prefix + (i,)) for i, v in enumerate(tree)]
        return [a if not _empty(a) else {} for a, _ in parts], [b if not _empty(b) else {}
                                                               for _, b in parts]
    return (tree, None) if select(prefix) else (None, tree)


def _empty(tree):
    if tree is None:
        return True
    if isinstance(tree, dict):
        return all(_empty(v) for v in tree.values())
    if isinstance(tree, list):
        return all(_empty(v) for v in tree)
    return False


def merge(a, b):
    """One tree from two with disjoint leaves (dicts joined key by key, lists item by item).
    Works on autograd's traced values, so a loss can merge its trainable and frozen trees."""
    a, b = _open_box(a), _open_box(b)
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if k in a else v
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise ValueError(f"cannot merge lists of lengths {len(a)} and {len(b)}")
        return [merge(x, y) for x, y in zip(a, b)]
    raise ValueError("the two trees both hold a leaf at the same path")


def _open_box(tree):
    """A dict or list traced by autograd (a DictBox / SequenceBox, when the whole tree is
    the argument being differentiated) as a plain dict or list of traced items."""
    if isinstance(tree, DictBox):
        return {k: tree[k] for k in tree}
    if isinstance(tree, SequenceBox) and isinstance(getval(tree), list):
        return [tree[i] for i in range(len(tree))]
    return tree
