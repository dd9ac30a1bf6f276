"""The server's routes, one router per dialect; `app.build_app` assembles them.

`common` holds what every generation route does alike; `openai`, `tgi` and `ollama` are the
three APIs over the same engine; `ops` has health, readiness and metrics.
"""

from .common import Limits, error_response
from .ollama import ollama_router
from .openai import openai_router
from .ops import ops_router
from .tgi import tgi_router

__all__ = ["Limits", "error_response", "ollama_router", "openai_router", "ops_router", "tgi_router"]
