"""Resilient clients for OpenAI-compatible endpoints, sync and async, over httpx.

deploykit serve, vLLM, llama.cpp's server or a hosted API, by base URL. Separate connect,
read and stream-idle timeouts; retries on tenacity with exponential backoff, jitter and
Retry-After (policy.py says which failures); one Idempotency-Key per logical request, the
same on each of its retries; failover: with several base URLs, each retry goes to the next.

AsyncResilientClient (async_resilient.py) is the asyncio twin. A stream is retried only
until its first text arrives. After that, any failure (a cut
connection, an idle timeout, an error event, an end without finish_reason) raises
StreamInterruptedError with what arrived: restarting would make the caller show the same
words twice, and ending quietly would pass a cut answer off as whole.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import tenacity

from .. import _env
from ..errors import InvalidArgumentError, RequestRejectedError, RetryBudgetExhaustedError
from . import _stream
from ._stream import StreamInfo
from .cache import ModelIdentity, ResponseCache
from .hub import _is_loopback
from .openai_compat import _check_url
from .policy import (
    AttemptFailed,
    RetryPolicy,
    StreamState,
    Timeouts,
    retrying_kwargs,
    status_failure,
    transport_failure,
)


@dataclass(frozen=True)
class Completion:
    """A non-streamed answer and what it cost: attempts, their latencies, the replica."""

    body: dict  # the server's JSON, as it sent it (or as the cache stored it)
    text: str  # the first choice's text
    attempts: int  # 0: answered from the cache
    attempt_latencies_ms: tuple[float, ...]
    latency_ms: float  # the whole call, backoff waits included
    base_url: str  # the replica that answered ("" for a cache hit)
    idempotency_key: str
    cached: bool = False

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)


@dataclass
class ClientStats:
    """Counters of one client, over all its calls."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    giveups: int = 0  # RetryBudgetExhaustedError raised
    rejected: int = 0  # RequestRejectedError raised (4xx, not retried)
    streams_interrupted: int = 0
    cache_hits: int = 0
    failures: collections.Counter = field(default_factory=collections.Counter)  # by kind


class TextStream:
    """The text chunks of one streamed answer; .info says what it cost."""

    def __init__(self, chunks: Generator[str, None, None], info: StreamInfo) -> None:
        self._chunks, self.info = chunks, info

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        """Stop reading: the connection is closed, the rest of the answer is dropped."""
        self._chunks.close()


def _text(body: dict, chat: bool) -> str:
    choice = (body.get("choices") or [{}])[0]
    return ((choice.get("message") or {}).get("content") if chat else choice.get("text")) or ""


