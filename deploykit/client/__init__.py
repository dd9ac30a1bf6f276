"""Clients of inference servers: the official ones set up for the cookbook's servers, and the
resilient client with its response cache."""

from .async_resilient import AsyncResilientClient, AsyncTextStream
from .cache import (CacheMetrics, MemoryCache, ModelIdentity, ResponseCache, SQLiteCache,
                    cache_key, is_deterministic, model_digest, model_identity)
from .cache_asgi import ResponseCacheMiddleware
from .hub import tgi_client
from .openai_compat import (PROVIDER_ENDPOINTS, ProviderEndpoint, hosted_key_status, openai_client,
                            provider_endpoints)
from .policy import RETRY_STATUSES, RetryPolicy, Timeouts, parse_retry_after
from .resilient import ClientStats, Completion, ResilientClient, StreamInfo, TextStream

__all__ = ["tgi_client", "PROVIDER_ENDPOINTS", "ProviderEndpoint", "hosted_key_status",
           "openai_client", "provider_endpoints",
           "AsyncResilientClient", "AsyncTextStream", "ClientStats", "Completion",
           "ResilientClient", "StreamInfo", "TextStream",
           "RETRY_STATUSES", "RetryPolicy", "Timeouts", "parse_retry_after",
           "CacheMetrics", "MemoryCache", "ModelIdentity", "ResponseCache",
           "ResponseCacheMiddleware", "SQLiteCache", "cache_key", "is_deterministic",
           "model_digest", "model_identity"]
