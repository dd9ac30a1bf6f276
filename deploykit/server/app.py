"""The app: every dialect's router (`routes/`) behind one guard, and the uvicorn runner with a
graceful drain.

The guard checks the API key and counts responses by route template; on SIGTERM the runner
turns /ready to 503, refuses new requests, lets admitted ones finish, then exits.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI

from . import ollama, openapi, tgi
from .engine import Engine, EngineConfig
from .metrics import UNCOUNTED_PATHS, ServerMetrics, route_template
from .routes import Limits, error_response, ollama_router, openai_router, ops_router, tgi_router
from .serving import APIError, OpenAIServing, add_error_handlers

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
    tgi_limits: tgi.TGILimits = field(default_factory=tgi.TGILimits)  # the TGI routes' budget

    @property
    def model_name(self) -> str:
        """Return the name clients must send in the "model" field."""
        return self.served_model_name or self.model


def build_app(engine: Engine, config: ServerConfig) -> FastAPI:
    """Return the FastAPI app serving engine under config.model_name: every dialect's routes."""
    metrics = ServerMetrics.create(engine, config.model_name)
    limits = Limits(config.max_body_bytes, config.retry_after_s)
    serving = OpenAIServing(engine, config.model_name, metrics, config.retry_after_s)
    app = FastAPI(title="deploykit reference server", docs_url=None, redoc_url=None)
    app.state.engine, app.state.draining, app.state.metrics = engine, False, metrics
    add_error_handlers(app)
    app.include_router(openai_router(serving, limits))
    tgi_serving = tgi.TGIServing(
        engine, config.model_name, metrics, config.retry_after_s, limits=config.tgi_limits
    )
    app.include_router(tgi_router(tgi_serving, limits))
    app.include_router(
        ollama_router(
            ollama.OllamaServing(engine, config.model_name, metrics, config.retry_after_s), limits
        )
    )
    app.include_router(ops_router(engine, metrics))
    api_key = config.api_key.encode() if config.api_key else None
    # app.openapi() caches the document it builds, and /openapi.json serves that same dict
    openapi.complete(
        app.openapi(),
        config.model_name,
        len(serving.tokenizer),
        engine.context_length,
        guarded=api_key is not None,
    )
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
                if handler is not None:  # probes are uncounted, as below
                    self.metrics.observe_http(
                        handler, scope["method"], 401, time.perf_counter() - start
                    )
                response = error_response(
                    APIError(
                        401,
                        "missing or wrong API key; send the header 'Authorization: Bearer "
                        "<key>' with the key the server was started with.",
                        "authentication_error",
                    )
                )
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
                self.metrics.observe_http(
                    handler, scope["method"], status, time.perf_counter() - start
                )


class _DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains before it exits.

    Draining: /ready turns 503, new generation requests get 503, admitted ones finish
    (up to drain_timeout_s, then they end with an error event), then uvicorn shuts down.
    A second signal exits at once.
    """

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, engine: Engine, drain_timeout_s: float
    ) -> None:
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
            log.warning(
                "drain timeout: ending %d running and %d waiting requests",
                self._engine.num_running,
                self._engine.num_waiting,
            )
            await asyncio.to_thread(self._engine.stop)
        self.should_exit = True


def serve(config: ServerConfig) -> None:
    """Load the model, start the engine, and serve until SIGTERM/SIGINT (then drain)."""
    from ..models import load_model

    lm = load_model(config.model, device=config.device, dtype=config.dtype, progress=False)
    engine = Engine(lm, config.engine).start()
    app = build_app(engine, config)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    log.info(
        "serving %s as %r on http://%s:%d (device %s, dtype %s, %s kernels, %s decode step)",
        config.model,
        config.model_name,
        config.host,
        config.port,
        lm.device,
        lm.dtype,
        engine.kernels,
        engine.decode_step,
    )
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
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
