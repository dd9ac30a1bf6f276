"""One client path for every OpenAI-compatible server: the official `openai.OpenAI`, keyed from env.

The same client talks to the cookbook's own server, vLLM, TGI's Messages API, Ollama's `/v1`
and hosted providers; only `base_url` and the name of the key's environment variable change.
The key is read from the environment (deploykit/_env.py) and handed to the SDK; it is never
printed, logged, or put in an error message.

This module does not call anything itself, pick models, or retry beyond the SDK's own retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _env
from .._urls import check_http_url
from ..errors import InvalidArgumentError
from .hub import _is_loopback

# openai.OpenAI refuses to start without some key; servers on this machine without --api-key
# ignore the Authorization header, so a placeholder stands in.
LOCAL_PLACEHOLDER_KEY = "no-key-needed-for-local-servers"


def _check_url(base_url: str) -> str:
    parts = check_http_url(
        base_url, "base_url", "https://api.openai.com/v1 or http://127.0.0.1:8000/v1"
    )
    return str(parts.hostname)


@dataclass(frozen=True)
class ProviderEndpoint:
    """Where an OpenAI-compatible API lives and which environment variable holds its key."""

    name: str
    base_url: str
    key_env: str | None  # None: the server takes no key (local servers started without one)
    docs: str  # where the provider documents base_url and key

    def __post_init__(self) -> None:
        _check_url(self.base_url)


# Hosted entries and Ollama's checked against the page in `docs` on 2026-11-27; the vLLM and
# deploykit entries are those servers' default ports (change the port to match yours).
PROVIDER_ENDPOINTS: tuple[ProviderEndpoint, ...] = (
    ProviderEndpoint(
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        "https://platform.openai.com/docs/api-reference",
    ),
    ProviderEndpoint(
        "groq",
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
        "https://console.groq.com/docs/openai",
    ),
    ProviderEndpoint(
        "together",
        "https://api.together.ai/v1",
        "TOGETHER_API_KEY",
        "https://docs.together.ai/docs/inference/openai-compatibility",
    ),
    ProviderEndpoint(
        "ollama (local)",
        "http://localhost:11434/v1",
        None,
        "https://docs.ollama.com/api/openai-compatibility",
    ),
    ProviderEndpoint(
        "vllm (local)",
        "http://localhost:8000/v1",
        None,
        "https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html",
    ),
    ProviderEndpoint(
        "deploykit serve (local)",
        "http://127.0.0.1:8000/v1",
        None,
        "notebooks/02_fastapi_server.ipynb",
    ),
)

# Keys the hosted recipes use besides the OpenAI-compatible ones (boto3 reads the AWS pair itself).
_OTHER_KEYS = ("REPLICATE_API_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def openai_client(
    base_url: str,
    *,
    api_key_env: str = "OPENAI_API_KEY",
    require_key: bool = True,
    timeout_s: float = 60.0,
    max_retries: int = 2,
) -> Any:
    """Return the official `openai.OpenAI` client for base_url, with its key from $api_key_env.

    A missing or empty key raises MissingCredentialError naming the variable, unless the server
    is on this machine (a loopback base_url) or require_key=False: then a placeholder key is sent
    when the variable is unset (local servers started without --api-key ignore it), and the real
    key when it is set.
    """
    import openai

    local = _is_loopback(_check_url(base_url))
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise InvalidArgumentError(f"timeout_s must be > 0 seconds, got {timeout_s!r}.")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InvalidArgumentError(f"max_retries must be an int >= 0, got {max_retries!r}.")
    if require_key and not local:
        key = _env.require_credential(api_key_env, f"openai_client({base_url!r})")
    else:
        key = _env.credential(api_key_env) or LOCAL_PLACEHOLDER_KEY
    return openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=max_retries)


def provider_endpoints():
    """Return the known OpenAI-compatible endpoints as a DataFrame, with whether each key is set."""
    import pandas as pd

    status = _env.credentials_set([p.key_env for p in PROVIDER_ENDPOINTS if p.key_env])
    return pd.DataFrame(
        [
            {
                "name": p.name,
                "base_url": p.base_url,
                "key_env": p.key_env or "",
                "key_set": status.get(p.key_env, False) if p.key_env else None,
                "docs": p.docs,
            }
            for p in PROVIDER_ENDPOINTS
        ]
    )


def hosted_key_status() -> dict[str, bool]:
    """Return {variable name: is it set} for every key the hosted recipes use; never a value."""
    names = [p.key_env for p in PROVIDER_ENDPOINTS if p.key_env] + list(_OTHER_KEYS)
    return _env.credentials_set(dict.fromkeys(names))
