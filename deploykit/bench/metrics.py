"""Serving metrics with the definitions and names of vLLM's `vllm bench serve`.

Every figure deploykit reports about a load (the `bench --url` tool, the `bench servers|
vllm|llamacpp` tables, `LoadResult`) comes from the functions here, so that a number means
the same thing everywhere, and the same as in vLLM (vllm/benchmarks/serve.py,
`calculate_metrics`):

- TTFT: from sending a request to the first chunk that carries a token.
- ITL: the gaps between consecutive token chunks (a chunk that bundles several tokens
  gives one gap, so a request may have fewer than output_len - 1 of them).
- TPOT: (E2EL - TTFT) / (output_len - 1), for requests of more than one output token.
- E2EL: from sending a request to its last token chunk (non-streamed: the whole body).
  A non-streamed answer shows its first token when the whole body arrives, so its TTFT is
  its E2EL, and it has no ITLs and no TPOT.
- mean, median, std (population) and percentiles by linear interpolation (numpy's
  defaults). A statistic of no values (TPOT and ITL of a non-streamed run, anything of a
  run where no request completed) is None, written as JSON null and shown as "n/a": vLLM
  writes 0 there, which reads as a measured 0 ms; pandas, and so vLLM's own sweep plots,
  read null as a missing value.
- duration: first send to last answer of the measured requests (warm-ups excluded);
  throughputs are completed requests and their tokens over it.
- goodput: completed requests per second that meet every latency target given (TTFT,
  TPOT, E2EL in ms); a one-token request's TPOT counts as 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidArgumentError
from .records import RequestResult

METRICS = ("ttft", "tpot", "itl", "e2el")
SLO_METRICS = ("ttft", "tpot", "e2el")  # what a goodput target may bound, as in vLLM


def percentile(values: Sequence[float], p: float, empty: float = float("nan")) -> float:
    """Return the p-th percentile (0-100, linear interpolation); `empty` when there are none."""
    import numpy as np

    return float(np.percentile(values, p)) if len(values) else empty


def tpot_s(result: RequestResult) -> float | None:
    """Return a successful request's time per output token after the first (None: n/a)."""
    if not result.ok or result.output_tokens <= 1 or result.time_to_first_token_s is None:
        return None
    return (result.latency_s - result.time_to_first_token_s) / (result.output_tokens - 1)


