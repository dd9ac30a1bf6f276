"""The router process: an aiohttp reverse proxy over replicas (`deploykit router`).

aiohttp on both sides, as the load generator: on two cores its client spends a tenth of
httpx's CPU per request, and a router pays that on every request it forwards.

What it does with a request:

- reads the whole body (bounded by max_body_bytes), so it can be sent again;
- sends it to the replica `balancer.py` picks (fewest outstanding requests);
- fails over to the next replica when the request never reached the one it picked (connection
  refused or connect timeout) or when that replica answered 503 (deploykit's "not admitted:
  overloaded or draining", so nothing ran);
- answers 502 when a replica failed after it got the request. The router cannot know whether
  the replica had run it, so running it again is the client's call (the resilient client
  retries it; a request with side effects might not want that);
- passes streams through chunk by chunk. If the replica dies mid-stream the router aborts the
  client's connection without the last chunk, so the client sees a broken stream, never a
  short stream that looks complete (no invented `[DONE]`).

It does not cache, rewrite bodies, terminate TLS, or retry anything a replica may have run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InvalidArgumentError
from .balancer import Balancer, Replica, check_replica_urls

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("deploykit.router")

REPLICA_HEADER = "X-Deploykit-Replica"  # which replica answered, on every proxied response
# hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, not to the message
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_OWN_PATHS = ("/health", "/ready", "/router/stats")


@dataclass(frozen=True)
class RouterConfig:
    """Everything the router takes, validated once at start."""

    replicas: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8080
    health_interval_s: float = 1.0  # how often each replica's /ready is checked
    health_timeout_s: float = 2.0  # a check slower than this fails
    failure_threshold: int = 3  # failed requests in a row before a cooldown
    cooldown_s: float = 10.0  # how long a tripped replica gets no traffic
    connect_timeout_s: float = 2.0
    # between two reads of a replica's answer: the first token of a long prompt on a busy
    # replica, or a non-streamed answer of thousands of tokens, comes after this long at most
    read_timeout_s: float = 300.0
    max_body_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "replicas", tuple(check_replica_urls(self.replicas)))
        for name in (
            "health_interval_s",
            "health_timeout_s",
            "cooldown_s",
            "connect_timeout_s",
            "read_timeout_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidArgumentError(f"{name}={value!r} must be a number of seconds above 0.")
        if not 0 <= self.port <= 65535:
            raise InvalidArgumentError(f"port={self.port} is not a TCP port (0-65535).")
        if self.max_body_bytes < 1:
            raise InvalidArgumentError("max_body_bytes must be at least 1.")
        Balancer.create(self.replicas, self.failure_threshold, self.cooldown_s)  # checks both


def _error(status: int, message: str, type_: str, headers: dict | None = None):
    """Return an aiohttp JSON response in OpenAI's error shape."""
    from aiohttp import web

    body = {"error": {"message": message, "type": type_, "param": None, "code": status}}
    return web.json_response(body, status=status, headers=headers)


def _forward_headers(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}


def _is_stream(upstream) -> bool:
    """Return True when the answer is relayed chunk by chunk rather than read whole."""
    kind = upstream.headers.get("Content-Type", "")
    return (
        upstream.headers.get("Content-Length") is None or "event-stream" in kind or "ndjson" in kind
    )


