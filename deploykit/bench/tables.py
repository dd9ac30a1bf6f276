"""`bench_serve` results for reading: vLLM's printout, one table row per level, findings;
`load_table` does the same for `run_load`'s LoadResults.

A figure that does not exist for a run (TPOT and ITL without streaming; any latency when no
request completed) is None in a result and "n/a" here, never 0.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from ..report import Findings
from .loadgen import LoadResult
from .metrics import goodput
from .plots import load_level

_SECTIONS = (
    ("ttft", "TTFT", "Time to First Token"),
    ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
    ("itl", "ITL", "Inter-token Latency"),
    ("e2el", "E2EL", "End-to-end Latency"),
)


def failure_reasons(result: Mapping) -> dict[str, int]:
    """Return how many requests failed for each reason (most common first)."""
    return dict(Counter(e for e in result["errors"] if e).most_common())


def _ms(value: float | None, digits: int) -> float | str:
    return "n/a" if value is None else round(value, digits)


def level_name(result: Mapping) -> str:
    """Return a result's load level: 'concurrency 4' (closed loop) or '16 req/s' (open loop)."""
    kind, value = load_level(result)
    return f"concurrency {value:g}" if kind == "concurrency" else f"{value:g} req/s"


def bench_table(results: Sequence[Mapping] | Mapping[str, Sequence[Mapping]]) -> list[dict]:
    """Return one headline row per result (per label, if given {label: results}).

    Latencies are in ms: the mean, and the 99th percentile where it was asked for; a figure
    the run did not measure (TPOT without streaming) is "n/a".
    """
    grouped = results if isinstance(results, Mapping) else {None: results}
    rows = []
    for label, group in grouped.items():
        for r in group:
            rows.append(
                {
                    "server": label or r["label"],
                    "load": level_name(r),
                    "failed": r["failed"],
                    "tok/s": round(r["output_throughput"], 1),
                    "req/s": round(r["request_throughput"], 2),
                    "TTFT ms": _ms(r["mean_ttft_ms"], 1),
                    "TTFT p99": _ms(r.get("p99_ttft_ms"), 1),
                    "TPOT ms": _ms(r["mean_tpot_ms"], 2),
                    "TPOT p99": _ms(r.get("p99_tpot_ms"), 2),
                    "E2EL ms": _ms(r["mean_e2el_ms"], 1),
                }
            )
    return rows


def _ms_or_nan(seconds: float) -> float:
    return round(seconds * 1e3, 1) if math.isfinite(seconds) else math.nan


def load_table(results: Mapping[str, LoadResult | Sequence[LoadResult]]):
    """Return a DataFrame, one row per LoadResult of {label: result or results}, for reading.

    Latencies in ms over the successful requests (NaN where none succeeded); TTFT only for
    streamed loads.
    """
    import pandas as pd

    rows = []
    for label, group in results.items():
        for r in [group] if isinstance(group, LoadResult) else group:
            row = {
                "server": label,
                "concurrency": "no limit" if r.concurrency is None else r.concurrency,
                "ok": f"{r.num_ok}/{len(r.results)}",
                "output tok/s": round(r.output_tokens_per_s, 1),
                "req/s": round(r.requests_per_s, 2),
                "latency p50 ms": _ms_or_nan(r.latency_s(0.5)),
                "latency p90 ms": _ms_or_nan(r.latency_s(0.9)),
            }
            if any(q.time_to_first_token_s is not None for q in r.results):
                row["TTFT p50 ms"] = _ms_or_nan(r.time_to_first_token_s(0.5))
            rows.append(row)
    return pd.DataFrame(rows)


def _cell(value, fmt: str = ".2f") -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else format(value, fmt)


def format_result(result: Mapping) -> str:
    """Return a result as vLLM's `bench serve` prints it; {label: result} prints a column each.

    A statistic the run could not measure reads "n/a" (vLLM prints 0.00).
    """
    grouped = {"": result} if "completed" in result else dict(result)
    results = list(grouped.values())
    width = max([10, *(len(label) + 2 for label in grouped)])
    total = 40 + (width + 1) * len(results) if len(results) > 1 else 50

    def row(name: str, values: Sequence) -> str:
        if len(results) == 1:
            return f"{name:<40} {values[0]}"
        return f"{name:<40}" + "".join(f" {v:>{width}}" for v in values)

    lines = ["{:=^{}}".format(" Serving Benchmark Result ", total)]
    if len(results) > 1:
        lines.append(row("", list(grouped)))
    lines += [
        row("Successful requests:", [r["completed"] for r in results]),
        row("Failed requests:", [r["failed"] for r in results]),
    ]
    if any(r["max_concurrency"] is not None for r in results):
        lines.append(
            row("Maximum request concurrency:", [_cell(r["max_concurrency"]) for r in results])
        )
    if any(r["request_rate"] != "inf" for r in results):
        rates = [_cell(r["request_rate"] if r["request_rate"] != "inf" else None) for r in results]
        lines.append(row("Request rate configured (RPS):", rates))
    for name, key, fmt in (
        ("Benchmark duration (s):", "duration", ".2f"),
        ("Total input tokens:", "total_input_tokens", "d"),
        ("Total generated tokens:", "total_output_tokens", "d"),
        ("Request throughput (req/s):", "request_throughput", ".2f"),
    ):
        lines.append(row(name, [_cell(r[key], fmt) for r in results]))
    if any(r["request_goodput"] is not None for r in results):
        lines.append(
            row("Request goodput (req/s):", [_cell(r["request_goodput"]) for r in results])
        )
    lines += [
        row("Output token throughput (tok/s):", [_cell(r["output_throughput"]) for r in results]),
        row(
            "Total token throughput (tok/s):", [_cell(r["total_token_throughput"]) for r in results]
        ),
    ]
    for key, name, header in _SECTIONS:
        lines.append("{:-^{}}".format(header, total))
        for field in results[0]:
            match = re.fullmatch(rf"(mean|median|p[\d.]+)_{key}_ms", field)
            if match:
                stat = match.group(1)
                stat = stat.upper() if stat[0] == "p" else stat.capitalize()
                lines.append(row(f"{stat} {name} (ms):", [_cell(r.get(field)) for r in results]))
    for label, r in grouped.items():
        for reason, count in list(failure_reasons(r).items())[:3]:
            lines.append(f"{label + ': ' if label else ''}failed x{count}: {reason[:160]}")
    return "\n".join(lines + ["=" * total])


