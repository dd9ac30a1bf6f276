"""The response cache as ASGI middleware, for a Starlette/FastAPI server (cache.py has the rules).

Wrap an app: `ResponseCacheMiddleware(app, dk.MemoryCache(), dk.model_identity("toy-tiny"))`,
or `app.add_middleware(ResponseCacheMiddleware, cache=..., model_identity=...)`.
"""

from __future__ import annotations

import json

from ..errors import InvalidArgumentError
from .cache import ModelIdentity, ResponseCache

_CACHED_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})


class ResponseCacheMiddleware:
    """ASGI middleware: answer repeated deterministic completions from a cache.

    Caches 200 non-streamed answers of POST /v1/completions and /v1/chat/completions and
    marks each response `x-deploykit-cache: hit|miss`; streams and everything else pass
    through untouched. Bodies over max_body_bytes pass through uncached.
    """

    def __init__(
        self,
        app,
        cache: ResponseCache,
        model_identity: ModelIdentity,
        max_body_bytes: int = 1_000_000,
    ) -> None:
        if not isinstance(model_identity, ModelIdentity):
            raise InvalidArgumentError(
                "model_identity must be a ModelIdentity, e.g. dk.model_identity('toy-tiny')."
            )
        self.app, self.cache, self.identity = app, cache, model_identity
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].rstrip("/") not in _CACHED_PATHS
        ):
            return await self.app(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                break
            if size > self.max_body_bytes:
                return await self.app(scope, _replay(messages, receive), send)
        try:
            request = json.loads(b"".join(m.get("body", b"") for m in messages))
        except ValueError:
            request = None  # the app answers malformed JSON with its own error
        if not isinstance(request, dict) or request.get("stream"):
            return await self.app(scope, _replay(messages, receive), send)
        key, found = self.cache.lookup(scope["path"], request, self.identity)
        if found is not None:
            body = json.dumps(found).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-deploykit-cache", b"hit"),
                    ],
                }
            )
            return await send({"type": "http.response.body", "body": body})
        status, chunks = 0, []

        async def send_and_keep(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if key is not None:
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"x-deploykit-cache", b"miss")],
                    }
            elif message["type"] == "http.response.body" and key is not None:
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, _replay(messages, receive), send_and_keep)
        if key is None:
            return
        if status != 200:
            return self.cache.metrics.skipped("error")
        try:
            self.cache.store(key, json.loads(b"".join(chunks)))
        except ValueError:
            self.cache.metrics.skipped("error")


def _replay(messages: list[dict], receive):
    """Return a receive() that gives the buffered messages first, then the real ones."""
    pending = list(messages)

    async def replayed():
        return pending.pop(0) if pending else await receive()

    return replayed
