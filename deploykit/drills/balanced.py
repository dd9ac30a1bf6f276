"""A benchmark through a balancer over some replicas: throughput, latency, who served what.

`bench_balanced(urls[:2], model=...)` starts deploykit's router (or nginx) over those
replicas, sends one closed-loop level with `bench_serve`, reads how many requests each replica
answered from the balancer's own books, and stops the balancer. The replicas keep running,
so the same ones can be measured behind one, two or all of them in turn.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..bench import bench_serve
from ..errors import InvalidArgumentError
from ..router import start_nginx, start_router
from .failover import _host_port, served_by_replica

FRONTS = ("router", "nginx")


@dataclass(frozen=True)
class BalancedBench:
    """One load level through a balancer: bench_serve's result and the requests per replica."""

    front: str  # "router" or "nginx"
    result: dict = field(repr=False)  # bench_serve's result, in vLLM's field names
    # host:port -> requests it answered: the load, its warm-ups and bench_serve's GET /v1/models
    served: dict[str, int]

    def __str__(self) -> str:
        r = self.result
        return "\n".join(
            [
                f"{len(self.served)} replica(s) behind the {self.front}, concurrency "
                f"{r['max_concurrency']}: {r['completed']} requests answered, {r['failed']} "
                f"failed, in {r['duration']:.2f} s",
                f"throughput: {r['request_throughput']:.1f} requests/s, "
                f"{r['output_throughput']:.0f} tokens/s; median TTFT "
                f"{r['median_ttft_ms']:.0f} ms, median latency {r['median_e2el_ms']:.0f} ms",
                "answered per replica (with the warm-ups and the model list): "
                + ", ".join(f"{replica} {count}" for replica, count in self.served.items()),
            ]
        )

    def __repr__(self) -> str:
        return str(self)


def bench_balanced(
    replica_urls: Sequence[str],
    *,
    model: str,
    front: str = "router",
    concurrency: int = 4,
    num_prompts: int = 24,
    input_tokens: int = 32,
    output_tokens: int = 16,
    warmups: int = 1,
    **front_options: Any,
) -> BalancedBench:
    """Start a router or nginx over replica_urls, benchmark one concurrency level, stop it.

    front_options go to dk.start_router or dk.start_nginx (e.g. health_interval_s).
    """
    if front not in FRONTS:
        raise InvalidArgumentError(f"front={front!r}: use one of {', '.join(FRONTS)}.")
    urls = list(replica_urls)
    if not urls:
        raise InvalidArgumentError("give at least one replica URL to balance over.")
    with tempfile.TemporaryDirectory(prefix="deploykit-balanced-") as prefix:
        balancer = (
            start_router(urls, **front_options)
            if front == "router"
            else start_nginx(urls, prefix_dir=prefix, **front_options)
        )
        with balancer:
            (result,) = bench_serve(
                balancer.url,
                model=model,
                concurrency=concurrency,
                num_prompts=num_prompts,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                warmups=warmups,
                label=f"{front}, {len(urls)} replica(s)",
                progress=False,
            )
            # bench_serve's own requests: the load, its warm-ups, and one GET /v1/models first
            # (nginx logs a line after its client has the answer: wait for all of them)
            answered = served_by_replica(balancer, at_least=result["completed"] + warmups + 1)
    served = {_host_port(url): answered.get(_host_port(url), 0) for url in urls}
    return BalancedBench(front, result, served)
