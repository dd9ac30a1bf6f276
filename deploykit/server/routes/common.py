"""What every dialect's generation route does alike: parse, run the handler, answer.

A route parses the body itself (so malformed JSON or a wrong type is a 400 in its dialect's
shape, never FastAPI's 422), calls one handler, and returns JSON or a stream. A request whose
client leaves before a non-streamed answer is cancelled, freeing its batch row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from ...errors import EngineStoppedError
from .. import protocol as p
from ..serving import APIError, parse_body, read_body, to_api_error

# exception, retry_after_s -> (status, body, headers) in a dialect's own error shape
ErrorMapper = Callable[[Exception, int], tuple[int, Any, Mapping[str, str] | None]]


@dataclass(frozen=True)
class Limits:
    """What every route checks before its handler runs."""

    max_body_bytes: int
    retry_after_s: int  # Retry-After of a 503 while draining or overloaded


def error_response(err: APIError) -> JSONResponse:
    """Return an APIError as OpenAI's JSON error, with its status and headers."""
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _until_disconnected(request: Request) -> None:
    # after the body is read, the next ASGI message is the client going away
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def generate(
    request: Request,
    limits: Limits,
    model: type[BaseModel],
    handler: Callable[[Any], Awaitable[Any]],
    errors: ErrorMapper | None = None,
    media_type: str = "text/event-stream",
) -> Response:
    """Parse, run handler (cancelled if the client leaves), return JSON or a stream.

    errors maps an exception to (status, body, headers) in a dialect's shape; without it
    the app's handlers answer in OpenAI's.
    """
    try:
        if request.app.state.draining:
            raise to_api_error(
                EngineStoppedError(
                    "the server is shutting down and takes no new requests; retry on another "
                    "replica."
                ),
                limits.retry_after_s,
            )
        req = parse_body(await read_body(request, limits.max_body_bytes), model)
        work = asyncio.ensure_future(handler(req))
        gone = asyncio.ensure_future(_until_disconnected(request))
        done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            work.cancel()
            return Response(status_code=499)
        gone.cancel()
        result = work.result()
    except Exception as exc:
        if errors is None:
            raise
        status, body, headers = errors(exc, limits.retry_after_s)
        return JSONResponse(body, status_code=status, headers=headers)
    if isinstance(result, p.BaseModel):
        return JSONResponse(result.model_dump())
    if isinstance(result, dict):
        return JSONResponse(result)
    return StreamingResponse(result, media_type=media_type, headers={"Cache-Control": "no-cache"})
