"""What the engine tells its observer (the server's metrics) after each step.

Plain data: the engine thread fills it, `metrics.ServerMetrics.on_step` records it. The
fields are those of vLLM's IterationStats and FinishedRequestStats that its Prometheus
metrics read.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FinishedRequest:
    """Timings of a request that left the engine (vLLM's FinishedRequestStats)."""

    finish_reason: str  # "stop", "length", "abort" (client gone, engine stopped) or "error"
    e2e_s: float  # arrival to the end
    queued_s: float  # arrival to admission into the batch
    time_per_output_token_s: float  # first to last token / (tokens - 1); 0 for one token


@dataclass
class StepStats:
    """What one engine step did, for metrics (vLLM's IterationStats)."""

    prompt_tokens: int = 0  # prefilled this step
    generation_tokens: int = 0
    ttfts_s: list[float] = field(default_factory=list)  # of requests whose first token came now
    itls_s: list[float] = field(default_factory=list)  # one per token after a request's first
    finished: list[FinishedRequest] = field(default_factory=list)
    kv_cache_usage: float = 0.0  # KV positions held / (max_batch_size x context_length)
