"""The check suite: cases run against one endpoint in one dialect, and the report they make.

A case is a function of a `Context` that returns an `Outcome`: pass, fail, warn (a
difference a client may notice, not a broken contract) or skip (does not apply), with why
and the exchange that shows it. `check_endpoint` detects the dialect (or takes one), runs
every case of it in order, and returns a `CheckReport`: a table for people, JSON for
machines, an exit status for CI (1 when any case fails).

It does not load-test: its few concurrent requests are bounded in count and time (see
`deploykit bench` for load), and it sends traffic only to the URL it is given.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from ..errors import InvalidArgumentError, MissingCredentialError
from . import ollama, openai, tgi
from ._case import STATUSES, Case, Context, Status, failed, skipped
from ._http import Endpoint, Exchange, redact_url, shorten
from .common import shared_cases

DIALECTS = ("openai", "tgi", "ollama")


@dataclass(frozen=True)
class CheckResult:
    """One case's result in a report."""

    name: str
    group: str
    status: Status
    why: str
    command: str | None = None  # the curl line of the request that shows it
    exchange: Exchange | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as plain JSON-able values."""
        return {
            "name": self.name,
            "group": self.group,
            "status": self.status,
            "why": self.why,
            "command": self.command,
            "exchange": self.exchange.to_dict() if self.exchange else None,
            "data": self.data,
        }


@dataclass(frozen=True)
class CheckReport:
    """Every result of one run against one endpoint, with when and what was checked."""

    url: str
    dialect: str
    model: str | None
    results: tuple[CheckResult, ...]
    started_at: str
    seconds: float
    server: dict[str, Any] = field(default_factory=dict)  # what the server says of itself
    label: str | None = None  # a name for the endpoint in tables (e.g. "vLLM-CPU 0.32")

    @property
    def ok(self) -> bool:
        """Return True when no case failed (warnings and skips do not fail a run)."""
        return not any(r.status == "fail" for r in self.results)

    @property
    def exit_code(self) -> int:
        """Return the CI exit status: 0 when no case failed, else 1."""
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        """Return how many results have each status."""
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    def result(self, name: str) -> CheckResult:
        """Return the result of the case named name."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no case {name!r} in this report; cases: {[r.name for r in self.results]}")

    def failures(self) -> list[CheckResult]:
        """Return the failed results."""
        return [r for r in self.results if r.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON-able values (what --json prints)."""
        return {
            "url": redact_url(self.url),
            "dialect": self.dialect,
            "model": self.model,
            "label": self.label,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 2),
            "server": self.server,
            "checker": {"deploykit": __version__, "python": platform.python_version()},
            "counts": self.counts(),
            "ok": self.ok,
            "results": [r.to_dict() for r in self.results],
        }

    def to_json(self) -> str:
        """Return the report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def table(self, width: int = 100, show: Iterable[Status] = STATUSES) -> str:
        """Return a plain-text table: one line per case, and for each non-pass the request."""
        wanted = set(show)
        counts = self.counts()
        head = (
            f"deploykit check {redact_url(self.url)}  dialect {self.dialect}"
            f"{f'  model {self.model}' if self.model else ''}"
        )
        lines = [head, "-" * min(width, max(len(head), 40))]
        name_w = max((len(r.name) for r in self.results), default=10)
        for r in self.results:
            if r.status not in wanted:
                continue
            prefix = f"{r.status.upper():<5} {r.name:<{name_w}}  "
            lines.append(prefix + shorten(r.why, max(20, width - len(prefix))))
            if r.status in ("fail", "warn") and r.command:
                lines.append(" " * 6 + "request: " + shorten(r.command, width - 15))
                if r.exchange is not None:
                    got = r.exchange.status if r.exchange.status is not None else "no answer"
                    answer = r.exchange.answer.replace("\n", " ")
                    lines.append(" " * 6 + f"answer:  {got} {shorten(answer, width - 25)}")
        lines.append(
            f"{counts['pass']} passed, {counts['fail']} failed, {counts['warn']} warnings, "
            f"{counts['skip']} skipped in {self.seconds:.1f} s"
        )
        return "\n".join(lines)

    def markdown(self) -> str:
        """Return the results as a Markdown table (for a notebook or a page)."""
        rows = ["| check | result | why |", "|---|---|---|"]
        for r in self.results:
            why = r.why.replace("|", "\\|").replace("\n", " ")
            rows.append(f"| `{r.name}` | {r.status} | {why} |")
        return "\n".join(rows)

    def _repr_markdown_(self) -> str:
        counts = self.counts()
        return (
            f"**deploykit check** `{redact_url(self.url)}` ({self.dialect}): {counts['pass']} "
            f"passed, {counts['fail']} failed, {counts['warn']} warnings, {counts['skip']} "
            f"skipped\n\n" + self.markdown()
        )

    def __str__(self) -> str:
        return self.table()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckReport:
        """Rebuild a report from its JSON (exchanges keep their summary fields only)."""
        results = []
        for r in data["results"]:
            ex = r.get("exchange")
            exchange = (
                Exchange(
                    ex["method"],
                    ex["path"],
                    ex.get("body"),
                    ex.get("status"),
                    ex.get("answer", ""),
                    ex.get("elapsed_s", 0.0),
                )
                if ex
                else None
            )
            results.append(
                CheckResult(
                    r["name"],
                    r["group"],
                    r["status"],
                    r["why"],
                    r.get("command"),
                    exchange,
                    r.get("data", {}),
                )
            )
        return cls(
            url=data["url"],
            dialect=data["dialect"],
            model=data.get("model"),
            results=tuple(results),
            started_at=data["started_at"],
            seconds=data.get("seconds", 0.0),
            server=data.get("server", {}),
            label=data.get("label"),
        )


def api_key_from_env(name: str | None) -> str | None:
    """Return the key held by environment variable name (None: no key); unset is an error."""
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise MissingCredentialError(
            f"--api-key-env {name}: that environment variable is unset or empty; export it "
            "first (the key itself is never printed)."
        )
    return value


def detect_dialect(endpoint: Endpoint) -> str:
    """Return the API the endpoint speaks: openai, tgi or ollama (first that answers as such).

    deploykit's server speaks all three; OpenAI's is tried first, as the most common.
    """
    models = endpoint.send("GET", "/v1/models", timeout_s=10)
    if models.status == 200 and isinstance(models.data, dict) and "data" in models.data:
        return "openai"
    info = endpoint.send("GET", "/info", timeout_s=10)
    if info.status == 200 and isinstance(info.data, dict) and "model_id" in info.data:
        return "tgi"
    tags = endpoint.send("GET", "/api/tags", timeout_s=10)
    if tags.status == 200 and isinstance(tags.data, dict) and "models" in tags.data:
        return "ollama"
    if models.status is None:
        return "openai"  # nothing answers: the openai cases report how (health fails first)
    if models.status in (401, 403):
        return "openai"  # the key is refused: the openai cases report it, each with its request
    raise InvalidArgumentError(
        f"could not tell which API {redact_url(endpoint.url)} speaks: GET /v1/models gave "
        f"{models.status}, GET /info {info.status}, GET /api/tags {tags.status}. Name it with "
        "--dialect openai|tgi|ollama."
    )


def cases_of(dialect: str) -> list[Case]:
    """Return every case of a dialect, in the order they run."""
    if dialect not in DIALECTS:
        raise InvalidArgumentError(
            f"dialect {dialect!r} is not one of {', '.join(DIALECTS)}; leave it out to detect it."
        )
    module = {"openai": openai, "tgi": tgi, "ollama": ollama}[dialect]
    return [*module.CASES, *shared_cases(module.DIALECT)]


def check_endpoint(
    url: str,
    *,
    dialect: str | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
    api_key: str | None = None,
    context_length: int | None = None,
    timeout_s: float = 30.0,
    max_tokens: int = 8,
    concurrency: int = 8,
    only: Sequence[str] | None = None,
    label: str | None = None,
) -> CheckReport:
    """Run the conformance and health suite against url; return the report.

    dialect None detects it. model None takes the first the server lists. api_key_env names
    the variable that holds a key (api_key passes one directly); the key is never printed.
    context_length is used when the server does not say its own. only: run these cases only
    (by name or group). Every request has timeout_s; nothing is sent anywhere but url.
    """
    if api_key is None:
        api_key = api_key_from_env(api_key_env)
    started = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    t0 = time.perf_counter()
    endpoint = Endpoint(url, api_key=api_key, api_key_env=api_key_env, timeout_s=timeout_s)
    try:
        dialect = dialect or detect_dialect(endpoint)
        cases = cases_of(dialect)
        if only:
            wanted = set(only)
            unknown = wanted - {c.name for c in cases} - {c.group for c in cases}
            if unknown:
                raise InvalidArgumentError(
                    f"no case or group named {sorted(unknown)} in the {dialect} suite; "
                    f"see `deploykit check --list --dialect {dialect}`."
                )
            cases = [c for c in cases if c.name in wanted or c.group in wanted]
        ctx = Context(
            endpoint,
            dialect,
            model=model,
            context_length=context_length,
            max_tokens=max_tokens,
            concurrency=concurrency,
        )
        if only and ctx.model is None:
            # the cases left out may include the one that finds the model's name: run it unseen
            lister = next((c for c in cases_of(dialect) if c.group == "models"), None)
            if lister is not None and lister not in cases:
                run_case(ctx, lister)
        results = [run_case(ctx, case) for case in cases]
    finally:
        endpoint.close()
    return CheckReport(
        url=url,
        dialect=dialect,
        model=ctx.model,
        results=tuple(results),
        started_at=started,
        seconds=time.perf_counter() - t0,
        server=ctx.notes.get("server", {}),
        label=label,
    )


def run_case(ctx: Context, case: Case) -> CheckResult:
    """Run one case; a checker bug or an unreachable server is a failed result, not a crash."""
    if ctx.notes.get("unreachable") and case.name != "health":
        outcome = skipped("the endpoint did not answer the health check")
    else:
        try:
            outcome = case.run(ctx)
        except Exception as exc:  # the case's own code broke on an answer it did not expect
            outcome = failed(f"the check could not read the answer: {type(exc).__name__}: {exc}")
    command = ctx.endpoint.command(outcome.exchange) if outcome.exchange else None
    return CheckResult(
        case.name,
        case.group,
        outcome.status,
        ctx.endpoint.hide(outcome.why),
        command,
        outcome.exchange,
        outcome.data,
    )