def check_slo(slo_ms: Mapping[str, float] | None) -> dict[str, float]:
    """Return latency targets as {metric: ms}; reject unknown metrics and negative values."""
    slo = dict(slo_ms or {})
    for name, value in slo.items():
        if name not in SLO_METRICS:
            raise InvalidArgumentError(
                f"goodput target {name!r} is not one of "
                f"{', '.join(SLO_METRICS)} (values in ms, e.g. "
                "{'ttft': 500, 'tpot': 50})."
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise InvalidArgumentError(
                f"goodput target {name}={value!r} must be a number of milliseconds >= 0."
            )
    return slo


def count_good(
    ttfts_s: Sequence[float],
    tpots_s: Sequence[float],
    e2els_s: Sequence[float],
    slo_ms: Mapping[str, float],
) -> int:
    """Return how many requests meet every target (lists: one entry per completed request)."""
    columns = {"ttft": ttfts_s, "tpot": tpots_s, "e2el": e2els_s}
    chosen = [(columns[name], limit / 1000) for name, limit in check_slo(slo_ms).items()]
    if not chosen:
        return 0
    return sum(all(values[i] <= limit for values, limit in chosen) for i in range(len(ttfts_s)))


def _stats(name: str, values_s: Sequence[float], percentiles: Sequence[float]) -> dict:
    """Return mean, median, std and percentiles in ms; None for each when there are no values."""
    import numpy as np

    ms = [v * 1000 for v in values_s]
    out = {
        f"mean_{name}_ms": float(np.mean(ms)) if ms else None,
        f"median_{name}_ms": float(np.median(ms)) if ms else None,
        f"std_{name}_ms": float(np.std(ms)) if ms else None,
    }
    for p in percentiles:
        word = str(int(p)) if int(p) == p else str(p)
        out[f"p{word}_{name}_ms"] = percentile(ms, p) if ms else None
    return out


def _peaks(results: Sequence[RequestResult]) -> tuple[float, int]:
    """Return the most output tokens in one second, and the most requests in flight then."""
    done = [r for r in results if r.ok]
    if not done:
        return 0.0, 0
    start = min(r.start_s for r in done)
    seconds = int(math.ceil(max(r.start_s + r.latency_s for r in done) - start)) + 1
    tokens, running = [0] * seconds, [0] * seconds
    for r in done:
        if r.time_to_first_token_s is None:  # not streamed: every token arrives at the end
            tokens[min(int(r.start_s + r.latency_s - start), seconds - 1)] += r.output_tokens
        else:
            t = r.start_s + r.time_to_first_token_s
            for gap in (0.0, *r.itl_s):
                t += gap
                tokens[min(int(t - start), seconds - 1)] += 1
        for second in range(int(r.start_s - start), int(r.start_s + r.latency_s - start) + 1):
            running[second] += 1
    return float(max(tokens)), max(running)


def serve_metrics(
    results: Sequence[RequestResult],
    duration_s: float,
    percentiles: Sequence[float] = (99,),
    goodput_slo_ms: Mapping[str, float] | None = None,
) -> dict:
    """Return vLLM's `bench serve` figures and per-request lists for one measured load."""
    if not duration_s > 0:
        raise InvalidArgumentError(f"duration_s={duration_s!r} must be above 0.")
    for p in percentiles:
        if not 0 < p <= 100:
            raise InvalidArgumentError(f"percentile {p!r} must be in (0, 100], e.g. 99.")
    slo = check_slo(goodput_slo_ms)
    done = [r for r in results if r.ok]
    ttfts = [_ttft_s(r) for r in done]
    tpots = [t for r in done if (t := tpot_s(r)) is not None]
    all_tpots = [tpot_s(r) or 0.0 for r in done]  # goodput: one-token requests pass TPOT
    e2els = [r.latency_s for r in done]
    itls = [gap for r in done for gap in r.itl_s]
    total_in = sum(r.input_tokens or 0 for r in done)
    total_out = sum(r.output_tokens for r in done)
    peak_tokens, peak_running = _peaks(results)
    out: dict[str, Any] = {
        "completed": len(done),
        "failed": len(results) - len(done),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(done) / duration_s,
        "request_goodput": (count_good(ttfts, all_tpots, e2els, slo) / duration_s if slo else None),
        "output_throughput": total_out / duration_s,
        "total_token_throughput": (total_in + total_out) / duration_s,
    }
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        out.update(_stats(name, values, percentiles))
    out.update(
        {
            "input_lens": [r.input_tokens or 0 for r in results],
            "output_lens": [r.output_tokens if r.ok else 0 for r in results],
            "ttfts": [_ttft_s(r) if r.ok else 0.0 for r in results],
            "itls": [list(r.itl_s) if r.ok else [] for r in results],
            "latencies": [r.latency_s if r.ok else 0.0 for r in results],
            "start_times": [r.start_s for r in results],
            "errors": [_reason(r) for r in results],
            "max_output_tokens_per_s": peak_tokens,
            "max_concurrent_requests": peak_running,
        }
    )
    return out


def _ttft_s(result: RequestResult) -> float:
    """Return when the first token reached the client (non-streamed: with the whole body)."""
    first = result.time_to_first_token_s
    return result.latency_s if first is None else first


def _reason(result: RequestResult) -> str:
    """Return why a request failed ("" when it succeeded), as vLLM's `errors` list has it."""
    if result.ok:
        return ""
    return result.error or f"HTTP {result.status}"


def completed_latencies_s(result: Mapping) -> dict[str, list]:
    """Return TTFT, TPOT and E2EL (s) of each completed request of a result dict.

    TPOT is None for a request of one output token, and for a non-streamed run. result is
    one `bench_serve` result (or a `vllm bench serve --save-result --save-detailed` file).
    """
    ok = [i for i, err in enumerate(result["errors"]) if not err]
    lens, ttfts, e2els = result["output_lens"], result["ttfts"], result["latencies"]
    streamed = result.get("stream", True)
    return {
        "ttft": [ttfts[i] for i in ok],
        "e2el": [e2els[i] for i in ok],
        "tpot": [
            (e2els[i] - ttfts[i]) / (lens[i] - 1) if streamed and lens[i] > 1 else None for i in ok
        ],
    }


def goodput(
    result: Mapping,
    ttft_ms: float | None = None,
    tpot_ms: float | None = None,
    e2el_ms: float | None = None,
) -> float:
    """Return completed requests per second meeting every target given, from a result dict.

    Targets left None are not checked; at least one must be given.
    """
    slo = {
        k: v for k, v in (("ttft", ttft_ms), ("tpot", tpot_ms), ("e2el", e2el_ms)) if v is not None
    }
    if not slo:
        raise InvalidArgumentError(
            "give at least one latency target: ttft_ms, tpot_ms or "
            "e2el_ms, e.g. goodput(result, ttft_ms=500, tpot_ms=50)."
        )
    lat = completed_latencies_s(result)
    tpots = [t or 0.0 for t in lat["tpot"]]  # one-token requests pass TPOT, as in vLLM
    return count_good(lat["ttft"], tpots, lat["e2el"], slo) / result["duration"]
