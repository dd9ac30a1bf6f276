"""How a model's weights are stored when it loads: plain dtypes and bitsandbytes' int8/nf4/fp4.

`Quantization` is what `load_model(..., quantization=...)` takes (a preset name such as
"nf4", or a `Quantization` with its own settings). Measuring what each costs and buys is
`deploykit.quantize`'s job; GGUF types (llama.cpp's formats) are `export_gguf`'s.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError, MissingExtraError
from .devices import dtype_names, resolve_device, resolve_dtype

METHODS = ("fp32", "bf16", "fp16", "int8", "nf4", "fp4")
BITSANDBYTES_METHODS = ("int8", "nf4", "fp4")
_PLAIN = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "int8": 8, "nf4": 4, "fp4": 4}
MIN_BITSANDBYTES = (0, 50)  # the first release verified here on CPU (int8, nf4, fp4) and CUDA
_INSTALL = f"{sys.executable} -m pip install 'bitsandbytes>=0.50'"
DEFAULT_INT8_THRESHOLD = 6.0  # LLM.int8's default: activation columns beyond it stay 16-bit


@dataclass(frozen=True)
class Quantization:
    """How a model's weights are stored: one dtype, or bitsandbytes on its linear layers.

    method: fp32, bf16, fp16 (every weight in that dtype) or int8 (LLM.int8), nf4, fp4
    (bitsandbytes; the attention and MLP projections only; embeddings, norms and the LM
    head stay in compute_dtype).
    compute_dtype: bitsandbytes methods only: dtype of the activations and of the layers
    left unquantized; "auto" takes load_model's dtype (bf16/fp16 on GPUs, fp32 on CPUs).
    int8_threshold: int8 only: activation columns holding a value above it are multiplied
    in 16 bits (LLM.int8's outlier decomposition); 0 turns it off (all int8).
    double_quant: nf4/fp4 only: store the per-block scales in 8 bits too (about 0.4 bits
    per weight saved).
    """

    method: str
    compute_dtype: str = "auto"
    int8_threshold: float = DEFAULT_INT8_THRESHOLD
    double_quant: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidArgumentError(
                f"unknown quantization method {self.method!r}; use one of {', '.join(METHODS)}, "
                f"or a preset name ({', '.join(QUANTIZATIONS)})."
            )
        if self.compute_dtype != "auto":
            object.__setattr__(self, "compute_dtype", dtype_names(self.compute_dtype)[0])
            if self.method in _PLAIN and self.compute_dtype != _PLAIN[self.method]:
                raise InvalidArgumentError(
                    f"Quantization({self.method!r}) computes in {_PLAIN[self.method]}; "
                    f"compute_dtype={self.compute_dtype!r} contradicts it. Leave it 'auto', or "
                    f"use Quantization({_SHORT[self.compute_dtype]!r})."
                )
        threshold = self.int8_threshold
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not math.isfinite(threshold)
            or threshold < 0
        ):
            raise InvalidArgumentError(
                f"int8_threshold={threshold!r} must be a number >= 0 "
                f"(default {DEFAULT_INT8_THRESHOLD}; 0: no outlier columns)."
            )
        if self.method != "int8" and threshold != DEFAULT_INT8_THRESHOLD:
            raise InvalidArgumentError(
                f"int8_threshold applies to method 'int8' only, not "
                f"{self.method!r}; leave it at its default."
            )
        if not isinstance(self.double_quant, bool):
            raise InvalidArgumentError(f"double_quant={self.double_quant!r} must be True or False.")
        if self.double_quant and self.method not in ("nf4", "fp4"):
            raise InvalidArgumentError(
                f"double_quant applies to nf4 and fp4 only, not {self.method!r}."
            )

    @classmethod
    def from_name(cls, name: str | Quantization) -> Quantization:
        """Return the preset called name (see QUANTIZATIONS); a Quantization is returned as is."""
        if isinstance(name, Quantization):
            return name
        try:
            return QUANTIZATIONS[name]
        except (KeyError, TypeError):
            raise InvalidArgumentError(
                f"unknown quantization {name!r}; use one of {', '.join(QUANTIZATIONS)}, or "
                "dk.Quantization(method, compute_dtype=..., int8_threshold=..., "
                "double_quant=...) for other settings."
            ) from None

    @property
    def name(self) -> str:
        """Return a short label: the preset name, plus any setting that differs from it."""
        label = self.method + ("-dq" if self.double_quant else "")
        if self.method == "int8" and self.int8_threshold != DEFAULT_INT8_THRESHOLD:
            label += f"-t{self.int8_threshold:g}"
        if self.method in BITSANDBYTES_METHODS and self.compute_dtype != "auto":
            label += "-" + _SHORT[self.compute_dtype]
        return label

    @property
    def is_bitsandbytes(self) -> bool:
        """True for int8, nf4 and fp4 (stored by bitsandbytes), False for plain dtypes."""
        return self.method in BITSANDBYTES_METHODS

    @property
    def bits(self) -> int:
        """Return the bits of one quantized-layer weight, before scales."""
        return _BITS[self.method]

    @property
    def description(self) -> str:
        """Return one line on how the weights are stored."""
        if not self.is_bitsandbytes:
            return f"every weight in {_PLAIN[self.method]}"
        if self.method == "int8":
            outliers = (
                f"activation columns above {self.int8_threshold:g} multiplied in fp16"
                if self.int8_threshold
                else "no outlier columns"
            )
            return f"LLM.int8: int8 weights, one fp32 scale per row; {outliers}"
        scales = "8-bit scales (double quantization)" if self.double_quant else "one fp32 scale"
        kind = "NormalFloat4" if self.method == "nf4" else "4-bit float"
        return f"{kind}: 4-bit weights in blocks of 64, {scales} per block"

    def torch_dtype(self, device: str, dtype: Any = "auto"):
        """Return the torch dtype the model loads in: the plain dtype, or the compute dtype."""
        if self.method in _PLAIN:
            own = _PLAIN[self.method]
            if dtype != "auto" and dtype_names(dtype)[0] != own:
                raise InvalidArgumentError(
                    f"quantization={self.name!r} stores every weight in {own}, but dtype="
                    f"{dtype!r}; pass one of the two (quantization alone sets the dtype)."
                )
            torch_dtype = resolve_dtype(own, device)
            if own == "bfloat16" and device.startswith("cuda"):
                import torch

                if not torch.cuda.is_bf16_supported():
                    raise InvalidArgumentError(
                        "this GPU has no bfloat16 (compute capability below 8.0, e.g. T4 or "
                        "V100); use quantization='fp16'."
                    )
            return torch_dtype
        if self.compute_dtype != "auto":
            if dtype != "auto" and dtype_names(dtype)[0] != self.compute_dtype:
                raise InvalidArgumentError(
                    f"quantization={self.name!r} computes in {self.compute_dtype}, but dtype="
                    f"{dtype!r}; pass one of the two."
                )
            return resolve_dtype(self.compute_dtype, device)
        return resolve_dtype(dtype, device)

    def bnb_config(self, compute_dtype):
        """Return transformers' BitsAndBytesConfig for this method (None for plain dtypes)."""
        if not self.is_bitsandbytes:
            return None
        require_bitsandbytes(self.name)
        from transformers import BitsAndBytesConfig

        if self.method == "int8":
            return BitsAndBytesConfig(
                load_in_8bit=True, llm_int8_threshold=float(self.int8_threshold)
            )
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.method,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=self.double_quant,
        )


