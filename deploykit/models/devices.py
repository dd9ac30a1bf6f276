"""Devices and dtypes: the names users write, and what torch and the planner call them.

A leaf: it imports nothing else from deploykit but the errors, so quantization, the
loader and the planner can all use it.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgumentError


def resolve_device(device: str = "auto") -> str:
    """Turn 'auto' into 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError(
            f"device={device!r} but torch sees no CUDA GPU; use "
            "device='cpu' or 'auto', or install a CUDA build of torch."
        )
    if not device.startswith(("cpu", "cuda", "mps", "xpu")):
        raise InvalidArgumentError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu' or 'cuda' (or 'cuda:N')."
        )
    return device


# Names users write for each torch dtype, and the planner's short name for it.
_DTYPES = {
    "float32": ("float32", "fp32"),
    "fp32": ("float32", "fp32"),
    "float": ("float32", "fp32"),
    "float16": ("float16", "fp16"),
    "fp16": ("float16", "fp16"),
    "half": ("float16", "fp16"),
    "bfloat16": ("bfloat16", "bf16"),
    "bf16": ("bfloat16", "bf16"),
}


def resolve_dtype(dtype: Any, device: str):
    """Turn 'auto' into bf16/fp16 on GPUs and fp32 on CPUs; accept names or torch dtypes."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, dtype_names(dtype)[0])


def dtype_names(dtype: Any) -> tuple[str, str]:
    """Return (torch name, planner name) of a dtype given as a name or torch dtype.

    ('bfloat16', 'bf16') for "bf16", "bfloat16" or torch.bfloat16; vLLM and the memory
    planner write the same dtype differently, and this is the one place that maps them.
    """
    text = str(dtype).removeprefix("torch.")
    try:
        return _DTYPES[text]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)} or 'auto'"
        ) from None
