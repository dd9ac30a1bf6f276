"""The PromQL that reads deploykit and vLLM alike: one selector helper, the standard queries.

deploykit's server names its metrics as vLLM does, with its own prefix
(`deploykit:time_to_first_token_seconds` next to `vllm:time_to_first_token_seconds`), so
a name regex over both prefixes reads either server, or both at once. The alert rules,
the Grafana dashboard, the live view and the notebooks all build their queries here, so
the regex is written once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidArgumentError

METRIC_PREFIXES = ("vllm", "deploykit")  # metric-name prefixes of the servers the queries read
_WINDOW = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def metric_selector(name: str, engines: Sequence[str] = METRIC_PREFIXES, **labels: str) -> str:
    """Return a selector of `name` under every engine prefix, e.g. `{__name__=~"(vllm|deploykit):x"}`.

    Label values given as keywords are exact matches: `metric_selector("x", job="vllm")`.
    """
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
        raise InvalidArgumentError(
            f"metric name {name!r} should be a suffix such as "
            "'time_to_first_token_seconds_bucket', without the prefix."
        )
    if not engines or not all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", e) for e in engines):
        raise InvalidArgumentError(
            f"engines={engines!r} must be metric prefixes such as {METRIC_PREFIXES}."
        )
    matchers = [f'__name__=~"({"|".join(engines)}):{name}"']
    matchers += [f'{key}="{_escape(value)}"' for key, value in labels.items()]
    return "{" + ", ".join(matchers) + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def check_window(window: str) -> str:
    """Return window if it is a PromQL duration ('30s', '5m', '1h30m'), else raise."""
    if not isinstance(window, str) or not _WINDOW.match(window):
        raise InvalidArgumentError(
            f"window={window!r} is not a PromQL duration; use e.g. '30s', '1m' or '5m'."
        )
    return window


def duration(seconds: float, name: str = "seconds", zero_ok: bool = False) -> str:
    """Return a Prometheus duration: whole seconds as '15s', else milliseconds ('500ms')."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not (seconds >= 0 if zero_ok else seconds > 0)
        or math.isinf(seconds)
    ):
        raise InvalidArgumentError(
            f"{name}={seconds!r} must be a number of seconds {'>= 0' if zero_ok else 'above 0'}."
        )
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def _by(labels: Sequence[str], extra: str = "", op: str = "sum") -> str:
    if isinstance(labels, str):
        raise InvalidArgumentError(f"by={labels!r} must be a list of label names, e.g. ['job'].")
    names = [extra] if extra else []
    for label in labels:
        if not _LABEL.match(label):
            raise InvalidArgumentError(f"{label!r} is not a label name.")
        names.append(label)
    return f"{op} by ({', '.join(names)})" if names else op


def ttft_quantile(
    quantile: float = 0.95,
    window: str = "1m",
    by: Sequence[str] = ("job",),
    engines: Sequence[str] = METRIC_PREFIXES,
) -> str:
    """Return PromQL for a time-to-first-token quantile (seconds) over the last window."""
    if not 0 < quantile < 1:
        raise InvalidArgumentError(f"quantile={quantile!r} must be between 0 and 1, e.g. 0.95.")
    buckets = metric_selector("time_to_first_token_seconds_bucket", engines)
    return (
        f"histogram_quantile({quantile:g}, {_by(by, 'le')} "
        f"(rate({buckets}[{check_window(window)}])))"
    )


def generation_tokens_per_s(
    window: str = "1m", by: Sequence[str] = ("job",), engines: Sequence[str] = METRIC_PREFIXES
) -> str:
    """Return PromQL for generated tokens per second over the last window."""
    counter = metric_selector("generation_tokens_total", engines)
    return f"{_by(by)} (rate({counter}[{check_window(window)}]))"


def requests_waiting(by: Sequence[str] = ("job",), engines: Sequence[str] = METRIC_PREFIXES) -> str:
    """Return PromQL for the requests waiting for a batch slot (the queue)."""
    return f"{_by(by)} ({metric_selector('num_requests_waiting', engines)})"


def requests_running(by: Sequence[str] = ("job",), engines: Sequence[str] = METRIC_PREFIXES) -> str:
    """Return PromQL for the requests in the running batch."""
    return f"{_by(by)} ({metric_selector('num_requests_running', engines)})"


def kv_cache_usage(by: Sequence[str] = ("job",), engines: Sequence[str] = METRIC_PREFIXES) -> str:
    """Return PromQL for the KV-cache usage (1 means full), the fullest engine per group."""
    return f"{_by(by, op='max')} ({metric_selector('kv_cache_usage_perc', engines)})"


def errors_per_s(window: str = "1m", by: Sequence[str] = ("job",)) -> str:
    """Return PromQL for HTTP 5xx responses per second (both servers count them alike).

    A server without any 5xx yet has no such series; `or ... * 0` makes its line 0, not absent.
    """
    window = check_window(window)
    return (
        f'{_by(by)} (rate(http_requests_total{{status=~"5.."}}[{window}])) or '
        f"{_by(by)} (rate(http_requests_total[{window}])) * 0"
    )


def error_ratio(window: str = "5m", by: Sequence[str] = ("job",)) -> str:
    """Return PromQL for the share of HTTP responses that were 5xx errors over the window."""
    window = check_window(window)
    return (
        f'{_by(by)} (rate(http_requests_total{{status=~"5.."}}[{window}])) / '
        f"{_by(by)} (rate(http_requests_total[{window}]))"
    )


@dataclass(frozen=True)
class Panel:
    """One chart of the dashboards: a title, a unit and the PromQL of its lines."""

    title: str
    unit: str  # Grafana's unit id: "s", "percentunit", "short", "reqps"
    queries: tuple[tuple[str, str], ...]  # (legend prefix, PromQL)
    axis: str = ""  # what the y axis counts, with its unit, e.g. "tokens/s" (plots)


def standard_panels(
    window: str = "1m", by: Sequence[str] = ("job",), engines: Sequence[str] = METRIC_PREFIXES
) -> tuple[Panel, ...]:
    """Return the panels both dashboards draw: tokens/s, TTFT p50/p95, queue, KV cache, errors."""
    return (
        Panel(
            "Generated tokens/s",
            "short",
            (("", generation_tokens_per_s(window, by, engines)),),
            "tokens/s",
        ),
        Panel(
            "Time to first token",
            "s",
            (
                ("p50 ", ttft_quantile(0.5, window, by, engines)),
                ("p95 ", ttft_quantile(0.95, window, by, engines)),
            ),
            "seconds",
        ),
        Panel(
            "Requests waiting and running",
            "short",
            (
                ("waiting ", requests_waiting(by, engines)),
                ("running ", requests_running(by, engines)),
            ),
            "requests",
        ),
        Panel(
            "KV-cache usage",
            "percentunit",
            (("", kv_cache_usage(by, engines)),),
            "fraction of the cache",
        ),
        Panel("HTTP 5xx errors/s", "reqps", (("", errors_per_s(window, by)),), "responses/s"),
    )
