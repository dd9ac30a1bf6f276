"""The asyncio twin of the resilient client (resilient.py): the same policy, awaited."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import tenacity

from ..errors import RequestRejectedError, RetryBudgetExhaustedError
from .policy import AttemptFailed, StreamState, status_failure, transport_failure
from .resilient import Completion, StreamInfo, _ClientBase, _text


class AsyncTextStream:
    """The text chunks of one streamed answer, for `async for`; .info says what it cost."""

    def __init__(self, chunks: AsyncIterator[str], info: StreamInfo) -> None:
        self._chunks, self.info = chunks, info

    def __aiter__(self) -> AsyncTextStream:
        return self

    async def __anext__(self) -> str:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop reading: the connection is closed, the rest of the answer is dropped."""
        await self._chunks.aclose()


class AsyncResilientClient(_ClientBase):
    """The asyncio twin of ResilientClient: the same policy, awaited."""

    def __init__(self, base_url: str | Sequence[str], **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(trust_env=False, timeout=self.timeouts.httpx(),
                                       limits=httpx.Limits(max_connections=64))

    async def chat(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> Completion:
        """POST /chat/completions with retries; return the answer and what it cost."""
        return await self._complete("/chat/completions", self._chat_body(messages, params), True)

    async def completions(self, prompt: str | Sequence[Any], **params: Any) -> Completion:
        """POST /completions with retries; return the answer and what it cost."""
        return await self._complete("/completions", self._completion_body(prompt, params), False)

    def stream_chat(self, messages: Sequence[Mapping[str, Any]],
                    **params: Any) -> AsyncTextStream:
        """Stream a chat answer's text; retried only before the first text arrives."""
        return self._stream("/chat/completions", self._chat_body(messages, params), True)

    def stream_completions(self, prompt: str | Sequence[Any], **params: Any) -> AsyncTextStream:
        """Stream a completion's text; retried only before the first text arrives."""
        return self._stream("/completions", self._completion_body(prompt, params), False)

    def _stream(self, path: str, body: dict, chat: bool) -> AsyncTextStream:
        body = self._stream_body(body)  # checked now, before the generator is first iterated
        info = StreamInfo(idempotency_key=uuid.uuid4().hex)
        return AsyncTextStream(self._stream_iter(path, body, chat, info), info)

    async def _complete(self, path: str, body: dict, chat: bool) -> Completion:
        started = time.perf_counter()
        self._count(requests=1)
        key, found = self._lookup(path, body)
        if found is not None:
            return self._cached(found, chat, started)
        idempotency_key, urls, latencies = uuid.uuid4().hex, self._urls(), []

        async def attempt() -> tuple[dict, str]:
            url, begun = next(urls), time.perf_counter()
            self._count(attempts=1)
            try:
                return await self._post_once(url, path, body, idempotency_key), url
            finally:
                latencies.append((time.perf_counter() - begun) * 1e3)

        try:
            answer, url = await tenacity.AsyncRetrying(
                **self._retry_kwargs(f"POST {path}"))(attempt)
        except (RetryBudgetExhaustedError, RequestRejectedError) as exc:
            self._giving_up(exc)
            if key is not None:
                self.cache.metrics.skipped("error")
            raise
        if key is not None:
            self.cache.store(key, answer)
        return Completion(answer, _text(answer, chat), len(latencies), tuple(latencies),
                          (time.perf_counter() - started) * 1e3, url, idempotency_key)

    async def _post_once(self, url: str, path: str, body: dict, idempotency_key: str) -> dict:
        try:
            response = await self._http.post(url + path, json=body,
                                             headers=self._request_headers(idempotency_key))
        except httpx.TransportError as exc:
            raise transport_failure(exc, url + path, self.timeouts) or exc from exc
        if not response.is_success:
            raise status_failure(response.status_code, response.headers, response.text,
                                 url + path, self.retry)
        try:
            return response.json()
        except ValueError:
            raise AttemptFailed(f"HTTP 200 from {url + path} with a body that is not JSON",
                                "bad_body") from None

    async def _stream_iter(self, path: str, body: dict, chat: bool,
                           info: StreamInfo) -> AsyncIterator[str]:
        self._count(requests=1)
        key, found = self._lookup(path, body)
        if found is not None:
            info.cached, info.chunks = True, 1
            yield _text(found, chat)
            return
        urls = self._urls()

        async def attempt():
            self._count(attempts=1)
            info.attempts += 1
            info.base_url = next(urls)
            return await self._open_stream(info.base_url, path, body, info.idempotency_key,
                                           chat)

        try:
            response, lines, state, url = await tenacity.AsyncRetrying(
                **self._retry_kwargs(f"stream POST {path}"))(attempt)
        except (RetryBudgetExhaustedError, RequestRejectedError) as exc:
            self._giving_up(exc)
            raise
        try:
            if state.parts:
                info.chunks += 1
                yield state.parts[0]
            while not state.done:
                try:
                    line = await lines.__anext__()
                except StopAsyncIteration:
                    break
                except httpx.TransportError as exc:
                    if state.complete:
                        break  # the answer was whole: only [DONE] or the usage chunk is missing
                    failure = transport_failure(exc, url + path, self.timeouts, streaming=True)
                    self._failure_after_text(url, state, failure.reason if failure else str(exc))
                try:
                    text = state.feed(line, url + path, self.retry)
                except (AttemptFailed, RequestRejectedError) as exc:
                    self._failure_after_text(url, state, f"the server sent an error: {exc}")
                if text:
                    info.chunks += 1
                    yield text
            if not state.complete:
                self._failure_after_text(url, state, "it ended without a finish_reason")
        finally:
            await response.aclose()
        if key is not None:
            self.cache.store(key, state.response(body["model"]))

    async def _open_stream(self, url: str, path: str, body: dict, idempotency_key: str,
                           chat: bool):
        """Send one stream request and read it up to its first text (or its end)."""
        request = self._http.build_request("POST", url + path, json=body,
                                           headers=self._request_headers(idempotency_key))
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise transport_failure(exc, url + path, self.timeouts) or exc from exc
        try:
            if not response.is_success:
                await response.aread()
                raise status_failure(response.status_code, response.headers, response.text,
                                     url + path, self.retry)
            self._switch_to_idle_timeout(response)
            state, lines = StreamState(chat), response.aiter_lines()
            async for line in lines:  # nothing reached the caller yet: failures are retried
                if state.feed(line, url + path, self.retry) or state.complete:
                    return response, lines, state, url
                if state.done:
                    break
            raise AttemptFailed(f"the stream from {url + path} ended before any text, "
                                f"without a finish_reason", "empty_stream")
        except httpx.TransportError as exc:
            await response.aclose()
            raise transport_failure(exc, url + path, self.timeouts, streaming=True) or exc \
                from exc
        except BaseException:
            await response.aclose()
            raise

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncResilientClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
