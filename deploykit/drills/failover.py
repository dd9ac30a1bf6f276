"""A failover drill: a steady load through a balancer while one replica is killed (SIGKILL).

What the clients see is measured with deploykit's resilient client, as an application would
call the balancer: non-streamed requests are retried on 502/503 and connection errors, a
stream that breaks after text has arrived is reported as interrupted (never retried, never
passed off as whole). Streams start first, so with as many streams as replicas each replica
holds one when the kill comes. Which replica served what comes from the balancer's own
books (`/router/stats`, or nginx's access log), since a client only sees the balancer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .._runtime import run_sync as _run_sync
from ..client import AsyncResilientClient, RetryPolicy, Timeouts
from ..errors import (
    InvalidArgumentError,
    RequestRejectedError,
    RetryBudgetExhaustedError,
    StreamInterruptedError,
)
from ..launch import Server
from ..report import Findings
from ..router.proxy import REPLICA_HEADER

OK, RETRIED, INTERRUPTED, LOST = "ok", "ok after retry", "stream interrupted", "lost"


@dataclass(frozen=True)
class DrillRequest:
    """One request of a drill: when it started, how long it took, and how it ended."""

    start_s: float  # since the drill began
    latency_s: float
    stream: bool
    outcome: str  # OK, RETRIED, INTERRUPTED or LOST
    attempts: int  # 0 when unknown (a request that gave up)
    chars: int  # text received
    error: str | None = None


@dataclass(frozen=True)
class DrillResult:
    """All requests of a drill, when the victim was killed, and who served what."""

    front: str  # "router" or "nginx"
    victim: str  # host:port of the killed replica
    kill_at_s: float  # since the drill began
    wall_s: float
    requests: tuple[DrillRequest, ...] = field(repr=False)
    served: dict[str, int] = field(default_factory=dict)  # host:port -> requests answered

    def count(self, outcome: str, stream: bool | None = None) -> int:
        """Return how many requests ended with outcome (streams only, non-streams only, or all)."""
        return sum(
            r.outcome == outcome and (stream is None or r.stream == stream) for r in self.requests
        )

    @property
    def lost(self) -> int:
        """Return the non-streamed requests that failed even after retries."""
        return self.count(LOST, stream=False)

    @property
    def interrupted_streams(self) -> int:
        """Return the streams that broke after text had arrived."""
        return self.count(INTERRUPTED, stream=True)

    def latency_s(self, quantile: float = 0.5) -> float:
        """Return a latency quantile of the non-streamed requests that succeeded."""
        values = sorted(
            r.latency_s for r in self.requests if not r.stream and r.outcome in (OK, RETRIED)
        )
        if not values:
            return math.nan
        pos = quantile * (len(values) - 1)  # linear between neighbours, as numpy's default
        low = math.floor(pos)
        high = min(low + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (pos - low)

    def summary(self) -> dict:
        """Return the headline figures as one table row."""
        streams = [r for r in self.requests if r.stream]
        return {
            "front": self.front,
            "requests": len(self.requests) - len(streams),
            "ok": self.count(OK, False),
            "ok_after_retry": self.count(RETRIED, False),
            "lost": self.lost,
            "streams": len(streams),
            "streams_ok": sum(r.outcome == OK for r in streams),
            "streams_interrupted": self.interrupted_streams,
            "latency_p50_s": round(self.latency_s(0.5), 3),
            "latency_p90_s": round(self.latency_s(0.9), 3),
            "latency_max_s": round(self.latency_s(1.0), 3),
        }


def _host_port(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def _is_nginx(front: Server) -> bool:
    return any(Path(arg).name == "nginx" for arg in front.command)


def served_by_replica(front: Server, at_least: int = 0, timeout_s: float = 5.0) -> dict[str, int]:
    """Return requests answered per replica (host:port) from a router's stats or nginx's log.

    nginx writes a request's log line a few ms after its client has the answer: with
    at_least, wait up to timeout_s until the log counts that many answered requests.
    """
    if _is_nginx(front):
        log = front.log_path.parent / "access.log"  # start_nginx keeps both in its prefix
        deadline = time.monotonic() + timeout_s
        while True:
            counts: collections.Counter = collections.Counter()
            for line in log.read_text().splitlines() if log.exists() else ():
                if "/v1/" in line and " 200 " in line:
                    # upstream=a:1, b:2 lists each replica tried; the last one answered
                    counts[
                        line.split("upstream=", 1)[1].split(" upstream_status=")[0].split(", ")[-1]
                    ] += 1
            if sum(counts.values()) >= at_least or time.monotonic() > deadline:
                return dict(counts)
            time.sleep(0.05)
    stats = httpx.get(front.url + "/router/stats", timeout=10, trust_env=False).json()
    return {_host_port(r["url"]): r["served"] for r in stats["replicas"]}


async def _drill(
    front: Server,
    victim: Server,
    model: str,
    num_requests: int,
    concurrency: int,
    max_tokens: int,
    streams: int,
    stream_max_tokens: int,
    kill_after_s: float,
    timeout_s: float,
    kill_after_requests: int | None = None,
) -> tuple[list[DrillRequest], float, float]:

    retry = RetryPolicy(
        max_attempts=4, backoff_initial_s=0.1, backoff_max_s=1.0, budget_s=timeout_s / 2
    )
    timeouts = Timeouts(connect_s=5.0, read_s=timeout_s / 2, stream_idle_s=timeout_s / 2)
    params = {"max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    began = time.perf_counter()
    kill_at: list[float] = []
    answered = [0]  # non-streamed requests answered (or given up) so far
    enough = asyncio.Event()  # kill_after_requests of them are

    async with AsyncResilientClient(
        front.url + "/v1", model=model, retry=retry, timeouts=timeouts
    ) as client:

        async def one_stream() -> DrillRequest:
            start, chars = time.perf_counter(), 0
            stream = client.stream_completions(
                "Once upon a time", **{**params, "max_tokens": stream_max_tokens}
            )
            try:
                async for text in stream:
                    chars += len(text)
                outcome, error = OK, None
            except StreamInterruptedError as exc:
                outcome, error = INTERRUPTED, str(exc)
            except (RetryBudgetExhaustedError, RequestRejectedError) as exc:
                outcome, error = LOST, str(exc)
            return DrillRequest(
                start - began,
                time.perf_counter() - start,
                True,
                outcome,
                stream.info.attempts,
                chars,
                error,
            )

        sem = asyncio.Semaphore(concurrency)

        def tick() -> None:
            answered[0] += 1
            if kill_after_requests is not None and answered[0] >= kill_after_requests:
                enough.set()

        async def one_request() -> DrillRequest:
            async with sem:
                start = time.perf_counter()
                try:
                    done = await client.completions("The quick brown fox", **params)
                except (RetryBudgetExhaustedError, RequestRejectedError) as exc:
                    tick()
                    return DrillRequest(
                        start - began,
                        time.perf_counter() - start,
                        False,
                        LOST,
                        getattr(exc, "attempts", 0),
                        0,
                        str(exc),
                    )
                tick()
                return DrillRequest(
                    start - began,
                    time.perf_counter() - start,
                    False,
                    RETRIED if done.attempts > 1 else OK,
                    done.attempts,
                    len(done.text),
                )

        async def kill() -> None:
            # at kill_after_s, or as soon as kill_after_requests are answered if that is sooner
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(enough.wait(), kill_after_s)
            os.kill(victim.pid, signal.SIGKILL)
            kill_at.append(time.perf_counter() - began)

        stream_tasks = [asyncio.ensure_future(one_stream()) for _ in range(streams)]
        await asyncio.sleep(0.2)  # the streams reach their replicas before the other requests
        killer = asyncio.ensure_future(kill())
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*stream_tasks, *(one_request() for _ in range(num_requests))),
                timeout_s,
            )
            await killer  # a load shorter than kill_after_s still kills: restarts are uniform
        finally:
            killer.cancel()
    return list(results), kill_at[0], time.perf_counter() - began


def failover_drill(
    front: Server,
    victim: Server,
    *,
    model: str,
    front_name: str | None = None,
    num_requests: int = 60,
    concurrency: int = 6,
    max_tokens: int = 32,
    streams: int = 3,
    stream_max_tokens: int = 1000,
    kill_after_s: float = 2.0,
    timeout_s: float = 120.0,
    kill_after_requests: int | None = None,
) -> DrillResult:
    """Send a load through front and SIGKILL victim after kill_after_s; report every request.

    With kill_after_requests, the kill comes as soon as that many non-streamed requests are
    answered, if that is sooner: on a fast machine the load may otherwise be over before
    kill_after_s, and no request in flight would show what a kill costs. front is a router
    (dk.start_router) or nginx (dk.start_nginx) over replicas that include victim. victim
    is dead afterwards: restart it with dk.start_server(..., port=victim.port).
    """
    for name, value in (
        ("num_requests", num_requests),
        ("concurrency", concurrency),
        ("max_tokens", max_tokens),
        ("stream_max_tokens", stream_max_tokens),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name}={value!r} must be a whole number >= 1.")
    if isinstance(streams, bool) or not isinstance(streams, int) or streams < 0:
        raise InvalidArgumentError(f"streams={streams!r} must be a whole number >= 0.")
    if kill_after_requests is not None and not (
        isinstance(kill_after_requests, int)
        and not isinstance(kill_after_requests, bool)
        and 0 < kill_after_requests < num_requests
    ):
        raise InvalidArgumentError(
            f"kill_after_requests={kill_after_requests!r} must be a whole number from 1 to "
            f"num_requests - 1 ({num_requests - 1}), so that requests are in flight at the kill."
        )
    if not 0 <= kill_after_s < timeout_s:
        raise InvalidArgumentError(
            f"kill_after_s={kill_after_s!r} must be >= 0 and below timeout_s={timeout_s!r}."
        )
    if not victim.is_running():
        raise InvalidArgumentError(
            f"the victim {victim} is not running; restart it first with "
            "dk.start_server(..., port=victim.port)."
        )
    name = front_name or ("nginx" if _is_nginx(front) else "router")
    before = served_by_replica(front)
    requests, kill_at, wall = _run_sync(
        _drill(
            front,
            victim,
            model,
            num_requests,
            concurrency,
            max_tokens,
            streams,
            stream_max_tokens,
            kill_after_s,
            timeout_s,
            kill_after_requests,
        )
    )
    victim.wait(10)  # reap it, so is_running() is False at once
    answered = sum(r.outcome != LOST for r in requests)  # each got a 200 from the front
    after = served_by_replica(front, at_least=sum(before.values()) + answered)
    served = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return DrillResult(name, _host_port(victim.url), kill_at, wall, tuple(requests), served)


def time_to_rejoin(
    front: Server, replica: Server, *, model: str, timeout_s: float = 30.0, interval_s: float = 0.2
) -> float:
    """Send a small request through front every interval_s; return seconds until replica answers.

    Call it once replica is healthy again (restarted): the result is how long the balancer
    keeps a working replica out of rotation. math.inf when it never answers within timeout_s.
    """
    if not replica.is_running():
        raise InvalidArgumentError(
            f"{replica} is not running; restart it before timing its return."
        )
    target, body = _host_port(replica.url), {"model": model, "prompt": "Hi", "max_tokens": 1}
    start = time.perf_counter()
    with httpx.Client(base_url=front.url, timeout=timeout_s, trust_env=False) as client:
        while (elapsed := time.perf_counter() - start) < timeout_s:
            response = client.post("/v1/completions", json=body)
            tried = response.headers.get(REPLICA_HEADER, "").split(", ")[-1]
            if response.status_code == 200 and _host_port(tried) == target:
                return elapsed
            time.sleep(interval_s)
    return math.inf


def _median(values: list[float]) -> float:
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _compared(count: int, others: list[int]) -> str:
    if not others:
        return "it was the only replica"
    if count < min(others):
        return "fewer than any other replica"
    if count > max(others):
        return "more than any other replica"
    if count in others and min(others) == max(others):
        return "as many as each other replica"
    return "within the range of the others"


def drill_findings(drills) -> Findings:
    """Return what each drill shows, in the run's own figures: outcomes, who served what, retries' cost.

    Who served what comes from each balancer's own books (`served`), streams included.
    """
    findings = Findings("What the drills show")
    for drill in drills:
        streams = sum(r.stream for r in drill.requests)
        findings.add(
            f"Through {drill.front}: {drill.count(OK, False)} requests answered at the first "
            f"attempt, {drill.count(RETRIED, False)} after a retry, {drill.lost} lost; "
            f"{drill.interrupted_streams} of {streams} streams cut by the kill at "
            f"{drill.kill_at_s:.2f} s."
        )
        victim = drill.served.get(drill.victim, 0)
        others = sorted(v for k, v in drill.served.items() if k != drill.victim)
        books = "nginx's access log" if drill.front == "nginx" else f"the {drill.front}'s stats"
        findings.add(
            f"By {books}, the killed replica ({drill.victim}) answered {victim} requests, "
            f"{_compared(victim, others)} ({', '.join(map(str, others)) or 'none'})."
        )
        first = [r.latency_s for r in drill.requests if not r.stream and r.outcome == OK]
        again = [r.latency_s for r in drill.requests if not r.stream and r.outcome == RETRIED]
        if first and again:
            findings.add(
                f"Through {drill.front}, a request answered after a retry took a median "
                f"{_median(again):.2f} s, one answered at the first attempt {_median(first):.2f} s."
            )
    return findings


def drill_table(drills) -> list[dict]:
    """Return one summary row per drill (for a DataFrame)."""
    return [d.summary() for d in drills]


def plot_drills(drills):
    """Plot each drill's requests over time, what clients saw, and who served what.

    Each balancer keeps its colour in every panel, bars carry their counts, and one legend
    under the panels names balancers and outcomes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    drills = list(drills)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), dpi=80)
    markers = {OK: "o", RETRIED: "^", LOST: "s"}
    ax = axes[0]
    for i, drill in enumerate(drills):
        color = f"C{i}"
        for outcome, marker in markers.items():
            rows = [r for r in drill.requests if r.outcome == outcome and not r.stream]
            if rows:
                ax.scatter(
                    [r.start_s for r in rows],
                    [r.latency_s for r in rows],
                    marker=marker,
                    color=color,
                    s=40 if outcome != OK else 14,
                    alpha=1.0 if outcome != OK else 0.5,
                )
        ax.axvline(drill.kill_at_s, color=color, linestyle="--", linewidth=1)
    ax.set(xlabel="request start (s)", ylabel="latency (s)")
    ax.set_title("Non-streamed requests over time", fontsize=10)
    ax = axes[1]
    kinds = [(OK, False), (RETRIED, False), (LOST, False), (INTERRUPTED, True)]
    width = 0.8 / max(1, len(drills))
    for i, drill in enumerate(drills):
        bars = ax.bar(
            [k + i * width for k in range(len(kinds))],
            [drill.count(outcome, stream) for outcome, stream in kinds],
            width,
            color=f"C{i}",
        )
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(
        [k + width * (len(drills) - 1) / 2 for k in range(len(kinds))],
        ["ok", "ok after\nretry", "lost", "streams\ninterrupted"],
    )
    ax.set_ylabel("requests")
    ax.set_title("What the clients saw", fontsize=10)
    ax = axes[2]
    replicas = sorted({k for d in drills for k in d.served})
    for i, drill in enumerate(drills):
        bars = ax.bar(
            [k + i * width for k in range(len(replicas))],
            [drill.served.get(r, 0) for r in replicas],
            width,
            color=f"C{i}",
        )
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(
        [k + width * (len(drills) - 1) / 2 for k in range(len(replicas))],
        [
            "port "
            + r.rsplit(":", 1)[-1]
            + ("\n(killed)" if any(d.victim == r for d in drills) else "")
            for r in replicas
        ],
        fontsize=8,
    )
    ax.set_ylabel("requests answered")
    ax.set_title("Requests answered per replica (balancer's books)", fontsize=10)
    for ax in axes[1:]:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1]) * 1.12)  # room for the value labels
    handles: list[Artist] = [Patch(color=f"C{i}", label=d.front) for i, d in enumerate(drills)]
    handles += [
        Line2D([], [], color="grey", marker=m, ls="", label=f"{o} (left)")
        for o, m in markers.items()
    ]
    handles.append(Line2D([], [], color="grey", ls="--", label="SIGKILL of one replica"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
