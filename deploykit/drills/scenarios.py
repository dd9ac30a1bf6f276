"""Fault scenarios for the resilient-client recipe: the seed's client against ours, measured.

A scenario sends a bounded load (a fixed number of requests, a few at a time) while a fault
is on, and records for each request whether a whole answer came back, how long it took and
how many retries it spent. A request is lost *silently* when the caller got something that
looks like an answer but is not (the seed's client returns a 503's error JSON as its
result), and *loudly* when the caller got an exception it can act on.

The seed's client is reproduced as the seed wrote it (tenacity around httpx, three attempts,
exponential wait from 1 s, 30 s timeout, no status check), synchronously and with
trust_env=False so that a CI machine's proxy variables cannot reroute loopback traffic.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import httpx
import tenacity

from ..client.cache import cacheable_response
from ..client.resilient import ResilientClient
from ..errors import DeployKitError, InvalidArgumentError
from ..launch import Server
from .faults import Fault, FaultProxy


@dataclass(frozen=True)
class Outcome:
    """How one request ended."""

    ok: bool  # a whole answer (choices with a finish_reason)
    silent: bool  # lost, but the caller was not told (an error passed off as an answer)
    latency_ms: float
    retries: int
    error: str = ""


@dataclass(frozen=True)
class ScenarioResult:
    """One client's requests in one scenario."""

    scenario: str
    client: str
    outcomes: tuple[Outcome, ...] = field(repr=False)
    wall_s: float
    proxy_stats: dict = field(default_factory=dict, repr=False)  # what the fault proxy saw

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def lost(self) -> int:
        return sum(not o.ok for o in self.outcomes)

    @property
    def silent(self) -> int:
        return sum(o.silent for o in self.outcomes)

    @property
    def retries(self) -> int:
        return sum(o.retries for o in self.outcomes)

    @property
    def mean_latency_ms(self) -> float:
        return sum(o.latency_ms for o in self.outcomes) / max(1, len(self.outcomes))

    def row(self) -> dict:
        """Return a summary row for a table: lost (of them silently), retries, latency, why."""
        errors = collections.Counter(o.error.split(":")[0] for o in self.outcomes if o.error)
        return {
            "scenario": self.scenario,
            "client": self.client,
            "lost": f"{self.lost}/{self.requests}",
            "silently": self.silent,
            "retries": self.retries,
            "mean ms": round(self.mean_latency_ms, 1),
            "why lost": ", ".join(f"{kind} x{n}" for kind, n in errors.items()),
        }


def seed_call(url: str, body: dict) -> dict:
    """Call url the way the seed's call_inference_api does; return the JSON it returns."""

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential(min=1, max=10)
    )
    def call_inference_api() -> dict:
        with httpx.Client(trust_env=False) as client:
            response = client.post(url, json=body, timeout=30.0)
            return response.json()  # no status check: a 503's error JSON comes back as a result

    answer = call_inference_api()
    answer["_attempts"] = call_inference_api.statistics.get("attempt_number", 1)
    return answer


def seed_stream(url: str, body: dict, on_text: Callable[[str], None]) -> None:
    """Stream url with the seed's retry wrapped around it, showing text as it arrives.

    A retry restarts the whole call, so text already shown is shown again: this is the
    seed's pattern applied to a stream, kept to demonstrate why ours does not do it.
    """

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential(min=1, max=10)
    )
    def call_inference_api() -> None:
        with httpx.Client(trust_env=False) as client:
            with client.stream(
                "POST", url, json={**body, "stream": True}, timeout=30.0
            ) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        choice = httpx.Response(200, content=line[6:]).json()["choices"][0]
                        text = (choice.get("delta") or {}).get("content") or choice.get("text")
                        if text:
                            on_text(text)

    call_inference_api()


Requester = Callable[[dict], Outcome]