class _ClientBase(_stream.StreamSteps):
    """Configuration, validation and bookkeeping shared by the sync and async clients."""

    if TYPE_CHECKING:  # each client's own: TextStream or AsyncTextStream, and its reader
        _text_stream: Callable[[Any, StreamInfo], Any]

        def _stream_iter(self, path: str, body: dict, chat: bool, info: StreamInfo) -> Any: ...

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        cache: ResponseCache | None = None,
        model_identity: ModelIdentity | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise InvalidArgumentError(
                "base_url needs at least one URL, e.g. 'http://127.0.0.1:8000/v1'."
            )
        hosts = [_check_url(url) for url in urls]
        self.base_urls = tuple(url.rstrip("/") for url in urls)
        self.model = model
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        if not isinstance(self.timeouts, Timeouts) or not isinstance(self.retry, RetryPolicy):
            raise InvalidArgumentError("timeouts must be a dk.Timeouts and retry a dk.RetryPolicy.")
        if cache is not None and not isinstance(model_identity, ModelIdentity):
            raise InvalidArgumentError(
                "A cache needs model_identity, so that new weights never get old answers: pass "
                "model_identity=dk.model_identity('toy-tiny') (a local model), or "
                "dk.ModelIdentity('gpt-4o-mini', '2024-07-18') (a hosted model's version)."
            )
        self.cache, self.model_identity = cache, model_identity
        key = _env.credential(api_key_env)
        if key is None and not all(_is_loopback(host) for host in hosts):
            key = _env.require_credential(api_key_env, f"ResilientClient({urls[0]!r})")
        self._headers = {**(headers or {}), **({"Authorization": f"Bearer {key}"} if key else {})}
        self.stats = ClientStats()
        self._lock = threading.Lock()
        self._next = itertools.count()  # round robin over base URLs, one step per request

    # ---- requests -------------------------------------------------------------------------

    def _body(self, fields: dict, extra: dict) -> dict:
        if "stream" in extra:
            raise InvalidArgumentError(
                "Do not pass stream=...: call stream_chat() or stream_completions() for a stream."
            )
        body = {**fields, **extra}
        body["model"] = body.get("model") or self.model
        if not body["model"]:
            raise InvalidArgumentError(
                "Say which model: ResilientClient(..., model='toy-tiny') "
                "or model='...' in the call."
            )
        return body

    def _chat_body(self, messages: Sequence[Mapping[str, Any]], extra: dict) -> dict:
        if (
            isinstance(messages, (str, bytes))
            or not messages
            or not all(isinstance(m, Mapping) and "role" in m for m in messages)
        ):
            raise InvalidArgumentError(
                "messages must be a non-empty list of {'role': ..., 'content': ...} dicts."
            )
        return self._body({"messages": [dict(m) for m in messages]}, extra)

    def _completion_body(self, prompt: str | Sequence[Any], extra: dict) -> dict:
        if not isinstance(prompt, (str, list)) or not prompt:
            raise InvalidArgumentError("prompt must be a non-empty string (or a list of them).")
        return self._body({"prompt": prompt}, extra)

    def _request_headers(self, idempotency_key: str) -> dict[str, str]:
        return {**self._headers, "Idempotency-Key": idempotency_key}

    def _urls(self) -> Iterator[str]:
        """Return the base URLs one request tries in turn (its start rotates per request)."""
        start = next(self._next)
        return (self.base_urls[(start + i) % len(self.base_urls)] for i in itertools.count())

    # ---- what one attempt's outcome means -------------------------------------------------

    def _transport_error(
        self, exc: httpx.TransportError, target: str, streaming: bool = False
    ) -> Exception:
        """Return what a failed send or read means: retried, or raised as it is."""
        return transport_failure(exc, target, self.timeouts, streaming=streaming) or exc

    def _status_error(self, response: httpx.Response, target: str) -> Exception:
        return status_failure(
            response.status_code, response.headers, response.text, target, self.retry
        )

    def _answer(self, response: httpx.Response, target: str) -> dict:
        """Return the JSON of a non-streamed response; raise what a failed one means."""
        if not response.is_success:
            raise self._status_error(response, target)
        try:
            return response.json()
        except ValueError:
            raise AttemptFailed(
                f"HTTP 200 from {target} with a body that is not JSON", "bad_body"
            ) from None

    # ---- bookkeeping ----------------------------------------------------------------------

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        assert retry_state.outcome is not None  # tenacity calls it after a failed attempt
        failure = retry_state.outcome.exception()
        with self._lock:
            self.stats.retries += 1
            self.stats.failures[getattr(failure, "kind", type(failure).__name__)] += 1

    def _retry_kwargs(self, what: str) -> dict:
        return retrying_kwargs(self.retry, what, before_sleep=self._before_sleep)

    @contextlib.contextmanager
    def _giveups_counted(self, key: str | None = None) -> Iterator[None]:
        """Count a request that fails for good; a cache (key) learns it stored nothing."""
        try:
            yield
        except (RetryBudgetExhaustedError, RequestRejectedError) as exc:
            if isinstance(exc, RetryBudgetExhaustedError):
                failure = exc.__cause__
                with self._lock:
                    self.stats.giveups += 1
                    self.stats.failures[getattr(failure, "kind", "unknown")] += 1
            else:
                self._count(rejected=1)
            if key is not None:
                assert self.cache is not None  # keys come from the cache
                self.cache.metrics.skipped("error")
            raise

    def _begin(self, path: str, body: dict) -> tuple[str | None, dict | None]:
        """Count one request; return its cache key and cached answer (None: no cache, a miss)."""
        self._count(requests=1)
        if self.cache is None:
            return None, None
        assert self.model_identity is not None  # __init__ requires it with a cache
        key, found = self.cache.lookup(path, body, self.model_identity)
        if found is not None:
            self._count(cache_hits=1)
        return key, found

    def _cached(self, found: dict, chat: bool, started: float) -> Completion:
        return Completion(
            found,
            _text(found, chat),
            0,
            (),
            (time.perf_counter() - started) * 1e3,
            "",
            "",
            cached=True,
        )

    def _answered(
        self,
        key: str | None,
        answer: dict,
        chat: bool,
        latencies: list[float],
        started: float,
        url: str,
        idempotency_key: str,
    ) -> Completion:
        if key is not None:
            assert self.cache is not None  # keys come from the cache
            self.cache.store(key, answer)
        return Completion(
            answer,
            _text(answer, chat),
            len(latencies),
            tuple(latencies),
            (time.perf_counter() - started) * 1e3,
            url,
            idempotency_key,
        )

    # ---- streams --------------------------------------------------------------------------

    def _stream(self, path: str, body: dict, chat: bool):
        body = self._stream_body(body)  # checked now, before the generator is first iterated
        info = StreamInfo(idempotency_key=uuid.uuid4().hex)
        return self._text_stream(self._stream_iter(path, body, chat, info), info)

    def _cached_text(self, found: dict, chat: bool, info: StreamInfo) -> str:
        info.cached, info.chunks = True, 1
        return _text(found, chat)


