"""What the sync and async resilient clients do alike with a stream, apart from reading it.

Each client sends the request and reads the lines its own way (an iterator or an async
iterator, close() or aclose()); what a line means, when a stream may reach the caller, and
what a break after text raises and counts are the same for both and live here once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import httpx

from ..errors import InvalidArgumentError, RequestRejectedError, StreamInterruptedError
from .policy import AttemptFailed, RetryPolicy, StreamState, Timeouts, transport_failure

if TYPE_CHECKING:
    from .cache import ResponseCache


@dataclass
class StreamInfo:
    """What one stream cost so far: attempts, the replica, the text chunks delivered."""

    idempotency_key: str = ""
    attempts: int = 0  # 0: answered from the cache
    base_url: str = ""  # the replica streaming it
    chunks: int = 0
    cached: bool = False

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


def ready(state: StreamState, line: str, target: str, policy: RetryPolicy) -> bool:
    """Feed one line read before any text reached the caller; return True once it may.

    A stream may reach the caller at its first text, or once it is whole without any; an end
    with neither raises AttemptFailed, which is retried like any other failed attempt.
    """
    if state.feed(line, target, policy) or state.complete:
        return True
    if state.done:
        raise empty_stream(target)
    return False


def empty_stream(target: str) -> AttemptFailed:
    """Return the failure of a stream that ended before any text, without a finish_reason."""
    return AttemptFailed(
        f"the stream from {target} ended before any text, without a finish_reason", "empty_stream"
    )


def interrupted(url: str, state: StreamState, reason: str) -> StreamInterruptedError:
    """Return the error for a stream that broke after its text began to reach the caller."""
    text = "".join(state.parts)
    return StreamInterruptedError(
        f"The stream from {url} broke after {len(state.parts)} chunk(s) of text "
        f"({len(text)} characters) had arrived: {reason}. It was not retried: a restart "
        f"would repeat the text you already have. Show the answer as failed, or resend the "
        f"whole request and replace the partial text.",
        chunks=len(state.parts),
        text=text,
    )


class StreamSteps:
    """The steps of a stream both clients share (_ClientBase gives them _count, cache, retry
    and timeouts): a client only sends, reads lines, yields what these return and closes."""

    cache: ResponseCache | None
    retry: RetryPolicy
    timeouts: Timeouts

    if TYPE_CHECKING:  # _ClientBase's

        def _count(self, **deltas: int) -> None: ...

    def _stream_body(self, body: dict) -> dict:
        if body.get("n", 1) != 1:
            raise InvalidArgumentError(
                "A stream yields one text: use n=1, or chat()/completions() for several choices."
            )
        return {**body, "stream": True}

    def _stream_attempt(self, urls: Iterator[str], info: StreamInfo) -> str:
        """Count one attempt at a stream; return the base URL it goes to."""
        self._count(attempts=1)
        info.attempts += 1
        info.base_url = next(urls)
        return info.base_url

    def _switch_to_idle_timeout(self, response: httpx.Response) -> None:
        # httpcore reads the read timeout when the body starts, from this very dict: from now
        # on each wait for the next event is bounded by stream_idle_s instead of read_s
        response.request.extensions["timeout"]["read"] = self.timeouts.stream_idle_s

    def _delivered(self, text: str, info: StreamInfo) -> str:
        info.chunks += 1
        return text

    def _feed(self, line: str, url: str, path: str, state: StreamState, info: StreamInfo) -> str:
        """Return the text one line of a started stream adds; an error event breaks it."""
        try:
            text = state.feed(line, url + path, self.retry)
        except (AttemptFailed, RequestRejectedError) as exc:
            self._failure_after_text(url, state, f"the server sent an error: {exc}")
        return self._delivered(text, info) if text else text

    @contextlib.contextmanager
    def _reading(self, url: str, path: str, state: StreamState) -> Iterator[None]:
        """Read the rest of a stream: raise if it breaks or ends before the answer is whole."""
        try:
            yield
        except httpx.TransportError as exc:
            # once the answer is whole, only [DONE] or the usage chunk is missing: not a break
            if not state.complete:
                failure = transport_failure(exc, url + path, self.timeouts, streaming=True)
                self._failure_after_text(url, state, failure.reason if failure else str(exc))
        else:
            if not state.complete:
                self._failure_after_text(url, state, "it ended without a finish_reason")

    def _failure_after_text(self, url: str, state: StreamState, reason: str) -> NoReturn:
        self._count(streams_interrupted=1)
        if self.cache is not None:
            self.cache.metrics.skipped("partial_stream")
        raise interrupted(url, state, reason)

    def _store_stream(self, key: str | None, state: StreamState, body: dict) -> None:
        if key is not None:
            assert self.cache is not None  # keys come from the cache
            self.cache.store(key, state.response(body["model"]))
