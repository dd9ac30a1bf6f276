"""What a front (a balancer, a proxy, Ray Serve) adds to each request over the server itself.

One small request at a time, to the server directly and through each front in turn, round
after round (the order rotates each round), so that every path sees the same machine at
the same moment; the medians are compared. With one output token a request is mostly
overhead: connection handling, routing, one prefill. Sequential requests measure added
latency, not throughput: a front that saturates under load is another question.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import httpx

from ..errors import InvalidArgumentError


def added_latency(
    direct_url: str,
    fronts: Mapping[str, str],
    *,
    model: str,
    rounds: int = 10,
    max_tokens: int = 1,
    prompt: str = "Hi",
    timeout_s: float = 60.0,
) -> list[dict]:
    """Return each path's median latency (ms) and what each front adds to the direct one.

    direct_url is a server's root URL; fronts maps a name to the root URL of a front over
    an equivalent server. One warm-up request per path is not timed. A failed request
    raises: the figure would mean nothing.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InvalidArgumentError(f"rounds={rounds!r} must be a whole number >= 1.")
    paths = {"direct": direct_url, **fronts}
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    times: dict[str, list[float]] = {name: [] for name in paths}
    with httpx.Client(trust_env=False, timeout=timeout_s) as client:

        def once(name: str) -> float:
            start = time.perf_counter()
            response = client.post(paths[name].rstrip("/") + "/v1/completions", json=body)
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise InvalidArgumentError(
                    f"{name} ({paths[name]}) answered HTTP {response.status_code}: "
                    f"{response.text[:200]}; check that it serves model {model!r}."
                )
            return elapsed

        names = list(paths)
        for name in names:
            once(name)  # warm-up: connections, first-request paths
        for round_ in range(rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                times[name].append(once(name))
    direct = statistics.median(times["direct"]) * 1000
    rows = []
    for name, values in times.items():
        p50 = statistics.median(values) * 1000
        rows.append(
            {
                "path": name,
                "p50_ms": round(p50, 1),
                "min_ms": round(min(values) * 1000, 1),
                "added_p50_ms": None if name == "direct" else round(p50 - direct, 1),
            }
        )
    return rows
