"""What a loaded model's weights really occupy, and which server flag stores them each way.

`weight_bytes` measures from the tensors (packed weights, scales and all); `serving_table`
names the servers' own flags for each `Quantization` preset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InvalidArgumentError
from ..models.quantization import QUANTIZATIONS, Quantization


@dataclass(frozen=True)
class WeightBytes:
    """What a loaded model's weights occupy, from its real tensors, beside float32."""

    total_bytes: int  # every parameter and its quantization constants, each storage once
    fp32_bytes: int  # the same parameters in float32
    linear_bytes: int  # the projections bitsandbytes quantizes: weights, scales, biases
    linear_fp32_bytes: int  # the same projections in float32

    @property
    def ratio(self) -> float:
        """Return total_bytes / fp32_bytes."""
        return self.total_bytes / self.fp32_bytes

    @property
    def linear_ratio(self) -> float:
        """Return linear_bytes / linear_fp32_bytes (nan for a model without projections)."""
        return self.linear_bytes / self.linear_fp32_bytes if self.linear_fp32_bytes else math.nan


def _tensors(param) -> list:
    """Return a parameter and the tensors bitsandbytes keeps beside it (scales, codebooks)."""
    import torch

    found = [param]
    state = getattr(param, "quant_state", None)  # 4-bit: absmax per block, code, nested state
    while state is not None:
        found += [getattr(state, k, None) for k in ("absmax", "code", "offset")]
        state = getattr(state, "state2", None)
    found += [getattr(param, k, None) for k in ("SCB", "CB")]  # int8: one scale per row
    return [t for t in found if isinstance(t, torch.Tensor)]


def _logical_numel(param) -> int:
    state = getattr(param, "quant_state", None)
    return math.prod(state.shape) if state is not None else param.numel()


def weight_bytes(model) -> WeightBytes:
    """Measure the bytes of a model's weights (a LoadedModel or a torch module) from its tensors.

    Packed 4-bit weights, per-block and per-row scales and codebooks all count; a storage
    shared by several tensors (tied embeddings, a common codebook) counts once. Buffers that
    are not weights (rotary tables) do not count. The linear layers are the model's
    torch.nn.Linear modules except the LM head: those bitsandbytes quantizes.
    """
    import torch

    module = getattr(model, "model", model)
    if not isinstance(module, torch.nn.Module):
        raise InvalidArgumentError(
            f"weight_bytes takes a LoadedModel or a torch module, not {type(model).__name__}."
        )
    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    seen: set[int] = set()

    def count(tensors) -> int:
        total = 0
        for t in tensors:
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        return total

    linear = linear_fp32 = 0
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear) and sub is not head:
            params = list(sub.parameters(recurse=False))
            linear += count(t for p in params for t in _tensors(p))
            linear_fp32 += 4 * sum(_logical_numel(p) for p in params)
    params = list(module.parameters())
    rest = count(t for p in params for t in _tensors(p))
    return WeightBytes(
        total_bytes=linear + rest,
        fp32_bytes=4 * sum(_logical_numel(p) for p in params),
        linear_bytes=linear,
        linear_fp32_bytes=linear_fp32,
    )


# How each method is asked for elsewhere: vLLM 0.32, TGI 3.3, and llama.cpp's nearest GGUF type.
_SERVING = {
    "fp32": ("--dtype float32", "not offered (--dtype takes float16 or bfloat16)", "f32"),
    "bf16": ("--dtype bfloat16", "--dtype bfloat16", "bf16"),
    "fp16": ("--dtype float16", "--dtype float16", "f16"),
    "int8": (
        "no bitsandbytes in vLLM 0.32; nearest: --quantization fp8 (8-bit weights "
        "quantized at load; fp8 kernels on Ada/Hopper, weight-only Marlin from Turing on)",
        "--quantize bitsandbytes (LLM.int8), or --quantize eetq",
        "q8_0",
    ),
    "nf4": (
        "no 4-bit quantization at load for dense models; serve a 4-bit checkpoint "
        "(AWQ or GPTQ: vLLM reads the method from its config, e.g. awq_marlin)",
        "--quantize bitsandbytes-nf4",
        "q4_0 / q4_1 / Q4_K_M",
    ),
    "fp4": (
        "no 4-bit quantization at load; NVFP4 checkpoints (modelopt_fp4) on Blackwell",
        "--quantize bitsandbytes-fp4",
        "q4_0 / q4_1 / Q4_K_M",
    ),
}


def serving_table(methods=None):
    """Return a DataFrame: how each method is asked for in transformers, vLLM, TGI and GGUF."""
    import pandas as pd

    rows = []
    for item in methods or QUANTIZATIONS:
        q = Quantization.from_name(item)
        vllm, tgi, gguf = _SERVING[q.method]
        rows.append(
            {
                "method": q.name,
                "stored as": q.description,
                "deploykit / transformers": f"load_model(..., quantization={q.name!r})",
                "vLLM": vllm,
                "TGI": tgi,
                "llama.cpp (GGUF type)": gguf,
            }
        )
    return pd.DataFrame(rows).set_index("method")


def serving_text(methods=None, width: int = 96) -> str:
    """Return `serving_table` as lines that fit a page: one block per method, one line per server."""
    import textwrap

    table = serving_table(methods)
    blocks = []
    for method, row in table.iterrows():
        lines = [f"{method}:"]
        for server, column in (("vLLM", "vLLM"), ("TGI", "TGI"), ("GGUF", "llama.cpp (GGUF type)")):
            lines += textwrap.wrap(
                row[column], width=width, initial_indent=f"  {server:5} ", subsequent_indent=" " * 8
            )
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
