"""deploykit's reference inference server: continuous batching behind three APIs.

`engine.py` batches, `request.py` streams each request's outputs, `protocol.py` holds the
OpenAI wire models, `serving.py` translates between them; `tgi.py` and `ollama.py` do the
same for Hugging Face TGI's and Ollama's APIs over the same engine; `routes.py` and the
`*_routes.py` modules are the thin routes, one router per dialect; `app.py` assembles them
and runs uvicorn with a graceful drain, `openapi.py` writes their document; `naive.py` is the
one-request-at-a-time baseline; `process.py` starts `deploykit serve` as a child process;
`liveness.py` probes a server as a Kubernetes liveness probe would.

The face holds `start_server` and the liveness probe only, so that `import deploykit` does not pay for torch and
FastAPI; the in-process names (`ServerConfig`, `build_app`, `Engine`, ...) are imported on
first use as `deploykit.server.NAME`.
"""

from importlib import import_module

from .liveness import LivenessProbe, LivenessResult, probe_liveness
from .process import serve_command, start_server

__all__ = ["LivenessProbe", "LivenessResult", "probe_liveness", "serve_command", "start_server"]

_IN_PROCESS = {
    "ServerConfig": "app",
    "build_app": "app",
    "serve": "app",
    "Engine": "engine",
    "EngineConfig": "engine",
    "GenerationStream": "request",
    "RequestOutput": "request",
    "SamplingParams": "sampling",
}


def __getattr__(name: str):
    if name in _IN_PROCESS:
        return getattr(import_module(f".{_IN_PROCESS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
