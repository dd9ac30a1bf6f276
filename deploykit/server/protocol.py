"""Wire models of the OpenAI-compatible API (requests are validated here, nothing runs).

Field names and defaults follow OpenAI's API; the extra sampling fields (top_k,
min_tokens, ignore_eos, stop_token_ids, repetition_penalty) follow vLLM's extensions.
Unknown fields are ignored, as OpenAI's SDKs may send fields a given server does not know.

The server's OpenAPI document is built from the request models' JSON schemas, so what a
schema declares the server enforces: here, or in `serving.py` where a rule spans fields or
needs the loaded model. Bounds set by the model (its name, vocabulary and context length)
are marked SERVER_LIMIT in the schemas, and `app.py` writes in the numbers.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

SERVER_LIMIT = "x-deploykit-limit"  # schema key app.py replaces with this server's bound

NonEmptyStr = Annotated[str, Field(min_length=1)]
# a server serves one model; any other name is a 404, except the placeholders TGI's clients
# send, which TGI accepts (it ignores "model"): "tgi" (TGI's documented value, which OpenAI
# clients pointed at TGI and older huggingface_hub send) and "dummy" (huggingface_hub's
# InferenceClient(base_url).chat_completion since 0.3x)
TGI_PLACEHOLDER_MODELS = ("tgi", "dummy")
ModelName = Annotated[str, Field(json_schema_extra={SERVER_LIMIT: "model"})]
# ids are checked against the vocabulary in serving.py, which indexes logits with them
TokenId = Annotated[int, Field(ge=0, json_schema_extra={SERVER_LIMIT: "token_id"})]
# prompt + max_tokens must fit the context, which serving.py checks once the prompt is tokenized
MaxTokens = Annotated[int, Field(ge=1, json_schema_extra={SERVER_LIMIT: "max_tokens"})]


class _Request(BaseModel):
    # strict: "16" is not an int and "true" is not a bool (ints still pass as floats)
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Request):
    """Options of a streamed response."""

    include_usage: bool = False


class _SamplingFields(_Request):
    model: ModelName
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # torch takes 64 bits
    stop: NonEmptyStr | list[NonEmptyStr] | None = None
    stop_token_ids: list[TokenId] | None = None
    min_tokens: int = Field(default=0, ge=0)
    ignore_eos: bool = False
    repetition_penalty: float | None = Field(default=None, ge=0.01, le=10.0)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


class CompletionRequest(_SamplingFields):
    """Body of POST /v1/completions."""

    # one prompt: text, token ids, or a list holding one text
    prompt: (
        NonEmptyStr
        | Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[list[NonEmptyStr], Field(min_length=1, max_length=1)]
    )
    max_tokens: MaxTokens | None = 16
    echo: bool = False


class TextPart(_Request):
    """One part of a message's content; only text parts exist for these models."""

    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    """One chat message; content may be text or OpenAI's list of text parts."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[TextPart] | None = None


class ChatCompletionRequest(_SamplingFields):
    """Body of POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None


class TokenizeRequest(_Request):
    """Body of POST /tokenize: a prompt, or chat messages to format with the template."""

    # exactly one of prompt and messages (serving.py checks it)
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
                {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
            ]
        }
    )
    model: ModelName | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    add_special_tokens: bool = True


# ---- responses (built by us, so not strict) ---------------------------------------------


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class Usage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    """One completion."""

    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    """Body of a non-streamed completion, and of each streamed chunk."""

    id: str = Field(default_factory=lambda: _id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatResponseMessage(BaseModel):
    """The assistant's message of a non-streamed chat completion."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """One chat completion."""

    index: int = 0
    message: ChatResponseMessage
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    """Body of a non-streamed chat completion."""

    id: str = Field(default_factory=lambda: _id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(BaseModel):
    """What a streamed chat chunk adds to the message."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    """One choice of a streamed chat chunk."""

    index: int = 0
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    """One entry of GET /v1/models."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "deploykit"
    max_model_len: int


class ModelList(BaseModel):
    """Body of GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeResponse(BaseModel):
    """Body of POST /tokenize."""

    tokens: list[int]
    count: int
    max_model_len: int


class HealthResponse(BaseModel):
    """Body of GET /health."""

    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    """Body of GET /ready: 200 when ready, 503 once draining or the engine has stopped."""

    ready: bool
    draining: bool


class ErrorInfo(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: int | str | None = None


class ErrorResponse(BaseModel):
    """Body of every error response, and of the error event of a failed stream."""

    error: ErrorInfo
