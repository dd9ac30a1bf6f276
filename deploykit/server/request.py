"""One request inside the engine: its shared state, its outputs, and the stream that reads them.

`RequestState` is written by the engine thread (tokens, finish reason) and read on the event
loop; `GenerationStream` turns it into `RequestOutput` deltas, decoding text incrementally and
applying stop strings, and tells the engine to drop the request when its reader goes away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .detok import IncrementalDetokenizer
from .sampling import SamplingParams


@dataclass(frozen=True)
class RequestOutput:
    """What one request produced since its previous output (text and ids are deltas)."""

    request_id: str
    text: str
    token_ids: list[int]
    finish_reason: str | None  # "stop", "length", or None while running
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float | None
    # with finish_reason "stop": the stop string or stop token id that ended the request
    # (None: the model's EOS), as vLLM's stop_reason
    stop_reason: str | int | None = None
    logprobs: list[float] | None = None  # one per token id, when the request asked for them


@dataclass(eq=False)
class RequestState:
    """Mutable state of one request, shared by the event loop and the engine thread."""

    id: str
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    wake_each_step: bool  # streaming or stop strings; else wake only when finished
    generator: torch.Generator | None = None
    arrival_step: int = 0
    arrival_s: float = field(default_factory=time.perf_counter)
    scheduled_s: float | None = None  # admitted into the running batch
    first_token_s: float | None = None
    last_token_s: float | None = None
    text_stopped: bool = False  # a stop string ended it on the event-loop side
    output_ids: list[int] = field(default_factory=list)  # appended by the engine thread only
    output_logprobs: list[float] = field(default_factory=list)  # when params.logprobs
    finish_reason: str | None = None  # set after the last token is appended
    stop_token: int | None = None  # the stop_token_ids entry that ended it, if one did
    # (token ids, finish_reason) as of the last wake-up, set together by the engine thread so
    # that the event loop never sees a token whose finish_reason is not set yet
    visible: tuple[int, str | None] = (0, None)
    error: Exception | None = None
    aborted: bool = False
    event: asyncio.Event = field(default_factory=asyncio.Event)


class GenerationStream:
    """The outputs of one admitted request, as an async iterator; aclose() aborts it."""

    def __init__(
        self, req: RequestState, tokenizer: Any, stream: bool, abort: Callable[[RequestState], None]
    ) -> None:
        self.request_id = req.id
        self._abort = abort  # the engine's: drops the request before its next step
        self._req = req
        self._outputs = self._iterate(tokenizer, stream)

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> RequestOutput:
        return await self._outputs.__anext__()

    async def aclose(self) -> None:
        """Stop early: the engine drops the request before its next step."""
        await self._outputs.aclose()
        if self._req.finish_reason is None:
            self._abort(self._req)

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def _iterate(self, tokenizer, stream: bool) -> AsyncGenerator[RequestOutput, None]:
        req = self._req
        detok = IncrementalDetokenizer(tokenizer, req.prompt_ids, req.params.stop)
        read, sent = 0, 0  # token ids decoded, token ids handed out
        text = ""  # decoded but not handed out yet
        try:
            while True:
                await req.event.wait()
                req.event.clear()
                count, finish = req.visible
                if req.error is not None:
                    raise req.error
                new_ids = req.output_ids[read:count]
                read = count
                text += detok.add(new_ids) if new_ids else ""
                if detok.stopped:
                    finish = "stop"
                if finish is not None:
                    text += detok.finish()
                elif not stream or not (read > sent or text):
                    continue
                ttft = None if req.first_token_s is None else req.first_token_s - req.arrival_s
                stop_reason = None
                if finish == "stop":
                    stop_reason = detok.stop_hit if detok.stopped else req.stop_token
                logprobs = req.output_logprobs[sent:read] if req.params.logprobs else None
                yield RequestOutput(
                    req.id,
                    text,
                    req.output_ids[sent:read],
                    finish,
                    len(req.prompt_ids),
                    read,
                    ttft,
                    stop_reason,
                    logprobs,
                )
                text, sent = "", read
                if finish is not None:
                    return
        finally:
            if req.finish_reason is None or detok.stopped:
                req.text_stopped = detok.stopped  # counted as "stop", not "abort"
                self._abort(req)


def wake(reqs: list[RequestState]) -> None:
    """Wake the streams of `reqs`; runs on their event loop."""
    for req in reqs:
        req.event.set()
