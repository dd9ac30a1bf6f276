"""Read a server's Prometheus `/metrics` page into numbers (`vllm:*` and `deploykit:*` metrics).

Parsing is prometheus_client's text parser; this module only flattens it into samples
and sums them over label sets, which is what a notebook asks ("how many prefix-cache
hits so far?"), and does not keep history: take two snapshots and subtract.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, overload

import httpx

from ..errors import EngineRunError, MetricNotFoundError

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One line of the exposition: sample name, labels, value."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class Metrics:
    """All samples of one scrape."""

    samples: tuple[Sample, ...]
    families: tuple[tuple[str, str], ...] = ()  # (family name, type) as the page declares them

    def names(self) -> list[str]:
        """Return the distinct sample names, sorted."""
        return sorted({s.name for s in self.samples})

    def family_types(self, prefix: str = "") -> dict[str, str]:
        """Return {family name: type} of the families whose name starts with prefix.

        A family is named without its samples' suffixes: `x` for a histogram's `x_bucket`,
        `x_count` and `x_sum`, or a counter's `x_total`.
        """
        return {name: kind for name, kind in self.families if name.startswith(prefix)}

    def has(self, name: str) -> bool:
        """Return True when a sample `name` (or counter `name_total`) exists."""
        return any(s.name in (name, name + "_total") for s in self.samples)

    def value(self, name: str, **labels: str) -> float:
        """Return the sum of samples `name` whose labels include `labels`.

        A counter may be named with or without its `_total` suffix.
        """
        wanted = set(labels.items())
        for candidate in (name, name + "_total"):
            found = [
                s.value for s in self.samples if s.name == candidate and wanted <= set(s.labels)
            ]
            if found:
                return float(sum(found))
        close = [n for n in self.names() if name.split(":")[-1][:12] in n][:8]
        raise MetricNotFoundError(
            f"no metric {name!r}{' with ' + str(labels) if labels else ''} "
            f"in this scrape; similar names: {close or 'none'}. Use "
            ".names() to list them (names change between server versions)."
        )

    @overload
    def get(self, name: str, default: float, **labels: str) -> float: ...
    @overload
    def get(self, name: str, default: None = None, **labels: str) -> float | None: ...
    def get(self, name: str, default: float | None = None, **labels: str) -> float | None:
        """Return `value(name, **labels)`, or `default` when the metric is absent."""
        try:
            return self.value(name, **labels)
        except MetricNotFoundError:
            return default

    def labels(self, name: str) -> dict[str, str]:
        """Return the labels of the first sample `name` (info metrics carry data there)."""
        for s in self.samples:
            if s.name == name:
                return dict(s.labels)
        raise MetricNotFoundError(f"no metric {name!r} in this scrape; use .names() to list them.")

    def histogram_upper_bound(self, name: str, **labels: str) -> float:
        """Return the smallest bucket bound `le` that holds every observation (a max bound)."""
        total = self.value(name + "_count", **labels)
        wanted = set(labels.items())
        bounds = sorted(
            float(dict(s.labels)["le"])
            for s in self.samples
            if s.name == name + "_bucket"
            and wanted <= set(s.labels)
            and self.value(name + "_bucket", **labels, le=dict(s.labels)["le"]) >= total
        )
        if not bounds:
            raise MetricNotFoundError(f"{name!r} has no buckets in this scrape; is it a histogram?")
        return bounds[0]

    def histogram_mean(self, name: str, **labels: str) -> float:
        """Return a histogram's mean (`_sum` / `_count`), NaN when it has no observations."""
        count = self.value(name + "_count", **labels)
        return self.value(name + "_sum", **labels) / count if count else float("nan")


def parse_metrics(text: str) -> Metrics:
    """Parse Prometheus text exposition format into Metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(text))
    samples = [
        Sample(s.name, tuple(sorted(s.labels.items())), float(s.value))
        for family in families
        for s in family.samples
    ]
    return Metrics(tuple(samples), tuple((f.name, f.type) for f in families))


def scrape_metrics(
    base_url: str,
    *,
    path: str = "/metrics",
    timeout_s: float = 10.0,
    client: httpx.Client | None = None,
) -> Metrics:
    """GET `base_url + path` and parse it."""
    url = base_url.rstrip("/") + path
    if client is not None:
        response = client.get(url, timeout=timeout_s)
    else:
        response = httpx.get(url, timeout=timeout_s, trust_env=False)
    response.raise_for_status()
    return parse_metrics(response.text)


@dataclass(frozen=True)
class MetricsTrace:
    """Values of some metrics sampled over time while work ran."""

    times_s: tuple[float, ...]  # seconds since the work started
    values: dict[str, tuple[float, ...]]  # metric name -> one value per time

    def peak(self, name: str) -> float:
        """Return the largest value seen for `name` (NaN when never sampled)."""
        return max(self.values[name], default=float("nan"))


def watch_metrics(
    base_url: str,
    names: list[str],
    work: Callable[[], T],
    *,
    interval_s: float = 0.25,
    timeout_s: float = 600.0,
) -> tuple[T, MetricsTrace]:
    """Run `work()` in a thread and scrape `names` every `interval_s` until it returns.

    Returns work's result and the trace; an exception in `work` is raised here.
    """
    box: list = []
    thread = threading.Thread(target=lambda: box.append(_capture(work)), daemon=True)
    times: list[float] = []
    values: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    thread.start()
    with httpx.Client(trust_env=False) as client:
        while True:
            done = not thread.is_alive()  # one last sample after the work finished
            metrics = scrape_metrics(base_url, client=client)
            times.append(time.perf_counter() - start)
            for n in names:
                values[n].append(metrics.get(n, float("nan")))
            if done or time.perf_counter() - start > timeout_s:
                break
            thread.join(interval_s)
    thread.join(timeout=max(0.0, timeout_s - (time.perf_counter() - start)))
    if not box:
        raise EngineRunError(
            f"the watched work did not finish within {timeout_s:g} s; raise timeout_s"
        )
    ok, result = box[0]
    if not ok:
        raise result
    return result, MetricsTrace(tuple(times), {n: tuple(v) for n, v in values.items()})


def metrics_delta(
    base_url: str, names: list[str], work: Callable[[], T]
) -> tuple[T, dict[str, float]]:
    """Run `work()` between two scrapes; return its result and how much each metric grew.

    For counters this is what `work` added (e.g. prefix-cache hits of a few requests),
    provided nothing else used the server meanwhile.
    """
    before = scrape_metrics(base_url)
    result = work()
    after = scrape_metrics(base_url)
    return result, {name: after.value(name) - before.value(name) for name in names}


def _capture(work: Callable[[], T]) -> tuple[bool, object]:
    try:
        return True, work()
    except BaseException as exc:  # handed to the caller's thread
        return False, exc
