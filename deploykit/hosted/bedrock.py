"""AWS Bedrock's Converse API: build the request from chat messages, read text and usage back.

`converse_request` returns the keyword arguments of boto3's `bedrock-runtime` `converse`, so a
call is `bedrock_client().converse(**converse_request(...))`. The tests check the request
against botocore's service model with a Stubber; nothing here sends a request by itself.
Credentials are boto3's business (environment, ~/.aws, SSO, instance roles); deploykit never
reads them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidArgumentError, MissingCredentialError

_ROLES = ("user", "assistant")


def _text_blocks(content: Any, where: str) -> list[dict]:
    # content: "text" | [{"text": ...}, ...] | [{"type": "text", "text": ...}, ...] (OpenAI parts)
    if isinstance(content, str):
        blocks = [content]
    elif (
        isinstance(content, Sequence)
        and content
        and all(isinstance(b, Mapping) and isinstance(b.get("text"), str) for b in content)
    ):
        blocks = [b["text"] for b in content]
    else:
        raise InvalidArgumentError(
            f"{where} content must be a string or a list of "
            f"{{'text': ...}} blocks, got {content!r}."
        )
    if not all(blocks):
        raise InvalidArgumentError(f"{where} content is empty; Bedrock rejects empty text blocks.")
    return [{"text": text} for text in blocks]


def _unit_interval(name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise InvalidArgumentError(
            f"{name} must be a number in [0, 1] for Bedrock Converse, got {value!r}."
        )


def converse_request(
    model_id: str,
    messages: str | Sequence[Mapping[str, Any]],
    *,
    system: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: str | Sequence[str] | None = None,
) -> dict:
    """Return the kwargs of bedrock-runtime `converse` for OpenAI-style chat messages.

    messages: a prompt string, or [{"role": "user"|"assistant"|"system", "content": str}, ...];
    system-role messages join `system` (Converse takes the system prompt apart from the turns).
    """
    if not isinstance(model_id, str) or not model_id.strip():
        raise InvalidArgumentError(
            "model_id must be a Bedrock model or inference-profile id, e.g. "
            "'anthropic.claude-haiku-4-5-20251001-v1:0'."
        )
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    system_texts: list[Any] = [] if system is None else [system]  # checked by _text_blocks
    turns = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "system":
            system_texts.append(message.get("content"))
            continue
        if role not in _ROLES:
            raise InvalidArgumentError(
                f"messages[{i}] role must be one of user, assistant, system; got {role!r}."
            )
        turns.append(
            {"role": role, "content": _text_blocks(message.get("content"), f"messages[{i}]")}
        )
    if not turns or turns[0]["role"] != "user":
        raise InvalidArgumentError(
            "messages must hold at least one turn and start with a user "
            "turn (Converse rejects a conversation that does not)."
        )
    request: dict[str, Any] = {"modelId": model_id, "messages": turns}
    if system_texts:
        request["system"] = [
            block
            for i, text in enumerate(system_texts)
            for block in _text_blocks(text, f"system[{i}]")
        ]
    config: dict[str, Any] = {}
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidArgumentError(f"max_tokens must be an int >= 1, got {max_tokens!r}.")
        config["maxTokens"] = max_tokens
    _unit_interval("temperature", temperature)
    _unit_interval("top_p", top_p)
    if temperature is not None:
        config["temperature"] = float(temperature)
    if top_p is not None:
        config["topP"] = float(top_p)
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else list(stop)
        if not all(isinstance(s, str) and s for s in stops):
            raise InvalidArgumentError(
                f"stop must be a non-empty string or a list of them, got {stop!r}."
            )
        config["stopSequences"] = stops
    if config:
        request["inferenceConfig"] = config
    return request


def converse_text(response: Mapping[str, Any]) -> str:
    """Return the text of a `converse` response (text blocks joined, tool-use blocks skipped)."""
    try:
        content = response["output"]["message"]["content"]
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            "response is not a Converse response (no output.message."
            "content); pass what client.converse(...) returned."
        ) from None
    return "".join(block["text"] for block in content if "text" in block)


def converse_usage(response: Mapping[str, Any]) -> dict[str, int | float | str]:
    """Return tokens in and out, the stop reason and server-side latency of a `converse` call."""
    try:
        usage, metrics = response["usage"], response["metrics"]
        return {
            "input_tokens": usage["inputTokens"],
            "output_tokens": usage["outputTokens"],
            "total_tokens": usage["totalTokens"],
            "stop_reason": response["stopReason"],
            "latency_ms": metrics["latencyMs"],
        }
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            "response is not a Converse response (usage, metrics and "
            "stopReason are required); pass what client.converse(...) "
            "returned."
        ) from None


def bedrock_client(
    region_name: str = "us-east-1", *, timeout_s: float = 60.0, require_credentials: bool = True
):
    """Return a boto3 `bedrock-runtime` client; raise MissingCredentialError if boto3 finds none."""
    import boto3
    from botocore.config import Config

    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise InvalidArgumentError(f"timeout_s must be > 0 seconds, got {timeout_s!r}.")
    session = boto3.Session(region_name=region_name)
    if require_credentials and session.get_credentials() is None:
        raise MissingCredentialError(
            "boto3 found no AWS credentials for Bedrock. Set them in the shell that starts "
            "Jupyter, then restart the kernel: `export AWS_ACCESS_KEY_ID=... "
            "AWS_SECRET_ACCESS_KEY=...`, or `export AWS_PROFILE=<profile>` after `aws configure` "
            "or `aws sso login`."
        )
    return session.client(
        "bedrock-runtime",
        config=Config(read_timeout=timeout_s, connect_timeout=min(timeout_s, 10.0)),
    )
