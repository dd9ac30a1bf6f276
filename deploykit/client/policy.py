"""Timeouts, the retry policy (tenacity's), and what makes one attempt retryable.

Shared by the sync and async resilient clients: everything here is pure decisions, no I/O.
A retry happens only for failures that a second try can fix and that cannot repeat work the
caller already has: connection errors and timeouts, and the statuses 408, 429 and 5xx
(except 501/505), each retry waiting at least as long as the server's Retry-After.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from dataclasses import dataclass, field

import httpx
import tenacity

from ..errors import InvalidArgumentError, RequestRejectedError, RetryBudgetExhaustedError

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _positive(name: str, value: object, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        raise InvalidArgumentError(
            f"{name} must be a finite number {'>=' if allow_zero else '>'} "
            f"0 seconds, got {value!r}."
        )


@dataclass(frozen=True)
class Timeouts:
    """How long to wait for a connection, a response, and each event of a stream."""

    connect_s: float = 5.0  # TCP (and TLS) connect, and waiting for a pooled connection
    read_s: float = 60.0  # longest silence before the response: a non-stream's whole answer,
    # a stream's headers
    stream_idle_s: float = 30.0  # longest silence between a stream's headers and events

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_s", "stream_idle_s"):
            _positive(name, getattr(self, name))

    def httpx(self) -> httpx.Timeout:
        """Return the httpx timeout of a request (streams switch read to stream_idle_s later)."""
        return httpx.Timeout(
            connect=self.connect_s, read=self.read_s, write=self.read_s, pool=self.connect_s
        )


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry, how long to wait between attempts, and when to give up."""

    max_attempts: int = 4  # first try included
    backoff_initial_s: float = 0.25  # wait before the 1st retry; doubles each retry
    backoff_max_s: float = 8.0
    jitter: bool = True  # add up to backoff_initial_s at random, so clients do not retry in step
    budget_s: float = 30.0  # no retry starts later than this after the first attempt
    retry_statuses: frozenset[int] = field(default=RETRY_STATUSES)
    retry_after_max_s: float = 30.0  # a longer Retry-After gives up at once (never retries early)

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise InvalidArgumentError(
                f"max_attempts must be an int >= 1 (1: no retries), got {self.max_attempts!r}."
            )
        for name in ("backoff_initial_s", "backoff_max_s", "retry_after_max_s"):
            _positive(name, getattr(self, name), allow_zero=True)
        _positive("budget_s", self.budget_s)
        statuses = frozenset(self.retry_statuses)
        bad = sorted(s for s in statuses if not (isinstance(s, int) and 400 <= s <= 599))
        if bad:
            raise InvalidArgumentError(
                f"retry_statuses must be HTTP error statuses (400-599), "
                f"got {bad}; the default is {sorted(RETRY_STATUSES)}."
            )
        object.__setattr__(self, "retry_statuses", statuses)


