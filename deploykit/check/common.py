"""What every dialect's suite shares: its bad inputs run alike, and the health-under-use cases.

A dialect module (`openai`, `tgi`, `ollama`) describes its API once as a `Dialect`: how to
ask for a short generation (streamed or not), how to read its text, what its error bodies
look like, and its list of `BadInput`s. From that, this module builds the cases every
dialect runs: each bad input, N concurrent requests, an abandoned stream, timeouts and
/metrics.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ._case import Case, Context, Outcome, failed, passed, skipped, warned
from ._http import Reply, StreamReply

FILLER = " hello"  # one token in most tokenizers: a prompt of N of them is about N tokens
OVERSIZED_BYTES = 8 * 2**20  # an oversized body: far above any prompt a client means to send
BAD_INPUT_TIMEOUT_S = 10.0  # a bad input is refused at once, or taken as work


@dataclass(frozen=True)
class Generation:
    """One generation request of a dialect: where it goes and what it sends."""

    path: str
    body: dict[str, Any]
    ndjson: bool = False  # the stream is JSON lines (Ollama), not SSE


@dataclass(frozen=True)
class BadInput:
    """A request the server must refuse: a 4xx in the dialect's error shape.

    strict: accepting it is a failure (a wrong type, malformed JSON); otherwise a warning (a
    value the dialect's reference refuses but a lenient server may take, e.g. temperature 5).
    expect: the statuses the reference answers; another 4xx is a warning.
    """

    name: str
    doc: str
    path: str
    body: Any = None  # JSON to send; a callable of the Context for bodies that need it
    raw: str | bytes | None = None  # sent as is instead of body
    method: str = "POST"
    expect: tuple[int, ...] = (400,)
    strict: bool = True
    needs_context_length: bool = False
    shape: bool = (
        True  # judge the error body's shape (not for a route or method the router refuses)
    )


class Dialect:
    """An API's shape, as the shared cases need it; each dialect module subclasses it."""

    name = "openai"
    health_path = "/health"
    error_shape_name = ""
    metrics_path = "/metrics"

    def generation(self, ctx: Context, max_tokens: int, stream: bool, prompt: str) -> Generation:
        """Return a request for max_tokens tokens continuing prompt."""
        raise NotImplementedError

    def text(self, data: Any) -> str:
        """Return the generated text of a non-streamed answer."""
        raise NotImplementedError

    def stream_text(self, reply: StreamReply) -> str:
        """Return the generated text of a stream."""
        raise NotImplementedError

    def error_problem(self, data: Any) -> str | None:
        """Return what is wrong with an error body's shape, or None when it is the dialect's."""
        raise NotImplementedError

    def bad_inputs(self) -> list[BadInput]:
        """Return the requests the server must refuse."""
        raise NotImplementedError

    def ignore_eos(self, body: dict[str, Any]) -> dict[str, Any]:
        """Return body asking the server not to stop at end-of-sequence (where it can)."""
        return {**body, "ignore_eos": True}


def first_line(text: str, limit: int = 160) -> str:
    """Return the first line of text, shortened."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---- bad inputs ----------------------------------------------------------------------------


def bad_input_case(dialect: Dialect, bad: BadInput) -> Case:
    """Return the case that sends one bad input and judges the answer."""

    def run(ctx: Context) -> Outcome:
        if bad.needs_context_length and not ctx.context_length:
            return skipped("the server does not say its context length (give --context-length)")
        body = bad.body(ctx) if callable(bad.body) else bad.body
        # a refusal is immediate; a server still busy after this took the input as work
        limit = min(ctx.endpoint.timeout_s, BAD_INPUT_TIMEOUT_S)
        if bad.raw is not None:
            reply = ctx.send(bad.method, bad.path, content=bad.raw, headers=_JSON, timeout_s=limit)
        else:
            reply = ctx.send(bad.method, bad.path, body, timeout_s=limit)
        return judge_refusal(dialect, bad, reply)

    return Case(f"bad_{bad.name}", "errors", bad.doc, run)


_JSON = {"Content-Type": "application/json"}


def judge_refusal(dialect: Dialect, bad: BadInput, reply: Reply) -> Outcome:
    """Judge the answer to a bad input: refused with a 4xx in the dialect's shape, or not."""
    status, ex = reply.status, reply.exchange
    if status is None:
        if bad.name == "oversized_body":
            return passed(f"refused by closing the connection ({ex.answer})", ex, status=None)
        if "in time" in ex.answer:
            return failed(
                f"no answer in {ex.elapsed_s:.0f} s: the server took the input as work (a "
                "refusal is immediate)",
                ex,
                status=None,
            )
        return failed(f"no answer: {ex.answer}", ex, status=None)
    if status >= 500:
        return failed(
            f"{status}: a server error for a client's mistake (clients retry 5xx, and "
            "would retry this forever); expected " + _statuses(bad.expect),
            ex,
            status=status,
        )
    if status < 400:
        what = "accepted" if status < 300 else f"answered {status} to"
        text = f"{what} it: expected {_statuses(bad.expect)}"
        return (failed if bad.strict else warned)(text, ex, status=status)
    problem = dialect.error_problem(reply.data) if bad.shape else None
    message = _error_message(reply.data) or first_line(reply.text)
    if problem:
        return warned(
            f"{status}, but {problem} (clients read {dialect.error_shape_name})",
            ex,
            status=status,
        )
    if status not in bad.expect:
        return warned(
            f"{status} where {dialect.name}'s reference answers {_statuses(bad.expect)}: {message}",
            ex,
            status=status,
        )
    return passed(f"{status}: {message}", ex, status=status)


def _statuses(codes: tuple[int, ...]) -> str:
    return " or ".join(str(c) for c in codes)


def _error_message(data: Any) -> str:
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return first_line(str(err.get("message", "")))
        if isinstance(err, str):
            return first_line(err)
        if "detail" in data:
            return first_line(json.dumps(data["detail"]))
    return ""


# ---- shared cases --------------------------------------------------------------------------


def short_prompt() -> str:
    return "The capital of France is"


def baseline_s(ctx: Context, dialect: Dialect) -> float | None:
    """Return the median latency of a short request on the idle server (measured once)."""
    if "baseline_s" not in ctx.notes:
        times = []
        for _ in range(3):
            gen = dialect.generation(ctx, ctx.max_tokens, False, short_prompt())
            reply = ctx.send("POST", gen.path, gen.body)
            if reply.status != 200:
                ctx.notes["baseline_s"] = None
                return None
            times.append(reply.exchange.elapsed_s)
        ctx.notes["baseline_s"] = statistics.median(times)
    return ctx.notes["baseline_s"]


def concurrent_case(dialect: Dialect) -> Case:
    def run(ctx: Context) -> Outcome:
        base = baseline_s(ctx, dialect)
        gen = dialect.generation(ctx, ctx.max_tokens, False, short_prompt())
        n = ctx.concurrency
        start = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            replies = list(pool.map(lambda _: ctx.send("POST", gen.path, gen.body), range(n)))
        wall = time.perf_counter() - start
        bad = [r for r in replies if r.status != 200 or not dialect.text(r.data)]
        data = {"requests": n, "answered": n - len(bad), "wall_s": round(wall, 3)}
        if base:
            data["wall_over_one_request"] = round(wall / base, 2)
        if bad:
            first = bad[0]
            return failed(
                f"{len(bad)} of {n} concurrent requests not answered with text; first: "
                f"{first.status} {first_line(first.exchange.answer)}",
                first.exchange,
                **data,
            )
        extra = f" ({wall / base:.1f}x one request's time)" if base else ""
        return passed(f"all {n} answered in {wall:.2f} s{extra}", replies[0].exchange, **data)

    return Case(
        "concurrent",
        "load",
        "N requests sent at once are all answered with text",
        run,
    )


def _running_gauge(ctx: Context, dialect: Dialect) -> Callable[[], float | None] | None:
    """Return a reader of the server's running-requests gauge, or None when it has none."""
    from ..monitor.scrape import parse_metrics

    reply = ctx.send("GET", dialect.metrics_path, timeout_s=10)
    if reply.status != 200:
        return None
    try:
        metrics = parse_metrics(reply.text)
    except Exception:
        return None
    names = [
        n
        for n in metrics.names()
        if n.endswith(("num_requests_running", "requests_processing", "queue_size"))
    ]
    if not names:
        return None
    name = names[0]

    def read() -> float | None:
        r = ctx.send("GET", dialect.metrics_path, timeout_s=10)
        try:
            return parse_metrics(r.text).value(name) if r.status == 200 else None
        except Exception:
            return None

    return read


def abandoned_stream_case(dialect: Dialect) -> Case:
    def run(ctx: Context) -> Outcome:
        base = baseline_s(ctx, dialect)
        if base is None:
            return skipped("a short request failed, so there is no baseline to compare with")
        long_tokens = _long_tokens(ctx)
        gen = dialect.generation(ctx, long_tokens, True, short_prompt())
        body = dialect.ignore_eos(gen.body)
        gauge = _running_gauge(ctx, dialect)
        before = gauge() if gauge is not None else None
        stream = ctx.endpoint.stream(gen.path, body, read_events=3, ndjson=gen.ndjson)
        if stream.status != 200 or not stream.abandoned:
            stream = ctx.endpoint.stream(gen.path, gen.body, read_events=3, ndjson=gen.ndjson)
        if stream.status != 200:
            return failed(f"the stream did not start: {stream.status}", stream.exchange)
        if not stream.abandoned:
            return skipped("the stream ended before 3 events; nothing was left to abandon")
        itl = _gap_s(stream)
        short = dialect.generation(ctx, ctx.max_tokens, False, short_prompt())
        after = ctx.send("POST", short.path, short.body)
        data: dict[str, Any] = {
            "baseline_s": round(base, 4),
            "next_request_s": round(after.exchange.elapsed_s, 4),
            "abandoned_tokens_left": long_tokens - 3,
        }
        if after.status != 200:
            return failed(
                f"the next request got {after.status}: {first_line(after.exchange.answer)}",
                after.exchange,
                **data,
            )
        left_s = itl * (long_tokens - 3) if itl else None
        if left_s:
            data["abandoned_time_left_s"] = round(left_s, 2)
        freed, freed_after, allowed_s, watch_s = None, None, 5.0, 5.0
        if gauge is not None:
            # freed: the gauge back at its level before the stream (a request left running by
            # an earlier case is not this stream's), within half the time the stream had left
            # (5 s at least: some engines update their gauge late)
            level = before or 0
            allowed_s = max(5.0, 0.5 * left_s) if left_s else 5.0
            # watch on until the stream would have ended, to say how long it really ran
            watch_s = min(60.0, max(allowed_s, (left_s or 0) + 2.0))
            t_gauge = time.monotonic()
            while True:
                freed = gauge()
                if freed is not None and freed <= level:
                    freed_after = time.monotonic() - t_gauge
                    data["freed_after_s"] = round(freed_after, 2)
                    break
                if time.monotonic() - t_gauge > watch_s:
                    break
                time.sleep(0.1)
            data.update(
                running_before=before, running_after=freed, freed_within_s=round(allowed_s, 2)
            )
        waited = after.exchange.elapsed_s
        if left_s is not None:  # one slot busy for nobody: the next request waits for it
            data["next_request_within_s"] = round(max(0.5 * left_s, 4 * base + 0.5), 2)
        slow = waited > data.get("next_request_within_s", float("inf"))
        # late: freed after the bound, or read running all along (an unreadable gauge is no proof)
        late = (
            freed_after is not None
            and freed_after > allowed_s
            or freed_after is None
            and bool(freed)
        )
        if late or slow:
            why = f"the next request took {waited:.2f} s (idle: {base:.2f} s)"
            if late and freed_after is not None:
                why += f"; the server's running gauge fell only {freed_after:.1f} s later"
            elif late:
                why += f"; the server still runs {freed:g} request(s) {watch_s:.0f} s later"
            why += ": the abandoned stream keeps generating for nobody"
            return failed(why, stream.exchange, **data)
        how = (
            f"its running gauge was back to {before or 0:g} after {freed_after:.1f} s"
            if freed_after is not None
            else "no running gauge to read"
        )
        return passed(
            f"next request answered in {waited:.2f} s (idle: {base:.2f} s); {how}",
            after.exchange,
            **data,
        )

    return Case(
        "abandoned_stream",
        "load",
        "a stream closed by its client frees the server: the next request is answered promptly",
        run,
    )


def _long_tokens(ctx: Context) -> int:
    """Return a length whose generation takes long enough to notice (fits the context)."""
    limit = (ctx.context_length or 2048) - 64
    return max(16, min(1024, limit))


def _gap_s(stream: StreamReply) -> float | None:
    """Return the typical gap between a stream's events (None with fewer than 2)."""
    times = stream.event_times_s
    if len(times) < 2:
        return None
    gaps = [b - a for a, b in zip(times, times[1:])]
    return statistics.median(gaps) or None


def timeouts_case(dialect: Dialect) -> Case:
    def run(ctx: Context) -> Outcome:
        gen = dialect.generation(ctx, ctx.max_tokens, True, short_prompt())
        stream = ctx.endpoint.stream(gen.path, gen.body, ndjson=gen.ndjson)
        if stream.status != 200 or stream.error:
            return failed(
                f"stream {stream.status}: {stream.error or first_line(stream.exchange.answer)}",
                stream.exchange,
            )
        first, total = stream.first_byte_s or 0.0, stream.exchange.elapsed_s
        data: dict[str, Any] = {"first_byte_s": round(first, 4), "total_s": round(total, 4)}
        if first > ctx.first_byte_timeout_s:
            return failed(
                f"first byte after {first:.2f} s, over the {ctx.first_byte_timeout_s:g} s limit",
                stream.exchange,
                **data,
            )
        # an idle keep-alive connection: the next request on the pool must work
        time.sleep(1.0)
        again = ctx.send("GET", dialect.health_path)
        data["after_idle_status"] = again.status
        if again.status is None:
            return failed(
                f"a request after 1 s idle failed: {again.exchange.answer}", again.exchange, **data
            )
        return passed(
            f"first byte {first:.3f} s, whole answer {total:.3f} s (limit "
            f"{ctx.endpoint.timeout_s:g} s); a kept-alive connection works after 1 s idle",
            stream.exchange,
            **data,
        )

    return Case(
        "timeouts",
        "load",
        "a stream's first byte and end arrive within the limits; idle connections stay usable",
        run,
    )


LLM_SERIES = (
    "num_requests_running",
    "num_requests_waiting",
    "requests_processing",
    "requests_deferred",
    "queue_size",
    "generation_tokens",
    "tokens_predicted",
    "time_to_first_token",
    "request_duration",
)


def metrics_case(dialect: Dialect) -> Case:
    def run(ctx: Context) -> Outcome:
        from ..monitor.scrape import parse_metrics

        reply = ctx.send("GET", dialect.metrics_path)
        if reply.status != 200:
            return failed(
                f"GET {dialect.metrics_path} answered {reply.status}: no Prometheus metrics "
                "(llama.cpp needs --metrics; Ollama and `transformers serve` have none)",
                reply.exchange,
            )
        try:
            metrics = parse_metrics(reply.text)
        except Exception as exc:
            return failed(f"not Prometheus text: {exc}", reply.exchange)
        names = metrics.names()
        found = sorted({s for s in LLM_SERIES for n in names if s in n})
        prefixes = sorted({n.split(":")[0] + ":" for n in names if ":" in n})
        data = {"series": len(names), "llm_series": found, "prefixes": prefixes}
        if not found:
            return warned(
                f"{len(names)} series, none about requests or tokens", reply.exchange, **data
            )
        return passed(
            f"{len(names)} series ({', '.join(prefixes) or 'no prefix'}), with "
            + ", ".join(found[:4]),
            reply.exchange,
            **data,
        )

    return Case("metrics", "metrics", "Prometheus metrics of requests and tokens", run)


def shared_cases(dialect: Dialect) -> list[Case]:
    """Return the cases every dialect runs after its own: bad inputs, load, metrics."""
    return [
        *(bad_input_case(dialect, b) for b in dialect.bad_inputs()),
        concurrent_case(dialect),
        abandoned_stream_case(dialect),
        timeouts_case(dialect),
        metrics_case(dialect),
    ]


def filler_prompt(tokens: int) -> str:
    """Return a prompt of about `tokens` tokens."""
    return FILLER.strip() + FILLER * (tokens - 1)


def oversized(field_name: str, base: dict[str, Any]) -> dict[str, Any]:
    """Return base plus a field holding OVERSIZED_BYTES of text."""
    return {**base, field_name: "x" * OVERSIZED_BYTES}


@dataclass
class StopProbe:
    """A stop string taken from a greedy answer, and what comes before it."""

    stop: str
    before: str
    whole: str
    extra: dict[str, Any] = field(default_factory=dict)


def pick_stop(text: str) -> StopProbe | None:
    """Return a stop string from the second half of a greedy answer (None if too short)."""
    words = [w for w in text.split() if any(c.isalnum() for c in w)]
    for word in words[len(words) // 2 :] + words[: len(words) // 2]:
        at = text.find(word)
        if at > 0:
            return StopProbe(word, text[:at], text)
    return None
