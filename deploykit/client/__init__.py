"""Clients of inference servers: the official ones, set up for the cookbook's servers."""

from .hub import tgi_client
from .openai_compat import (PROVIDER_ENDPOINTS, ProviderEndpoint, hosted_key_status, openai_client,
                            provider_endpoints)

__all__ = ["tgi_client", "PROVIDER_ENDPOINTS", "ProviderEndpoint", "hosted_key_status",
           "openai_client", "provider_endpoints"]
