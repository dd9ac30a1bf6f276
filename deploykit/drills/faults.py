"""A fault-injection HTTP proxy, run as its own process in front of a real server.

`deploykit faults --upstream URL --port P` forwards every request to URL and streams
responses back as they arrive. On command (POST /faults) it answers a status with an optional
Retry-After instead of forwarding, waits before forwarding, cuts an SSE stream after K
events by dropping the connection, or ignores a client that leaves a stream: it reads the
upstream's stream to its end anyway (what nginx does with `proxy_ignore_client_abort on`),
so the server goes on generating for nobody. GET /faults/stats says what it saw;
/faults/health is its health check. Control paths under /faults are never forwarded, faulted or counted.

It does not refuse connections: stop the process for that (FaultProxy.stop()).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from .. import argtypes
from .._urls import check_http_url
from ..errors import InvalidArgumentError
from ..launch import Server, deploykit_command, launch_server

HEALTH_PATH = "/faults/health"
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"host",
        b"content-length",
    }
)
_MAX_RECORDS = 10_000  # per-request records kept for stats(); older ones are dropped


@dataclass(frozen=True)
class Fault:
    """One injected fault: what to do to the next `count` matching requests (None: all)."""

    status: int | None = None  # answer this status instead of forwarding
    retry_after_s: float | None = None  # with status: send a Retry-After header
    delay_s: float = 0.0  # wait this long before forwarding (or before answering status)
    cut_stream_after_chunks: int | None = None  # streams only: forward K SSE events, then drop
    ignore_client_abort: bool = False  # streams only: read on to the end if the client goes
    count: int | None = None  # requests it applies to; None: until cleared
    path_prefix: str = ""  # only requests whose path starts with this

    def __post_init__(self) -> None:
        if self.status is not None and not (
            isinstance(self.status, int) and 100 <= self.status <= 599
        ):
            raise InvalidArgumentError(
                f"status must be an HTTP status 100-599, e.g. 503, got {self.status!r}."
            )
        if self.retry_after_s is not None and (self.status is None or not self.retry_after_s >= 0):
            raise InvalidArgumentError(
                "retry_after_s goes with status (e.g. status=503, "
                f"retry_after_s=1) and must be >= 0, got "
                f"{self.retry_after_s!r}."
            )
        if not (isinstance(self.delay_s, (int, float)) and 0 <= self.delay_s <= 600):
            raise InvalidArgumentError(f"delay_s must be 0-600 seconds, got {self.delay_s!r}.")
        cut = self.cut_stream_after_chunks
        if cut is not None and (isinstance(cut, bool) or not isinstance(cut, int) or cut < 0):
            raise InvalidArgumentError(f"cut_stream_after_chunks must be an int >= 0, got {cut!r}.")
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1
        ):
            raise InvalidArgumentError(
                f"count must be an int >= 1 (or None: until clear()), got {self.count!r}."
            )
        if not isinstance(self.ignore_client_abort, bool):
            raise InvalidArgumentError(
                f"ignore_client_abort must be True or False, got {self.ignore_client_abort!r}."
            )
        if (
            self.status is None
            and not self.delay_s
            and cut is None
            and not self.ignore_client_abort
        ):
            raise InvalidArgumentError(
                "Give a fault: status=503 (with retry_after_s=1), "
                "delay_s=2.0, cut_stream_after_chunks=3, or ignore_client_abort=True."
            )

    def matches(self, path: str, stream: bool) -> bool:
        """Return True when this fault applies to a request for path (a stream or not)."""
        if not path.startswith(self.path_prefix):
            return False
        # a stream-only fault waits for a streamed request, so a health check does not use it up
        return stream or self.status is not None or bool(self.delay_s)


class _StreamCut(Exception):
    """Raised after the last forwarded event so the server drops the connection mid-body."""


class _Proxy:
    """The ASGI app: forward to upstream, applying the first matching fault."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[list[Any]] = []  # [Fault, remaining count or None]
        self.records: collections.deque[dict] = collections.deque(maxlen=_MAX_RECORDS)
        self.seen = 0
        self.injected: collections.Counter[str] = collections.Counter()
        self.client: httpx.AsyncClient | None = None

    def _take(self, path: str, stream: bool) -> Fault | None:
        for entry in self.faults:
            fault, left = entry
            if fault.matches(path, stream) and (left is None or left > 0):
                if left is not None:
                    entry[1] = left - 1
                self.faults = [e for e in self.faults if e[1] is None or e[1] > 0]
                return fault
        return None

    def stats(self) -> dict:
        return {
            "requests_seen": self.seen,
            "faults_injected": sum(self.injected.values()),
            "faults_by_kind": dict(self.injected),
            "upstream": self.upstream,
            "active_faults": [{**asdict(f), "left": left} for f, left in self.faults],
            "requests": list(self.records),
        }

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        body = b""
        while True:  # read the whole request body first: it is small JSON
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"].startswith("/faults"):
            return await self._control(scope, body, send)
        return await self._forward(scope, body, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # no timeouts of our own: a slow upstream must look slow to the client
                self.client = httpx.AsyncClient(
                    trust_env=False,
                    timeout=httpx.Timeout(None),
                    limits=httpx.Limits(max_connections=None),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                assert self.client is not None  # made at startup
                await self.client.aclose()
                return await send({"type": "lifespan.shutdown.complete"})

    async def _control(self, scope, body: bytes, send) -> None:
        method, path = scope["method"], scope["path"].rstrip("/")
        if path == HEALTH_PATH and method == "GET":
            return await _json(send, 200, {"status": "ok", "upstream": self.upstream})
        if path == "/faults/stats" and method == "GET":
            return await _json(send, 200, self.stats())
        if path == "/faults" and method == "DELETE":
            self.faults = []
            if b"stats=1" in scope.get("query_string", b""):
                self.records.clear()
                self.seen, self.injected = 0, collections.Counter()
            return await _json(send, 200, {"cleared": True})
        if path == "/faults" and method == "POST":
            try:
                fault = Fault(**json.loads(body or b"{}"))
            except (TypeError, ValueError) as exc:  # InvalidArgumentError is a ValueError
                return await _json(send, 400, {"error": {"message": str(exc)}})
            self.faults.append([fault, fault.count])
            return await _json(send, 200, {"fault": asdict(fault)})
        return await _json(
            send,
            404,
            {
                "error": {
                    "message": f"no control route {method} {path}; "
                    "use POST/DELETE /faults, GET /faults/stats"
                }
            },
        )

    async def _forward(self, scope, body: bytes, receive, send) -> None:
        path = scope["path"]
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        try:
            stream = bool(json.loads(body).get("stream")) if body else False
        except (ValueError, AttributeError):
            stream = False
        fault = self._take(path, stream)
        self.seen += 1
        record = {
            "t_s": time.time(),
            "method": scope["method"],
            "path": path,
            "stream": stream,
            "fault": None,
            "idempotency_key": dict(scope["headers"]).get(b"idempotency-key", b"").decode() or None,
        }
        self.records.append(record)
        # the client may leave while we wait or stream (its timeout): stop work for it then
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        try:
            if fault is not None and fault.delay_s:
                self.injected["delay"] += 1
                record["fault"] = "delay"
                try:
                    await asyncio.wait_for(gone.wait(), fault.delay_s)
                    return  # the client left during the delay
                except TimeoutError:
                    pass
            if fault is not None and fault.status is not None:
                self.injected["status"] += 1
                record["fault"] = f"status {fault.status}"
                extra = (
                    {}
                    if fault.retry_after_s is None
                    else {"retry-after": f"{fault.retry_after_s:g}"}
                )
                return await _json(
                    send,
                    fault.status,
                    {
                        "error": {
                            "message": f"injected by deploykit.faults: HTTP {fault.status}",
                            "type": "injected_fault",
                            "param": None,
                            "code": fault.status,
                        }
                    },
                    extra,
                )
            cut = fault.cut_stream_after_chunks if fault is not None and stream else None
            drain = fault is not None and stream and fault.ignore_client_abort
            await self._relay(scope, path, headers, body, send, gone, cut, record, drain)
        finally:
            watcher.cancel()

    async def _relay(self, scope, path, headers, body, send, gone, cut, record, drain) -> None:
        query = scope.get("query_string", b"").decode()
        url = self.upstream + path + (f"?{query}" if query else "")
        assert self.client is not None  # made at startup, before any request
        request = self.client.build_request(
            scope["method"],
            url,
            content=body,
            headers=[(k.decode(), v.decode()) for k, v in headers],
        )
        try:
            upstream = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            record["upstream_error"] = type(exc).__name__
            return await _json(
                send,
                502,
                {
                    "error": {
                        "message": f"deploykit.faults could not reach the upstream {self.upstream}: "
                        f"{type(exc).__name__}",
                        "type": "bad_gateway",
                        "param": None,
                        "code": 502,
                    }
                },
            )
        try:
            out_headers = [(k, v) for k, v in upstream.headers.raw if k.lower() not in _HOP_BY_HOP]
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status_code,
                    "headers": out_headers,
                }
            )
            record["status"] = upstream.status_code
            is_sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
            if cut is None or not is_sse:
                async for chunk in upstream.aiter_raw():
                    if gone.is_set() and not drain:
                        return
                    if gone.is_set():  # the fault: read on for nobody
                        if "drained_bytes" not in record:
                            self.injected["ignore_client_abort"] += 1
                            record["fault"] = "ignored the client's abort"
                        record["drained_bytes"] = record.get("drained_bytes", 0) + len(chunk)
                        continue
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if gone.is_set():
                    return
            else:
                await self._relay_cut(upstream, send, gone, cut, record)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await upstream.aclose()

    async def _relay_cut(self, upstream, send, gone, cut: int, record: dict) -> None:
        """Forward `cut` whole SSE events one by one, then raise so the connection drops."""
        buffer, sent = b"", 0
        async for chunk in upstream.aiter_raw():
            buffer += chunk
            while b"\n\n" in buffer and sent < cut:
                event, buffer = buffer.split(b"\n\n", 1)
                await send(
                    {"type": "http.response.body", "body": event + b"\n\n", "more_body": True}
                )
                sent += 1
            if sent >= cut or gone.is_set():
                break
        else:  # the stream ended before the cut point: it passes whole (the fault is used up)
            if buffer:
                await send({"type": "http.response.body", "body": buffer, "more_body": True})
            return
        if gone.is_set():
            return
        self.injected["cut"] += 1
        record["fault"] = f"cut after {sent} events"
        raise _StreamCut(f"cut after {sent} SSE events, as injected")


