"""Ray Serve under load: scaling up to the maximum, and a worker node killed mid-load.

The clients behave as deploykit's resilient client does (`client/policy.py`): a request that
failed with a retryable status (500, 502, 503, 504...) or a broken connection is sent again
after a short backoff, up to four attempts; a stream is retried only before its first text,
and one that breaks after text has arrived is reported as interrupted, never passed off as
whole. Unlike that client, every failed attempt is kept: when it happened relative to the
kill, what the client saw, and what it means on Ray Serve. Responses name the node that
served them (`x-deploykit-node`, added by `rayserve.app`).

Every load is bounded in requests and seconds, and goes only to the application's URL.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._runtime import run_sync as _run_sync
from ..client.policy import RETRY_STATUSES
from ..errors import InvalidArgumentError
from ..rayserve.cluster import LocalRayCluster, NodeKill
from ..rayserve.serve import ReplicaWatch, ServeApp
from .failover import INTERRUPTED, LOST, OK, RETRIED, DrillRequest, DrillResult

NODE_HEADER = "x-deploykit-node"
_MAX_ATTEMPTS = 4
_BACKOFF_S = (0.1, 0.2, 0.4)


@dataclass(frozen=True)
class FailedAttempt:
    """One attempt that failed: when (seconds after the load began), what the client saw, why."""

    start_s: float
    end_s: float
    stream: bool
    status: int  # 0: no HTTP status (the connection failed or broke)
    error: str
    text_before: int  # characters of text received before it failed (streams)
    meaning: str  # what it means on Ray Serve


def explain(status: int, error: str, stream: bool, text_before: int) -> str:
    """Return what a failed attempt means on Ray Serve (the kill's usual signatures)."""
    if status == 500:
        return (
            "the replica died with the request in flight: Serve's proxy answers 500 (its "
            "actor is gone; the request may or may not have run), so a client may retry it"
        )
    if status in (502, 503, 504):
        return "no replica could take it at that moment (Serve or the bridge refused it)"
    if stream and ("Payload" in error or "TransferEncoding" in error or "stream ended" in error):
        where = "after text had arrived" if text_before else "before any text"
        return f"the stream's replica died {where}: the proxy cut the chunked body short"
    if "Disconnected" in error or "reset" in error.lower() or "Connection" in error:
        return "the connection to Serve's proxy broke"
    if "Timeout" in error:
        return "no answer within the client's timeout"
    return "not one of the usual signatures: read the error"


@dataclass
class _Load:
    url: str
    model: str
    began: float
    timeout_s: float
    failures: list[FailedAttempt] = field(default_factory=list)
    served: collections.Counter = field(default_factory=collections.Counter)
    first_answer_s: dict[str, float] = field(default_factory=dict)  # replica -> first answer

    def now(self) -> float:
        return time.perf_counter() - self.began

    async def attempt(self, session, body: dict, stream: bool) -> tuple[int, str | None, int]:
        """Send once; return (status, error or None, characters of text)."""
        import aiohttp

        start, chars = self.now(), 0
        status, error, done = 0, None, False
        try:
            async with session.post(self.url + "/v1/completions", json=body) as resp:
                status = resp.status
                served_by = resp.headers.get(NODE_HEADER, "?/?")
                if status != 200:
                    error = (await resp.text(errors="replace"))[:200] or f"HTTP {status}"
                elif not stream:
                    answer = await resp.json(content_type=None)
                    chars = len(answer["choices"][0].get("text") or "")
                else:
                    async for raw in resp.content:
                        line = raw.decode(errors="replace").strip()
                        if not line.startswith("data:"):
                            continue
                        if line[5:].strip() == "[DONE]":
                            done = True
                            break
                        event = json.loads(line[5:])
                        if event.get("error"):
                            error = f"error event: {json.dumps(event['error'])[:200]}"
                            break
                        chars += sum(len(c.get("text") or "") for c in event.get("choices") or ())
                    if error is None and not done:
                        error = "the stream ended without [DONE]"
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        if error is None:
            node = served_by.split("/")[0]
            self.served[node] += 1
            self.first_answer_s.setdefault(served_by, self.now())
        else:
            meaning = explain(status, error, stream, chars)
            self.failures.append(
                FailedAttempt(start, self.now(), stream, status, error, chars, meaning)
            )
        return status, error, chars

    async def request(self, session, body: dict, stream: bool) -> DrillRequest:
        """One request with the resilient client's retries; return how it ended."""
        start = self.now()
        attempts, chars, last = 0, 0, None
        for attempts in range(1, _MAX_ATTEMPTS + 1):
            status, last, chars = await self.attempt(session, {**body, "stream": stream}, stream)
            if last is None:
                outcome = OK if attempts == 1 else RETRIED
                return DrillRequest(start, self.now() - start, stream, outcome, attempts, chars)
            if stream and chars:  # text already shown: never restart a stream
                return DrillRequest(
                    start, self.now() - start, True, INTERRUPTED, attempts, chars, last
                )
            # a stream whose body broke before any text is sent again, as the resilient
            # client does; a 4xx is the request's own fault and is never retried
            retryable = status == 0 or status in RETRY_STATUSES or (stream and status == 200)
            if not retryable or attempts == _MAX_ATTEMPTS:
                break
            await asyncio.sleep(_BACKOFF_S[attempts - 1])
        return DrillRequest(start, self.now() - start, stream, LOST, attempts, chars, last)

    def session(self, concurrency: int):
        import aiohttp

        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency + 8),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )

    async def closed_loop(
        self, session, concurrency: int, body: dict, max_requests: int, until: asyncio.Event
    ) -> list[DrillRequest]:
        results: list[DrillRequest] = []
        sent = 0

        async def worker() -> None:
            nonlocal sent
            while sent < max_requests and not until.is_set() and self.now() < self.timeout_s:
                sent += 1
                results.append(await self.request(session, body, False))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name}={value!r} must be a whole number >= 1.")


