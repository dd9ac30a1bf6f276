"""The asyncio twin of the resilient client (resilient.py): the same policy, awaited."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, cast

import httpx
import tenacity

from . import _stream
from ._stream import StreamInfo
from .policy import StreamState
from .resilient import Completion, _ClientBase


class AsyncTextStream:
    """The text chunks of one streamed answer, for `async for`; .info says what it cost."""

    def __init__(self, chunks: AsyncGenerator[str, None], info: StreamInfo) -> None:
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

    _text_stream = AsyncTextStream

    def __init__(self, base_url: str | Sequence[str], **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(
            trust_env=False, timeout=self.timeouts.httpx(), limits=httpx.Limits(max_connections=64)
        )

    async def chat(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> Completion:
        """POST /chat/completions with retries; return the answer and what it cost."""
        return await self._complete("/chat/completions", self._chat_body(messages, params), True)

    async def completions(self, prompt: str | Sequence[Any], **params: Any) -> Completion:
        """POST /completions with retries; return the answer and what it cost."""
        return await self._complete("/completions", self._completion_body(prompt, params), False)

    def stream_chat(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> AsyncTextStream:
        """Stream a chat answer's text; retried only before the first text arrives."""
        return self._stream("/chat/completions", self._chat_body(messages, params), True)

    def stream_completions(self, prompt: str | Sequence[Any], **params: Any) -> AsyncTextStream:
        """Stream a completion's text; retried only before the first text arrives."""
        return self._stream("/completions", self._completion_body(prompt, params), False)

    async def _complete(self, path: str, body: dict, chat: bool) -> Completion:
        started = time.perf_counter()
        key, found = self._begin(path, body)
        if found is not None:
            return self._cached(found, chat, started)
        idempotency_key, urls, latencies = uuid.uuid4().hex, self._urls(), []

        async def attempt() -> tuple[dict, str]:
            url, begun = next(urls), time.perf_counter()
            self._count(attempts=1)
            try:
                return await self._post_once(url + path, body, idempotency_key), url
            finally:
                latencies.append((time.perf_counter() - begun) * 1e3)

        with self._giveups_counted(key):
            # cast: tenacity's AsyncRetrying.__call__ leaves its result type unbound
            answer, url = cast(
                "tuple[dict, str]",
                await tenacity.AsyncRetrying(**self._retry_kwargs(f"POST {path}"))(attempt),
            )
        return self._answered(key, answer, chat, latencies, started, url, idempotency_key)

    async def _post_once(self, target: str, body: dict, idempotency_key: str) -> dict:
        try:
            response = await self._http.post(
                target, json=body, headers=self._request_headers(idempotency_key)
            )
        except httpx.TransportError as exc:
            raise self._transport_error(exc, target) from exc
        return self._answer(response, target)

    async def _stream_iter(
        self, path: str, body: dict, chat: bool, info: StreamInfo
    ) -> AsyncGenerator[str, None]:
        key, found = self._begin(path, body)
        if found is not None:
            yield self._cached_text(found, chat, info)
            return
        urls = self._urls()

        async def attempt():
            url = self._stream_attempt(urls, info)
            return await self._open_stream(url, path, body, info.idempotency_key, chat)

        with self._giveups_counted():
            # cast: tenacity's AsyncRetrying.__call__ leaves its result type unbound
            response, lines, state, url = cast(
                "tuple[httpx.Response, AsyncIterator[str], StreamState, str]",
                await tenacity.AsyncRetrying(**self._retry_kwargs(f"stream POST {path}"))(attempt),
            )
        try:
            for text in state.parts[:1]:  # what the attempt read before it handed over
                yield self._delivered(text, info)
            with self._reading(url, path, state):
                async for line in lines:
                    if text := self._feed(line, url, path, state, info):
                        yield text
                    if state.done:
                        break
        finally:
            await response.aclose()
        self._store_stream(key, state, body)

    async def _open_stream(self, url: str, path: str, body: dict, idempotency_key: str, chat: bool):
        """Send one stream request and read it up to its first text (or its end)."""
        target = url + path
        request = self._http.build_request(
            "POST", target, json=body, headers=self._request_headers(idempotency_key)
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, target) from exc
        try:
            if not response.is_success:
                await response.aread()
                raise self._status_error(response, target)
            self._switch_to_idle_timeout(response)
            state, lines = StreamState(chat), response.aiter_lines()
            async for line in lines:  # nothing reached the caller yet: failures are retried
                if _stream.ready(state, line, target, self.retry):
                    return response, lines, state, url
            raise _stream.empty_stream(target)
        except httpx.TransportError as exc:
            await response.aclose()
            raise self._transport_error(exc, target, streaming=True) from exc
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
