"""deploykit's reference inference server: continuous batching behind an OpenAI API.

`engine.py` batches, `protocol.py` holds the wire models, `serving.py` translates
between them, `app.py` has the routes and the runner; `naive.py` is the
one-request-at-a-time baseline.
"""

from .app import ServerConfig, build_app, serve
from .engine import Engine, EngineConfig, GenerationStream, RequestOutput
from .sampling import SamplingParams

__all__ = ["Engine", "EngineConfig", "GenerationStream", "RequestOutput", "SamplingParams",
           "ServerConfig", "build_app", "serve"]