class AttemptFailed(Exception):
    """One attempt failed in a way another attempt may fix (the retry predicate's signal)."""

    def __init__(
        self, reason: str, kind: str, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason, self.kind, self.status, self.retry_after_s = (
            reason,
            kind,
            status,
            retry_after_s,
        )


def parse_retry_after(value: str | None) -> float | None:
    """Return a Retry-After header's wait in seconds (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None  # unparsable: fall back to our own backoff
    return max(0.0, seconds) if math.isfinite(seconds) else None


def transport_failure(
    exc: httpx.TransportError, url: str, timeouts: Timeouts, streaming: bool = False
) -> AttemptFailed | None:
    """Classify an httpx transport error; None when retrying cannot help (e.g. a bad URL)."""
    where = f"{url}: {type(exc).__name__}"
    if isinstance(exc, httpx.ConnectTimeout):
        return AttemptFailed(
            f"no connection within connect_s={timeouts.connect_s:g} s ({where})", "connect_timeout"
        )
    if isinstance(exc, httpx.PoolTimeout):
        return AttemptFailed(
            f"no free connection within connect_s={timeouts.connect_s:g} s ({where})",
            "pool_timeout",
        )
    if isinstance(exc, httpx.ReadTimeout):
        limit = (
            f"stream_idle_s={timeouts.stream_idle_s:g}"
            if streaming
            else f"read_s={timeouts.read_s:g}"
        )
        kind = "stream_idle_timeout" if streaming else "read_timeout"
        return AttemptFailed(f"no answer within {limit} s ({where})", kind)
    if isinstance(exc, httpx.ConnectError):
        return AttemptFailed(f"could not connect ({where}: {exc})", "connect_error")
    if isinstance(exc, (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)):
        return AttemptFailed(f"the connection broke ({where}: {exc})", "connection_lost")
    return None


def status_failure(
    status: int, headers: httpx.Headers, body: str, url: str, policy: RetryPolicy
) -> AttemptFailed | RequestRejectedError:
    """Return a retryable AttemptFailed for a retry status, else the RequestRejectedError to raise."""
    message = _error_message(body)
    if status in policy.retry_statuses:
        retry_after_s = parse_retry_after(headers.get("retry-after"))
        note = "" if retry_after_s is None else f", Retry-After {retry_after_s:g} s"
        return AttemptFailed(
            f"HTTP {status} from {url}{note}: {message}", f"status_{status}", status, retry_after_s
        )
    return RequestRejectedError(
        f"HTTP {status} from {url}: {message}. A {status} is not retried: the same request "
        f"would fail again. Fix the request (model name, parameters, API key) and resend it.",
        status=status,
        body=body,
    )


def _error_message(body: str) -> str:
    try:
        error = json.loads(body).get("error")
        text = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        text = None
    return str(text or body.strip() or "(empty body)")[:300]


class _WaitHonouringRetryAfter(tenacity.wait.wait_base):
    """Exponential backoff with jitter, but never less than the server's Retry-After."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        # initial * 2**(retry - 1), capped, plus up to initial at random
        self.backoff = tenacity.wait_exponential(
            multiplier=policy.backoff_initial_s, max=policy.backoff_max_s
        ) + tenacity.wait_random(0, policy.backoff_initial_s if policy.jitter else 0.0)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = self.backoff(retry_state)
        retry_after_s = _retry_after(retry_state)
        if retry_after_s is None:
            return backoff
        # the server said when: our backoff may only add to it (jitter spreads the herd)
        return retry_after_s + min(
            backoff, self.policy.backoff_initial_s if self.policy.jitter else 0.0
        )


class _StopOnLongRetryAfter(tenacity.stop.stop_base):
    """Stop when the server asks for a longer wait than retry_after_max_s."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        retry_after_s = _retry_after(retry_state)
        return retry_after_s is not None and retry_after_s > self.limit_s


def _retry_after(retry_state: tenacity.RetryCallState) -> float | None:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    return getattr(exc, "retry_after_s", None)


def _give_up(policy: RetryPolicy, what: str):
    """Return tenacity's retry_error_callback: raise RetryBudgetExhaustedError with the story."""

    def give_up(retry_state: tenacity.RetryCallState):
        assert retry_state.outcome is not None  # tenacity calls it after an attempt
        last = retry_state.outcome.exception()
        attempts, elapsed_s = retry_state.attempt_number, retry_state.seconds_since_start
        retry_after_s = getattr(last, "retry_after_s", None)
        if attempts >= policy.max_attempts:
            why = f"all max_attempts={policy.max_attempts} attempts failed"
        elif retry_after_s is not None and retry_after_s > policy.retry_after_max_s:
            why = (
                f"the server asked to wait {retry_after_s:g} s (Retry-After), more than "
                f"retry_after_max_s={policy.retry_after_max_s:g}"
            )
        else:
            why = (
                f"the next retry, in {retry_state.upcoming_sleep:.2f} s, would start past "
                f"budget_s={policy.budget_s:g}"
            )
        raise RetryBudgetExhaustedError(
            f"Gave up on {what} after {attempts} attempt(s) in {elapsed_s:.2f} s: {why}. Last "
            f"error: {last}. The server is down, overloaded or too slow: check its health and "
            f"logs, add replicas (pass several base URLs), or raise RetryPolicy(max_attempts, "
            f"budget_s) or Timeouts.",
            attempts=attempts,
            last_error=str(last),
            status=getattr(last, "status", None),
        ) from last

    return give_up


def retrying_kwargs(policy: RetryPolicy, what: str, before_sleep=None) -> dict:
    """Return the keyword arguments of tenacity.Retrying/AsyncRetrying for policy."""
    return {
        "retry": tenacity.retry_if_exception_type(AttemptFailed),
        "wait": _WaitHonouringRetryAfter(policy),
        "stop": (
            tenacity.stop_after_attempt(policy.max_attempts)
            | tenacity.stop_before_delay(policy.budget_s)
            | _StopOnLongRetryAfter(policy.retry_after_max_s)
        ),
        "retry_error_callback": _give_up(policy, what),
        "before_sleep": before_sleep,
    }


class StreamState:
    """What one OpenAI-style SSE stream delivered so far: text chunks, finish_reason, [DONE]."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.parts: list[str] = []  # content chunks, in order
        self.finish_reason: str | None = None
        self.done = False  # saw data: [DONE]

    @property
    def complete(self) -> bool:
        """Return True once the server said why the text ended (a finish_reason)."""
        return self.finish_reason is not None

    def feed(self, line: str, url: str, policy: RetryPolicy) -> str:
        """Return the text one SSE line adds ("" for none); raise on an error event."""
        if not line.startswith("data:"):
            return ""  # blank separators, comments, event:/id: lines
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            self.done = True
            return ""
        try:
            event = json.loads(data)
        except ValueError:
            raise AttemptFailed(
                f"malformed stream event from {url}: {data[:80]!r}", "bad_event"
            ) from None
        if isinstance(event, dict) and event.get("error"):
            # deploykit and vLLM report a failure midway as an error event, then [DONE]
            error = event["error"]
            code = error.get("code") if isinstance(error, dict) else None
            failure = status_failure(
                code if isinstance(code, int) else 500,
                httpx.Headers(),
                json.dumps(event),
                url,
                policy,
            )
            raise failure
        text = ""
        for choice in event.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            text += piece or ""
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if text:
            self.parts.append(text)
        return text

    def response(self, model: str) -> dict:
        """Return the whole streamed answer in the shape of a non-streamed response."""
        text = "".join(self.parts)
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": text}}
            if self.chat
            else {"index": 0, "text": text}
        )
        return {
            "object": "chat.completion" if self.chat else "text_completion",
            "model": model,
            "choices": [{**choice, "finish_reason": self.finish_reason}],
        }
