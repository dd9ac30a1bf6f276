"""A seeded batching workload: when each request arrives, its prompt, how many tokens it wants.

Lengths are fixed per request (the strategies ignore EOS), so every strategy does the same
useful work and only the scheduling differs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import InvalidArgumentError

# Prompts of very different lengths, so that a batch of them needs left padding.
BATCHING_PROMPTS: tuple[str, ...] = (
    "Return the",
    "def main():",
    "Open the file and return its contents.",
    "Convert a string to a list of words, splitting on whitespace.",
    "Return a new dictionary with the keys of the mapping sorted, and the values converted "
    "to strings.",
    "This module provides functions to read and write configuration files in the INI "
    "format. Each section holds options, and each option has a name and a value that the "
    "parser converts on request.",
    "Raise an error when the connection is closed before the server has sent its answer; "
    "the caller may retry the request after a short wait, or give up and report the "
    "failure to the user with the reason the server gave, if it gave one.",
    "The quick brown fox",
)


@dataclass(frozen=True)
class BatchingRequest:
    """One request of a workload: arrival offset, prompt text, exact output length."""

    index: int
    arrival_s: float  # seconds after the run starts
    prompt: str
    max_new_tokens: int  # generated exactly: EOS is ignored


@dataclass(frozen=True)
class BatchingWorkload:
    """Requests in arrival order, and how they were drawn."""

    requests: tuple[BatchingRequest, ...]
    rate_per_s: float = 0.0  # mean arrivals per second; 0: all at once
    seed: int = 0

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def output_tokens(self) -> int:
        """Return the tokens the whole workload asks for."""
        return sum(r.max_new_tokens for r in self.requests)

    @property
    def span_s(self) -> float:
        """Return the time from the first arrival to the last."""
        return self.requests[-1].arrival_s if self.requests else 0.0

    def describe(self) -> str:
        """Return one line: requests, arrivals, output lengths."""
        lengths = [r.max_new_tokens for r in self.requests]
        arrivals = (
            "all at once"
            if self.rate_per_s == 0
            else f"Poisson arrivals at {self.rate_per_s:g}/s over {self.span_s:.2f} s"
        )
        return (
            f"{len(self)} requests, {arrivals}, {min(lengths)}-{max(lengths)} output tokens "
            f"each ({self.output_tokens} in all), seed {self.seed}"
        )


def batching_workload(
    num_requests: int = 32,
    rate_per_s: float = 0.0,
    min_new_tokens: int = 8,
    max_new_tokens: int = 128,
    seed: int = 0,
    prompts: tuple[str, ...] = BATCHING_PROMPTS,
) -> BatchingWorkload:
    """Draw a workload: Poisson arrivals at rate_per_s (0: all at once), uniform output lengths."""
    if isinstance(num_requests, bool) or not isinstance(num_requests, int) or num_requests < 1:
        raise InvalidArgumentError(
            f"num_requests must be a whole number >= 1, got {num_requests!r}"
        )
    if rate_per_s < 0:
        raise InvalidArgumentError(
            f"rate_per_s must be >= 0 (0: every request arrives at once), got {rate_per_s}"
        )
    if not 1 <= min_new_tokens <= max_new_tokens:
        raise InvalidArgumentError(
            f"need 1 <= min_new_tokens <= max_new_tokens, got {min_new_tokens} and {max_new_tokens}"
        )
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise InvalidArgumentError("prompts must be a non-empty tuple of non-empty strings")
    rng = random.Random(seed)
    requests, t = [], 0.0
    for i in range(num_requests):
        if i and rate_per_s:
            t += rng.expovariate(rate_per_s)
        requests.append(
            BatchingRequest(
                i, round(t, 6), rng.choice(prompts), rng.randint(min_new_tokens, max_new_tokens)
            )
        )
    return BatchingWorkload(tuple(requests), rate_per_s, seed)


def plot_workload(workload: BatchingWorkload):
    """Plot the requested output lengths (histogram) and the arrivals over time (a step line)."""
    import matplotlib.pyplot as plt

    fig, (ax_len, ax_arr) = plt.subplots(1, 2, figsize=(11, 2.8))
    ax_len.hist([r.max_new_tokens for r in workload.requests], bins=16)
    ax_len.set_xlabel("requested output tokens")
    ax_len.set_ylabel("requests")
    arrivals = [r.arrival_s for r in workload.requests]
    ax_arr.step(arrivals, range(1, len(workload) + 1), where="post")
    ax_arr.set_xlabel("arrival (s)")
    ax_arr.set_ylabel("requests arrived")
    fig.tight_layout()
    return fig