async def _watch_disconnect(receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _json(send, status: int, body: dict, headers: Mapping[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data, "more_body": False})


class _QuietCuts(logging.Filter):
    """Hide uvicorn's traceback for a cut we injected on purpose (it is not a bug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _StreamCut))


class FaultProxy:
    """A running fault-injection proxy: inject faults, read what it saw, stop it."""

    def __init__(self, server: Server, upstream_url: str) -> None:
        self.server = server
        self.upstream_url = upstream_url
        self._http = httpx.Client(trust_env=False, timeout=10.0)

    @property
    def url(self) -> str:
        return self.server.url

    def inject(
        self,
        *,
        status: int | None = None,
        count: int | None = None,
        retry_after_s: float | None = None,
        delay_s: float = 0.0,
        cut_stream_after_chunks: int | None = None,
        ignore_client_abort: bool = False,
        path_prefix: str = "",
    ) -> Fault:
        """Add a fault for the next `count` matching requests (None: until clear()).

        Faults apply in the order added; a request takes the first that matches it. A
        cut_stream_after_chunks fault applies only to requests with "stream": true; a stream
        shorter than that passes whole. ignore_client_abort=True (streams only) reads the
        upstream's stream to its end when the client leaves, as a proxy that ignores client
        aborts does: the server goes on generating for nobody.
        """
        fault = Fault(
            status=status,
            retry_after_s=retry_after_s,
            delay_s=delay_s,
            cut_stream_after_chunks=cut_stream_after_chunks,
            ignore_client_abort=ignore_client_abort,
            count=count,
            path_prefix=path_prefix,
        )  # validated here, before anything is sent
        self._http.post(self.url + "/faults", json=asdict(fault)).raise_for_status()
        return fault

    def clear(self, *, stats: bool = False) -> None:
        """Remove every fault not used up yet; stats=True also zeroes the counters and records."""
        self._http.delete(
            self.url + "/faults", params={"stats": "1"} if stats else None
        ).raise_for_status()

    def stats(self) -> dict:
        """Return requests_seen, faults_injected, faults_by_kind and per-request records."""
        return self._http.get(self.url + "/faults/stats").raise_for_status().json()

    def request_times_s(self, path_prefix: str = "") -> list[float]:
        """Return the wall-clock arrival times (time.time()) of requests under path_prefix."""
        return [r["t_s"] for r in self.stats()["requests"] if r["path"].startswith(path_prefix)]

    def stop(self) -> int:
        """Stop the proxy process (its clients then see connection refused)."""
        self._http.close()
        return self.server.stop()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.url} -> {self.upstream_url}>"


def start_fault_proxy(
    upstream_url: str, *, port: int = 0, timeout_s: float = 30.0, name: str = "fault-proxy"
) -> FaultProxy:
    """Start the fault proxy in front of upstream_url on a free 127.0.0.1 port; wait for health."""
    check_http_url(
        upstream_url,
        "upstream_url",
        "http://127.0.0.1:8000 (the server's root, not /v1)",
        root_only=True,
    )
    command = [
        *deploykit_command("faults"),
        "--upstream",
        upstream_url,
        "--host",
        "{host}",
        "--port",
        "{port}",
    ]
    server = launch_server(
        command, port=port, health_path=HEALTH_PATH, timeout_s=timeout_s, name=name
    )
    return FaultProxy(server, upstream_url)


def add_cli(sub) -> None:
    """Add `deploykit faults --upstream URL` (the fault-injection proxy) to the CLI."""
    p = sub.add_parser(
        "faults",
        help="run the fault-injection proxy in front of a server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--upstream", required=True, help="the server's root URL, e.g. http://127.0.0.1:8000"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=argtypes.port, default=8100)
    p.set_defaults(func=_cli_faults)


def _cli_faults(args: argparse.Namespace) -> int:
    """Run the proxy until SIGTERM/SIGINT."""
    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(_QuietCuts())
    uvicorn.run(
        _Proxy(args.upstream),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    return 0
