"""What vLLM's prefix cache serves, and the time to first token it saves, measured over HTTP.

Prompts go one at a time through deploykit's load generator; the cache's hits and queries
are the growth of vLLM's own counters on /metrics meanwhile; `plot_prefix_cache` draws the
hit shares side by side.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from ..monitor.scrape import metrics_delta
from .loadgen import LoadSpec, run_load


@dataclass(frozen=True)
class PrefixCacheResult:
    """What vLLM's prefix cache served for a set of prompts sent one at a time."""

    requests: int
    ok: int  # requests that succeeded
    hit_tokens: float  # prompt tokens found in the cache (vllm:prefix_cache_hits grew by this)
    query_tokens: float  # prompt tokens looked up (vllm:prefix_cache_queries)

    @property
    def hit_rate(self) -> float:
        """Return the share of prompt tokens served from the cache (0 when none were looked up)."""
        return self.hit_tokens / self.query_tokens if self.query_tokens else 0.0


def measure_prefix_cache(
    url: str, model: str, prompts: list[str], max_tokens: int = 4
) -> PrefixCacheResult:
    """Send prompts one at a time to a vLLM server; count its prefix-cache hits meanwhile.

    Nothing else should use the server meanwhile: the counts are /metrics deltas.
    """
    names = ["vllm:prefix_cache_hits", "vllm:prefix_cache_queries"]
    replies, grew = metrics_delta(
        url,
        names,
        lambda: [
            run_load(url, LoadSpec(model=model, prompt=p, max_tokens=max_tokens), 1, 1)
            for p in prompts
        ],
    )
    return PrefixCacheResult(
        len(prompts), sum(r.num_ok for r in replies), grew[names[0]], grew[names[1]]
    )


def median_ttft_s(url: str, model: str, prompts: list[str], max_tokens: int = 4) -> float:
    """Return the median time to first token of prompts streamed one at a time."""
    return statistics.median(
        run_load(
            url, LoadSpec(model=model, prompt=p, max_tokens=max_tokens, stream=True), 1, 1
        ).time_to_first_token_s()
        for p in prompts
    )


def plot_prefix_cache(results: Mapping[str, PrefixCacheResult], title: str = "Prefix-cache hits"):
    """Plot the share of prompt tokens served from the cache per setting; return the figure.

    Each bar is labelled with its share and the tokens looked up, so a setting that hit
    nothing (or looked nothing up: caching off) still reads as a value, not a gap.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.45 * len(results)))
    names = list(results)
    rates = [100 * r.hit_rate for r in results.values()]
    bars = ax.barh(names, rates, color="tab:blue")
    ax.bar_label(
        bars,
        [
            f"{r.hit_rate:.0%} of {r.query_tokens:,.0f} tokens looked up"
            if r.query_tokens
            else "no lookups (prefix caching off)"
            for r in results.values()
        ],
        padding=4,
        fontsize=8,
    )
    ax.set_xlim(0, 140)  # room for the labels right of a full bar
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("prompt tokens served from the cache (%)")
    ax.invert_yaxis()  # first setting on top
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
