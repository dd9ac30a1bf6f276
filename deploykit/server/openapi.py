"""The server's OpenAPI document (/openapi.json), from the wire models in `protocol.py`.

The routes read their bodies raw (so that a malformed one is a 400 in OpenAI's shape, not
FastAPI's 422), so FastAPI sees no body parameter: each route declares its body and error
responses with `body` and `responses`, and `complete` adds the request models, with this
server's own limits (its model name, vocabulary and context length), and the API key.
"""

from __future__ import annotations

from pydantic.json_schema import models_json_schema

from . import protocol as p

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})  # no API key needed

_REQUEST_MODELS = (p.CompletionRequest, p.ChatCompletionRequest, p.TokenizeRequest)

ERROR_WHEN = {  # the statuses the routes answer with an ErrorResponse, and when
    400: "The body is not a JSON object, a field has the wrong type or is out of range, or "
    "the prompt and max_tokens do not fit the model's context.",
    401: "The API key is missing or wrong.",
    404: "The model named is not the one this server serves (see GET /v1/models).",
    413: "The body is longer than the server's --max-body-bytes.",
    503: "Too many requests wait, or the server is shutting down; retry after Retry-After "
    "seconds (on another replica when shutting down).",
}

# with stream=true; before Open API 3.2's itemSchema, the schema of an event stream is that of
# one event (fields data, event, id, retry)
_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "description": "one chunk's JSON per step (the 200's JSON schema; a "
                    "chat chunk has `delta` for `message`), an ErrorResponse's if generation fails midway, "
                    "then `[DONE]`",
                }
            },
        }
    }
}


def body(model: type[p.BaseModel]) -> dict:
    """Return openapi_extra declaring model as the route's JSON body (read raw by the route)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def responses(ok: type[p.BaseModel], *errors: int, stream: bool = False) -> dict:
    """Return FastAPI's responses= for a 200 of model ok and ErrorResponses of errors."""
    out: dict = {200: {"model": ok, "content": _STREAM if stream else {}}}
    for status in errors:
        out[status] = {"model": p.ErrorResponse, "description": ERROR_WHEN[status]}
    if 503 in out:
        out[503]["headers"] = {
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer"},
            }
        }
    return out


def _fill_limits(node, limits: dict[str, dict]) -> None:
    """Replace each protocol.SERVER_LIMIT mark under node with this server's bound."""
    if isinstance(node, dict):
        kind = node.pop(p.SERVER_LIMIT, None)
        if kind is not None:
            node.update(limits[kind])
        for value in node.values():
            _fill_limits(value, limits)
    elif isinstance(node, list):
        for value in node:
            _fill_limits(value, limits)


def complete(
    doc: dict, model_name: str, vocab_size: int, context_length: int, guarded: bool
) -> None:
    """Add the request models (with this server's limits) and, if guarded, the API key."""
    _, defs = models_json_schema(
        [(m, "validation") for m in _REQUEST_MODELS], ref_template="#/components/schemas/{model}"
    )
    _fill_limits(
        defs,
        {
            "model": {"enum": list(dict.fromkeys([model_name, *p.TGI_PLACEHOLDER_MODELS]))},
            "token_id": {"maximum": vocab_size - 1},
            # the prompt takes at least one token of the context
            "max_tokens": {
                "maximum": context_length - 1,
                "description": "at most "
                f"{context_length} (the context length) minus the prompt's tokens",
            },
        },
    )
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update(defs["$defs"])
    if guarded:
        components["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
        error = {"$ref": "#/components/schemas/ErrorResponse"}
        for path, item in doc["paths"].items():
            for operation in item.values() if path not in OPEN_PATHS else ():
                operation["security"] = [{"apiKey": []}]
                operation["responses"]["401"] = {
                    "description": ERROR_WHEN[401],
                    "content": {"application/json": {"schema": error}},
                }