def seed_requester(url: str) -> Requester:
    """Return a requester that sends each body with seed_call to url (a full endpoint URL)."""

    def request(body: dict) -> Outcome:
        started = time.perf_counter()
        try:
            answer = seed_call(url, body)
        except Exception as exc:  # tenacity.RetryError after three failed attempts
            cause = exc.last_attempt.exception() if isinstance(exc, tenacity.RetryError) else exc
            return Outcome(False, False, _ms(started), 2, f"{type(cause).__name__}: {cause}")
        attempts = answer.pop("_attempts")
        ok = cacheable_response(answer)
        error = "" if ok else f"error JSON as an answer: {str(answer)[:80]}"
        return Outcome(ok, not ok, _ms(started), attempts - 1, error)

    return request


def resilient_requester(
    client: ResilientClient, route: str = "completions", stream: bool = False, **overrides: object
) -> Requester:
    """Return a requester that sends each body (updated with overrides) through client."""
    if route not in ("completions", "chat"):
        raise InvalidArgumentError(f"route must be 'completions' or 'chat', got {route!r}.")

    def request(body: dict) -> Outcome:
        started, chunks = time.perf_counter(), None
        body = {**body, **overrides}
        fields = {k: v for k, v in body.items() if k not in ("prompt", "messages")}
        first = body["messages"] if route == "chat" else body["prompt"]
        try:
            if stream:
                chunks = (client.stream_chat if route == "chat" else client.stream_completions)(
                    first, **fields
                )
                "".join(chunks)
                retries = chunks.info.retries
            else:
                retries = (client.chat if route == "chat" else client.completions)(
                    first, **fields
                ).retries
        except DeployKitError as exc:
            attempts = getattr(exc, "attempts", 0) or (chunks.info.attempts if chunks else 0)
            return Outcome(
                False, False, _ms(started), max(0, attempts - 1), f"{type(exc).__name__}: {exc}"
            )
        return Outcome(True, False, _ms(started), retries)

    return request


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1e3


