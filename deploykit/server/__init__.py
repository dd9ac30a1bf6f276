"""deploykit's reference inference server: continuous batching behind three APIs.

`engine.py` batches, `request.py` streams each request's outputs, `protocol.py` holds the
OpenAI wire models, `serving.py` translates between them; `tgi.py` and `ollama.py` do the
same for Hugging Face TGI's and Ollama's APIs over the same engine; `app.py` has the routes
and the runner, `openapi.py` their document; `naive.py` is the one-request-at-a-time
baseline. Names are imported on first use, so that `import deploykit` (which only needs
`process.start_server`) does not pay for torch and FastAPI.
"""

from importlib import import_module

_HOME = {"ServerConfig": "app", "build_app": "app", "serve": "app", "Engine": "engine",
         "EngineConfig": "engine", "GenerationStream": "request", "RequestOutput": "request",
         "SamplingParams": "sampling"}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