@dataclass(frozen=True)
class ScaleUp:
    """A load until the application reached its maximum replicas."""

    max_replicas: int
    began: float  # time.perf_counter() when the load began
    ended_s: float  # seconds after that when it ended
    reached_s: float | None  # seconds after the load began; None: not within the time limit
    requests: int
    failed: int
    placement: dict[str, int]  # RUNNING replicas per node when it stopped


def scale_under_load(
    app: ServeApp,
    watch: ReplicaWatch,
    *,
    concurrency: int = 8,
    max_tokens: int = 16,
    hold_s: float = 1.0,
    timeout_s: float = 120.0,
    max_requests: int = 5000,
) -> ScaleUp:
    """Send a closed-loop load until watch sees app's max replicas RUNNING (plus hold_s); bounded.

    Serve's autoscaler adds replicas when the ongoing requests per replica stay above
    target_ongoing_requests for upscale_delay_s; each new replica loads the model first.
    """
    _check_positive(concurrency=concurrency, max_tokens=max_tokens, max_requests=max_requests)
    target = app.config.autoscaling.max_replicas
    body = {"model": app.config.model_name, "prompt": "The quick brown fox", "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True}  # fmt: skip
    load = _Load(app.url, app.config.model_name, time.perf_counter(), timeout_s)
    reached: list[float] = []

    async def run() -> list[DrillRequest]:
        until = asyncio.Event()

        async def director() -> None:
            while load.now() < timeout_s and watch.running() < target:
                await asyncio.sleep(0.1)
            if watch.running() >= target:
                reached.append(load.now())
                await asyncio.sleep(hold_s)
            until.set()

        async with load.session(concurrency) as session:
            stop = asyncio.ensure_future(director())
            results = await load.closed_loop(session, concurrency, body, max_requests, until)
            stop.cancel()
        return results

    results = _run_sync(run())
    return ScaleUp(
        max_replicas=target,
        began=load.began,
        ended_s=load.now(),
        reached_s=reached[0] if reached else None,
        requests=len(results),
        failed=sum(r.outcome == LOST for r in results),
        placement=app.placement(),
    )


@dataclass(frozen=True)
class NodeKillDrill:
    """A worker node killed under load: every request, every failed attempt, and Serve's recovery.

    Times are seconds after the kill. noticed_s: Serve counts fewer RUNNING replicas;
    last_failure_s: the end of the last failed attempt (after it, every request succeeded);
    recovered_s: back to as many RUNNING replicas as before the kill (a replacement started
    on a node left); replacement_first_answer_s: a replica that did not exist before the kill
    answered a request. None: not seen before the drill ended.
    """

    kill: NodeKill
    began: float  # time.perf_counter() when the load began
    result: DrillResult  # in notebook 13's terms (dk.drill_table, dk.plot_drills)
    failures: tuple[FailedAttempt, ...]
    replicas_before: int
    noticed_s: float | None
    last_failure_s: float | None
    recovered_s: float | None
    replacement_first_answer_s: float | None
    placement_after: dict[str, int]

    def summary(self) -> dict[str, Any]:
        """Return the headline figures as one row."""
        row = self.result.summary()
        row.update(
            {
                "node_killed": self.kill.node,
                "replicas_killed": self.kill.replicas_killed,
                "failed_attempts": len(self.failures),
                "noticed_s": _round(self.noticed_s),
                "last_failure_s": _round(self.last_failure_s),
                "recovered_s": _round(self.recovered_s),
            }
        )
        return row

    def failure_table(self) -> list[dict[str, Any]]:
        """Return one row per failed attempt: when (relative to the kill), what, and why."""
        kill = self.result.kill_at_s
        return [
            {
                "sent_s": round(f.start_s - kill, 2),
                "failed_s": round(f.end_s - kill, 2),
                "kind": "stream" if f.stream else "request",
                "status": f.status or "-",
                "error": f.error[:60],
                "meaning": f.meaning,
            }
            for f in self.failures
        ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def node_kill_drill(
    cluster: LocalRayCluster,
    app: ServeApp,
    watch: ReplicaWatch,
    node: str,
    *,
    concurrency: int = 6,
    max_tokens: int = 16,
    streams: int = 3,
    stream_max_tokens: int = 64,
    kill_after_s: float = 1.0,
    recover_timeout_s: float = 90.0,
    after_recovery_s: float = 1.0,
    max_requests: int = 5000,
) -> NodeKillDrill:
    """Load app, SIGKILL every process of one worker node after kill_after_s, and measure.

    The streams start first, so that the node's replica (likely) holds one when it dies. The
    load goes on until Serve is back to the replicas it had (or recover_timeout_s), plus
    after_recovery_s, so the replacement's first answers are seen.
    """
    _check_positive(
        concurrency=concurrency, max_tokens=max_tokens, stream_max_tokens=stream_max_tokens
    )
    if node not in cluster.nodes_started or node == "head":
        raise InvalidArgumentError(f"node={node!r} must name a worker node of {cluster}.")
    before = watch.running()
    body = {"model": app.config.model_name, "prompt": "The quick brown fox", "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True}  # fmt: skip
    limit_s = kill_after_s + recover_timeout_s + after_recovery_s + 60
    load = _Load(app.url, app.config.model_name, time.perf_counter(), limit_s)
    kills: list[NodeKill] = []
    marks: dict[str, float | None] = {}

    async def run() -> list[DrillRequest]:
        until = asyncio.Event()
        async with load.session(concurrency + streams) as session:
            long_body = {**body, "max_tokens": stream_max_tokens}
            stream_tasks = [
                asyncio.ensure_future(load.request(session, long_body, True))
                for _ in range(streams)
            ]

            async def director() -> None:
                try:
                    await asyncio.sleep(kill_after_s)
                    kills.append(await asyncio.to_thread(cluster.kill_node, node))
                    killed = kills[0].killed_at - load.began  # on the watch's clock too
                    kill_w = kills[0].killed_at - watch.started
                    noticed = await asyncio.to_thread(
                        watch.wait_for, lambda c: c.get("RUNNING", 0) < before, 30.0, kill_w
                    )
                    recovered = None
                    if noticed is not None:
                        recovered = await asyncio.to_thread(
                            watch.wait_for,
                            lambda c: c.get("RUNNING", 0) >= before,
                            max(0.0, recover_timeout_s - (load.now() - killed)),
                            noticed,
                        )
                    marks["noticed"] = None if noticed is None else noticed - kill_w
                    marks["recovered"] = None if recovered is None else recovered - kill_w
                    await asyncio.sleep(after_recovery_s)
                finally:
                    until.set()

            direct = asyncio.ensure_future(director())
            results = await load.closed_loop(session, concurrency, body, max_requests, until)
            await direct
            results += await asyncio.gather(*stream_tasks)
        return results

    requests = _run_sync(run())
    kill = kills[0]
    kill_at = kill.killed_at - load.began
    failures = tuple(sorted(load.failures, key=lambda f: f.start_s))
    after = [f.end_s - kill_at for f in failures if f.end_s >= kill_at]
    # a replica's first answer after the kill: the replacement (the others answered before)
    new = [t - kill_at for t in load.first_answer_s.values() if t > kill_at]
    result = DrillResult(
        front="Ray Serve",
        victim=node,
        kill_at_s=kill_at,
        wall_s=load.now(),
        requests=tuple(requests),
        served=dict(load.served),
    )
    return NodeKillDrill(
        kill=kill,
        began=load.began,
        result=result,
        failures=failures,
        replicas_before=before,
        noticed_s=marks.get("noticed"),
        last_failure_s=max(after) if after else None,
        recovered_s=marks.get("recovered"),
        replacement_first_answer_s=min(new) if new else None,
        placement_after=app.placement(),
    )


def wait_scaled_down(app: ServeApp, watch: ReplicaWatch, timeout_s: float = 60.0) -> float | None:
    """Wait until only min_replicas replicas are left, all RUNNING; return the watch's time of it."""
    low = app.config.autoscaling.min_replicas
    since = time.perf_counter() - watch.started
    return watch.wait_for(lambda c: c.get("RUNNING", 0) == low and len(c) == 1, timeout_s, since)


_STATE_STYLE = {"RUNNING": ("C2", "-"), "STARTING": ("C1", "--"), "STOPPING": ("C7", ":")}
_OUTCOME_STYLE = {OK: ("C0", "o"), RETRIED: ("C1", "^"), INTERRUPTED: ("C3", "D"), LOST: ("k", "s")}


def plot_ray_serve(watch: ReplicaWatch, scale: ScaleUp | None, drill: NodeKillDrill | None):
    """Plot replicas by state over time with the scenario's events, and the drill's requests."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    samples = watch.samples
    if samples:
        times = [t for t, _ in samples]
        for state, (color, style) in _STATE_STYLE.items():
            counts = [c.get(state, 0) for _, c in samples]
            if any(counts):
                top.step(times, counts, where="post", color=color, linestyle=style, label=state)
    events: list[tuple[float, str]] = []
    if scale is not None:
        start = scale.began - watch.started
        events.append((start, "load starts"))
        if scale.reached_s is not None:
            events.append((start + scale.reached_s, f"{scale.max_replicas} replicas"))
    if drill is not None:
        start = drill.began - watch.started
        kill = drill.kill.killed_at - watch.started
        events.append((kill, f"{drill.kill.node} killed"))
        if drill.recovered_s is not None:
            events.append((kill + drill.recovered_s, "replaced"))
        events.append((start + drill.result.wall_s, "load stops"))
        for outcome, (color, marker) in _OUTCOME_STYLE.items():
            rows = [r for r in drill.result.requests if r.outcome == outcome]
            if rows:
                bottom.scatter(
                    [start + r.start_s for r in rows],
                    [r.latency_s for r in rows],
                    color=color,
                    marker=marker,
                    s=14 if outcome == OK else 40,
                    label=f"{outcome} ({len(rows)})",
                )
        bottom.legend(fontsize=8, loc="upper left")
    for when, label in events:
        for ax in (top, bottom):
            ax.axvline(when, color="grey", linewidth=0.8, linestyle="--")
        top.annotate(label, (when, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                     fontsize=8, va="top", ha="right")  # fmt: skip
    top.set(ylabel="replicas", title="Serve's replicas by state")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))  # replicas are whole
    top.set_ylim(0, max([c for _, cs in samples for c in cs.values()] + [1]) + 1.5)
    top.legend(fontsize=8, loc="center left")
    bottom.set(
        xlabel="seconds since the replica watch started",
        ylabel="latency (s)",
        title="Requests of the node-kill drill (by start time)",
    )
    fig.tight_layout()
    return fig


def failover_comparison(
    serve: NodeKillDrill,
    others: Sequence[DrillResult | Mapping[str, Any]] = (),
    added_latency_ms: Mapping[str, float | None] | None = None,
    rejoin_s: Mapping[str, float | None] | None = None,
) -> list[dict[str, Any]]:
    """Return Ray Serve's node kill beside other fronts' replica kills, one row per front.

    others are dk.failover_drill results (the router's and nginx's, as in notebook 13) or
    rows with some of the same keys; added_latency_ms gives each front's median cost per
    request over a direct server; rejoin_s how long each balancer kept a restarted replica
    out of rotation. capacity_back_s is Serve's own replacement: a balancer has none (a
    person restarts the replica). What a row does not say reads "n/a".
    """
    added = dict(added_latency_ms or {})
    rejoin = dict(rejoin_s or {})
    row: dict[str, Any] = {
        "front": serve.result.front,
        "lost": serve.result.lost,
        "ok_after_retry": serve.result.count(RETRIED, False),
        "streams_interrupted": serve.result.interrupted_streams,
        "capacity_back_s": _round(serve.recovered_s),
        "rejoin_s": None,
        "added_latency_ms": _round(added.get(serve.result.front)),
        "source": "this run",
    }
    rows = [row]
    for other in others:
        if isinstance(other, DrillResult):
            other = {
                "front": other.front,
                "lost": other.lost,
                "ok_after_retry": other.count(RETRIED, False),
                "streams_interrupted": other.interrupted_streams,
                "source": "this run",
            }
        merged = {**{k: None for k in row}, **other}
        merged["added_latency_ms"] = _round(added.get(other["front"]))
        if other["front"] in rejoin:
            merged["rejoin_s"] = _round(rejoin[other["front"]])
        rows.append(merged)
    return [{k: "n/a" if v is None else v for k, v in r.items()} for r in rows]


def serve_findings(scale: ScaleUp, drill: NodeKillDrill, scaled_down_s: float | None):
    """Return what the scale-up, the node kill and the scale-down showed, as sentences."""
    from ..report import Findings

    findings = Findings()
    if scale.reached_s is None:
        findings.add(f"Serve did not reach {scale.max_replicas} replicas within the load.")
    else:
        findings.add(
            f"Serve reached {scale.max_replicas} replicas {scale.reached_s:.1f} s after the "
            f"load began, on {len(scale.placement)} nodes ({scale.placement})."
        )
    noticed, recovered = drill.noticed_s, drill.recovered_s
    findings.add(
        f"Killing {drill.kill.node} took {drill.kill.replicas_killed} replica(s) with it; Serve "
        + (
            f"counted one fewer {noticed:.1f} s after the kill"
            if noticed is not None
            else "never counted fewer replicas"
        )  # fmt: skip
        + (
            f" and had {drill.replicas_before} RUNNING again {recovered:.1f} s after it."
            if recovered is not None
            else ", and did not replace it within the drill."
        )  # fmt: skip
    )
    retried = drill.result.count(RETRIED, False)
    window = f"within {drill.last_failure_s:.1f} s of the kill" if drill.last_failure_s else "none"
    findings.add(
        f"{len(drill.failures)} attempt(s) failed ({window}): {retried} request(s) succeeded on "
        f"a retry, {drill.result.lost} were lost, {drill.result.interrupted_streams} stream(s) "
        "were cut after text had arrived."
    )
    findings.add(
        "With the load gone, Serve went back to its minimum replicas."
        if scaled_down_s is not None
        else "Serve had not gone back to its minimum replicas when the wait ended."
    )
    return findings
