"""The one-request-at-a-time FastAPI server: the seed's design, with its bugs fixed.

It calls `model.generate` once per request, holding a lock, so requests queue up and run
one by one: the baseline that continuous batching (`engine.py`) is measured against.
What it fixes from the seed: the model loads when the server starts, not at import;
`generate` runs in a worker thread, so /health answers during a generation; only the new
tokens are decoded, not the prompt; bad input is a 400 in OpenAI's shape, not a 500.
`block_event_loop=True` puts the seed's first bug back (generate on the event loop), to
show what it costs. No streaming, no metrics: see `app.py` for those.
"""

from __future__ import annotations

import asyncio
import time

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from . import protocol as p
from .sampling import SamplingParams, check_fits
from .serving import (
    APIError,
    add_error_handlers,
    chat_ids,
    parse_body,
    prompt_ids,
    read_body,
    sampling_params,
)


def _generate(lm, ids: list[int], params: SamplingParams) -> tuple[str, list[int], str]:
    """Run transformers' generate for one prompt; return new text, new ids, finish reason."""
    tok = lm.tokenizer
    kwargs = dict(
        max_new_tokens=params.max_tokens,
        pad_token_id=tok.pad_token_id,
        min_new_tokens=params.max_tokens if params.ignore_eos else params.min_tokens,
    )
    if params.greedy:
        kwargs.update(do_sample=False)
    else:
        kwargs.update(
            do_sample=True,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k or None,
        )
        if params.seed is not None:
            torch.manual_seed(params.seed)
    if params.stop:
        kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
    if params.repetition_penalty != 1.0:
        kwargs.update(repetition_penalty=params.repetition_penalty)
    inputs = torch.tensor([ids], device=lm.device)
    with torch.inference_mode():
        out = lm.model.generate(inputs, attention_mask=torch.ones_like(inputs), **kwargs)
    new_ids = out[0, len(ids) :].tolist()  # the seed decoded out[0]: prompt and answer
    text = tok.decode(new_ids, skip_special_tokens=True)
    finish = "length" if len(new_ids) >= params.max_tokens else "stop"
    for stop in params.stop:
        if stop in text:
            text, finish = text[: text.index(stop)], "stop"
    return text, new_ids, finish


def build_naive_app(
    lm, model_name: str, block_event_loop: bool = False, max_body_bytes: int = 1_000_000
) -> FastAPI:
    """Return the one-at-a-time app serving lm under model_name."""
    app = FastAPI(title="deploykit one-at-a-time server", docs_url=None, redoc_url=None)
    lock = asyncio.Lock()

    async def run(ids: list[int], params: SamplingParams):
        if block_event_loop:  # the seed's bug: nothing else runs until generate returns
            return _generate(lm, ids, params)
        async with lock:  # one generation at a time, as in the seed
            return await asyncio.to_thread(_generate, lm, ids, params)

    async def body(request: Request, model):
        req = parse_body(await read_body(request, max_body_bytes), model)
        if req.model != model_name:
            raise APIError(
                404,
                f"The model {req.model!r} does not exist; this server serves {model_name!r}.",
                "not_found_error",
                param="model",
            )
        if req.stream:
            raise APIError(
                400,
                "this one-at-a-time server does not stream; send stream=false, "
                "or use `deploykit serve` without --naive.",
                "invalid_request_error",
                param="stream",
            )
        return req

    def usage(ids, new_ids) -> p.Usage:
        return p.Usage(
            prompt_tokens=len(ids),
            completion_tokens=len(new_ids),
            total_tokens=len(ids) + len(new_ids),
        )

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await body(request, p.CompletionRequest)
        ids = prompt_ids(lm.tokenizer, req.prompt)
        params = sampling_params(req, req.max_tokens, len(ids), lm.context_length)
        check_fits(ids, params, lm.context_length)
        text, new_ids, finish = await run(ids, params)
        return JSONResponse(
            p.CompletionResponse(
                model=model_name,
                usage=usage(ids, new_ids),
                choices=[p.CompletionChoice(text=text, finish_reason=finish)],
            ).model_dump()
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = await body(request, p.ChatCompletionRequest)
        ids = chat_ids(lm.tokenizer, req.messages)
        params = sampling_params(
            req, req.max_completion_tokens or req.max_tokens, len(ids), lm.context_length
        )
        check_fits(ids, params, lm.context_length)
        text, new_ids, finish = await run(ids, params)
        message = p.ChatResponseMessage(content=text)
        return JSONResponse(
            p.ChatCompletionResponse(
                model=model_name,
                usage=usage(ids, new_ids),
                choices=[p.ChatChoice(message=message, finish_reason=finish)],
            ).model_dump()
        )

    @app.get("/v1/models")
    async def models():
        card = p.ModelCard(id=model_name, max_model_len=lm.context_length)
        return JSONResponse(p.ModelList(data=[card]).model_dump())

    @app.get("/health")
    async def health():
        return JSONResponse({"status": "ok", "time_s": time.time()})

    add_error_handlers(app)
    return app
