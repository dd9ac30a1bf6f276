"""Start the router and its replicas as child processes, and read the router's stats."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import cast

import httpx

from ..errors import InvalidArgumentError
from ..launch import Server, deploykit_command, launch_server
from ..server.process import start_server
from .proxy import RouterConfig


def router_command(
    replica_urls: Sequence[str],
    *,
    health_interval_s: float = 1.0,
    health_timeout_s: float = 2.0,
    failure_threshold: int = 3,
    cooldown_s: float = 10.0,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 300.0,
) -> list[str]:
    """Return the router's command line (checked), with {host}/{port} for launch_server."""
    c = RouterConfig(
        # a lone string goes through as it is, for RouterConfig to refuse with a clear error
        replicas=(
            tuple(replica_urls)
            if not isinstance(replica_urls, str)
            else cast("tuple[str, ...]", replica_urls)
        ),
        health_interval_s=health_interval_s,
        health_timeout_s=health_timeout_s,
        failure_threshold=failure_threshold,
        cooldown_s=cooldown_s,
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
    )
    replicas = [arg for url in c.replicas for arg in ("--replica", url)]
    return [
        *deploykit_command("router"),
        *replicas,
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--health-interval-s",
        str(c.health_interval_s),
        "--health-timeout-s",
        str(c.health_timeout_s),
        "--failure-threshold",
        str(c.failure_threshold),
        "--cooldown-s",
        str(c.cooldown_s),
        "--connect-timeout-s",
        str(c.connect_timeout_s),
        "--read-timeout-s",
        str(c.read_timeout_s),
    ]


def start_router(
    replica_urls: Sequence[str],
    *,
    port: int = 0,
    health_interval_s: float = 1.0,
    health_timeout_s: float = 2.0,
    failure_threshold: int = 3,
    cooldown_s: float = 10.0,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 300.0,
    timeout_s: float = 30.0,
    name: str = "router",
) -> Server:
    """Start deploykit's router over replica_urls on a free loopback port; wait for /health.

    Bad arguments raise InvalidArgumentError before any process starts. The router is
    stopped at interpreter exit at the latest.
    """
    command = router_command(
        replica_urls,
        health_interval_s=health_interval_s,
        health_timeout_s=health_timeout_s,
        failure_threshold=failure_threshold,
        cooldown_s=cooldown_s,
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
    )
    return launch_server(command, port=port, timeout_s=timeout_s, name=name)


def router_stats(router: Server | str, timeout_s: float = 5.0) -> dict:
    """Return GET /router/stats of a running router (a Server or its URL)."""
    url = router if isinstance(router, str) else router.url
    return (
        httpx.get(url.rstrip("/") + "/router/stats", timeout=timeout_s, trust_env=False)
        .raise_for_status()
        .json()
    )


def start_replicas(
    model: str = "toy-tiny",
    count: int = 3,
    *,
    ports: Sequence[int] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    threads: int | None = None,
    args: Sequence[str] = (),
    timeout_s: float = 180.0,
    name: str = "replica",
) -> list[Server]:
    """Start count `deploykit serve` replicas of model at once; return them when all are healthy.

    Loading the model is the slow part, so they load side by side. ports (one per replica)
    restarts replicas where they were; threads sets OMP_NUM_THREADS of each. If one fails,
    the others are stopped and the error is raised.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidArgumentError(f"count={count!r} must be a whole number >= 1.")
    ports = list(ports) if ports is not None else [0] * count
    if len(ports) != count:
        raise InvalidArgumentError(
            f"give one port per replica: {count} replicas, {len(ports)} ports."
        )
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise InvalidArgumentError(f"threads={threads!r} must be a whole number >= 1, or None.")
    env = {"OMP_NUM_THREADS": str(threads)} if threads else None

    def start(i: int) -> Server:
        return start_server(
            model,
            device=device,
            dtype=dtype,
            port=ports[i],
            args=args,
            env=env,
            timeout_s=timeout_s,
            name=f"{name}-{i}",
        )

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start, i) for i in range(count)]
        wait(futures)
    failed = [exc for f in futures if (exc := f.exception()) is not None]
    if failed:
        for f in futures:
            if f.exception() is None:
                f.result().stop()
        raise failed[0]
    return [f.result() for f in futures]
