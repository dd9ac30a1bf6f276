"""A case of the suite: what it runs against (`Context`) and what it finds (`Outcome`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ._http import Endpoint, Exchange, Reply

Status = Literal["pass", "fail", "warn", "skip"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "warn", "skip")


@dataclass(frozen=True)
class Outcome:
    """What one case found: its status, why, and the exchange that shows it."""

    status: Status
    why: str
    exchange: Exchange | None = None
    data: dict[str, Any] = field(default_factory=dict)  # figures: statuses, times, counts


def passed(why: str, exchange: Exchange | None = None, **data: Any) -> Outcome:
    """Return a passing outcome."""
    return Outcome("pass", why, exchange, data)


def failed(why: str, exchange: Exchange | None = None, **data: Any) -> Outcome:
    """Return a failing outcome."""
    return Outcome("fail", why, exchange, data)


def warned(why: str, exchange: Exchange | None = None, **data: Any) -> Outcome:
    """Return a warning: a difference a client may notice."""
    return Outcome("warn", why, exchange, data)


def skipped(why: str, exchange: Exchange | None = None, **data: Any) -> Outcome:
    """Return a skipped outcome: the case does not apply here."""
    return Outcome("skip", why, exchange, data)


@dataclass(frozen=True)
class Case:
    """One check: a name, the group it belongs to, what it verifies, and the function."""

    name: str
    group: str
    doc: str
    run: Callable[[Context], Outcome]


@dataclass
class Context:
    """What the cases of one run share: the endpoint, the dialect, and what earlier cases found."""

    endpoint: Endpoint
    dialect: str
    model: str | None = None
    context_length: int | None = None  # tokens, when the server says (or --context-length)
    max_tokens: int = 8  # tokens each generation case asks for
    concurrency: int = 8  # requests sent at once by the concurrency case
    first_byte_timeout_s: float = 10.0
    notes: dict[str, Any] = field(default_factory=dict)  # e.g. a baseline latency

    def send(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        """Send one request to the endpoint (see Endpoint.send)."""
        return self.endpoint.send(method, path, body, **kwargs)
