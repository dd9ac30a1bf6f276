"""Replicate's HTTP predictions API: build the request, send it with httpx, read the output.

Official models (`owner/name`) are run with `POST /v1/models/{owner}/{name}/predictions`; a
version-pinned community model (`owner/name:version`) with `POST /v1/predictions`. Either way the
body is `{"input": {...}}` and the token travels as `Authorization: Bearer $REPLICATE_API_TOKEN`.
`Prefer: wait` asks for a synchronous answer (Replicate holds the request up to 60 s by default).
Docs: https://replicate.com/docs/topics/predictions/create-a-prediction (read 2026-11-27).

The token is read from the environment and kept out of every repr; this module does not poll
predictions that outlive the wait, nor read streams (a stream request returns `urls.stream`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import _env
from .._urls import check_http_url
from ..errors import InvalidArgumentError

REPLICATE_API = "https://api.replicate.com/v1"
# owner/name, optionally :version (a 64-hex id)
_MODEL = re.compile(
    r"^(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[A-Za-z0-9][\w.-]*)"
    r"(?::(?P<version>[0-9a-f]{64}))?$"
)


@dataclass(frozen=True)
class PredictionRequest:
    """An HTTP request for Replicate's predictions API; its repr never shows the token."""

    method: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    json: dict[str, Any]
    token_env: str = "REPLICATE_API_TOKEN"  # where the bearer token comes from

    def __repr__(self) -> str:
        names = ", ".join(self.headers)  # header names only: Authorization holds the token
        return (
            f"PredictionRequest(method={self.method!r}, url={self.url!r}, "
            f"headers=[{names}], json={self.json!r}, token_env={self.token_env!r})"
        )


def prediction_request(
    model: str,
    input: Mapping[str, Any],
    *,
    stream: bool = False,
    base_url: str = REPLICATE_API,
    api_token_env: str = "REPLICATE_API_TOKEN",
    require_token: bool = True,
) -> PredictionRequest:
    """Return the request that runs `model` ("owner/name" or "owner/name:version") on `input`.

    require_token=False builds the request without an Authorization header when the token is
    not set, to show its shape; send_prediction refuses to send it.
    """
    match = _MODEL.match(model) if isinstance(model, str) else None
    if match is None:
        raise InvalidArgumentError(
            f"model must be 'owner/name' (an official model, e.g. "
            f"'meta/meta-llama-3-8b-instruct') or 'owner/name:<64-hex "
            f"version>', got {model!r}."
        )
    if not isinstance(input, Mapping):
        raise InvalidArgumentError(
            f"input must be a dict of the model's inputs (e.g. "
            f"{{'prompt': 'Hello'}}), got {type(input).__name__}."
        )
    check_http_url(base_url, "base_url", REPLICATE_API)
    token = (
        _env.require_credential(api_token_env, f"Replicate ({model})")
        if require_token
        else _env.credential(api_token_env)
    )
    root = base_url.rstrip("/")
    body: dict[str, Any] = {"input": dict(input)}
    if match["version"]:
        url = f"{root}/predictions"
        body = {"version": model, **body}
    else:
        url = f"{root}/models/{match['owner']}/{match['name']}/predictions"
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if stream:
        body["stream"] = True  # the answer carries urls.stream, a server-sent-events URL
    else:
        headers["Prefer"] = "wait"
    return PredictionRequest("POST", url, headers, body, api_token_env)


def send_prediction(request: PredictionRequest, *, timeout_s: float = 90.0) -> dict[str, Any]:
    """Send a prediction request and return the prediction object Replicate answers with."""
    import httpx

    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise InvalidArgumentError(f"timeout_s must be > 0 seconds, got {timeout_s!r}.")
    if "Authorization" not in request.headers:  # built with require_token=False, token unset
        _env.require_credential(request.token_env, f"sending to Replicate ({request.url})")
    response = httpx.request(
        request.method,
        request.url,
        headers=dict(request.headers),
        json=request.json,
        timeout=timeout_s,
    )
    response.raise_for_status()  # httpx's message names the URL and status, never the headers
    return response.json()


def prediction_text(prediction: Mapping[str, Any]) -> str:
    """Return a language model's output as text (Replicate returns it as a list of pieces)."""
    status = prediction.get("status")
    if status != "succeeded":
        raise InvalidArgumentError(
            f"prediction {prediction.get('id')!r} has status {status!r}, not 'succeeded' "
            f"(error: {prediction.get('error')!r}); poll urls.get until it finishes, or send it "
            f"again with a longer wait."
        )
    output = prediction.get("output")
    return output if isinstance(output, str) else "".join(str(piece) for piece in output or ())
