"""An asyncio front end over a thread that runs continuous-batching decode steps.

The model forward never runs on the event loop: a dedicated engine thread owns the model
and the running batch (`kvbatch.KVBatch`). Between two decode steps it drops rows that
finished or whose client went away and prefills waiting requests into the batch. Requests
arrive through a bounded deque (full: `EngineOverloadedError` at once, never a growing
queue); tokens go back to the event loop with one `call_soon_threadsafe` per step, where
each request's `request.GenerationStream` turns them into text.

A prompt longer than `EngineConfig.prefill_chunk_tokens` is prefilled that many tokens per
step (`kvbatch.ChunkedPrefill`), the running rows decoding after each chunk, and the prompts
prefilled beside running rows are held to as many tokens per step: one long prompt then
delays the others' next token by a chunk's forward, not by its whole prefill (`deploykit
bench prefill`, docs/benchmarks.md). An idle engine waits a moment for the requests that
arrive with the first (`EngineConfig.admit_gap_s`), so that they share one prefill.

Why not transformers' own continuous batching (`generate_batch`, paged|sdpa)? Measured on
the 2-core CPU with toy-tiny it gave about 2,300 tokens/s at 32 sequences against about
13,500 for a decode step over a padded DynamicCache; its paged attention pays off on GPUs
with flash kernels, not on CPUs (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import (
    EngineError,
    EngineOverloadedError,
    EngineStepError,
    EngineStoppedError,
    InvalidArgumentError,
    InvalidRequestError,
)
from ..models.decode_step import DECODE_STEPS, decode_step_for, kernels_for, step_name
from ..models.kernels import KERNELS, DecodeAttention, use_kernels
from .kvbatch import ChunkedPrefill, KVBatch, check_model
from .request import GenerationStream, RequestState, wake
from .sampling import SamplingParams, check_fits, sample, token_logprobs
from .stats import FinishedRequest, StepStats

log = logging.getLogger("deploykit.engine")


_AUTO_GAP_MAX_S = 0.010  # the longest gap an idle engine waits for by itself (admit_gap_s None)


@dataclass(frozen=True)
class EngineConfig:
    """Limits of one engine: how many rows decode together and how many may wait."""

    max_batch_size: int = 32  # sequences in one decode forward
    max_waiting: int = 256  # queued requests beyond the batch; more get EngineOverloadedError
    max_prefill_tokens: int = 8192  # padded prompt tokens in one prefill forward
    # A prompt longer than this is prefilled this many tokens per step (`ChunkedPrefill`),
    # each chunk followed by the running rows' decode step, so one long prompt does not
    # stall everyone else's tokens for its whole prefill; 0 prefills every prompt whole.
    # 256: on smollm2-135m (docs/benchmarks.md, `deploykit bench prefill`) the streams'
    # longest gap fell from 1.9 s to 0.36 s beside 1,096-token prompts whose time to first
    # token stayed the same; 128 cut the gap to 0.22 s but cost those prompts 11%.
    prefill_chunk_tokens: int = 256
    # While a batch runs, wait up to this many decode steps to prefill arrivals together:
    # on small models a prefill forward costs as much as a decode step, so prefilling
    # each arrival alone (one per step under load) would halve throughput. The wait also
    # ends once the waiting rows have lost as many tokens (rows x steps waited) as a
    # prefill would cost the running rows (one step each): a few running rows do not
    # hold many arrivals back.
    max_admit_delay_steps: int = 8
    # An idle engine (no running rows) that has a request to admit can wait for the ones
    # arriving with it, so that they share one prefill instead of one prefilled alone and the
    # rest a whole step later. Closed-loop clients whose answers ended in the same step send
    # their next requests together, but they reach the engine spread out (on smollm2-135m at
    # concurrency 32: the first, then 3-5 ms later the other 31 within 2 ms).
    # admit_gap_s None (the default) waits only when the batch that last ran had more than one
    # row, for as many arrivals as it had, each within a quarter of the engine's last step
    # from idle (at most 10 ms) of the one before, and no longer in all than that step or
    # admit_window_s: a client sending one request at a time never waits, and a wait never
    # costs more than the split prefill it avoids. A number waits for any arrivals that
    # come within admit_gap_s of each other (at most admit_window_s); 0 admits at once.
    admit_gap_s: float | None = None
    admit_window_s: float = 0.05
    # the linear layers' kernels (`models.kernels`): auto is prepacked oneDNN on CPUs
    kernels: str = "auto"
    # who runs a decode step (`models.decode_step`): auto is deploykit's own for Llama
    # models unless kernels are eager; "transformers" is the model's forward
    decode_step: str = "auto"

    def __post_init__(self) -> None:
        gap = 0.0 if self.admit_gap_s is None else self.admit_gap_s
        if not 0 <= gap <= self.admit_window_s:
            raise InvalidArgumentError(
                f"EngineConfig needs 0 <= admit_gap_s <= admit_window_s; got admit_gap_s="
                f"{self.admit_gap_s}, admit_window_s={self.admit_window_s} (admit_gap_s=None "
                "waits for requests arriving together on its own; 0 admits at once)"
            )
        if self.prefill_chunk_tokens < 0:
            raise InvalidArgumentError(
                f"EngineConfig got prefill_chunk_tokens={self.prefill_chunk_tokens}; use a "
                "whole number >= 1, or 0 to prefill every prompt whole"
            )
        if self.max_batch_size < 1 or self.max_waiting < 0 or self.max_prefill_tokens < 1:
            raise InvalidArgumentError(
                f"EngineConfig needs max_batch_size >= 1, max_waiting >= 0 and "
                f"max_prefill_tokens >= 1; got {self}"
            )
        if self.kernels not in KERNELS:
            raise InvalidArgumentError(
                f"EngineConfig got kernels={self.kernels!r}; use one of {', '.join(KERNELS)}"
            )
        if self.decode_step not in DECODE_STEPS:
            raise InvalidArgumentError(
                f"EngineConfig got decode_step={self.decode_step!r}; use one of "
                f"{', '.join(DECODE_STEPS)}"
            )


class Engine:
    """Continuous-batching generation over a `LoadedModel`; `generate` is the only entry.

    The engine owns lm's model from here on: it switches its linear layers to
    config.kernels in place (`kernels` says which ran), and runs decode steps with
    config.decode_step (`decode_step` says whose).
    """

    def __init__(self, lm, config: EngineConfig = EngineConfig()) -> None:
        check_model(lm.model)
        self.lm = lm
        self.config = config
        kernels = kernels_for(config.kernels, config.decode_step)
        self.kernels = use_kernels(lm.model, kernels, batch_hint=config.max_batch_size)
        self._decode_step = decode_step_for(lm.model, self.kernels, config.decode_step)
        self._attention = DecodeAttention.for_kernels(lm.model, self.kernels, self._decode_step)
        self.decode_step = step_name(self._decode_step)  # whose decode step runs, for the log
        self.warm_up_s: float | None = None  # how long start() took to warm up (compile)
        self.context_length = lm.context_length
        tok = lm.tokenizer
        eos = getattr(lm.model.generation_config, "eos_token_id", None)
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_token_ids = frozenset(i for i in [*eos, tok.eos_token_id] if i is not None)
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self._waiting: deque[RequestState] = deque()
        self._running: list[RequestState] = []
        # the request whose long prompt is being prefilled a chunk per step, if any
        self._chunking: tuple[RequestState, ChunkedPrefill] | None = None
        self._cond = threading.Condition()
        self._abort_pending = False
        self._accepting = True
        self._stop = False
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self.steps = 0
        # for an idle engine's wait for arrivals (EngineConfig.admit_gap_s None): the most rows
        # the current batch has had, that of the batch that ran last, and how long the last
        # step that began with no rows took
        self._peak_rows = 0
        self._last_batch_rows = 0
        self._idle_step_s = 0.0
        # told what each step did, on the engine thread, before clients wake (metrics)
        self.observer: Callable[[StepStats], None] | None = None
        self._stats = StepStats()

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> Engine:
        """Warm the model up and start the engine thread."""
        if self._thread is None:
            began = time.perf_counter()
            # a compiled step compiles one graph for batch 1 and one for every larger batch:
            # both now, not in the middle of serving
            rows = (1, 2) if getattr(self._decode_step, "compiled", False) else (1,)
            with torch.inference_mode():
                for n in rows:
                    batch = KVBatch(self.lm.device)
                    self._attention.use("prefill")
                    prompts = [[self.pad_token_id] * 4] * n
                    batch.prefill(self.lm.model, prompts, self.pad_token_id)
                    self._attention.use("decode")
                    batch.decode(self.lm.model, self._decode_step)
            self.warm_up_s = time.perf_counter() - began
            log.info(
                "engine warmed up in %.1f s (decode step: %s)", self.warm_up_s, self.decode_step
            )
            self._thread = threading.Thread(target=self._run, name="deploykit-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the engine thread; running and waiting requests end with EngineStoppedError."""
        self._accepting = False
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def close_admission(self) -> None:
        """Refuse new requests (EngineStoppedError) and let the admitted ones finish."""
        self._accepting = False

    @property
    def accepting(self) -> bool:
        """Return True while new requests are admitted."""
        return self._accepting and self._thread is not None and self._thread.is_alive()

    @property
    def num_running(self) -> int:
        """Return the number of sequences in the running batch (a prompt being prefilled in
        chunks included)."""
        return len(self._running) + (self._chunking is not None)

    @property
    def num_waiting(self) -> int:
        """Return the number of requests queued for the batch."""
        return len(self._waiting)

    async def wait_idle(self, timeout_s: float, poll_s: float = 0.05) -> bool:
        """Wait until nothing runs or waits; return False if timeout_s passed first."""
        deadline = time.monotonic() + timeout_s
        while self._running or self._waiting or self._chunking:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll_s)
        return True

    # ---- the event-loop side --------------------------------------------------------

    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise InvalidRequestError when the request cannot fit the model's context."""
        if not prompt_ids:
            raise InvalidRequestError(
                "the prompt is empty; send at least one token of text.", param="prompt"
            )
        check_fits(prompt_ids, params, self.context_length)

    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        *,
        stream: bool = True,
        request_id: str | None = None,
    ) -> GenerationStream:
        """Admit one request now (or raise); iterate the result for its outputs.

        Outputs come one per step if stream, else one at the end. Closing the stream early
        (client gone, task cancelled) drops the request from the batch before the next step.
        """
        req = self._submit(prompt_ids, params, stream, request_id)
        return GenerationStream(req, self.lm.tokenizer, stream, self._abort)

    def _submit(
        self, prompt_ids: list[int], params: SamplingParams, stream: bool, request_id: str | None
    ) -> RequestState:
        if not self.accepting:
            raise EngineStoppedError(
                "the server is shutting down and takes no new requests; "
                "send the request to another replica or retry later."
            )
        self.check_request(prompt_ids, params)
        req = RequestState(
            id=request_id or f"req-{next(self._ids)}",
            prompt_ids=list(prompt_ids),
            params=params,
            loop=asyncio.get_running_loop(),
            wake_each_step=stream or bool(params.stop),
            arrival_step=self.steps,
        )
        if params.seed is not None:
            req.generator = torch.Generator(device=self.lm.device).manual_seed(params.seed)
        with self._cond:
            if len(self._waiting) >= self.config.max_waiting:
                raise EngineOverloadedError(
                    f"{len(self._waiting)} requests are already waiting (the limit is "
                    f"{self.config.max_waiting}); retry after a second, or start the server "
                    "with a larger --max-waiting / --max-batch-size."
                )
            self._waiting.append(req)
            self._cond.notify()
        return req

    def _abort(self, req: RequestState) -> None:
        req.aborted = True
        with self._cond:
            self._abort_pending = True
            self._cond.notify()

    # ---- the engine thread ------------------------------------------------------------

    def _run(self) -> None:
        batch = KVBatch(self.lm.device)
        with torch.inference_mode():
            while True:
                new = self._admit()
                if new is None:
                    break
                touched: list[RequestState] = []
                from_idle = not self._running and self._chunking is None
                began = time.perf_counter()
                try:
                    self._step(batch, new, touched)
                    self._after_step(from_idle, time.perf_counter() - began)
                except Exception as exc:  # a failed forward ends its batch, not the server
                    log.exception("engine step failed")
                    err: EngineError = EngineStepError(
                        f"generation failed in the model step: {exc!r}; the "
                        "server keeps running, retry the request."
                    )
                    failed = [*self._running, *new, *self._chunking_request()]
                    for req in dict.fromkeys(r for r in failed if r.finish_reason is None):
                        self._finished(req, "error")
                    for req in failed:
                        req.error, req.finish_reason = err, "error"
                        touched.append(req)
                    self._running, self._chunking = [], None
                    batch = KVBatch(self.lm.device)
                # before the wake-up: a client that has its answer finds it in the metrics
                self._report(batch)
                self._publish(touched)
        err = EngineStoppedError(
            "the engine stopped before this request finished; retry it on a running server."
        )
        leftovers = [*self._running, *self._chunking_request(), *self._waiting]
        for req in leftovers:
            req.error, req.finish_reason = err, "error"
            self._finished(req, "abort")
        self._running, self._waiting, self._chunking = [], deque(), None
        self._report(KVBatch(self.lm.device))
        self._publish(leftovers)

    def _admit(self) -> list[RequestState] | None:
        """Block until there is work; return newly admitted requests (None: stop)."""
        with self._cond:
            while not (
                self._stop or self._waiting or self._running or self._chunking
                or self._abort_pending
            ):  # fmt: skip
                self._cond.wait()
            if not self.num_running and self._waiting:
                self._gather_arrivals()
            if self._stop:
                return None
            if self._abort_pending:
                self._abort_pending = False
                for req in [r for r in self._waiting if r.aborted]:
                    self._finished(req, "abort")
                self._waiting = deque(r for r in self._waiting if not r.aborted)
            new: list[RequestState] = []
            longest = 0
            free = self.config.max_batch_size - self.num_running
            if (
                self._running
                and self._waiting
                and len(self._waiting) < free
                and self.steps - self._waiting[0].arrival_step < self.config.max_admit_delay_steps
                and sum(self.steps - r.arrival_step for r in self._waiting) < len(self._running)
            ):
                return new  # gather more arrivals before paying for a prefill
            chunk = self.config.prefill_chunk_tokens
            # with rows decoding, a step's prompts together are held to a chunk's tokens too:
            # many medium prompts in one forward would stall them as one long prompt does
            budget = self.config.max_prefill_tokens
            if chunk and self.num_running:
                budget = min(budget, chunk)
            while self._waiting and len(new) < free:
                if chunk and len(self._waiting[0].prompt_ids) > chunk:
                    if self._chunking is not None:
                        break  # one long prompt at a time; the ones behind it keep their turn
                    req = self._waiting.popleft()
                    req.scheduled_s = time.perf_counter()
                    self._chunking = (req, ChunkedPrefill(req.prompt_ids, self.lm.device))
                    free -= 1
                    continue
                longest = max(longest, len(self._waiting[0].prompt_ids))
                if new and longest * (len(new) + 1) > budget:
                    break
                new.append(self._waiting.popleft())
            now = time.perf_counter()
            for req in new:
                req.scheduled_s = now
            return new

    def _after_step(self, from_idle: bool, took_s: float) -> None:
        """Note what an idle engine's wait for arrivals goes by (see _gather_arrivals)."""
        if from_idle:
            self._idle_step_s = took_s
        self._peak_rows = max(self._peak_rows, len(self._running))
        if not self._running and self._chunking is None:
            self._last_batch_rows, self._peak_rows = self._peak_rows, 0

    def _gather_arrivals(self) -> None:
        """Wait (holding the condition) for the requests arriving together with the first.

        A fixed admit_gap_s waits while arrivals come that far apart (at most admit_window_s).
        None expects as many as the last batch had rows (none when it had one) and waits
        while they come a quarter of the last step from idle apart, at most that step.
        """
        gap, window = self.config.admit_gap_s, self.config.admit_window_s
        expect = self.config.max_batch_size
        if gap is None:
            expect = min(expect, self._last_batch_rows)
            gap = min(_AUTO_GAP_MAX_S, 0.25 * self._idle_step_s)
            window = min(window, self._idle_step_s)
        if gap <= 0 or len(self._waiting) >= expect:
            return
        start = time.perf_counter()
        until = start + window
        while not self._stop and len(self._waiting) < expect:
            now = time.perf_counter()
            quiet = max(self._waiting[-1].arrival_s, start) + gap
            if now >= min(quiet, until):
                return
            self._cond.wait(min(quiet, until) - now)

    def _step(self, batch: KVBatch, new: list[RequestState], touched: list[RequestState]) -> None:
        """Drop aborted rows, prefill the new ones (their first token), decode everyone.

        The first tokens go out before the decode: a new request's time to first token is
        its prefill, not its prefill and one more step.
        """
        model = self.lm.model
        for req in self._drop(batch, lambda r: r.aborted):
            self._finished(req, "stop" if req.text_stopped else "abort")
        if self._chunking is not None and self._chunking[0].aborted:
            self._finished(self._chunking[0], "abort")
            self._chunking = None
        if new:
            self._attention.use("prefill")
            logits = batch.prefill(model, [r.prompt_ids for r in new], self.pad_token_id)
            self._stats.prompt_tokens += sum(len(r.prompt_ids) for r in new)
            self._first_tokens(batch, new, logits, touched)
        if self._chunking is not None:
            req, prefill = self._chunking
            self._attention.use("prefill")
            before = prefill.done
            logits = prefill.run(model, self.config.prefill_chunk_tokens)
            self._stats.prompt_tokens += prefill.done - before
            if logits is not None:  # its last chunk: the first token, then the batch
                self._chunking = None
                self._first_tokens(batch, [req], logits, touched, joining=prefill)
        if self._running:
            self._attention.use("decode")
            logits = batch.decode(model, self._decode_step)
            tokens = self._sample(logits, self._running)
            batch.set_last_tokens(tokens)
            self._record(self._running, tokens, touched)
            self._drop_finished(batch)
        self.steps += 1

    def _first_tokens(
        self,
        batch: KVBatch,
        new: list[RequestState],
        logits: torch.Tensor,
        touched: list[RequestState],
        joining: ChunkedPrefill | None = None,
    ) -> None:
        """Sample the first tokens of prompts just prefilled and hand them out at once: before
        the work that follows in this step, so time to first token is the prefill's.

        `new` are the batch's last rows, or with `joining` one prompt prefilled in its own
        cache, which joins the batch only if it goes on: one done at its first token
        (max_tokens=1, a stop) never makes a row.
        """
        tokens = self._sample(logits, new)
        self._record(new, tokens, touched)
        if joining is not None:
            if new[0].finish_reason is None:
                batch.join(joining)
            else:
                self._finished(new[0], new[0].finish_reason)
                new, tokens = [], []
        if new:
            batch.set_last_tokens(tokens, batch.size - len(new))
            self._running.extend(new)
        self._drop_finished(batch)
        if self._running or self._chunking:  # more work follows in this step: publish now
            self._report(batch)
            self._publish(touched)
            touched.clear()

    def _chunking_request(self) -> list[RequestState]:
        """Return the request being prefilled in chunks, as a list (empty if none)."""
        return [] if self._chunking is None else [self._chunking[0]]

    def _drop_finished(self, batch: KVBatch) -> None:
        """Remove the rows whose request has finished, and finish them."""
        for req in self._drop(batch, lambda r: r.finish_reason is not None):
            assert req.finish_reason is not None  # what _drop selected on
            self._finished(req, req.finish_reason)

    def _drop(self, batch: KVBatch, gone) -> list[RequestState]:
        """Remove the rows for which gone(request) holds; return their requests."""
        keep = [i for i, r in enumerate(self._running) if not gone(r)]
        if len(keep) == len(self._running):
            return []
        kept = set(keep)
        dropped = [r for i, r in enumerate(self._running) if i not in kept]
        batch.keep(keep)
        self._running = [self._running[i] for i in keep]
        return dropped

    def _sample(self, logits: torch.Tensor, reqs: list[RequestState]) -> list[int]:
        banned, penalties, want_logprobs = [], [], []
        for row, req in enumerate(reqs):
            p = req.params
            if len(req.output_ids) < p.min_tokens:
                banned.append((row, [*self.eos_token_ids, *p.stop_token_ids]))
            if p.repetition_penalty != 1.0:
                seen = req.prompt_ids + req.output_ids
                penalties.append(
                    (
                        row,
                        p.repetition_penalty,
                        seen[-p.repetition_last_n :] if p.repetition_last_n else seen,
                    )
                )
            if p.logprobs:
                want_logprobs.append(row)
        # logprobs are of the model's own distribution, read before sample() edits the logits
        raw = logits if not want_logprobs else logits.clone()
        tokens = sample(
            logits, [r.params for r in reqs], [r.generator for r in reqs], banned, penalties
        )
        for row, logprob in zip(want_logprobs, token_logprobs(raw, want_logprobs, tokens)):
            reqs[row].output_logprobs.append(logprob)
        return tokens

    def _record(
        self, reqs: list[RequestState], tokens: list[int], touched: list[RequestState]
    ) -> None:
        now = time.perf_counter()
        stats = self._stats
        for req, token in zip(reqs, tokens):
            if req.aborted:
                continue
            if req.first_token_s is None:
                req.first_token_s = now
                stats.ttfts_s.append(now - req.arrival_s)
            else:
                assert req.last_token_s is not None  # set with first_token_s
                stats.itls_s.append(now - req.last_token_s)
            req.last_token_s = now
            stats.generation_tokens += 1
            req.output_ids.append(token)
            p = req.params
            is_eos = token in self.eos_token_ids and not p.ignore_eos
            if len(req.output_ids) >= p.min_tokens and (is_eos or token in p.stop_token_ids):
                req.finish_reason = "stop"
                req.stop_token = token if token in p.stop_token_ids else None
            elif len(req.output_ids) >= p.max_tokens:
                req.finish_reason = "length"
            if req.wake_each_step or req.finish_reason is not None:
                touched.append(req)

    def _finished(self, req: RequestState, reason: str) -> None:
        """Note a request leaving the engine, for the next _report."""
        now = time.perf_counter()
        tokens = len(req.output_ids)
        decode_s = 0.0
        if tokens > 1:  # both set when the first token was recorded
            assert req.last_token_s is not None and req.first_token_s is not None
            decode_s = req.last_token_s - req.first_token_s
        self._stats.finished.append(
            FinishedRequest(
                reason,
                now - req.arrival_s,
                (req.scheduled_s or now) - req.arrival_s,
                decode_s / (tokens - 1) if tokens > 1 else 0.0,
            )
        )

    def _report(self, batch: KVBatch) -> None:
        """Hand this step's stats to the observer (metrics) and start new ones."""
        stats, self._stats = self._stats, StepStats()
        if self.observer is None:
            return
        stats.kv_cache_usage = (
            batch.size * batch.columns / (self.config.max_batch_size * self.context_length)
        )
        try:
            self.observer(stats)
        except Exception:  # metrics must never stop generation
            log.exception("the engine's step observer failed")

    def _publish(self, touched: list[RequestState]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[RequestState]] = {}
        for req in touched:
            req.visible = (len(req.output_ids), req.finish_reason)
            by_loop.setdefault(req.loop, []).append(req)
        for loop, reqs in by_loop.items():
            try:
                loop.call_soon_threadsafe(wake, reqs)
            except RuntimeError:  # that event loop is closed: nobody is waiting any more
                pass
