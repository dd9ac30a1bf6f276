"""Quantization: named ways to store weights, and what each costs and buys, measured.

The typed choices (`Quantization`, the `QUANTIZATIONS` presets that
`load_model(..., quantization="nf4")` takes) live with the models (`deploykit.models`);
here `weights` measures what a loaded model's weights occupy, `measure` runs the methods
side by side (and GGUF types on llama.cpp) into one DataFrame, `findings` says what that
DataFrame shows, and `plots` draws it.
`deploykit bench quantize` is the benchmark that writes docs/benchmarks.md's table.
"""

from .findings import (
    quantization_conditions,
    quantization_findings,
    quantization_ratio,
    quantization_summary,
)
from .measure import measure_quantization, quantization_table
from .plots import plot_quantization
from .weights import WeightBytes, serving_table, serving_text, weight_bytes

__all__ = [
    "quantization_conditions",
    "quantization_findings",
    "quantization_ratio",
    "quantization_summary",
    "measure_quantization",
    "quantization_table",
    "plot_quantization",
    "WeightBytes",
    "serving_table",
    "serving_text",
    "weight_bytes",
]