class ResilientClient(_ClientBase):
    """A synchronous client with timeouts, retries, failover and an optional response cache.

    base_url is one OpenAI-style base URL ("http://127.0.0.1:8000/v1") or several replicas:
    each request starts on the next one in turn and retries on the others. The key comes from
    $api_key_env (needed unless every URL is on this machine). A cache needs model_identity.
    """

    _text_stream = TextStream

    def __init__(self, base_url: str | Sequence[str], **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        # trust_env=False: loopback replicas must not go through a proxy from HTTP_PROXY
        self._http = httpx.Client(
            trust_env=False, timeout=self.timeouts.httpx(), limits=httpx.Limits(max_connections=64)
        )

    def chat(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> Completion:
        """POST /chat/completions with retries; return the answer and what it cost."""
        return self._complete("/chat/completions", self._chat_body(messages, params), True)

    def completions(self, prompt: str | Sequence[Any], **params: Any) -> Completion:
        """POST /completions with retries; return the answer and what it cost."""
        return self._complete("/completions", self._completion_body(prompt, params), False)

    def stream_chat(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> TextStream:
        """Stream a chat answer's text; retried only before the first text arrives."""
        return self._stream("/chat/completions", self._chat_body(messages, params), True)

    def stream_completions(self, prompt: str | Sequence[Any], **params: Any) -> TextStream:
        """Stream a completion's text; retried only before the first text arrives."""
        return self._stream("/completions", self._completion_body(prompt, params), False)

    def _complete(self, path: str, body: dict, chat: bool) -> Completion:
        started = time.perf_counter()
        key, found = self._begin(path, body)
        if found is not None:
            return self._cached(found, chat, started)
        idempotency_key, urls, latencies = uuid.uuid4().hex, self._urls(), []

        def attempt() -> tuple[dict, str]:
            url, begun = next(urls), time.perf_counter()
            self._count(attempts=1)
            try:
                return self._post_once(url + path, body, idempotency_key), url
            finally:
                latencies.append((time.perf_counter() - begun) * 1e3)

        with self._giveups_counted(key):
            answer, url = tenacity.Retrying(**self._retry_kwargs(f"POST {path}"))(attempt)
        return self._answered(key, answer, chat, latencies, started, url, idempotency_key)

    def _post_once(self, target: str, body: dict, idempotency_key: str) -> dict:
        try:
            response = self._http.post(
                target, json=body, headers=self._request_headers(idempotency_key)
            )
        except httpx.TransportError as exc:
            raise self._transport_error(exc, target) from exc
        return self._answer(response, target)

    def _stream_iter(
        self, path: str, body: dict, chat: bool, info: StreamInfo
    ) -> Generator[str, None, None]:
        key, found = self._begin(path, body)
        if found is not None:
            yield self._cached_text(found, chat, info)
            return
        urls = self._urls()

        def attempt():
            url = self._stream_attempt(urls, info)
            return self._open_stream(url, path, body, info.idempotency_key, chat)

        with self._giveups_counted():
            response, lines, state, url = tenacity.Retrying(
                **self._retry_kwargs(f"stream POST {path}")
            )(attempt)
        try:
            for text in state.parts[:1]:  # what the attempt read before it handed over
                yield self._delivered(text, info)
            with self._reading(url, path, state):
                for line in lines:
                    if text := self._feed(line, url, path, state, info):
                        yield text
                    if state.done:
                        break
        finally:
            response.close()
        self._store_stream(key, state, body)

    def _open_stream(self, url: str, path: str, body: dict, idempotency_key: str, chat: bool):
        """Send one stream request and read it up to its first text (or its end)."""
        target = url + path
        request = self._http.build_request(
            "POST", target, json=body, headers=self._request_headers(idempotency_key)
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, target) from exc
        try:
            if not response.is_success:
                response.read()
                raise self._status_error(response, target)
            self._switch_to_idle_timeout(response)
            state, lines = StreamState(chat), response.iter_lines()
            for line in lines:  # nothing reached the caller yet: any failure here is retried
                if _stream.ready(state, line, target, self.retry):
                    return response, lines, state, url
            raise _stream.empty_stream(target)
        except httpx.TransportError as exc:
            response.close()
            raise self._transport_error(exc, target, streaming=True) from exc
        except BaseException:
            response.close()
            raise

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ResilientClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
