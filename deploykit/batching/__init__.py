"""Batching strategies side by side, in-process on one model: none, static, dynamic, continuous.

`workload` draws the requests, `strategies` runs them and records every forward pass,
`results` turns the records into tables and plots.
"""

from .results import (
    BatchingResult,
    answer_agreement,
    batching_table,
    plot_batch_sizes,
    plot_batching,
)
from .strategies import BATCHING_STRATEGIES, batching_conditions, compare_batching, run_batching
from .workload import batching_workload, plot_workload

__all__ = [
    "BatchingResult",
    "answer_agreement",
    "batching_table",
    "plot_batch_sizes",
    "plot_batching",
    "BATCHING_STRATEGIES",
    "batching_conditions",
    "compare_batching",
    "run_batching",
    "batching_workload",
    "plot_workload",
]
