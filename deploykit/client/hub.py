"""huggingface_hub's InferenceClient pointed at a TGI-compatible server by URL.

With HF_HUB_OFFLINE=1 (how the cookbook's tests and CPU recipe run), huggingface_hub
refuses every request it makes, even to a server on 127.0.0.1. `tgi_client` keeps the Hub
blocked but lets requests to loopback addresses through, through huggingface_hub's own
`set_client_factory` hook; nothing else about the client changes.
"""

from __future__ import annotations

import ipaddress

from .._urls import check_http_url


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _loopback_client_factory():
    """Return huggingface_hub's default client, with the offline check skipped for loopback."""
    from huggingface_hub.utils import _http

    def hook(request) -> None:
        if not _is_loopback(request.url.host):
            _http.hf_request_event_hook(request)  # the Hub and everything else: as before

    client = _http.default_client_factory()
    client.event_hooks["request"] = [hook]
    return client


def tgi_client(url: str, timeout_s: float = 120.0):
    """Return an InferenceClient for the TGI-compatible server at url (TGI, deploykit…).

    text_generation posts to url itself (TGI's root route), chat_completion to
    url/v1/chat/completions, get_endpoint_info reads url/info.
    """
    from huggingface_hub import InferenceClient, constants
    from huggingface_hub.utils import set_client_factory

    parts = check_http_url(url, "url", "http://127.0.0.1:8080")
    if constants.is_offline_mode() and _is_loopback(str(parts.hostname)):
        set_client_factory(_loopback_client_factory)
    return InferenceClient(model=url.rstrip("/"), provider="hf-inference", timeout=timeout_s)
