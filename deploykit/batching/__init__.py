"""Batching strategies side by side, in-process on one model: none, static, dynamic, continuous.

`workload` draws the requests, `strategies` runs them and records every forward pass,
`results` turns the records into tables, `plots` draws them, and `findings` says what
they show.
"""

from .findings import batching_findings
from .plots import plot_batch_sizes, plot_batching
from .results import BatchingResult, answer_agreement, batching_table
from .strategies import BATCHING_STRATEGIES, batching_conditions, compare_batching, run_batching
from .workload import batching_workload, plot_workload

__all__ = [
    "batching_findings",
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