# The named choices; load_model(quantization="nf4") and measure_quantization use these.
QUANTIZATIONS: dict[str, Quantization] = {
    "fp32": Quantization("fp32"),
    "bf16": Quantization("bf16"),
    "fp16": Quantization("fp16"),
    "int8": Quantization("int8"),
    "nf4": Quantization("nf4"),
    "nf4-dq": Quantization("nf4", double_quant=True),
    "fp4": Quantization("fp4"),
}


def available_quantizations(device: str = "auto") -> tuple[str, ...]:
    """Return the presets that run on device (bf16 needs compute capability 8.0 on CUDA)."""
    device = resolve_device(device)
    names = list(QUANTIZATIONS)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_bf16_supported():
            names.remove("bf16")
    return tuple(names)


class _DropRepeats(logging.Filter):
    """Drop bitsandbytes log lines that repeat on every matmul or are advice for another setup."""

    _NOISE = (
        "inputs will be cast from",  # LLM.int8 casts activations to fp16: every layer, every step
        "Failed to load CPU gemm_4bit_forward",
    )  # optional kernel from the HF hub (`kernels`)

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in str(record.msg) for text in self._NOISE)


for _logger in ("bitsandbytes.autograd._functions", "bitsandbytes.backends.cpu.ops"):
    logging.getLogger(_logger).addFilter(_DropRepeats())


def require_bitsandbytes(what: str = "int8, nf4 and fp4") -> str:
    """Import bitsandbytes or say how to install it; return its version."""
    try:
        import bitsandbytes
    except ImportError as exc:
        raise MissingExtraError(
            f"quantization {what!r} needs bitsandbytes, which is not installed in {sys.executable} "
            f"({exc}). Install it: `{_INSTALL}` (deploykit lists it as a dependency; "
            "`pip install -e .` installs it too)."
        ) from None
    except Exception as exc:  # a broken install fails in many ways (a missing native library...)
        raise MissingExtraError(
            f"quantization {what!r} needs bitsandbytes, which is installed but fails to import "
            f"({type(exc).__name__}: {exc}). Reinstall it: `{_INSTALL} --force-reinstall`."
        ) from None
    version = str(getattr(bitsandbytes, "__version__", "0"))
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MIN_BITSANDBYTES:
        raise MissingExtraError(
            f"bitsandbytes {version} is older than deploykit needs (CPU "
            f"support and the quantization settings used here); "
            f"upgrade it: `{_INSTALL}`."
        )
    return version
