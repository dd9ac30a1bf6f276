"""Hugging Face TGI's API on deploykit's engine: /generate, /generate_stream, / and /info.

The wire models follow TGI's router (its OpenAPI document and `huggingface_hub`'s
generated types); this module is the one place where TGI's `parameters` become
`SamplingParams` and deploykit's errors become TGI's `{"error", "error_type"}` bodies
(422 validation, 424 generation, 429 overloaded). The routes are added in `app.py`
beside the OpenAI ones, over the same engine.

What differs from TGI itself, on purpose or for lack of the feature:
- `generated_text` ends before a stop sequence (as OpenAI's API and vLLM do); TGI keeps it.
- Parameters this engine does not implement (best_of > 1, grammar, typical_p, watermark,
  top_n_tokens, frequency_penalty, decoder_input_details, adapter_id) are a 422 that
  names them, never silently ignored.
- Token logprobs are the model's own distribution (before temperature and top-k/top-p).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from .._version import __version__
from ..errors import InvalidArgumentError
from .detok import IncrementalDetokenizer
from .request import RequestOutput
from .sampling import SamplingParams
from .serving import APIError, BaseServing, to_api_error

MAX_STOP_SEQUENCES = 4  # TGI's --max-stop-sequences default


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class GenerateParameters(_Strict):
    """TGI's `parameters` object; None keeps TGI's default (huggingface_hub sends nulls)."""

    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, gt=0.0)
    top_p: float | None = Field(default=None, gt=0.0, lt=1.0)
    top_k: int | None = Field(default=None, gt=0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    stop: list[str] | None = Field(default=None, max_length=MAX_STOP_SEQUENCES)
    seed: int | None = Field(default=None, ge=0, le=2**64 - 1)
    do_sample: bool | None = None
    details: bool | None = None
    return_full_text: bool | None = None
    truncate: int | None = Field(default=None, ge=1)
    # accepted on the wire, refused in translation unless left at their defaults
    best_of: int | None = Field(default=None, ge=1)
    decoder_input_details: bool | None = None
    frequency_penalty: float | None = None
    grammar: dict | None = None
    top_n_tokens: int | None = None
    typical_p: float | None = None
    watermark: bool | None = None
    adapter_id: str | None = None


class GenerateRequest(_Strict):
    """Body of POST /generate, /generate_stream and / (which streams when stream is true)."""

    inputs: str = Field(min_length=1)
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: bool | None = False


class Token(BaseModel):
    """One generated token as TGI reports it."""

    id: int
    text: str
    logprob: float
    special: bool


class Details(BaseModel):
    """`details` of a non-streamed response."""

    finish_reason: str  # length | eos_token | stop_sequence
    generated_tokens: int
    seed: int | None
    prefill: list[Token] = []
    tokens: list[Token]


class GenerateResponse(BaseModel):
    """Body of POST /generate."""

    generated_text: str
    details: Details | None = None


class StreamDetails(BaseModel):
    """`details` of the last streamed event."""

    finish_reason: str
    generated_tokens: int
    seed: int | None
    input_length: int


class StreamEvent(BaseModel):
    """One server-sent event of /generate_stream: one token; the last has text and details."""

    index: int
    token: Token
    top_tokens: None = None
    generated_text: str | None = None
    details: StreamDetails | None = None


class Info(BaseModel):
    """Body of GET /info (the fields TGI's clients read)."""

    model_id: str
    model_sha: str | None = None
    model_pipeline_tag: str = "text-generation"
    max_concurrent_requests: int
    max_best_of: int = 1
    max_stop_sequences: int = MAX_STOP_SEQUENCES
    max_input_tokens: int
    max_total_tokens: int
    validation_workers: int = 1
    max_client_batch_size: int = 1
    router: str = "deploykit"
    version: str = __version__
    sha: str | None = None
    docker_label: str | None = None


_UNSUPPORTED = {  # parameter -> its value that asks for nothing (anything else is refused)
    "best_of": (None, 1),
    "decoder_input_details": (None, False),
    "frequency_penalty": (None, 0.0),
    "grammar": (None,),
    "top_n_tokens": (None, 0),
    "typical_p": (None, 1.0),
    "watermark": (None, False),
    "adapter_id": (None,),
}


def _validation(message: str) -> APIError:
    return APIError(422, f"Input validation error: {message}", "validation")


def sampling_params(
    params: GenerateParameters, prompt_len: int, max_total_tokens: int
) -> tuple[SamplingParams, int | None]:
    """Translate TGI's parameters into engine parameters; return them and the seed used.

    As in TGI, any of temperature, top_k or top_p turns sampling on even when do_sample is
    not set; a sampled request without a seed gets a random one, reported in details.
    """
    unsupported = [name for name, fine in _UNSUPPORTED.items() if getattr(params, name) not in fine]
    if unsupported:
        raise _validation(
            f"deploykit's TGI routes do not implement {', '.join(unsupported)}; "
            "remove them (TGI itself accepts them), or send the request to a TGI "
            "server."
        )
    if any(not s for s in params.stop or ()):
        raise _validation("`stop` sequences must not be empty strings.")
    sampled = bool(params.do_sample) or any(
        v is not None for v in (params.temperature, params.top_k, params.top_p)
    )
    # as TGI's router: no max_new_tokens means the rest of the token budget
    max_new = params.max_new_tokens or max(max_total_tokens - prompt_len, 1)
    if prompt_len + max_new > max_total_tokens:
        raise _validation(
            f"`inputs` tokens + `max_new_tokens` must be <= {max_total_tokens}. "
            f"Given: {prompt_len} `inputs` tokens and {max_new} `max_new_tokens`; "
            "shorten the inputs, lower max_new_tokens, or set `truncate`."
        )
    seed = params.seed if params.seed is not None or not sampled else random.getrandbits(63)
    try:
        engine_params = SamplingParams(
            max_tokens=max_new,
            temperature=(params.temperature or 1.0) if sampled else 0.0,
            top_p=params.top_p or 1.0,
            top_k=params.top_k or 0,
            seed=seed,
            stop=tuple(params.stop or ()),
            repetition_penalty=params.repetition_penalty or 1.0,
            logprobs=True,
        )
    except Exception as exc:
        raise _validation(str(exc)) from exc
    return engine_params, seed


def finish_reason(out: RequestOutput) -> str:
    """Return TGI's finish reason for the engine's last output."""
    if out.finish_reason == "length":
        return "length"
    return "stop_sequence" if out.stop_reason is not None else "eos_token"


def error_body(exc: Exception, retry_after_s: int = 1) -> tuple[int, dict, Mapping[str, str]]:
    """Return (status, TGI error body, headers) for any exception of a TGI route."""
    err = to_api_error(exc, retry_after_s)
    if err.type == "validation":  # raised here, already in TGI's terms
        status, kind = 422, "validation"
    elif err.status in (400, 404):  # the body or the model is wrong: TGI says 422
        status, kind = 422, "validation"
    elif err.type == "overloaded_error":
        status, kind = 429, "overloaded"
    elif err.status == 503:  # shutting down: a 503 that a load balancer retries elsewhere
        status, kind = 503, "overloaded"
    elif err.status == 500:
        status, kind = 424, "generation"
    else:
        status, kind = err.status, "validation"
    message = err.message
    if status == 422 and not message.startswith("Input validation error"):
        message = f"Input validation error: {message}"
    return status, {"error": message, "error_type": kind}, err.headers


@dataclass(frozen=True)
class TGILimits:
    """TGI's token budget (text-generation-launcher's flags of the same names); None: the model's.

    max_total_tokens counts the prompt plus the generated tokens; max_input_tokens is the
    longest prompt. The TGI routes enforce both, as TGI's router does, and /info reports them.
    """

    max_input_tokens: int | None = None
    max_total_tokens: int | None = None

    def __post_init__(self) -> None:
        inp, total = self.max_input_tokens, self.max_total_tokens
        if any(v is not None and v < 1 for v in (inp, total)):
            raise InvalidArgumentError(
                f"TGI limits must be positive token counts; got max_input_tokens={inp}, "
                f"max_total_tokens={total}."
            )
        if inp is not None and total is not None and inp >= total:
            raise InvalidArgumentError(
                f"max_input_tokens={inp} >= max_total_tokens={total}: max_total_tokens counts "
                f"the prompt plus the generated tokens, so it must be larger, e.g. {inp + 512}."
            )

    def resolve(self, context_length: int) -> tuple[int, int]:
        """Return (max_input_tokens, max_total_tokens) for a model of context_length tokens."""
        total = self.max_total_tokens or context_length
        if total > context_length:
            raise InvalidArgumentError(
                f"max_total_tokens={total} is more than the model's context length "
                f"({context_length} tokens); lower it to at most {context_length}."
            )
        inp = self.max_input_tokens or total - 1
        if inp >= total:
            raise InvalidArgumentError(
                f"max_input_tokens={inp} >= max_total_tokens={total} (the model's context "
                f"length); lower max_input_tokens below {total}."
            )
        return inp, total


class TGIServing(BaseServing):
    """TGI's generate, generate_stream and info over one engine."""

    def __init__(self, *args, limits: TGILimits = TGILimits(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_input_tokens, self.max_total_tokens = limits.resolve(self.engine.context_length)

    def info(self) -> Info:
        """Return what GET /info reports: the model and this server's limits."""
        cfg = self.engine.config
        return Info(
            model_id=self.model_name,
            max_input_tokens=self.max_input_tokens,
            max_total_tokens=self.max_total_tokens,
            max_concurrent_requests=cfg.max_batch_size + cfg.max_waiting,
        )

    def _prepare(self, req: GenerateRequest) -> tuple[list[int], SamplingParams, int | None]:
        ids = self.tokenizer(req.inputs).input_ids
        if req.parameters.truncate is not None:
            ids = ids[-req.parameters.truncate :]  # TGI keeps the end of the inputs
        if len(ids) > self.max_input_tokens:  # TGI's router: ValidationError::InputLength
            raise _validation(
                f"`inputs` must have less than {self.max_input_tokens} tokens. Given: "
                f"{len(ids)}; shorten the inputs, or set `truncate`."
            )
        params, seed = sampling_params(req.parameters, len(ids), self.max_total_tokens)
        return ids, params, seed

    def _tokens(self, prompt_ids: list[int], ids: list[int], logprobs: list[float]) -> list[Token]:
        special = set(self.tokenizer.all_special_ids)
        detok = IncrementalDetokenizer(self.tokenizer, prompt_ids)
        return [
            Token(id=i, text=detok.add([i]), logprob=lp, special=i in special)
            for i, lp in zip(ids, logprobs)
        ]

    async def generate(self, req: GenerateRequest) -> GenerateResponse:
        """Return the whole generation (with details when asked)."""
        ids, params, seed = self._prepare(req)
        gen = self._start(ids, params, stream=False)
        text, out_ids, logprobs, last = "", [], [], None
        async with gen:
            async for last in gen:
                text += last.text
                out_ids += last.token_ids
                logprobs += last.logprobs or []
        details = None
        if req.parameters.details:
            assert last is not None  # a stream ends with a finished output, or raises
            details = Details(
                finish_reason=finish_reason(last),
                generated_tokens=len(out_ids),
                seed=seed,
                tokens=self._tokens(ids, out_ids, logprobs),
            )
        full = req.inputs + text if req.parameters.return_full_text else text
        return GenerateResponse(generated_text=full, details=details)

    async def generate_stream(self, req: GenerateRequest) -> AsyncIterator[str]:
        """Return SSE events, one per token; a failure midway becomes an error event."""
        ids, params, seed = self._prepare(req)
        gen = self._start(ids, params, stream=True)
        return self._events(req, ids, gen, seed)

    async def _events(
        self, req: GenerateRequest, prompt_ids: list[int], gen, seed: int | None
    ) -> AsyncIterator[str]:
        special = set(self.tokenizer.all_special_ids)
        index, text = 0, ""
        try:
            async with gen:
                async for out in gen:
                    text += out.text
                    pairs = list(zip(out.token_ids, out.logprobs or [0.0] * len(out.token_ids)))
                    for n, (token_id, logprob) in enumerate(pairs):
                        index += 1
                        final = out.finish_reason is not None and n == len(pairs) - 1
                        event = StreamEvent(
                            index=index,
                            token=Token(
                                # a step's text goes with its last token (earlier ones may be
                                # parts of one character)
                                id=token_id,
                                text=out.text if n == len(pairs) - 1 else "",
                                logprob=logprob,
                                special=token_id in special,
                            ),
                        )
                        if final:
                            event.generated_text = (
                                req.inputs + text if req.parameters.return_full_text else text
                            )
                            event.details = StreamDetails(
                                finish_reason=finish_reason(out),
                                generated_tokens=index,
                                seed=seed,
                                input_length=len(prompt_ids),
                            )
                        yield f"data:{event.model_dump_json()}\n\n"
        except Exception as exc:
            _, body, _ = error_body(exc, self.retry_after_s)
            yield f"data:{json.dumps(body)}\n\n"
