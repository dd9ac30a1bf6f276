"""Shared test set-up: never reach a model hub; the toy model and smollm2 loaded once."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


def pytest_collection_modifyitems(config, items):
    """Run the tests that read the notebook tests' executed copies after those runs."""
    items.sort(key=lambda item: item.get_closest_marker("executed") is not None)
