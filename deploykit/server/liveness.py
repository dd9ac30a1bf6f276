"""What a Kubernetes liveness probe makes of a server while it works.

The kubelet sends GET /health every `period_s`, counts a probe as failed when no answer comes
within `timeout_s`, and restarts the container after `failure_threshold` failures in a row
(its defaults: timeoutSeconds 1, periodSeconds 10, failureThreshold 3). `probe_liveness`
probes a server that way, over a new connection each time as the kubelet does, while a
callable (a load, one long request) runs in a thread, and says whether and when the kubelet
would have restarted it. It does not restart anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from ..errors import InvalidArgumentError

T = TypeVar("T")


@dataclass(frozen=True)
class LivenessProbe:
    """A liveness probe as a pod spec writes it (httpGet path, timeout, period, threshold)."""

    path: str = "/health"
    timeout_s: float = 1.0  # timeoutSeconds
    period_s: float = 10.0  # periodSeconds (Kubernetes allows 1 at the least)
    failure_threshold: int = 3  # failureThreshold: failures in a row before a restart

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and self.period_s > 0 and self.failure_threshold >= 1):
            raise InvalidArgumentError(
                f"LivenessProbe needs timeout_s > 0, period_s > 0 and failure_threshold >= 1; "
                f"got {self}"
            )


@dataclass(frozen=True)
class LivenessResult:
    """Each probe's answer time (None: failed, no 2xx within the timeout) and what followed."""

    probe: LivenessProbe
    sent_s: tuple[float, ...]  # when each probe was sent, seconds after the work started
    latencies_s: tuple[float | None, ...]

    @property
    def failures(self) -> int:
        """Return how many probes failed."""
        return sum(latency is None for latency in self.latencies_s)

    @property
    def restart_at_s(self) -> float | None:
        """Return when the kubelet would have restarted the server (seconds), else None."""
        run = 0
        for sent, latency in zip(self.sent_s, self.latencies_s):
            run = run + 1 if latency is None else 0
            if run == self.probe.failure_threshold:
                return sent + self.probe.timeout_s
        return None

    @property
    def worst_s(self) -> float:
        """Return the slowest answer (inf when a probe failed, nan when none was sent)."""
        if not self.latencies_s:
            return math.nan
        return math.inf if self.failures else max(x for x in self.latencies_s if x is not None)

    def summary(self) -> str:
        """Return one line: probes, failures, and the kubelet's verdict."""
        p = self.probe
        head = (
            f"{len(self.latencies_s)} probes of {p.path} (timeout {p.timeout_s:g} s, every "
            f"{p.period_s:g} s): {self.failures} failed"
        )
        answered = [x for x in self.latencies_s if x is not None]
        if answered:
            head += f", slowest answer {max(answered) * 1e3:.0f} ms"
        restart = self.restart_at_s
        if restart is None:
            return head + f"; fewer than {p.failure_threshold} failures in a row: no restart"
        return head + (
            f"; {p.failure_threshold} failures in a row: the kubelet restarts the container "
            f"at {restart:.1f} s"
        )


def probe_liveness(
    url: str, during: Callable[[], T], probe: LivenessProbe = LivenessProbe()
) -> tuple[T, LivenessResult]:
    """Run during() in a thread and probe url's health path meanwhile; return both results.

    Probes are sent at multiples of period_s after the start, until during() returns; a tick
    that passes while a probe waits for its answer sends the next probe at once. during's
    exception, if any, is raised here.
    """
    sent: list[float] = []
    latencies: list[float | None] = []
    target = url.rstrip("/") + probe.path
    with ThreadPoolExecutor(1) as pool:
        start = time.perf_counter()
        work = pool.submit(during)
        tick = 0
        while not work.done():
            began = time.perf_counter()
            sent.append(began - start)
            try:
                ok = httpx.get(target, timeout=probe.timeout_s, trust_env=False).is_success
            except httpx.HTTPError:  # a timeout, a refused or reset connection
                ok = False
            ended = time.perf_counter()
            latencies.append(ended - began if ok and ended - began <= probe.timeout_s else None)
            # the next tick; one that passed during a slow probe fires at once (as Go's ticker)
            tick = max(tick + 1, math.floor((ended - start) / probe.period_s))
            _wait_until(work, start + tick * probe.period_s)
        result = work.result()
    return result, LivenessResult(probe, tuple(sent), tuple(latencies))


def _wait_until(work: Any, deadline: float) -> None:
    """Sleep until deadline (perf_counter), or until work is done."""
    remaining = deadline - time.perf_counter()
    if remaining > 0:
        try:
            work.result(timeout=remaining)
        except Exception:  # finished (with any outcome) or still running: either way, go on
            pass
