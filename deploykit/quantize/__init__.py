"""Quantization: named ways to store weights, and what each costs and buys, measured.

`methods` holds the typed choices (`Quantization`, the `QUANTIZATIONS` presets that
`load_model(..., quantization="nf4")` takes) and `weight_bytes`; `measure` runs them side
by side (and GGUF types on llama.cpp) into one DataFrame; `plots` draws it.
`python -m deploykit.quantize` is the benchmark that writes docs/benchmarks.md's table.
"""

from .measure import GGUF_TYPES, held_out_windows, measure_quantization, quantization_table
from .methods import (BITSANDBYTES_METHODS, METHODS, QUANTIZATIONS, Quantization, WeightBytes,
                      available_quantizations, require_bitsandbytes, serving_table, weight_bytes)
from .plots import plot_quantization

__all__ = ["BITSANDBYTES_METHODS", "GGUF_TYPES", "METHODS", "QUANTIZATIONS", "Quantization",
           "WeightBytes", "available_quantizations", "held_out_windows", "measure_quantization",
           "plot_quantization", "quantization_table", "require_bitsandbytes", "serving_table",
           "weight_bytes"]