def _by_level(runs: Mapping[str, Sequence[Mapping]]) -> dict[str, list[Mapping]]:
    return {
        label: sorted(results, key=lambda r: load_level(r)[1]) for label, results in runs.items()
    }


def _change(before: float | None, after: float | None, digits: int) -> str:
    if before is None or after is None:
        return "n/a"
    ratio = f" (×{after / before:.2f})" if before > 0 else ""
    return f"{before:.{digits}f} → {after:.{digits}f}{ratio}"


def sweep_findings(runs: Mapping[str, Sequence[Mapping]], title: str = "") -> Findings:
    """Return what a sweep of several servers shows: throughput and median TTFT, lowest to highest load.

    runs is {server: bench_serve results} of one kind (closed or open loop), as from
    `bench_servers`; each sentence holds the run's own figures.
    """
    grouped = _by_level(runs)
    findings = Findings(title or "What this sweep shows")
    for label, results in grouped.items():
        lo, hi = results[0], results[-1]
        kind = load_level(lo)[0]
        if kind == "concurrency":
            load = f"from concurrency {lo['max_concurrency']} to {hi['max_concurrency']}"
            text = (
                f"**{label}**: output throughput "
                f"{_change(lo['output_throughput'], hi['output_throughput'], 0)} tokens/s {load}"
            )
        else:
            text = (
                f"**{label}**: offered {lo['request_rate']:g} → {hi['request_rate']:g} "
                f"requests/s, completed {_change(lo['request_throughput'], hi['request_throughput'], 2)}"
                " per second"
            )
        text += f"; median TTFT {_change(lo['median_ttft_ms'], hi['median_ttft_ms'], 1)} ms"
        if hi.get("stream") is False:
            text += " (not streamed: TTFT is the whole answer, TPOT n/a)"
        findings.add(text + ".")
    if len(grouped) > 1:
        top = {label: results[-1] for label, results in grouped.items()}
        best = max(top, key=lambda k: top[k]["output_throughput"])
        worst = min(top, key=lambda k: top[k]["output_throughput"])
        findings.add(
            f"At {level_name(top[best])}, the most output tokens/s: {best} "
            f"({top[best]['output_throughput']:.0f}); the fewest: {worst} "
            f"({top[worst]['output_throughput']:.0f})."
        )
    return findings


def goodput_findings(
    runs: Mapping[str, Sequence[Mapping]],
    ttft_ms: float | None = None,
    tpot_ms: float | None = None,
    e2el_ms: float | None = None,
) -> Findings:
    """Return, per load level, a server that completed more requests/s than another but fewer within the SLO.

    runs is {server: bench_serve results} (closed and open loop may be mixed: levels are
    compared only with the same level of another server).
    """
    slo = {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms, "e2el_ms": e2el_ms}
    levels: dict[tuple[str, float], dict[str, tuple[float, float]]] = {}
    for label, results in runs.items():
        for r in results:
            levels.setdefault(load_level(r), {})[label] = (
                r["request_throughput"],
                goodput(r, **slo),
            )
    findings = Findings("Throughput against goodput")
    for level, servers in sorted(levels.items()):
        pairs = [
            (a, b)
            for a in servers
            for b in servers
            if servers[a][0] > servers[b][0] and servers[a][1] < servers[b][1]
        ]
        if pairs:
            a, b = max(pairs, key=lambda p: servers[p[1]][1] - servers[p[0]][1])
            name = (
                f"concurrency {level[1]:g}" if level[0] == "concurrency" else f"{level[1]:g} req/s"
            )
            findings.add(
                f"At {name}, {a} completed more requests/s than {b} "
                f"({servers[a][0]:.2f} against {servers[b][0]:.2f}) but fewer within the SLO "
                f"({servers[a][1]:.2f} against {servers[b][1]:.2f})."
            )
    if not findings.lines:
        findings.add(
            "At no load level did a server complete more requests/s than another while "
            "meeting the SLO less often: here throughput and goodput rank the servers alike."
        )
    return findings
