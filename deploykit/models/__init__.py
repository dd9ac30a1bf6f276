"""Models: the built-in models, the one resolver, loading, storage formats and GGUF export.

Layered inside, each module importing only those above it in this list:
`devices` (dtype and device names) → `catalog` (built-in names) → `_build` (cache, corpus,
perplexity) → `toy`, `smollm2` (the builders) → `resolve` → `quantization` → `load`, `gguf`;
`kernels` (the linear and decode-attention kernels an engine switches its model to) and
`decode_step` (deploykit's own decode step for Llama models) import none of them.
"""

from .catalog import BUILTIN_MODELS
from .gguf import export_gguf
from .load import LoadedModel, describe, load_model
from .quantization import QUANTIZATIONS, Quantization, available_quantizations
from .resolve import ModelSource, resolve_model

__all__ = [
    "BUILTIN_MODELS",
    "LoadedModel",
    "ModelSource",
    "QUANTIZATIONS",
    "Quantization",
    "available_quantizations",
    "describe",
    "export_gguf",
    "load_model",
    "resolve_model",
]
