"""OpenAI-compatible handlers: wire request in, engine call, wire response or SSE out.

The one place where wire fields become `SamplingParams`, and where deploykit's errors
become OpenAI-shaped error bodies with an HTTP status. Routes live in `app.py`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from ..errors import EngineOverloadedError, EngineStepError, EngineStoppedError, InvalidRequestError
from . import protocol as p
from .engine import Engine
from .metrics import ServerMetrics
from .request import GenerationStream
from .sampling import SamplingParams

log = logging.getLogger("deploykit.server")
ModelT = TypeVar("ModelT", bound=BaseModel)


class APIError(Exception):
    """An error that becomes an HTTP response in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param
        self.headers: Mapping[str, str] = headers or {}

    def body(self) -> dict:
        """Return {"error": {...}} as OpenAI sends it."""
        info = p.ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.status)
        return p.ErrorResponse(error=info).model_dump()


def to_api_error(exc: Exception, retry_after_s: int = 1) -> APIError:
    """Map an exception from validation or the engine to status, type and message."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        # a union reports each branch; those of another type only say "not a string", the
        # branch whose type matched says what is wrong
        err = next((e for e in errors if not e["type"].endswith("_type")), errors[0])
        loc = ".".join(str(part) for part in err["loc"])
        return APIError(
            400,
            f"{loc}: {err['msg']} (got {err.get('input')!r}); fix that field and resend.",
            "invalid_request_error",
            param=loc or None,
        )
    if isinstance(exc, InvalidRequestError):
        return APIError(400, str(exc), "invalid_request_error", param=exc.param)
    if isinstance(exc, EngineOverloadedError):
        return APIError(
            503, str(exc), "overloaded_error", headers={"Retry-After": str(retry_after_s)}
        )
    if isinstance(exc, EngineStoppedError):
        return APIError(
            503, str(exc), "service_unavailable_error", headers={"Retry-After": str(retry_after_s)}
        )
    if isinstance(exc, EngineStepError):
        return APIError(500, str(exc), "server_error")
    return APIError(
        500,
        f"internal error ({type(exc).__name__}); the server log has the traceback.",
        "server_error",
    )


async def read_body(request, limit_bytes: int) -> bytes:
    """Read the body, refusing (413) as soon as it is over limit_bytes."""
    declared = request.headers.get("content-length")
    too_big = APIError(
        413,
        f"the request body is over {limit_bytes} bytes; shorten the prompt "
        "or start the server with a larger --max-body-bytes.",
        "invalid_request_error",
    )
    if declared and declared.isdigit() and int(declared) > limit_bytes:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def add_error_handlers(app) -> None:
    """Make every error of app an OpenAI-shaped JSON body (never FastAPI's 422 or HTML)."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    async def on_known(request, exc: Exception):
        return respond(to_api_error(exc))

    async def on_http(request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        # keep the router's headers: a 405 must say in Allow which methods the path takes
        return respond(
            APIError(
                exc.status_code,
                f"{exc.detail}: {request.method} "
                f"{request.url.path}; see GET /v1/models and OpenAI's API "
                "reference for the routes.",
                kind,
                headers=exc.headers,
            )
        )

    async def on_unexpected(request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return respond(to_api_error(exc))

    for kind in (
        APIError,
        ValidationError,
        InvalidRequestError,
        EngineOverloadedError,
        EngineStoppedError,
        EngineStepError,
    ):
        app.add_exception_handler(kind, on_known)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def parse_body(raw: bytes, model: type[ModelT]) -> ModelT:
    """Parse a JSON object into model, or raise APIError(400) saying what is wrong."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(
            400,
            f"the body is not valid JSON ({exc}); send a JSON object such as "
            '{"model": "...", "prompt": "Hello"}.',
            "invalid_request_error",
        ) from None
    if not isinstance(data, dict):
        raise APIError(
            400,
            f"the body must be a JSON object, got {type(data).__name__}.",
            "invalid_request_error",
        )
    if b"\\u" in raw:
        try:  # a lone surrogate escape ("\ud800") is valid JSON but no text a tokenizer takes
            json.dumps(data, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise APIError(
                400,
                "the body holds an unpaired UTF-16 surrogate escape (\\ud800 to "
                "\\udfff); send valid Unicode text.",
                "invalid_request_error",
            ) from None
    return model.model_validate(data)


def _sse(payload: BaseModel | dict | str) -> str:
    if isinstance(payload, BaseModel):
        payload = payload.model_dump_json(exclude_none=False)
    elif isinstance(payload, dict):
        payload = json.dumps(payload)
    return f"data: {payload}\n\n"


def check_token_ids(ids: list[int], vocab_size: int, param: str) -> None:
    """Raise APIError(400) unless every id is in [0, vocab_size) (they index the logits)."""
    if any(not 0 <= t < vocab_size for t in ids):
        raise APIError(
            400,
            f"{param} must hold token ids in [0, {vocab_size}).",
            "invalid_request_error",
            param=param,
        )


def prompt_ids(tokenizer, prompt: str | list[int] | list[str]) -> list[int]:
    """Return the token ids of a completion prompt (text, or token ids as they are).

    The wire model already refused an empty prompt and a list of several texts.
    """
    if isinstance(prompt, list) and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer(prompt).input_ids
    check_token_ids(prompt, len(tokenizer), "prompt")
    return list(prompt)


class _ChatTurn(Protocol):
    """A chat message as chat_ids reads it: OpenAI's ChatMessage or Ollama's Message."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str | list[p.TextPart] | None: ...


def chat_ids(tokenizer, messages: Sequence[_ChatTurn]) -> list[int]:
    """Return the token ids of chat messages formatted with the model's chat template."""
    plain = []
    for msg in messages:
        content = msg.content or ""
        if isinstance(content, list):  # text parts only: the wire model refuses other parts
            content = "".join(part.text for part in content)
        plain.append({"role": msg.role, "content": content})
    # messages may all be empty: the template still makes a prompt
    text = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
    # the template already holds BOS; adding it again would change the prompt
    return tokenizer(text, add_special_tokens=False).input_ids


_GREEDY_BELOW = 1e-5  # a temperature or top_p under this decodes greedily


def sampling_params(
    req: p.CompletionRequest | p.ChatCompletionRequest,
    max_tokens: int | None,
    prompt_len: int,
    context_length: int,
) -> SamplingParams:
    """Translate the wire fields into engine parameters (the only place that does)."""
    if max_tokens is None:
        max_tokens = max(context_length - prompt_len, 1)
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    temperature = 1.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    if temperature < _GREEDY_BELOW or top_p < _GREEDY_BELOW:
        # only the likeliest token is left, and sampling it would divide by ~0 (NaN
        # probabilities that fail the whole batch's step): decode greedily (vLLM also
        # takes a temperature under 1e-5 as greedy)
        temperature = 0.0
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=max(req.top_k or 0, 0),
            seed=req.seed,
            stop=stop,
            stop_token_ids=tuple(req.stop_token_ids or ()),
            min_tokens=min(req.min_tokens, max_tokens),
            ignore_eos=req.ignore_eos,
            repetition_penalty=req.repetition_penalty or 1.0,
        )
    except InvalidRequestError as exc:
        raise to_api_error(exc) from exc


class BaseServing:
    """What every dialect's handlers share: one engine, one served model name, the metrics.

    The engine records the generation metrics itself (`ServerMetrics.on_step`), so handlers
    of every dialect are measured alike.
    """

    def __init__(
        self, engine: Engine, model_name: str, metrics: ServerMetrics, retry_after_s: int = 1
    ) -> None:
        self.engine = engine
        self.model_name = model_name
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        self.tokenizer = engine.lm.tokenizer

    def _start(self, ids: list[int], params: SamplingParams, stream: bool) -> GenerationStream:
        try:
            return self.engine.generate(ids, params, stream=stream)
        except Exception as exc:
            raise to_api_error(exc, self.retry_after_s) from exc


class OpenAIServing(BaseServing):
    """Completions, chat, models and tokenize over one engine and one served model name."""

    def models(self) -> p.ModelList:
        """Return the one served model."""
        return p.ModelList(
            data=[p.ModelCard(id=self.model_name, max_model_len=self.engine.context_length)]
        )

    def tokenize(self, req: p.TokenizeRequest) -> p.TokenizeResponse:
        """Return the token ids of a prompt or of chat messages."""
        if req.model is not None:
            self._check_model(req.model)
        if (req.prompt is None) == (req.messages is None):
            raise APIError(
                400,
                "send exactly one of 'prompt' or 'messages'.",
                "invalid_request_error",
                param="prompt",
            )
        if req.messages is not None:
            ids = chat_ids(self.tokenizer, req.messages)
        else:
            ids = self.tokenizer(req.prompt, add_special_tokens=req.add_special_tokens).input_ids
        return p.TokenizeResponse(
            tokens=ids, count=len(ids), max_model_len=self.engine.context_length
        )

    async def completions(self, req: p.CompletionRequest):
        """Return a CompletionResponse, or an SSE text iterator when req.stream."""
        self._check_model(req.model)
        ids = prompt_ids(self.tokenizer, req.prompt)
        params = self._params(req, req.max_tokens, ids)
        gen = self._start(ids, params, req.stream)

        def chunk(text: str, finish: str | None, usage: p.Usage | None = None):
            choices = [] if usage else [p.CompletionChoice(text=text, finish_reason=finish)]
            return p.CompletionResponse(id=rid, model=self.model_name, choices=choices, usage=usage)

        rid = f"cmpl-{gen.request_id}"
        if req.stream:
            return self._stream(gen, chunk, req.stream_options, first=None)
        out = await self._collect(gen)
        text = (req.prompt if req.echo and isinstance(req.prompt, str) else "") + out[0]
        return p.CompletionResponse(
            id=rid,
            model=self.model_name,
            usage=out[2],
            choices=[p.CompletionChoice(text=text, finish_reason=out[1])],
        )

    async def chat(self, req: p.ChatCompletionRequest):
        """Return a ChatCompletionResponse, or an SSE text iterator when req.stream."""
        self._check_model(req.model)
        ids = chat_ids(self.tokenizer, req.messages)
        params = self._params(req, req.max_completion_tokens or req.max_tokens, ids)
        gen = self._start(ids, params, req.stream)
        rid = f"chatcmpl-{gen.request_id}"

        def chunk(
            text: str | None,
            finish: str | None,
            usage: p.Usage | None = None,
            role: Literal["assistant"] | None = None,
        ):
            choices = (
                []
                if usage
                else [
                    p.ChatChunkChoice(
                        delta=p.DeltaMessage(role=role, content=text), finish_reason=finish
                    )
                ]
            )
            return p.ChatCompletionChunk(
                id=rid, model=self.model_name, choices=choices, usage=usage
            )

        if req.stream:
            first = chunk("", None, role="assistant")
            return self._stream(gen, chunk, req.stream_options, first=first)
        text, finish, usage = await self._collect(gen)
        return p.ChatCompletionResponse(
            id=rid,
            model=self.model_name,
            usage=usage,
            choices=[
                p.ChatChoice(message=p.ChatResponseMessage(content=text), finish_reason=finish)
            ],
        )

    # ---- helpers ----------------------------------------------------------------------

    def _check_model(self, name: str) -> None:
        if name != self.model_name and name not in p.TGI_PLACEHOLDER_MODELS:
            raise APIError(
                404,
                f"The model {name!r} does not exist on this server; it serves "
                f"{self.model_name!r} (see GET /v1/models).",
                "not_found_error",
                param="model",
            )

    def _params(
        self,
        req: p.CompletionRequest | p.ChatCompletionRequest,
        max_tokens: int | None,
        ids: list[int],
    ) -> SamplingParams:
        context = self.engine.context_length
        for name in ("max_tokens", "max_completion_tokens"):
            # every one given keeps the OpenAPI document's bound (`openapi._fill_limits`), the
            # one not used too; what fits beside this prompt is `sampling.check_fits`'s
            value = getattr(req, name, None)
            if value is not None and value >= context:
                raise APIError(
                    400,
                    f"{name}={value} is more than this model's context ({context}) minus one "
                    f"prompt token; send at most {context - 1}.",
                    "invalid_request_error",
                    param=name,
                )
        vocab = len(self.tokenizer)
        stop_ids = req.stop_token_ids or []
        check_token_ids(stop_ids, vocab, "stop_token_ids")
        # until min_tokens, EOS and stop_token_ids are banned: banning every token leaves
        # nothing to sample (NaN probabilities that fail the whole batch's step)
        if req.min_tokens and len({*stop_ids, *self.engine.eos_token_ids}) >= vocab:
            raise APIError(
                400,
                "stop_token_ids and EOS cover the whole vocabulary, so no "
                "token is left to generate before min_tokens; send fewer ids.",
                "invalid_request_error",
                param="stop_token_ids",
            )
        return sampling_params(req, max_tokens, len(ids), self.engine.context_length)

    async def _collect(self, gen: GenerationStream) -> tuple[str, str | None, p.Usage]:
        parts, finish, out = [], None, None
        try:
            async with gen:
                async for out in gen:
                    parts.append(out.text)
                    finish = out.finish_reason
        except Exception as exc:
            raise to_api_error(exc, self.retry_after_s) from exc
        assert out is not None  # a stream ends with a finished output, or raises
        usage = p.Usage(
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            total_tokens=out.prompt_tokens + out.completion_tokens,
        )
        return "".join(parts), finish, usage

    async def _stream(self, gen: GenerationStream, chunk, options, first) -> AsyncIterator[str]:
        """Yield SSE events; a failure midway becomes an error event, then [DONE]."""
        out = None
        try:
            async with gen:
                if first is not None:
                    yield _sse(first)
                async for out in gen:
                    yield _sse(chunk(out.text, out.finish_reason))
            if options is not None and options.include_usage and out is not None:
                usage = p.Usage(
                    prompt_tokens=out.prompt_tokens,
                    completion_tokens=out.completion_tokens,
                    total_tokens=out.prompt_tokens + out.completion_tokens,
                )
                yield _sse(chunk(None, None, usage=usage))
        except Exception as exc:
            yield _sse(to_api_error(exc, self.retry_after_s).body())
        yield "data: [DONE]\n\n"
