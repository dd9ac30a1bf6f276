"""Batching strategies side by side, in-process on one model: none, static, dynamic, continuous.

`workload` draws the requests, `strategies` runs them and records every forward pass,
`results` turns the records into tables and plots.
"""

from .results import (BatchingOutcome, BatchingResult, ForwardPass, answer_agreement,
                      batching_table, plot_batch_sizes, plot_batching)
from .strategies import BATCHING_STRATEGIES, batching_conditions, compare_batching, run_batching
from .workload import BATCHING_PROMPTS, BatchingRequest, BatchingWorkload, batching_workload

__all__ = ["BATCHING_PROMPTS", "BATCHING_STRATEGIES", "BatchingOutcome", "BatchingRequest",
           "BatchingResult", "BatchingWorkload", "ForwardPass", "answer_agreement",
           "batching_conditions", "batching_table", "batching_workload", "compare_batching",
           "plot_batch_sizes", "plot_batching", "run_batching"]
