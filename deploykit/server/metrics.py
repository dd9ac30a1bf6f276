"""Prometheus metrics of one server, in a registry of its own (nothing global)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class ServerMetrics:
    """Request counts by status, latencies, token counts and the engine's queue gauges."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    time_to_first_token: Histogram
    prompt_tokens: Counter
    generation_tokens: Counter

    @classmethod
    def create(cls, engine) -> ServerMetrics:
        """Return metrics whose running/waiting gauges read the engine when scraped."""
        reg = CollectorRegistry()
        running = Gauge("deploykit_requests_running", "Sequences in the running batch.",
                        registry=reg)
        running.set_function(lambda: engine.num_running)
        waiting = Gauge("deploykit_requests_waiting", "Requests queued for the batch.",
                        registry=reg)
        waiting.set_function(lambda: engine.num_waiting)
        return cls(
            registry=reg,
            requests=Counter("deploykit_requests", "Finished HTTP requests by route and status.",
                             ["route", "status"], registry=reg),
            latency=Histogram("deploykit_request_latency_seconds",
                              "Time from arrival to the last token of a generation request.",
                              ["route"], buckets=_LATENCY_BUCKETS_S, registry=reg),
            time_to_first_token=Histogram("deploykit_time_to_first_token_seconds",
                                          "Time from arrival to the first generated token.",
                                          ["route"], buckets=_LATENCY_BUCKETS_S, registry=reg),
            prompt_tokens=Counter("deploykit_prompt_tokens", "Prompt tokens processed.",
                                  registry=reg),
            generation_tokens=Counter("deploykit_generation_tokens", "Tokens generated.",
                                      registry=reg),
        )

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