def run_scenario(
    scenario: str,
    requesters: Mapping[str, Requester],
    body: dict,
    *,
    requests: int = 12,
    concurrency: int = 4,
    proxy: FaultProxy | None = None,
    fault: Fault | None = None,
    together: bool = False,
    kill_during: Server | None = None,
) -> list[ScenarioResult]:
    """Send `requests` copies of body through each requester, `concurrency` at a time.

    Clients run one after the other, each with fault freshly injected into proxy, or all at
    once with together=True so that one fault hits them all at the same moment. kill_during
    is killed (SIGKILL) once a quarter of all the requests have finished, so that even the
    fastest client still has requests to send.
    """
    if not requesters or requests < 1 or concurrency < 1:
        raise InvalidArgumentError(
            "Give at least one requester, requests >= 1 and concurrency >= 1."
        )
    if fault is not None and proxy is None:
        raise InvalidArgumentError("A fault needs the proxy to inject it: pass proxy=...")
    total = requests * (len(requesters) if together else 1)
    done, lock = [0, False], threading.Lock()  # requests finished, replica killed

    def one(requester: Requester) -> Outcome:
        outcome = requester(dict(body))
        with lock:
            done[0] += 1
            kill = kill_during is not None and not done[1] and done[0] >= max(1, total // 4)
            done[1] = done[1] or kill
        if kill:
            assert kill_during is not None  # kill is only set with one
            kill_replica(kill_during)
        return outcome

    def run(names: list[str]) -> list[ScenarioResult]:
        if proxy is not None:
            proxy.clear(stats=True)
            if fault is not None:
                proxy.inject(**asdict(fault))
        started = time.perf_counter()
        futures: dict[str, list[Future[Outcome]]] = {name: [] for name in names}
        with ThreadPoolExecutor(concurrency * len(names)) as pool:
            for _ in range(requests):  # interleaved, so each client keeps about `concurrency`
                for name in names:
                    futures[name].append(pool.submit(one, requesters[name]))
            outcomes = {name: tuple(f.result() for f in fs) for name, fs in futures.items()}
        wall_s = time.perf_counter() - started
        seen = proxy.stats() if proxy is not None and proxy.server.is_running() else {}
        if proxy is not None and proxy.server.is_running():
            proxy.clear()
        return [ScenarioResult(scenario, name, outcomes[name], wall_s, seen) for name in names]

    if together:
        return run(list(requesters))
    results = []
    for name in requesters:
        done[0] = 0
        results += run([name])
    return results


def retry_gaps_s(proxy_stats: dict) -> list[float]:
    """Return the gaps between a request and its retry, as the fault proxy saw them.

    Attempts of one logical request share an Idempotency-Key; the seed's client sends none.
    """
    by_key = collections.defaultdict(list)
    for record in proxy_stats["requests"]:
        if record.get("idempotency_key"):
            by_key[record["idempotency_key"]].append(record["t_s"])
    return [b - a for times in by_key.values() for a, b in zip(sorted(times), sorted(times)[1:])]


@dataclass(frozen=True)
class StreamOutcome:
    """What a caller of a stream ended up with."""

    text: str
    error: str  # "" when the stream ended whole


def consume_stream(chunks: Iterable[str]) -> StreamOutcome:
    """Read a stream to its end; keep the text shown and the error, if any."""
    parts = []
    try:
        for chunk in chunks:
            parts.append(chunk)
    except DeployKitError as exc:
        return StreamOutcome("".join(parts), f"{type(exc).__name__}: {exc}")
    return StreamOutcome("".join(parts), "")


def kill_replica(server: Server) -> int:
    """Kill a server's whole process group with SIGKILL (no drain), then reap it."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return server.stop(timeout_s=5.0)


def results_table(results: Sequence[ScenarioResult]):
    """Return the results as a pandas DataFrame, one row per scenario and client (the index)."""
    import pandas as pd

    return pd.DataFrame([r.row() for r in results]).set_index(["scenario", "client"])


def plot_fault_results(results: Sequence[ScenarioResult], baseline: str = "no fault"):
    """Plot requests lost (silently or loudly), retries spent and latency added per scenario.

    Latency added is each client's mean latency minus its own in the `baseline` scenario.
    Every bar carries its value, so a 0 reads as measured; a client with no bar did not run
    that scenario. One legend, under the panels, names the clients.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    baseline_ms = {r.client: r.mean_latency_ms for r in results if r.scenario == baseline}
    results = [r for r in results if r.scenario != baseline]
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    clients = list(dict.fromkeys(r.client for r in results))
    cell = {(r.scenario, r.client): r for r in results}
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), dpi=80)
    width = 0.8 / len(clients)
    for i, client in enumerate(clients):
        ran = [(k, cell[s, client]) for k, s in enumerate(scenarios) if (s, client) in cell]
        xs = [k + i * width for k, _ in ran]
        rows = [r for _, r in ran]
        loud = [r.lost - r.silent for r in rows]
        silent = [r.silent for r in rows]
        axes[0].bar(xs, loud, width, color=f"C{i}")
        lost = axes[0].bar(xs, silent, width, bottom=loud, color=f"C{i}", hatch="//", alpha=0.5)
        axes[0].bar_label(lost, labels=[f"{r.lost}" for r in rows], fontsize=7)
        spent = axes[1].bar(xs, [r.retries for r in rows], width, color=f"C{i}")
        axes[1].bar_label(spent, fontsize=7)
        base = baseline_ms.get(client, 0.0)
        added_s = [max(0.0, r.mean_latency_ms - base) / 1000 for r in rows]
        added = axes[2].bar(xs, added_s, width, color=f"C{i}")
        axes[2].bar_label(added, fmt="%.2f", fontsize=7)
    panels = (
        ("Requests lost (hatched: caller not told)", "requests"),
        ("Retries spent", "retries"),
        ("Mean latency added vs no fault", "s"),
    )
    for ax, (title, unit) in zip(axes, panels):
        ax.set_xticks(
            [k + width * (len(clients) - 1) / 2 for k in range(len(scenarios))],
            scenarios,
            fontsize=8,
        )
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        if unit != "s":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, max(1.0 if unit != "s" else 0.1, ax.get_ylim()[1]) * 1.12)  # for labels
    handles = [Patch(color=f"C{i}", label=client) for i, client in enumerate(clients)]
    handles.append(Patch(facecolor="white", edgecolor="grey", hatch="//", label="lost silently"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
