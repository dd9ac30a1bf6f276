"""Which replica gets the next request: least outstanding requests, health and a circuit breaker.

Pure bookkeeping, no I/O: the proxy (`proxy.py`) reports what happened, the balancer decides.
A replica is in rotation when its last health check passed and its breaker is closed (or
half-open with no trial in flight). States, as `/router/stats` shows them:

- ``up``: in rotation.
- ``down``: its last `/ready` check failed (refused, timed out, or not 200); out of rotation
  until a check passes.
- ``cooling``: `failure_threshold` requests in a row failed (connection error, 5xx, broken
  stream); out of rotation, and not even health-checked, until `cooldown_s` has passed.
- ``half-open``: the cooldown is over; one trial (a request, or the next health check) decides:
  success puts it back ``up``, failure cools it down again.
"""

from __future__ import annotations

import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from .._urls import check_http_url
from ..errors import InvalidArgumentError

UP, DOWN, COOLING, HALF_OPEN = "up", "down", "cooling", "half-open"


def check_replica_url(url: str) -> str:
    """Return url without a trailing slash, or raise if it is not http(s)://host:port."""
    check_http_url(
        url,
        "a replica URL",
        "http://host:port (e.g. 'http://127.0.0.1:8000', server.url of a started server)",
        need_port=True,
        root_only=True,
    )
    return str(url).rstrip("/")


def check_replica_urls(urls) -> list[str]:
    """Return the checked, distinct replica URLs, or raise a clear error."""
    if isinstance(urls, str) or not urls:
        raise InvalidArgumentError(
            "give a non-empty list of replica URLs, e.g. [server.url for server in replicas]."
        )
    checked = [check_replica_url(url) for url in urls]
    if len(set(checked)) != len(checked):
        raise InvalidArgumentError(
            f"replica URLs repeat: {checked}; list each replica once "
            "(to weight one, run more replicas)."
        )
    return checked


@dataclass
class Replica:
    """One upstream server and what the router knows about it."""

    url: str
    state: str = UP  # optimistic until the first health check, as nginx is
    outstanding: int = 0  # requests sent and not finished (streams until their last byte)
    served: int = 0  # requests answered without a failure
    failures: int = 0  # failed requests and failed health checks, all time
    consecutive_failures: int = 0
    cooldown_until: float = 0.0  # time.monotonic() clock
    trial_in_flight: bool = False  # half-open: the one trial request is running

    def available(self) -> bool:
        """Return True when a new request may go here."""
        return self.state == UP or (self.state == HALF_OPEN and not self.trial_in_flight)

    def stats(self, now: float) -> dict:
        """Return this replica's row of /router/stats."""
        return {
            "url": self.url,
            "state": self.state,
            "outstanding": self.outstanding,
            "served": self.served,
            "failures": self.failures,
            "cooldown_left_s": round(max(0.0, self.cooldown_until - now), 3)
            if self.state == COOLING
            else 0.0,
        }


@dataclass
class Balancer:
    """Least-outstanding-requests choice over replicas, ties broken round-robin."""

    replicas: list[Replica]
    failure_threshold: int = 3
    cooldown_s: float = 10.0
    _next: int = field(default=0, repr=False)  # round-robin start for ties

    @classmethod
    def create(cls, urls, failure_threshold: int = 3, cooldown_s: float = 10.0) -> Balancer:
        """Return a balancer over urls (checked), every replica up."""
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise InvalidArgumentError(
                f"failure_threshold={failure_threshold!r} must be a whole "
                "number >= 1 (failures in a row before a cooldown)."
            )
        if not cooldown_s > 0:
            raise InvalidArgumentError(f"cooldown_s={cooldown_s!r} must be above 0.")
        return cls(
            [Replica(url) for url in check_replica_urls(urls)], failure_threshold, cooldown_s
        )

    def _tick(self, now: float) -> None:
        for rep in self.replicas:  # a finished cooldown lets one trial through
            if rep.state == COOLING and now >= rep.cooldown_until:
                rep.state, rep.trial_in_flight = HALF_OPEN, False

    def pick(
        self, exclude: AbstractSet[str] = frozenset(), now: float | None = None
    ) -> Replica | None:
        """Return the available replica with fewest outstanding requests, and count it busy."""
        self._tick(time.monotonic() if now is None else now)
        n = len(self.replicas)
        order = [self.replicas[(self._next + i) % n] for i in range(n)]
        candidates = [r for r in order if r.available() and r.url not in exclude]
        if not candidates:
            return None
        best = min(candidates, key=lambda r: r.outstanding)  # min() keeps the first of ties
        self._next = (self.replicas.index(best) + 1) % n
        best.outstanding += 1
        if best.state == HALF_OPEN:
            best.trial_in_flight = True
        return best

    def finish(self, rep: Replica, ok: bool | None, now: float | None = None) -> None:
        """Record the end of a request pick() handed out: ok, failed, or None (client left)."""
        rep.outstanding -= 1
        rep.trial_in_flight = False
        if ok is None:
            return
        if ok:
            rep.served += 1
            self._succeeded(rep)
        else:
            self._failed(rep, time.monotonic() if now is None else now)

    def health(self, rep: Replica, ok: bool, now: float | None = None) -> None:
        """Record a /ready check of rep."""
        now = time.monotonic() if now is None else now
        self._tick(now)
        if rep.state == COOLING:
            return  # checks are not sent during a cooldown; a late answer changes nothing
        if ok:
            rep.consecutive_failures = 0
            if rep.state in (DOWN, HALF_OPEN):
                rep.state = UP
            return
        rep.failures += 1
        if rep.state == HALF_OPEN:
            self._cool(rep, now)
        else:
            rep.state = DOWN

    def due_for_check(self, now: float | None = None) -> list[Replica]:
        """Return the replicas to health-check now (all but those cooling down)."""
        self._tick(time.monotonic() if now is None else now)
        return [r for r in self.replicas if r.state != COOLING]

    def _succeeded(self, rep: Replica) -> None:
        rep.consecutive_failures = 0
        if rep.state == HALF_OPEN:  # a down replica comes back only through a health check
            rep.state = UP

    def _failed(self, rep: Replica, now: float) -> None:
        rep.failures += 1
        rep.consecutive_failures += 1
        if rep.state == HALF_OPEN or rep.consecutive_failures >= self.failure_threshold:
            self._cool(rep, now)

    def _cool(self, rep: Replica, now: float) -> None:
        rep.state, rep.cooldown_until = COOLING, now + self.cooldown_s
        rep.consecutive_failures = 0

    def any_available(self, now: float | None = None) -> bool:
        """Return True when some replica could take a request now."""
        self._tick(time.monotonic() if now is None else now)
        return any(r.available() for r in self.replicas)

    def stats(self, now: float | None = None) -> list[dict]:
        """Return one row per replica, in the order they were given."""
        now = time.monotonic() if now is None else now
        self._tick(now)
        return [r.stats(now) for r in self.replicas]
