"""Prometheus metrics of one server in vLLM's names, in a registry of its own (nothing global).

Engine metrics are vLLM's (vllm/v1/metrics/loggers.py, vLLM 0.32) with deploykit's prefix:
`deploykit:time_to_first_token_seconds` means what `vllm:time_to_first_token_seconds`
means, with the same unit, buckets and labels (`model_name`, `engine`), so one PromQL
query or dashboard reads both servers (`deploykit.monitor.promql`). HTTP metrics are the
ones vLLM's API server exposes through prometheus-fastapi-instrumentator
(`http_requests_total{handler,method,status}`), process CPU and memory come from
prometheus_client's process collector, and GPU utilization and memory from NVML when a
GPU is there.

Label values stay bounded whatever clients send: `handler` is a route template (a path
that matches no route is `none`), `status` is grouped (`2xx`), and `model_name` is always
the served name (a request naming another model is a 404 and adds no series).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("deploykit.server")

PREFIX = "deploykit"  # vLLM's names start with "vllm:"; ours with "deploykit:"

# Bucket bounds copied exactly from vLLM 0.32's vllm/v1/metrics/buckets.py.
TIME_TO_FIRST_TOKEN_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
INTER_TOKEN_LATENCY_BUCKETS_S = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_LATENCY_BUCKETS_S = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
# prometheus-fastapi-instrumentator's default http_request_duration_seconds buckets
HTTP_DURATION_BUCKETS_S = (0.1, 0.5, 1.0)

# vLLM's latency histograms: attribute of ServerMetrics (the metric adds "_seconds"), help text
# word for word, buckets; registered in this order
_LATENCY_HISTOGRAMS = (
    (
        "time_to_first_token",
        "Histogram of time to first token in seconds.",
        TIME_TO_FIRST_TOKEN_BUCKETS_S,
    ),
    (
        "inter_token_latency",
        "Histogram of inter-token latency in seconds.",
        INTER_TOKEN_LATENCY_BUCKETS_S,
    ),
    (
        "request_time_per_output_token",
        "Histogram of time_per_output_token_seconds per request.",
        INTER_TOKEN_LATENCY_BUCKETS_S,
    ),
    (
        "e2e_request_latency",
        "Histogram of e2e request latency in seconds.",
        REQUEST_LATENCY_BUCKETS_S,
    ),
    (
        "request_queue_time",
        "Histogram of time spent in WAITING phase for request.",
        REQUEST_LATENCY_BUCKETS_S,
    ),
)

FINISH_REASONS = ("stop", "length", "abort", "error")  # those deploykit's engine ends with
UNMATCHED_HANDLER = "none"  # the instrumentator's handler for a path that matches no route
UNCOUNTED_PATHS = frozenset({"/metrics", "/health", "/ready"})  # probes, as vLLM excludes them
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


def _flat(routes: Sequence) -> Iterator:
    """Yield the routes of routes, those of included routers too (FastAPI 0.16x wraps them)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat(inner.routes)
        else:
            yield route


def route_template(routes: Sequence, scope: dict) -> str:
    """Return the template of the route that serves scope's path, else UNMATCHED_HANDLER.

    A route whose path matches but whose method does not (a 405) still names the handler,
    as prometheus-fastapi-instrumentator does.
    """
    from starlette.routing import Match

    partial = None
    for route in _flat(routes):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route.path
        if match == Match.PARTIAL and partial is None:
            partial = route.path
    return partial or UNMATCHED_HANDLER


