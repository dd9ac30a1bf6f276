"""Several servers benchmarked one after another under the same sweep, each alone on the machine.

Each server is started, measured (closed loop, then open loop) and stopped before the next
starts, so that no idle server takes CPU from the one under load; its start time is kept too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgumentError
from ..launch import Server
from .serve import bench_serve


@dataclass
class ServerRuns:
    """Results of `bench_servers`, keyed by server name: vLLM-named results per load level."""

    closed: dict[str, list[dict]] = field(default_factory=dict)  # one per concurrency level
    opened: dict[str, list[dict]] = field(default_factory=dict)  # one per request rate
    startup_s: dict[str, float] = field(default_factory=dict)  # start until healthy


def bench_servers(
    starters: Mapping[str, Callable[[], Server]],
    *,
    concurrency: Sequence[int] = (),
    request_rate: Sequence[float] = (),
    options: Mapping[str, Mapping[str, Any]] | None = None,
    **load: Any,
) -> ServerRuns:
    """Start each server (name -> a call that starts it), sweep it with `bench_serve`, stop it.

    concurrency are the closed-loop levels, request_rate the open-loop ones (either may be
    empty); options adds `bench_serve` arguments for one server (e.g. {"naive": {"stream":
    False}}); load is every other `bench_serve` argument, the same for all servers.
    """
    options = dict(options or {})
    unknown = set(options) - set(starters)
    if unknown:
        raise InvalidArgumentError(
            f"options name servers that are not started: {sorted(unknown)}; "
            f"the servers are {list(starters)}."
        )
    if not concurrency and not request_rate:
        raise InvalidArgumentError(
            "give concurrency levels, request rates, or both, e.g. concurrency=[1, 4]."
        )
    runs = ServerRuns()
    for name, start in starters.items():
        started = time.perf_counter()
        with start() as server:
            runs.startup_s[name] = time.perf_counter() - started
            kwargs = {**load, **options.get(name, {}), "label": name}
            if concurrency:
                runs.closed[name] = bench_serve(server.url, concurrency=list(concurrency), **kwargs)
            if request_rate:
                runs.opened[name] = bench_serve(
                    server.url, request_rate=list(request_rate), **kwargs
                )
    return runs
