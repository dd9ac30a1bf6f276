"""deploykit's engine and routes as a Ray Serve deployment; Ray's processes import this module.

Each replica loads the model and starts deploykit's continuous-batching engine in its
constructor; Serve then asks it for its ASGI app (`__serve_build_asgi_app__`, Serve's
late-bound ingress), which is `build_app(engine, config)`, the same app `deploykit serve`
runs. So every route of deploykit's server (OpenAI's, TGI's and Ollama's, /health, /ready,
/metrics) answers behind Serve's HTTP proxy unchanged. The engine runs in-process: a
replica that dies takes its engine with it, with no child process left behind.

Serve's config names it by `import_path: deploykit.rayserve.app:build` with `args` (see
`RayServeConfig.application`). Nothing else in deploykit imports this module: it needs Ray.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray import serve

from ._dashboard import NODE_RESOURCE
from .serve import DEPLOYMENT_NAME

NODE_HEADER = "x-deploykit-node"  # node/replica that answered, on every response

log = logging.getLogger("ray.serve")


def _node_label() -> str:
    """Return 'worker1/<replica id>': the node's name (its deploykit_node_ resource) and replica."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    replica = serve.get_replica_context().replica_id.unique_id
    for node in ray.nodes():
        if node["NodeID"] == node_id:
            names = [
                k[len(NODE_RESOURCE) :] for k in node["Resources"] if k.startswith(NODE_RESOURCE)
            ]
            return f"{names[0] if names else node_id[:8]}/{replica}"
    return f"{node_id[:8]}/{replica}"


class _NodeHeader:
    """ASGI middleware: name the node and replica on each response (pure ASGI: no per-chunk cost)."""

    def __init__(self, app: Any, label: str) -> None:
        self.app, self.header = app, (NODE_HEADER.encode(), label.encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=32, ray_actor_options={"num_cpus": 1})
@serve.ingress()
class DeploykitReplica:
    """One replica: the model, deploykit's engine, and deploykit's app over it."""

    def __init__(
        self,
        model: str = "toy-tiny",
        served_model_name: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        max_batch_size: int = 32,
        threads: int = 1,
    ) -> None:
        import torch

        from ..models import load_model
        from ..server.app import ServerConfig
        from ..server.engine import Engine, EngineConfig

        started = time.perf_counter()
        # replicas share the node's cores: one intra-op thread each unless told otherwise
        torch.set_num_threads(threads)
        self.config = ServerConfig(
            model=model,
            served_model_name=served_model_name,
            device=device,
            dtype=dtype,
            engine=EngineConfig(max_batch_size=max_batch_size),
        )
        lm = load_model(model, device=device, dtype=dtype, progress=False)
        self.engine = Engine(lm, self.config.engine).start()
        log.info(
            "deploykit: %s loaded, engine started in %.1f s", model, time.perf_counter() - started
        )

    def __serve_build_asgi_app__(self):
        from ..server.app import build_app

        app = build_app(self.engine, self.config)
        # on the app itself, not around it: Serve adds its own error handlers to a FastAPI app
        app.add_middleware(_NodeHeader, label=_node_label())
        return app

    def check_health(self) -> None:
        # Serve replaces a replica whose check raises: the engine thread has stopped
        if not self.engine.accepting:
            raise RuntimeError("deploykit's engine no longer accepts requests")

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.stop()


def build(args: dict[str, Any]) -> serve.Application:
    """Return the application for Serve's config (`import_path ...app:build`, `args`)."""
    known = {"model", "served_model_name", "device", "dtype", "max_batch_size", "threads"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown args {unknown}; deploykit.rayserve.app takes {sorted(known)}")
    return DeploykitReplica.bind(**args)  # type: ignore[attr-defined]