class _GPUCollector:
    """GPU utilization and memory read through NVML at scrape time; no series without a GPU."""

    def __init__(self) -> None:
        self._nvml = None
        try:  # nvidia-ml-py; imported here so that a machine without it or a GPU still serves
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > 0:
                self._nvml = pynvml
        except Exception as exc:  # no package, no driver, no device: no GPU series
            log.debug("no GPU metrics: %s", exc)

    def collect(self):
        if self._nvml is None:
            return
        nvml = self._nvml
        util = GaugeMetricFamily(
            f"{PREFIX}:gpu_utilization_perc",
            "GPU utilization over the last sample period (NVML). 1 means 100 percent.",
            labels=["gpu"],
        )
        used = GaugeMetricFamily(
            f"{PREFIX}:gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            f"{PREFIX}:gpu_memory_total_bytes", "GPU memory in all (NVML).", labels=["gpu"]
        )
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                util.add_metric([str(index)], nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
                used.add_metric([str(index)], float(memory.used))
                total.add_metric([str(index)], float(memory.total))
        except Exception as exc:  # a GPU that fell off the bus must not break /metrics
            log.warning("NVML read failed: %s", exc)
            return
        yield from (util, used, total)


class ServerMetrics:
    """The registry of one server: engine metrics, HTTP metrics, process and GPU collectors."""

    # set in __init__ from _LATENCY_HISTOGRAMS
    time_to_first_token: Histogram
    inter_token_latency: Histogram
    request_time_per_output_token: Histogram
    e2e_request_latency: Histogram
    request_queue_time: Histogram

    def __init__(self, model_name: str, engine=None, *, gpu: bool = True) -> None:
        self.model_name = model_name
        reg = self.registry = CollectorRegistry()
        labels, values = ["model_name", "engine"], [model_name, "0"]

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"{PREFIX}:{name}", doc, labels, registry=reg)

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"{PREFIX}:{name}", doc, labels, registry=reg).labels(*values)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(f"{PREFIX}:{name}", doc, labels, buckets=buckets, registry=reg).labels(
                *values
            )

        # vLLM's help texts, word for word
        running = gauge("num_requests_running", "Number of requests in model execution batches.")
        waiting = gauge("num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_cache_usage = gauge(
            "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
        ).labels(*values)
        if engine is not None:  # read when scraped, so a scrape never sees a stale queue
            running.labels(*values).set_function(lambda: engine.num_running)
            waiting.labels(*values).set_function(lambda: engine.num_waiting)
        self.prompt_tokens = counter("prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter(
            "generation_tokens", "Number of generation tokens processed."
        )
        success = Counter(
            f"{PREFIX}:request_success",
            "Count of successfully processed requests.",
            [*labels, "finished_reason"],
            registry=reg,
        )
        # every reason exists from the start (at 0), as in vLLM: rate() needs the first sample
        self.request_success = {r: success.labels(*values, r) for r in FINISH_REASONS}
        for attribute, doc, buckets in _LATENCY_HISTOGRAMS:  # self.time_to_first_token, ...
            setattr(self, attribute, histogram(f"{attribute}_seconds", doc, buckets))
        # prometheus-fastapi-instrumentator's names, labels and help texts
        self.http_requests = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ["method", "status", "handler"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. Made to "
            "be only used if aggregation by handler is important. ",
            ["handler", "method"],
            buckets=HTTP_DURATION_BUCKETS_S,
            registry=reg,
        )
        ProcessCollector(registry=reg)  # process_cpu_seconds_total, process_resident_memory_bytes
        if gpu:
            reg.register(_GPUCollector())

    @classmethod
    def create(cls, engine, model_name: str) -> ServerMetrics:
        """Return metrics for engine's server, and have the engine report each step to them."""
        metrics = cls(model_name, engine)
        engine.observer = metrics.on_step
        return metrics

    def on_step(self, step) -> None:
        """Record one engine step (an `engine.StepStats`); called on the engine thread."""
        self.prompt_tokens.inc(step.prompt_tokens)
        self.generation_tokens.inc(step.generation_tokens)
        for ttft_s in step.ttfts_s:
            self.time_to_first_token.observe(ttft_s)
        for itl_s in step.itls_s:
            self.inter_token_latency.observe(itl_s)
        for done in step.finished:
            self.request_success[done.finish_reason].inc()
            self.e2e_request_latency.observe(done.e2e_s)
            self.request_queue_time.observe(done.queued_s)
            self.request_time_per_output_token.observe(done.time_per_output_token_s)
        self.kv_cache_usage.set(step.kv_cache_usage)

    def observe_http(self, handler: str, method: str, status: int, duration_s: float) -> None:
        """Count one finished HTTP response (status grouped as `2xx`, like the instrumentator)."""
        method = method if method in _METHODS else "other"  # a made-up method adds no series
        self.http_requests.labels(method, f"{str(status)[0]}xx", handler).inc()
        self.http_duration.labels(handler, method).observe(duration_s)

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
