"""Shared test set-up: never reach a model hub; expose the checkout and the toy model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def root() -> Path:
    """The cookbook checkout under test."""
    return ROOT


@pytest.fixture(scope="session")
def tiny():
    """toy-tiny loaded on CPU once per session."""
    import deploykit as dk

    return dk.load_model("toy-tiny", device="cpu", progress=False)


@pytest.fixture(scope="session")
def smollm2():
    """smollm2-135m (the real built-in chat model) loaded on CPU in float32 once per session."""
    import deploykit as dk

    return dk.load_model("smollm2-135m", device="cpu", dtype="float32", progress=False)
