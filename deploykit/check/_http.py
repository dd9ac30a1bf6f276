"""The checker's HTTP: every request recorded as the exchange that shows a result, key hidden.

An `Exchange` is one request and what came back (status, an excerpt, timings); its
`command()` is the curl line that repeats it, with the API key written as `$VARIABLE`, never
its value. Streams are read chunk by chunk with arrival times, so a stream that arrives in
one piece (a buffering proxy) shows as such. Every request has a time limit.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .._urls import check_http_url

EXCERPT_CHARS = 300  # of an answer, kept in a result
BODY_CHARS = 240  # of a request body, in the curl line


def redact_url(url: str) -> str:
    """Return url without a user:password part (a URL may carry credentials)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def shorten(text: str, limit: int) -> str:
    """Return text cut to limit characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters in all)"


@dataclass(frozen=True)
class Exchange:
    """One request and its answer: what a result shows as its evidence."""

    method: str
    path: str
    body: str | None  # the request body as sent (shortened), None without one
    status: int | None  # None: no answer (refused, reset, timed out)
    answer: str = ""  # an excerpt of the response body, or what went wrong
    elapsed_s: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)  # response headers, lower-case
    content_type: str | None = None  # the request's, when not JSON

    def command(self, base_url: str, api_key_env: str | None = None) -> str:
        """Return the curl line that sends this request again (the key as $VARIABLE)."""
        parts = ["curl", "-sS"]
        if self.method != "GET" or self.body is not None:
            parts += ["-X", self.method]
        parts.append(redact_url(base_url).rstrip("/") + self.path)
        line = shlex.join(parts)
        if api_key_env:
            line += f' -H "Authorization: Bearer ${api_key_env}"'
        if self.body is not None:
            line += " -H " + shlex.quote(f"Content-Type: {self.content_type or 'application/json'}")
            line += " -d " + shlex.quote(shorten(self.body, BODY_CHARS))
        return line

    def to_dict(self) -> dict[str, Any]:
        """Return the exchange as plain JSON-able values."""
        return {
            "method": self.method,
            "path": self.path,
            "body": self.body,
            "status": self.status,
            "answer": self.answer,
            "elapsed_s": round(self.elapsed_s, 4),
        }


@dataclass(frozen=True)
class Reply:
    """A whole (non-streamed) answer: the exchange, and the body parsed when it is JSON."""

    exchange: Exchange
    data: Any = None  # the JSON body; None when not JSON or no answer
    text: str = ""

    @property
    def status(self) -> int | None:
        return self.exchange.status


@dataclass(frozen=True)
class StreamReply:
    """A streamed answer: its events (SSE data or NDJSON lines) and when each arrived."""

    exchange: Exchange
    events: tuple[Any, ...]  # parsed JSON events; "[DONE]" kept as the string
    event_times_s: tuple[float, ...]  # arrival of each event, from the request's start
    chunk_times_s: tuple[float, ...]  # arrival of each network read with data in it
    first_byte_s: float | None
    abandoned: bool = False  # closed by us after `read_events` events
    raw: str = ""  # the first characters of the stream, as received
    content_type: str = ""
    error: str | None = None  # the connection failed, broke or outlived the time limit

    @property
    def status(self) -> int | None:
        return self.exchange.status

    @property
    def json_events(self) -> list[dict]:
        """Return the events that are JSON objects (not the [DONE] marker)."""
        return [e for e in self.events if isinstance(e, dict)]


class _ResendUnanswered(httpx.HTTPTransport):
    """Send a request once more when the server closed its connection without answering.

    A kept-alive connection that the server closes (its idle timeout) as a request leaves
    gets no byte back: nothing was answered, so the request goes again on another connection,
    as browsers and HTTP libraries do. Plain requests and streams alike; a second close is
    reported.
    """

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except httpx.RemoteProtocolError as exc:
            if "without sending a response" not in str(exc):
                raise
            return super().handle_request(request)


class Endpoint:
    """An endpoint under check: its base URL, its key (kept, never shown), a time limit."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        check_http_url(url, "url", "http://127.0.0.1:8000")
        self.url = url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self._api_key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # trust_env=False: a proxy from HTTP_PROXY must not sit between the check and the URL
        self.client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout_s,
            trust_env=False,
            transport=_ResendUnanswered(),
        )

    def __repr__(self) -> str:  # no key, ever
        return f"<Endpoint {redact_url(self.url)}>"

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def hide(self, text: str) -> str:
        """Return text with the API key replaced by $VARIABLE (a server may echo it)."""
        if self._api_key:
            text = text.replace(self._api_key, f"${self.api_key_env or 'API_KEY'}")
        return text

    def command(self, exchange: Exchange) -> str:
        """Return the curl line of an exchange with this endpoint's URL."""
        return exchange.command(self.url, self.api_key_env if self._api_key else None)

    def _body(
        self, json_body: Any, content: bytes | str | None
    ) -> tuple[bytes | None, str | None, dict[str, str]]:
        if content is not None:
            raw = content.encode() if isinstance(content, str) else content
            return raw, _printable(raw), {}
        if json_body is None:
            return None, None, {}
        text = json.dumps(json_body)
        return text.encode(), text, {"Content-Type": "application/json"}

    def send(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send one request and read the whole answer; failures are replies with status None."""
        raw, shown, base_headers = self._body(json_body, content)
        all_headers = {**base_headers, **(headers or {})}
        start = time.perf_counter()
        try:
            response = self.client.request(
                method,
                path,
                content=raw,
                headers=all_headers,
                timeout=timeout_s or self.timeout_s,
            )
        except httpx.HTTPError as exc:
            return Reply(self._exchange(method, path, shown, None, _why(exc), start, {}, headers))
        text = response.text
        try:
            data = response.json()
        except ValueError:
            data = None
        exchange = self._exchange(
            method, path, shown, response.status_code, text, start, response.headers, headers
        )
        return Reply(exchange, data, self.hide(text))

    def stream(
        self,
        path: str,
        json_body: Any,
        *,
        read_events: int | None = None,
        timeout_s: float | None = None,
        ndjson: bool = False,
    ) -> StreamReply:
        """POST json_body and read the stream's events as they arrive.

        read_events: close the connection after that many events (an abandoned stream).
        ndjson: events are JSON lines (Ollama), not SSE `data:` lines.
        """
        raw, shown, headers = self._body(json_body, None)
        start = time.perf_counter()
        deadline = start + (timeout_s or self.timeout_s)
        events: list[Any] = []
        event_times: list[float] = []
        chunk_times: list[float] = []
        received, first_byte, abandoned = "", None, False
        status, resp_headers, error = None, httpx.Headers(), None
        try:
            with self.client.stream(
                "POST", path, content=raw, headers=headers, timeout=timeout_s or self.timeout_s
            ) as response:
                status, resp_headers = response.status_code, response.headers
                buffer = ""
                for chunk in response.iter_text():
                    now = time.perf_counter() - start
                    if not chunk:
                        continue
                    first_byte = now if first_byte is None else first_byte
                    chunk_times.append(now)
                    if len(received) < 4000:
                        received += chunk
                    buffer += chunk
                    lines = buffer.split("\n")
                    buffer = lines.pop()
                    for line in lines:
                        event = _event(line, ndjson)
                        if event is not None:
                            events.append(event)
                            event_times.append(now)
                    if read_events is not None and len(events) >= read_events:
                        abandoned = True
                        break  # leaving the block closes the connection mid-stream
                    if time.perf_counter() > deadline:
                        error = f"stream still open after {timeout_s or self.timeout_s:g} s"
                        break
                if buffer.strip() and not abandoned:
                    event = _event(buffer, ndjson)
                    if event is not None:
                        events.append(event)
                        event_times.append(time.perf_counter() - start)
        except httpx.HTTPError as exc:
            error = _why(exc)
        exchange = self._exchange(
            "POST", path, shown, status, error or received, start, resp_headers
        )
        return StreamReply(
            exchange,
            tuple(events),
            tuple(event_times),
            tuple(chunk_times),
            first_byte,
            abandoned,
            self.hide(received[: EXCERPT_CHARS * 4]),
            resp_headers.get("content-type", ""),
            error,
        )

    def _exchange(
        self,
        method: str,
        path: str,
        shown: str | None,
        status: int | None,
        answer: str,
        start: float,
        headers: Mapping[str, str],
        request_headers: Mapping[str, str] | None = None,
    ) -> Exchange:
        kept = {k.lower(): v for k, v in headers.items() if k.lower() in _KEPT_HEADERS}
        content_type = (request_headers or {}).get("Content-Type")
        return Exchange(
            method,
            path,
            shown,
            status,
            self.hide(shorten(answer.strip(), EXCERPT_CHARS)),
            time.perf_counter() - start,
            kept,
            content_type,
        )


_KEPT_HEADERS = (
    "content-type",
    "retry-after",
    "server",
    "via",
    "x-accel-buffering",
    "content-encoding",
    "content-length",
    "transfer-encoding",
)


def _printable(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _event(line: str, ndjson: bool) -> Any:
    """Return the event of one stream line (parsed JSON, "[DONE]"), or None for other lines."""
    line = line.strip()
    if not line:
        return None
    if not ndjson:
        if not line.startswith("data:"):
            return None  # comments, `event:` and `id:` lines
        line = line[5:].strip()
        if line == "[DONE]":
            return line
    try:
        return json.loads(line)
    except ValueError:
        return {"_unparsable": line[:200]}


def _why(exc: httpx.HTTPError) -> str:
    """Return what went wrong with a request, in a few words."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed ({kind}: {exc})"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({kind})"
    return f"{kind}: {exc}"
