"""Plots of load results: throughput and latency against load, and the TTFT distribution."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # one per server, with its colour


def plot_bench(
    runs: Mapping[str, Sequence[Mapping]] | Sequence[Mapping], p: float = 99, dpi: int = 72
):
    """Plot bench_serve results: throughput, TTFT and TPOT (median, p-th) against load, TTFT CDF.

    runs is one bench_serve list, or {label: list} for several servers under the same sweep.
    Each server keeps one colour and marker in every panel; medians are solid lines, the
    p-th percentiles dashed with hollow markers. Latencies and throughputs are on log axes
    (servers differ by decades). The CDF shows each server's requests at its highest load
    level. A server measured without streaming has no TPOT: the panel names it.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    grouped = _by_label(runs)
    kind = load_level(next(iter(grouped.values()))[0])[0]
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 6.6), dpi=dpi)
    (ax_tps, ax_cdf), (ax_ttft, ax_tpot) = axes
    handles, no_tpot = [], []
    for i, (label, results) in enumerate(grouped.items()):
        style: dict[str, Any] = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)]}
        handles.append(Line2D([], [], label=label, **style))
        results = sorted(results, key=lambda r: load_level(r)[1])
        # dodged a little sideways, so that servers with equal values stay visible side by side
        dodge = 2 ** (0.04 * (i - (len(grouped) - 1) / 2))
        x = [load_level(r)[1] * dodge for r in results]
        ax_tps.plot(x, [r["output_throughput"] for r in results], **style)
        for ax, name in ((ax_ttft, "ttft"), (ax_tpot, "tpot")):
            values = [_per_request_ms(r, name) for r in results]
            if not any(values):
                no_tpot.append(label)  # e.g. TPOT of a server measured without streaming
                continue
            ax.plot(x, [percentile(v, 50, math.nan) for v in values], **style)
            ax.plot(
                x,
                [percentile(v, p, math.nan) for v in values],
                linestyle="--",
                markerfacecolor="none",
                **style,
            )
        ttfts = sorted(_per_request_ms(results[-1], "ttft"))
        if ttfts:
            ax_cdf.step(
                ttfts,
                [(k + 1) / len(ttfts) for k in range(len(ttfts))],
                where="post",
                color=style["color"],
            )
    xlabel = "concurrent requests" if kind == "concurrency" else "request rate (requests/s)"
    levels = sorted({load_level(r)[1] for results in grouped.values() for r in results})
    tpot_title = "Time per output token after the first"
    if no_tpot:
        tpot_title += f"\n(not streamed, no TPOT: {', '.join(no_tpot)})"
    for ax, title, ylabel in (
        (ax_tps, "Output throughput", "tokens/s"),
        (ax_ttft, "Time to first token", "ms"),
        (ax_tpot, tpot_title, "ms"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(levels, [f"{x:g}" for x in levels])
        ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
    ax_cdf.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for ax in (ax_tps, ax_ttft, ax_tpot):
        low, high = ax.get_ylim()  # labels at 1, 2 and 5, fewer as the axis spans more decades
        subs = (1, 2, 5) if high < 30 * low else (1, 3) if high < 1000 * low else (1,)
        ax.yaxis.set_major_locator(LogLocator(subs=subs))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax_cdf.xaxis.set_major_formatter(plain)
    ax_cdf.set_xlabel("time to first token (ms)")
    ax_cdf.set_ylabel("share of requests")
    top = (
        f"{levels[-1]:g} concurrent requests"
        if kind == "concurrency"
        else f"{levels[-1]:g} requests/s"
    )
    ax_cdf.set_title(f"TTFT distribution at {top}", fontsize=10)
    for ax in axes.flat:
        ax.grid(True, which="major", alpha=0.3)
    styles = [
        Line2D([], [], color="grey", marker="o", label="median"),
        Line2D([], [], color="grey", marker="o", markerfacecolor="none", ls="--", label=f"p{p:g}"),
    ]
    fig.legend(
        handles=handles + styles,
        loc="lower center",
        ncol=len(handles) + len(styles),
        frameon=False,
        fontsize="small",
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _per_request_ms(result: Mapping, name: str) -> list[float]:
    """Return each completed request's TTFT or TPOT in ms (TPOT: those of 2+ tokens)."""
    return [v * 1000 for v in completed_latencies_s(result)[name] if v is not None]
