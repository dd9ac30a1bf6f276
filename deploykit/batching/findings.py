"""What a side-by-side batching run shows, in sentences built from its own results.

`batching_findings` compares each strategy with one-at-a-time (`none`) in the run's own
figures: throughput per wall and per CPU second, the work its forwards did, latency, and
what a decode forward cost by its rows; so the notebook's findings match its table in every
run, whichever strategy comes out ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..report import Findings
from .results import BatchingResult


def _best(results: Mapping[str, BatchingResult], key: Callable, low: bool = False) -> str:
    pick = min if low else max
    return pick(results, key=lambda name: key(results[name]))


def _each(results: Mapping[str, BatchingResult], key: Callable, fmt: str, suffix: str = "") -> str:
    return ", ".join(f"`{name}` {format(key(r), fmt)}{suffix}" for name, r in results.items())


def batching_findings(
    results: Mapping[str, BatchingResult],
    latency_target_ms: float | None = None,
    ttft_target_ms: float | None = None,
    title: str = "What this run shows",
) -> Findings:
    """Return what the runs show: throughput, work per forward, latency, and a row's cost.

    Ratios are over the `none` run where there is one. Targets, when given, add the share
    of requests that met them.
    """
    found = Findings(title=title)
    base = results.get("none")
    others = {n: r for n, r in results.items() if r is not base}
    wall = _each(results, lambda r: r.tokens_per_s, ".0f")
    if base is not None and others:
        ratio_wall = _each(others, lambda r: r.tokens_per_s / base.tokens_per_s, ".2f", "x")
        ratio_cpu = _each(others, lambda r: r.tokens_per_cpu_s / base.tokens_per_cpu_s, ".2f", "x")
        found.add(
            f"**Throughput per second of wall time** ({wall} tokens/s), as a multiple of "
            f"`none`'s: {ratio_wall}; highest: `{_best(results, lambda r: r.tokens_per_s)}`."
        )
        found.add(
            f"**Throughput per CPU second**, as a multiple of `none`'s: {ratio_cpu}; highest: "
            f"`{_best(results, lambda r: r.tokens_per_cpu_s)}`."
        )
    else:
        found.add(f"**Throughput per second of wall time:** {wall} tokens/s.")
    found.add(
        f"**Work per forward:** output tokens kept per forward pass: "
        f"{_each(results, lambda r: r.tokens_per_forward, '.2f')}; decode slots spent on "
        f"finished requests: {_each(results, lambda r: r.wasted_decode_slots, ',')}; padded "
        f"prompt tokens: {_each(results, lambda r: r.padded_prompt_tokens, ',')}."
    )
    found.add(
        f"**Latency:** time to first token p50 (ms) {_each(results, lambda r: r.ttft_ms(50), '.1f')}"
        f", lowest `{_best(results, lambda r: r.ttft_ms(50), low=True)}`; end-to-end p50 (ms) "
        f"{_each(results, lambda r: r.latency_ms(50), '.1f')}, lowest "
        f"`{_best(results, lambda r: r.latency_ms(50), low=True)}`."
    )
    for target, kind, kwargs in (
        (latency_target_ms, "end-to-end latency", "latency_target_ms"),
        (ttft_target_ms, "time to first token", "ttft_target_ms"),
    ):
        if target is not None:
            met = _each(results, lambda r, k=kwargs, t=target: r.within(**{k: t}), ".0%")
            found.add(f"**Within the {target:g} ms {kind} target:** {met} of requests.")
    source = results.get("continuous") or next(iter(results.values()))
    ms = source.decode_ms_by_rows()
    if len(ms) > 1:
        few, many = min(ms), max(ms)
        extra = (ms[many] - ms[few]) / (many - few)
        found.add(
            f"**What one more row costs** (`{source.strategy}`'s decode forwards, "
            f"{source.forward_cost} time, medians): {ms[few]:.2f} ms with {few} row(s), "
            f"{ms[many]:.2f} ms with {many}: {extra:.2f} ms per extra row, against "
            f"{ms[few]:.2f} ms for a forward of its own."
        )
    return found
