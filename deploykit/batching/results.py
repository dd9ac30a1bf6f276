"""What a batching strategy did and what it cost: per request, per forward pass, as a table, as plots.

Nothing here measures; `strategies.py` fills these records.
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

    def decode_ms_by_rows(self) -> dict[int, float]:
        """Return the median milliseconds of a decode forward for each batch size seen."""
        by_rows: dict[int, list[float]] = {}
        for f in self.forwards:
            if not f.is_prefill:
                by_rows.setdefault(f.rows, []).append(_cost_ms(f, self.forward_cost))
        return {rows: float(np.median(ms)) for rows, ms in sorted(by_rows.items())}

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


def plot_batching(
    results: Mapping[str, BatchingResult],
    latency_target_ms: float | None = None,
    ttft_target_ms: float | None = None,
):
    """Plot throughput, latency percentiles and wasted work per run; return the figure."""
    import matplotlib.pyplot as plt

    names = list(results)
    x = np.arange(len(names))
    fig, (ax_tp, ax_lat, ax_work) = plt.subplots(1, 3, figsize=(15, 3.8))
    ax_tp.bar(
        x - 0.2, [r.tokens_per_s for r in results.values()], 0.4, label="per second of wall time"
    )
    ax_tp.bar(x + 0.2, [r.tokens_per_cpu_s for r in results.values()], 0.4, label="per CPU second")
    ax_tp.set_ylabel("output tokens")
    ax_tp.set_title("Throughput")
    ax_tp.legend(fontsize=8)
    for i, (label, q, fn) in enumerate(
        (
            ("TTFT p50", 50, "ttft_ms"),
            ("latency p50", 50, "latency_ms"),
            ("latency p95", 95, "latency_ms"),
        )
    ):
        ax_lat.bar(
            x + (i - 1) * 0.27, [getattr(r, fn)(q) for r in results.values()], 0.27, label=label
        )
    if latency_target_ms is not None:
        ax_lat.axhline(latency_target_ms, color="gray", ls="--", label="latency target")
    if ttft_target_ms is not None:
        ax_lat.axhline(ttft_target_ms, color="gray", ls=":", label="TTFT target")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("ms (log scale)")
    ax_lat.set_title("Latency per request")
    ax_lat.legend(fontsize=8)
    useful = [r.output_tokens for r in results.values()]
    wasted = [r.wasted_decode_slots for r in results.values()]
    padded = [r.padded_prompt_tokens for r in results.values()]
    ax_work.bar(x, useful, label="output tokens kept")
    ax_work.bar(x, wasted, bottom=useful, label="decode slots of finished requests")
    ax_work.bar(x, padded, bottom=np.add(useful, wasted), label="prompt padding")
    ax_work.set_ylabel("token positions computed")
    ax_work.set_title("Where the forward passes went")
    ax_work.legend(fontsize=8)
    for ax in (ax_tp, ax_lat, ax_work):
        ax.set_xticks(x, names, rotation=15)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_batch_sizes(results: Mapping[str, BatchingResult]):
    """Plot each run's decode batch size over time, and the cost of a decode forward by rows.

    Prefill forwards (the prompts of newly admitted requests) are left out: they would hide
    how many rows were decoding. The cost is CPU time on a CPU (a shared machine stretches
    wall time at random) and synchronized wall time on a GPU.
    """
    import matplotlib.pyplot as plt

    cost = next(iter(results.values())).forward_cost
    top = max(max(r.batch_sizes) for r in results.values()) + 1
    fig = plt.figure(figsize=(13, 1.2 + 1.1 * len(results)))
    grid = fig.add_gridspec(len(results), 2, width_ratios=(3, 2))
    ax_ms = fig.add_subplot(grid[:, 1])
    by_rows: dict[int, list[float]] = {}
    for i, (name, r) in enumerate(results.items()):
        decodes = [f for f in r.forwards if not f.is_prefill]
        ax = fig.add_subplot(grid[i, 0], sharex=fig.axes[1] if i else None)
        ax.step(
            [f.start_s for f in decodes],
            [f.rows for f in decodes],
            where="post",
            lw=1,
            color=f"C{i}",
        )
        ax.set_ylim(0, top)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.grid(True, alpha=0.3)
        if i < len(results) - 1:
            ax.tick_params(labelbottom=False)
        costs = [_cost_ms(f, cost) for f in decodes]
        ax_ms.scatter([f.rows for f in decodes], costs, s=6, alpha=0.25, color=f"C{i}", label=name)
        for f, ms in zip(decodes, costs):
            by_rows.setdefault(f.rows, []).append(ms)
    fig.axes[1].set_title("Rows decoding together, over time")
    ax.set_xlabel("seconds since the first arrival")
    rows = sorted(by_rows)
    ax_ms.plot(rows, [np.median(by_rows[n]) for n in rows], "k-o", ms=3, label="median")
    ax_ms.set_xlabel("rows in the decode forward")
    ax_ms.set_ylabel(f"ms per decode forward ({'CPU' if cost == 'cpu' else 'wall'} time)")
    ax_ms.set_ylim(bottom=0)
    ax_ms.set_title("What one more row costs")
    ax_ms.grid(True, alpha=0.3)
    ax_ms.legend(fontsize=8)
    fig.tight_layout()
    return fig
