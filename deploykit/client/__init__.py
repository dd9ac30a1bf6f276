"""Clients of inference servers: the official ones set up for the cookbook's servers, and the
resilient client with its response cache."""

from .async_resilient import AsyncResilientClient
from .cache import MemoryCache, ModelIdentity, SQLiteCache, model_identity
from .cache_asgi import ResponseCacheMiddleware
from .hub import tgi_client
from .openai_compat import hosted_key_status, openai_client
from .policy import RetryPolicy, Timeouts
from .resilient import ResilientClient

__all__ = [
    "MemoryCache",
    "ModelIdentity",
    "SQLiteCache",
    "model_identity",
    "ResponseCacheMiddleware",
    "tgi_client",
    "hosted_key_status",
    "openai_client",
    "RetryPolicy",
    "Timeouts",
    "AsyncResilientClient",
    "ResilientClient",
]
