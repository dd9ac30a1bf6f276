"""Thin FastAPI routes over `serving.py`, plus the uvicorn runner with a graceful drain.

Routes parse the body themselves (so malformed JSON or a wrong type is a 400 in OpenAI's
shape, never FastAPI's 422), call one handler, and return JSON or an SSE stream; each route
declares its body and error responses for /openapi.json with `openapi.py`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from ..errors import EngineStoppedError
from .engine import Engine, EngineConfig
from .metrics import UNCOUNTED_PATHS, ServerMetrics, route_template
from . import openapi
from . import ollama, tgi
from . import protocol as p
from .serving import (APIError, OpenAIServing, add_error_handlers, parse_body, read_body,
                      to_api_error)

log = logging.getLogger("deploykit.server")

@dataclass(frozen=True)
class ServerConfig:
    """Everything `deploykit serve` takes, validated once at start."""

    model: str = "toy-tiny"
    served_model_name: str | None = None  # name clients send as "model"; default: model
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_body_bytes: int = 1_000_000
    drain_timeout_s: float = 30.0
    retry_after_s: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)

    @property
    def model_name(self) -> str:
        """Return the name clients must send in the "model" field."""
        return self.served_model_name or self.model


def _error(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _until_disconnected(request: Request) -> None:
    # after the body is read, the next ASGI message is the client going away
    while (await request.receive())["type"] != "http.disconnect":
        pass


def build_app(engine: Engine, config: ServerConfig) -> FastAPI:
    """Return the FastAPI app serving engine under config.model_name."""
    metrics = ServerMetrics.create(engine, config.model_name)
    serving = OpenAIServing(engine, config.model_name, metrics, config.retry_after_s)
    app = FastAPI(title="deploykit reference server", docs_url=None, redoc_url=None)
    app.state.engine, app.state.draining, app.state.metrics = engine, False, metrics
    api_key = config.api_key.encode() if config.api_key else None

    add_error_handlers(app)

    async def _generate(request: Request, model, handler, errors=None,
                        media_type: str = "text/event-stream") -> Response:
        """Parse, run handler (cancelled if the client leaves), return JSON or a stream.

        errors maps an exception to (status, body, headers) in a dialect's shape; without
        it the app's handlers answer in OpenAI's.
        """
        try:
            if app.state.draining:
                raise to_api_error(EngineStoppedError(
                    "the server is shutting down and takes no new requests; retry on another "
                    "replica."), config.retry_after_s)
            req = parse_body(await read_body(request, config.max_body_bytes), model)
            work = asyncio.ensure_future(handler(req))
            gone = asyncio.ensure_future(_until_disconnected(request))
            # a non-streamed request whose client left is cancelled, freeing its batch row
            done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if work not in done:
                work.cancel()
                return Response(status_code=499)
            gone.cancel()
            result = work.result()
        except Exception as exc:
            if errors is None:
                raise
            status, body, headers = errors(exc, config.retry_after_s)
            return JSONResponse(body, status_code=status, headers=headers)
        if isinstance(result, p.BaseModel):
            return JSONResponse(result.model_dump())
        if isinstance(result, dict):
            return JSONResponse(result)
        return StreamingResponse(result, media_type=media_type,
                                 headers={"Cache-Control": "no-cache"})

    @app.post("/v1/completions", openapi_extra=openapi.body(p.CompletionRequest),
              responses=openapi.responses(p.CompletionResponse, 400, 404, 413, 503, stream=True))
    async def completions(request: Request) -> Response:
        return await _generate(request, p.CompletionRequest, serving.completions)

    @app.post("/v1/chat/completions", openapi_extra=openapi.body(p.ChatCompletionRequest),
              responses=openapi.responses(p.ChatCompletionResponse, 400, 404, 413, 503, stream=True))
    async def chat_completions(request: Request) -> Response:
        return await _generate(request, p.ChatCompletionRequest, serving.chat)

    @app.get("/v1/models", responses=openapi.responses(p.ModelList))
    async def models() -> JSONResponse:
        return JSONResponse(serving.models().model_dump())

    @app.post("/tokenize", openapi_extra=openapi.body(p.TokenizeRequest),
              responses=openapi.responses(p.TokenizeResponse, 400, 404, 413))
    async def tokenize(request: Request) -> JSONResponse:
        req = parse_body(await read_body(request, config.max_body_bytes), p.TokenizeRequest)
        return JSONResponse(serving.tokenize(req).model_dump())

    # ---- TGI's dialect (tgi.py) ----------------------------------------------------------
    tgi_serving = tgi.TGIServing(engine, config.model_name, metrics, config.retry_after_s)

    @app.post("/generate", include_in_schema=False)
    async def tgi_generate(request: Request) -> Response:
        return await _generate(request, tgi.GenerateRequest, tgi_serving.generate,
                               tgi.error_body)

    @app.post("/generate_stream", include_in_schema=False)
    async def tgi_generate_stream(request: Request) -> Response:
        return await _generate(request, tgi.GenerateRequest, tgi_serving.generate_stream,
                               tgi.error_body)

    @app.post("/", include_in_schema=False)
    async def tgi_compat(request: Request) -> Response:
        # TGI's root route: what huggingface_hub's InferenceClient(base_url).text_generation
        # posts to; "stream" in the body picks the answer's form
        async def either(req: tgi.GenerateRequest):
            return await (tgi_serving.generate_stream(req) if req.stream else
                          tgi_serving.generate(req))
        return await _generate(request, tgi.GenerateRequest, either, tgi.error_body)

    @app.get("/info", include_in_schema=False)
    async def tgi_info() -> JSONResponse:
        return JSONResponse(tgi_serving.info().model_dump())

    # ---- Ollama's dialect (ollama.py) ----------------------------------------------------
    ollama_serving = ollama.OllamaServing(engine, config.model_name, metrics,
                                          config.retry_after_s)

    @app.post("/api/generate", include_in_schema=False)
    async def ollama_generate(request: Request) -> Response:
        return await _generate(request, ollama.GenerateRequest, ollama_serving.generate,
                               ollama.error_body, media_type="application/x-ndjson")

    @app.post("/api/chat", include_in_schema=False)
    async def ollama_chat(request: Request) -> Response:
        return await _generate(request, ollama.ChatRequest, ollama_serving.chat,
                               ollama.error_body, media_type="application/x-ndjson")

    @app.post("/api/show", include_in_schema=False)
    async def ollama_show(request: Request) -> Response:
        async def show(req: ollama.ShowRequest):
            return ollama_serving.show(req)
        return await _generate(request, ollama.ShowRequest, show, ollama.error_body)

    @app.get("/api/tags", include_in_schema=False)
    async def ollama_tags() -> JSONResponse:
        return JSONResponse(ollama_serving.tags())

    @app.get("/api/ps", include_in_schema=False)
    async def ollama_ps() -> JSONResponse:
        return JSONResponse(ollama_serving.ps())

    @app.get("/api/version", include_in_schema=False)
    async def ollama_version() -> JSONResponse:
        return JSONResponse(ollama_serving.version())

    @app.get("/health", responses=openapi.responses(p.HealthResponse))
    async def health() -> JSONResponse:
        # liveness only: answering proves the event loop runs; the model is not touched
        return JSONResponse(p.HealthResponse().model_dump())

    @app.get("/ready", responses={**openapi.responses(p.ReadyResponse),
                                  503: {"model": p.ReadyResponse, "description": "Draining, or "
                                        "the engine has stopped: send no traffic here."}})
    async def ready() -> JSONResponse:
        ok = engine.accepting and not app.state.draining
        return JSONResponse(p.ReadyResponse(ready=ok, draining=app.state.draining).model_dump(),
                            status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    # app.openapi() caches the document it builds, and /openapi.json serves that same dict
    openapi.complete(app.openapi(), config.model_name, len(serving.tokenizer),
                      engine.context_length, guarded=api_key is not None)
    app.add_middleware(_Guard, api_key=api_key, metrics=metrics, routes=app.routes)
    return app


class _Guard:
    """ASGI middleware: check the API key, count responses by route template and status.

    Pure ASGI rather than @app.middleware("http"), which would wrap every streamed
    chunk and add per-request overhead.
    """

    def __init__(self, app, api_key: bytes | None, metrics: ServerMetrics, routes) -> None:
        self.app, self.api_key, self.metrics, self.routes = app, api_key, metrics, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, start = scope["path"], time.perf_counter()
        # a template, never the raw path: made-up paths must not each add a series
        handler = None if path in UNCOUNTED_PATHS else route_template(self.routes, scope)
        if self.api_key is not None and path not in openapi.OPEN_PATHS:
            auth = dict(scope["headers"]).get(b"authorization", b"")
            token = auth[7:] if auth[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.api_key):  # constant time: no timing oracle
                self.metrics.observe_http(handler, scope["method"], 401,
                                          time.perf_counter() - start)
                response = _error(APIError(
                    401, "missing or wrong API key; send the header 'Authorization: Bearer "
                    "<key>' with the key the server was started with.", "authentication_error"))
                return await response(scope, receive, send)
        status = 500

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if handler is not None:
                self.metrics.observe_http(handler, scope["method"], status,
                                          time.perf_counter() - start)


class _DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains before it exits.

    Draining: /ready turns 503, new generation requests get 503, admitted ones finish
    (up to drain_timeout_s, then they end with an error event), then uvicorn shuts down.
    A second signal exits at once.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, engine: Engine,
                 drain_timeout_s: float) -> None:
        super().__init__(config)
        self._app, self._engine, self._drain_timeout_s = app, engine, drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_started = False

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame) -> None:
        if self._drain_started or self._loop is None:
            return super().handle_exit(sig, frame)
        self._drain_started = True
        self._app.state.draining = True
        self._engine.close_admission()
        log.info("signal %s: draining (up to %.0f s) before exiting", sig, self._drain_timeout_s)
        self._loop.call_soon_threadsafe(self._loop.create_task, self._drain())

    async def _drain(self) -> None:
        if not await self._engine.wait_idle(self._drain_timeout_s):
            log.warning("drain timeout: ending %d running and %d waiting requests",
                        self._engine.num_running, self._engine.num_waiting)
            await asyncio.to_thread(self._engine.stop)
        self.should_exit = True


def serve(config: ServerConfig) -> None:
    """Load the model, start the engine, and serve until SIGTERM/SIGINT (then drain)."""
    from ..models import load_model

    lm = load_model(config.model, device=config.device, dtype=config.dtype, progress=False)
    engine = Engine(lm, config.engine).start()
    app = build_app(engine, config)
    uv_config = uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                               access_log=False, timeout_graceful_shutdown=5)
    log.info("serving %s as %r on http://%s:%d (device %s, dtype %s)", config.model,
             config.model_name, config.host, config.port, lm.device, lm.dtype)
    try:
        _DrainingServer(uv_config, app, engine, config.drain_timeout_s).run()
    finally:
        engine.stop()




def serve_naive(config: ServerConfig, block_event_loop: bool = False) -> None:
    """Serve the one-request-at-a-time baseline (`naive.py`) until SIGTERM/SIGINT."""
    from ..models import load_model
    from .naive import build_naive_app

    lm = load_model(config.model, device=config.device, dtype=config.dtype, progress=False)
    app = build_naive_app(lm, config.model_name, block_event_loop, config.max_body_bytes)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", access_log=False,
                timeout_graceful_shutdown=5)


def add_cli(sub) -> None:
    """Add `deploykit serve` to the CLI."""
    from ..cli import port, positive_float, positive_int

    d = ServerConfig()
    e = d.engine
    cmd = sub.add_parser("serve", help="serve a model with an OpenAI-compatible API")
    cmd.add_argument("--model", default=d.model, help="built-in name, local folder or hub id")
    cmd.add_argument("--served-model-name", default=None,
                     help="name clients send as 'model' (default: --model)")
    cmd.add_argument("--host", default=d.host, help="address to bind (default: loopback only)")
    cmd.add_argument("--port", type=port, default=d.port)
    cmd.add_argument("--api-key", default=None,
                     help="require 'Authorization: Bearer KEY' (default: $DEPLOYKIT_API_KEY)")
    cmd.add_argument("--device", default=d.device)
    cmd.add_argument("--dtype", default=d.dtype)
    cmd.add_argument("--max-batch-size", type=positive_int, default=e.max_batch_size,
                     help="sequences decoded together")
    cmd.add_argument("--max-waiting", type=int, default=e.max_waiting,
                     help="queued requests beyond the batch; more get 503 + Retry-After")
    cmd.add_argument("--max-body-bytes", type=positive_int, default=d.max_body_bytes)
    cmd.add_argument("--drain-timeout-s", type=positive_float, default=d.drain_timeout_s,
                     help="on SIGTERM, how long in-flight requests may take to finish")
    cmd.add_argument("--naive", action="store_true",
                     help="serve one request at a time with model.generate (the baseline)")
    cmd.add_argument("--block-event-loop", action="store_true",
                     help="with --naive: call generate on the event loop, as the seed did")
    cmd.set_defaults(func=cli_serve)


def cli_serve(args) -> int:
    """Run `deploykit serve` with parsed arguments."""
    from .. import _env

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        model=args.model, served_model_name=args.served_model_name, host=args.host,
        port=args.port, api_key=args.api_key or _env.api_key(), device=args.device,
        dtype=args.dtype, max_body_bytes=args.max_body_bytes,
        drain_timeout_s=args.drain_timeout_s,
        engine=EngineConfig(max_batch_size=args.max_batch_size, max_waiting=args.max_waiting))
    if args.naive:
        serve_naive(config, block_event_loop=args.block_event_loop)
    else:
        serve(config)
    return 0
