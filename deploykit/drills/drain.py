"""Send SIGTERM to a server with requests in flight, and report how its drain went.

What Kubernetes does to a pod on every rollout, scale-down and node drain, done here to a
local server: start long requests, wait until the server has admitted them all, signal it,
then record each request's outcome, what /ready and a new request got during the drain, and
how the process ended. The caller compares the time against the drain timeout and the grace period.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from typing import Protocol

import httpx

from .._runtime import run_sync as _run_sync
from ..errors import InvalidArgumentError
from ..launch import Server


@dataclass(frozen=True)
class DrainResult:
    """How a server ended after SIGTERM with `requests` in flight."""

    requests: int
    statuses: tuple[int, ...]  # HTTP status of each in-flight request (0: connection failed)
    completion_tokens: tuple[int, ...]  # tokens each one generated (0 when it failed)
    ready_status: int  # /ready while draining (0: the port was already closed)
    exit_code: int | None  # None: still running after timeout_s
    drain_s: float  # from SIGTERM to the process's exit (or to the timeout)
    new_request_status: int = 0  # a completion sent while draining (0: the port was closed)
    retry_after: str | None = None  # its Retry-After header, if it had one
    max_tokens: int = 0  # tokens each in-flight request asked for (ignore_eos: it must get them)

    @property
    def all_completed(self) -> bool:
        """Return True when every in-flight request answered 200."""
        return self.statuses == (200,) * self.requests

    @property
    def lost(self) -> int:
        """Return how many in-flight requests failed or came back short of their tokens."""
        return sum(
            1
            for s, t in zip(self.statuses, self.completion_tokens)
            if s != 200 or t < self.max_tokens
        )


class Stoppable(Protocol):
    """What sigterm_drain stops besides a Server: a container (`sigterm` is `docker stop`)."""

    url: str

    def sigterm(self) -> None: ...

    def wait(self, timeout_s: float | None = None) -> int | None: ...


def _admitted(metrics: str) -> float:
    """Return running + waiting requests from a deploykit /metrics scrape."""
    gauges = ("deploykit:num_requests_running{", "deploykit:num_requests_waiting{")
    # "name{labels} value": a label value may hold spaces, the value never does
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(gauges)
    )


def sigterm_drain(
    server: Server | Stoppable,
    *,
    model: str,
    requests: int = 4,
    max_tokens: int = 200,
    timeout_s: float = 120.0,
) -> DrainResult:
    """Start `requests` completions of max_tokens each, SIGTERM the server once all are admitted,
    and wait for the requests and the process (deploykit servers: it reads /metrics).

    A Server gets the signal from os.kill; a container (anything with `sigterm()`) from
    `docker stop`, which is how Docker, Compose and Kubernetes stop it.
    """
    if requests < 1 or max_tokens < 1:
        raise InvalidArgumentError("requests and max_tokens must be >= 1.")
    body = {
        "model": model,
        "prompt": "Once upon a time",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
    }

    async def scenario():
        limits = httpx.Limits(max_connections=requests + 2, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=server.url, timeout=timeout_s, limits=limits, trust_env=False
        ) as client:

            async def one():
                try:
                    return await client.post("/v1/completions", json=body)
                except httpx.HTTPError:
                    return None

            inflight = asyncio.gather(*(one() for _ in range(requests)))
            deadline = time.monotonic() + timeout_s
            while _admitted((await client.get("/metrics")).text) < requests:
                if time.monotonic() > deadline:
                    raise InvalidArgumentError("the requests never reached the server")
                await asyncio.sleep(0.05)
            if isinstance(server, Server):
                os.kill(server.pid, signal.SIGTERM)
            else:
                server.sigterm()
            signalled = time.monotonic()
            await asyncio.sleep(0.2)
            try:
                ready = (await client.get("/ready")).status_code
            except httpx.HTTPError:
                ready = 0
            try:  # a new request while draining: refused, with when to retry (elsewhere)
                late = await client.post("/v1/completions", json={**body, "max_tokens": 1})
                refused = (late.status_code, late.headers.get("retry-after"))
            except httpx.HTTPError:
                refused = (0, None)
            return await inflight, ready, refused, signalled

    # a notebook's kernel already runs an event loop: _run_sync uses a thread then
    responses, ready, refused, signalled = _run_sync(scenario())
    code = server.wait(max(0.0, timeout_s - (time.monotonic() - signalled)))
    drain_s = time.monotonic() - signalled
    statuses = tuple(r.status_code if r is not None else 0 for r in responses)
    tokens = tuple(
        r.json()["usage"]["completion_tokens"] if r is not None and r.status_code == 200 else 0
        for r in responses
    )
    return DrainResult(
        requests,
        statuses,
        tokens,
        ready,
        code,
        drain_s,
        new_request_status=refused[0],
        retry_after=refused[1],
        max_tokens=max_tokens,
    )