class Router:
    """The running router: a balancer, a client session, counters, and the handlers."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.balancer = Balancer.create(
            config.replicas, config.failure_threshold, config.cooldown_s
        )
        self.counts = {
            "requests": 0,
            "failovers": 0,
            "replica_errors_502": 0,
            "aborted_streams": 0,
            "no_replica_503": 0,
        }
        self.session: aiohttp.ClientSession | None = None
        self._health_task: asyncio.Task | None = None

    # ---- lifecycle --------------------------------------------------------------------

    def app(self):
        """Return the aiohttp application."""
        from aiohttp import web

        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/router/stats", self.stats)
        app.router.add_route("*", "/{tail:.*}", self.proxy)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app) -> None:
        import aiohttp

        c = self.config
        # keep-alive shorter than uvicorn's 5 s, so the router never sends on a connection the
        # replica is closing (that would be an ambiguous failure, answered 502)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=c.connect_timeout_s, sock_read=c.read_timeout_s
        )
        # auto_decompress=False: bytes pass through untouched, Content-Encoding and all
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, trust_env=False
        )
        self._health_task = asyncio.ensure_future(self._health_loop())

    async def _stop(self, app) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        if self.session is not None:
            await self.session.close()

    # ---- active health checks -----------------------------------------------------------

    async def _check(self, session, rep: Replica) -> None:
        try:
            async with session.get(rep.url + "/ready") as resp:
                ok = resp.status == 200
                await resp.read()
        except Exception:  # refused, timed out, reset: all mean "not ready"
            ok = False
        self.balancer.health(rep, ok)

    async def _health_loop(self) -> None:
        import aiohttp

        # a session of its own: checks never queue behind proxied requests
        timeout = aiohttp.ClientTimeout(total=self.config.health_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            while True:
                # first check one interval after start: until then every replica is up, as in
                # nginx, and a dead one is found by the first request (which fails over)
                await asyncio.sleep(self.config.health_interval_s)
                due = self.balancer.due_for_check()
                await asyncio.gather(*(self._check(session, rep) for rep in due))

    # ---- the router's own routes --------------------------------------------------------

    async def health(self, request):
        from aiohttp import web

        return web.json_response({"status": "ok"})

    async def ready(self, request):
        from aiohttp import web

        ok = self.balancer.any_available()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def stats(self, request):
        from aiohttp import web

        return web.json_response({"replicas": self.balancer.stats(), **self.counts})

    # ---- proxying -------------------------------------------------------------------------

    async def proxy(self, request):
        """Send the request to a replica, failing over where that is safe; relay its answer."""
        import aiohttp
        from aiohttp import web

        self.counts["requests"] += 1
        body = await request.read()
        headers = _forward_headers(request.headers)
        target = request.rel_url.raw_path_qs
        tried: set[str] = set()
        refused: list[str] = []
        busy = None  # the last 503 (its status, body and headers), passed on if all are busy
        assert self.session is not None  # opened at startup, before any request is routed
        while (rep := self.balancer.pick(exclude=tried)) is not None:
            tried.add(rep.url)
            try:
                upstream = await self.session.request(
                    request.method,
                    rep.url + target,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # the connection never opened, so nothing was sent: another replica may take it
                self.balancer.finish(rep, ok=False)
                refused.append(f"{rep.url}: {type(exc).__name__}")
                self.counts["failovers"] += 1
                continue
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.balancer.finish(rep, ok=False)
                return self._after_send_error(rep, exc)
            except asyncio.CancelledError:
                self.balancer.finish(rep, ok=None)  # the client left while the replica worked
                raise
            if upstream.status == 503:
                # deploykit answers 503 before admitting a request: nothing ran, try another
                try:
                    busy = (503, await _read_quietly(upstream), _forward_headers(upstream.headers))
                finally:
                    upstream.release()
                    self.balancer.finish(rep, ok=False)
                self.counts["failovers"] += 1
                continue
            return await self._relay(request, upstream, rep)
        if busy is not None:
            return web.Response(status=busy[0], body=busy[1], headers=busy[2])
        self.counts["no_replica_503"] += 1
        why = "; ".join(refused) or "every replica is down or cooling down"
        return _error(
            503,
            f"no replica could take the request ({why}); retry after "
            "Retry-After seconds, and see GET /router/stats.",
            "service_unavailable",
            {"Retry-After": "1"},
        )

    def _after_send_error(self, rep: Replica, exc: BaseException):
        self.counts["replica_errors_502"] += 1
        log.warning("replica %s failed after the request was sent: %r", rep.url, exc)
        return _error(
            502,
            f"replica {rep.url} failed after it received the request "
            f"({type(exc).__name__}); it may or may not have run it, so the router did "
            "not resend it. Retry if the request is safe to run twice.",
            "bad_gateway",
        )

    async def _relay(self, request, upstream, rep: Replica):
        """Pass the replica's answer on: whole if it has a length, else chunk by chunk."""
        import aiohttp
        from aiohttp import web

        headers = _forward_headers(upstream.headers)
        headers[REPLICA_HEADER] = rep.url
        ok: bool | None = upstream.status < 500
        try:
            if not _is_stream(upstream):
                try:
                    data = await upstream.read()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    ok = False
                    return self._after_send_error(rep, exc)
                return web.Response(status=upstream.status, body=data, headers=headers)
            response = web.StreamResponse(status=upstream.status, headers=headers)
            await response.prepare(request)
            chunks = upstream.content.iter_any()
            while True:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except (TimeoutError, aiohttp.ClientError) as exc:
                    ok = False
                    self.counts["aborted_streams"] += 1
                    log.warning(
                        "replica %s broke a stream: %r; aborting the client's connection",
                        rep.url,
                        exc,
                    )
                    # no last chunk: the client's HTTP parser reports an incomplete body
                    request.transport.abort()
                    return response
                try:
                    await response.write(chunk)
                except (ConnectionError, RuntimeError):
                    ok = None  # the client left: not the replica's fault
                    return response
            await response.write_eof()
            return response
        except asyncio.CancelledError:
            ok = None  # the client disconnected; releasing below tells the replica
            raise
        finally:
            upstream.release()
            self.balancer.finish(rep, ok)


async def _read_quietly(upstream) -> bytes:
    try:
        return await upstream.read()
    except Exception:  # a 503 whose body broke is still a 503
        return b""


def run(config: RouterConfig) -> None:
    """Serve the router until SIGTERM/SIGINT."""
    from aiohttp import web

    router = Router(config)
    loop = None
    with contextlib.suppress(ImportError):  # uvloop: less CPU per request where installed
        import uvloop

        loop = uvloop.new_event_loop()
    log.info(
        "routing http://%s:%d over %s", config.host, config.port, json.dumps(list(config.replicas))
    )
    web.run_app(
        router.app(),
        host=config.host,
        port=config.port,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=5.0,
        print=None,
        loop=loop,
    )
