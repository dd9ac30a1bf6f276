"""Plots of load results: throughput and latency against load, and the TTFT distribution."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..errors import InvalidArgumentError
from .loadgen import LoadResult
from .metrics import completed_latencies_s, percentile


def plot_sweeps(sweeps: dict[str, list[LoadResult]]):
    """Plot output tokens/s and p50 latency against concurrency, one line per server.

    Both axes of latency are logarithmic (a queue's latency grows by decades); each server
    keeps its colour in both panels, and the x ticks are the concurrencies that ran.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, (ax_tps, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    ticks: set[int] = set()
    for index, (label, results) in enumerate(sweeps.items()):
        conc = [r.concurrency for r in results]
        ticks.update(c for c in conc if c)
        color = f"C{index}"
        ax_tps.plot(conc, [r.output_tokens_per_s for r in results], "o-", color=color, label=label)
        ax_lat.plot(conc, [r.latency_s(0.5) for r in results], "o-", color=color, label=label)
    ax_tps.set_ylabel("output tokens/s (all clients)")
    ax_tps.set_ylim(bottom=0)
    ax_lat.set_ylabel("median request latency (s, log scale)")
    ax_lat.set_yscale("log")
    ax_lat.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax_lat.yaxis.set_major_formatter(ScalarFormatter())
    ax_lat.yaxis.set_minor_formatter(NullFormatter())
    for ax, title in ((ax_tps, "Throughput"), (ax_lat, "Latency")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("concurrent requests (log scale)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best")
    fig.tight_layout()
    return fig


def load_level(result: Mapping) -> tuple[str, float]:
    """Return ("concurrency", C) for a closed-loop bench_serve result, ("rate", R) for open loop."""
    rate = result["request_rate"]
    if rate == "inf" or (isinstance(rate, float) and math.isinf(rate)):
        return "concurrency", float(result["max_concurrency"])
    return "rate", float(rate)


def _by_label(runs: Mapping[str, Sequence[Mapping]] | Sequence[Mapping]) -> dict[str, list]:
    if isinstance(runs, Mapping):
        grouped = {str(k): list(v) for k, v in runs.items()}
    else:
        grouped = {}
        for result in runs:
            grouped.setdefault(result.get("label") or "endpoint", []).append(result)
    if not grouped or not all(grouped.values()):
        raise InvalidArgumentError(
            "plot_bench needs at least one result per label; pass "
            "bench_serve's list, or {label: list} for several servers."
        )
    kinds = {load_level(r)[0] for results in grouped.values() for r in results}
    if len(kinds) > 1:
        raise InvalidArgumentError(
            "these results mix closed-loop (concurrency) and open-loop "
            "(request rate) runs; plot each kind on its own."
        )
    return grouped


def plot_bench(runs: Mapping[str, Sequence[Mapping]] | Sequence[Mapping], p: float = 99):
    """Plot bench_serve results: throughput, TTFT and TPOT (median, p-th) against load, TTFT CDF.

    runs is one bench_serve list, or {label: list} for several servers under the same sweep.
    The CDF shows each server's requests at its highest load level.
    """
    import matplotlib.pyplot as plt

    grouped = _by_label(runs)
    kind = load_level(next(iter(grouped.values()))[0])[0]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (ax_tps, ax_cdf), (ax_ttft, ax_tpot) = axes
    for i, (label, results) in enumerate(grouped.items()):
        color = f"C{i}"
        results = sorted(results, key=lambda r: load_level(r)[1])
        x = [load_level(r)[1] for r in results]
        ax_tps.plot(
            x, [r["output_throughput"] for r in results], marker="o", color=color, label=label
        )
        for ax, name in ((ax_ttft, "ttft"), (ax_tpot, "tpot")):
            values = [_per_request_ms(r, name) for r in results]
            if not any(values):
                continue  # e.g. TPOT of a server measured without streaming: none exists
            ax.plot(
                x,
                [percentile(v, 50, 0.0) for v in values],
                marker="o",
                color=color,
                label=f"{label} median",
            )
            ax.plot(
                x,
                [percentile(v, p, 0.0) for v in values],
                marker="x",
                linestyle="--",
                color=color,
                label=f"{label} p{p:g}",
            )
        ttfts = sorted(_per_request_ms(results[-1], "ttft"))
        if ttfts:
            ax_cdf.step(
                ttfts,
                [(k + 1) / len(ttfts) for k in range(len(ttfts))],
                where="post",
                color=color,
                label=f"{label} ({kind} {x[-1]:g})",
            )
    xlabel = "concurrent requests" if kind == "concurrency" else "request rate (requests/s)"
    levels = sorted({load_level(r)[1] for results in grouped.values() for r in results})
    for ax, title in (
        (ax_tps, "Output throughput (tokens/s)"),
        (ax_ttft, "Time to first token (ms)"),
        (ax_tpot, "Time per output token after the first (ms)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [f"{x:g}" for x in levels])
        ax.set_xlabel(xlabel)
        ax.set_title(title)
    ax_cdf.set_xlabel("time to first token (ms)")
    ax_cdf.set_ylabel("share of requests")
    ax_cdf.set_title("TTFT distribution at the highest load")
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _per_request_ms(result: Mapping, name: str) -> list[float]:
    """Return each completed request's TTFT or TPOT in ms (TPOT: those of 2+ tokens)."""
    return [v * 1000 for v in completed_latencies_s(result)[name] if v is not None]
