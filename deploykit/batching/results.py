"""What a batching strategy did and what it cost: per request, per forward pass, as a table.

Nothing here measures; `strategies.py` fills these records, `plots.py` draws them and
`findings.py` says what they show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ForwardPass:
    """One model forward: when, how many rows, how many of its input tokens were padding."""

    start_s: float  # seconds after the run started
    duration_s: float
    rows: int  # sequences in the forward (the batch size)
    input_tokens: int  # rows x tokens fed per row: the prompt length in a prefill, 1 in a decode
    padded_tokens: int  # input tokens that were left padding
    wasted_rows: int = 0  # rows whose request had finished but still rode along (static batches)
    cpu_s: float = 0.0  # CPU time of the calling thread; on a GPU, only the launching side

    @property
    def is_prefill(self) -> bool:
        """Return True when the forward fed whole prompts, not one token per row."""
        return self.input_tokens > self.rows

    @property
    def useful_tokens(self) -> int:
        """Return the output tokens this forward produced that some request keeps."""
        return self.rows - self.wasted_rows


@dataclass(frozen=True)
class BatchingOutcome:
    """What one request got: its tokens, when its first token existed, when its answer came back."""

    index: int
    arrival_s: float
    prompt_tokens: int
    output_ids: tuple[int, ...]
    ttft_s: float  # arrival to its first token being computed
    latency_s: float  # arrival to its whole answer being returned (static: when the batch ends)


@dataclass(frozen=True)
class BatchingResult:
    """One strategy run over one workload: outcomes in workload order, forward passes in time order."""

    strategy: str
    outcomes: tuple[BatchingOutcome, ...]
    forwards: tuple[ForwardPass, ...]
    wall_s: float  # first arrival to last answer
    # CPU seconds the process spent in the run (all threads; waiting costs none): unlike
    # wall time, barely changed by other work on a shared machine
    cpu_s: float
    conditions: dict[str, Any] = field(default_factory=dict)

    @property
    def output_tokens(self) -> int:
        """Return the tokens returned to requests."""
        return sum(len(o.output_ids) for o in self.outcomes)

    @property
    def tokens_per_s(self) -> float:
        """Return output tokens per second of wall time."""
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_cpu_s(self) -> float:
        """Return output tokens per CPU second the run used."""
        return self.output_tokens / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def batch_sizes(self) -> list[int]:
        """Return the rows of each forward pass, in order."""
        return [f.rows for f in self.forwards]

    @property
    def padded_prompt_tokens(self) -> int:
        """Return prompt positions computed only as padding."""
        return sum(f.padded_tokens for f in self.forwards)

    @property
    def wasted_decode_slots(self) -> int:
        """Return decode rows spent on requests that had already finished."""
        return sum(f.wasted_rows for f in self.forwards)

    @property
    def tokens_per_forward(self) -> float:
        """Return output tokens kept per forward pass."""
        return self.output_tokens / len(self.forwards) if self.forwards else 0.0

    def latency_ms(self, q: float) -> float:
        """Return the q-th percentile (0-100) of end-to-end latency in milliseconds."""
        return float(np.percentile([o.latency_s for o in self.outcomes], q)) * 1e3

    def ttft_ms(self, q: float) -> float:
        """Return the q-th percentile (0-100) of time to first token in milliseconds."""
        return float(np.percentile([o.ttft_s for o in self.outcomes], q)) * 1e3

    @property
    def forward_cost(self) -> str:
        """Return what decode_ms_by_rows measures: CPU time on a CPU, synchronized wall time on a GPU."""
        return "cpu" if str(self.conditions.get("device", "cpu")).startswith("cpu") else "wall"

    def decode_ms_samples(self) -> dict[int, list[float]]:
        """Return the milliseconds of every decode forward, by its rows (fewest rows first)."""
        by_rows: dict[int, list[float]] = {}
        for f in self.forwards:
            if not f.is_prefill:
                by_rows.setdefault(f.rows, []).append(_cost_ms(f, self.forward_cost))
        return dict(sorted(by_rows.items()))

    def decode_ms_by_rows(self) -> dict[int, float]:
        """Return the median milliseconds of a decode forward for each batch size seen."""
        return {rows: float(np.median(ms)) for rows, ms in self.decode_ms_samples().items()}

    def within(
        self, latency_target_ms: float | None = None, ttft_target_ms: float | None = None
    ) -> float:
        """Return the share of requests that met every target given (end-to-end, first token)."""
        met = sum(
            (latency_target_ms is None or o.latency_s * 1e3 <= latency_target_ms)
            and (ttft_target_ms is None or o.ttft_s * 1e3 <= ttft_target_ms)
            for o in self.outcomes
        )
        return met / len(self.outcomes)

    def summary(
        self, latency_target_ms: float | None = None, ttft_target_ms: float | None = None
    ) -> dict[str, Any]:
        """Return one table row: throughput, latency percentiles, and what the batching did."""
        row = {
            "strategy": self.strategy,
            "requests": len(self.outcomes),
            "output_tokens": self.output_tokens,
            "wall_s": round(self.wall_s, 3),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "cpu_s": round(self.cpu_s, 3),
            "tokens_per_cpu_s": round(self.tokens_per_cpu_s, 1),
            "forward_passes": len(self.forwards),
            "mean_batch_size": round(float(np.mean(self.batch_sizes)), 2),
            "tokens_per_forward": round(self.tokens_per_forward, 2),
            "padded_prompt_tokens": self.padded_prompt_tokens,
            "wasted_decode_slots": self.wasted_decode_slots,
            "ttft_p50_ms": round(self.ttft_ms(50), 1),
            "latency_p50_ms": round(self.latency_ms(50), 1),
            "latency_p95_ms": round(self.latency_ms(95), 1),
        }
        if latency_target_ms is not None:
            row[f"latency_within_{latency_target_ms:g}_ms_pct"] = round(
                100 * self.within(latency_target_ms=latency_target_ms), 1
            )
        if ttft_target_ms is not None:
            row[f"ttft_within_{ttft_target_ms:g}_ms_pct"] = round(
                100 * self.within(ttft_target_ms=ttft_target_ms), 1
            )
        return row


def _cost_ms(f: ForwardPass, cost: str) -> float:
    return (f.cpu_s if cost == "cpu" else f.duration_s) * 1e3


def batching_table(
    results: Mapping[str, BatchingResult],
    latency_target_ms: float | None = None,
    ttft_target_ms: float | None = None,
):
    """Return a DataFrame, one row per run, with throughput relative to the 'none' run if any."""
    import pandas as pd

    table = pd.DataFrame(
        [r.summary(latency_target_ms, ttft_target_ms) for r in results.values()],
        index=list(results),
    ).drop(columns="strategy")
    if "none" in results:
        for column, ratio in (("tokens_per_s", "x_none"), ("tokens_per_cpu_s", "x_none_cpu")):
            table.insert(
                table.columns.get_loc(column) + 1,
                ratio,
                (table[column] / table.loc["none", column]).round(2),
            )
    return table


def answer_agreement(
    results: Mapping[str, BatchingResult], reference: str = "none", first_tokens: int | None = None
) -> dict[str, float]:
    """Return, per run, the share of requests whose tokens equal the reference run's.

    first_tokens compares only that many leading tokens: in bf16 a batched row may round
    differently from the same prompt alone, and a long greedy answer can part late.
    """
    ref = [o.output_ids[:first_tokens] for o in results[reference].outcomes]
    return {
        name: sum(o.output_ids[:first_tokens] == want for o, want in zip(r.outcomes, ref))
        / len(ref)
        for name, r in results.items()
    }
