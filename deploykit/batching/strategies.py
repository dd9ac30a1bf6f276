"""Four batching strategies, in-process on one loaded model, over one timed workload.

- none: one request at a time, in arrival order;
- static: a fixed batch of batch_size requests (waits for them, or for the workload's end),
  prompts left-padded, run until its longest request finishes; every answer returns then;
- dynamic: up to batch_size requests or until max_wait_ms after the first one arrives
  (the Triton/TorchServe dynamic batcher), each batch run like a static one;
- continuous: deploykit's own engine (`server.engine.Engine`, its defaults but for
  max_batch_size), where requests join and leave the running batch between decode steps
  (it lets arrivals gather for up to 8 decode steps before paying for a prefill).

All four decode greedily through the same left-padded KV batch (`server.kvbatch.KVBatch`),
so the answers match and only the scheduling differs. Forward passes are recorded by hooks
on the model itself, so the engine is measured as it runs, unchanged. This is not a
server: no HTTP, no streaming to clients, no sampling beyond greedy.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any, cast

from .._conditions import load_average
from .._runtime import run_sync as _run_sync
from .._runtime import torch_threads as _torch_threads
from ..errors import InvalidArgumentError
from ..models import LoadedModel, load_model
from .results import BatchingOutcome, BatchingResult, ForwardPass
from .workload import BatchingWorkload

# what a strategy's run returns: outcomes, forward passes, wall_s, cpu_s
_Run = tuple[tuple[BatchingOutcome, ...], tuple[ForwardPass, ...], float, float]

BATCHING_STRATEGIES: dict[str, str] = {
    "none": "one request at a time, in arrival order",
    "static": "a fixed batch of batch_size requests, padded, run until its longest request ends",
    "dynamic": "up to batch_size requests or max_wait_ms after the first, then run as static",
    "continuous": "deploykit's engine: requests join and leave the batch at every step",
}


class _ForwardLog:
    """Record every forward of a model through hooks: rows, input tokens, padding, time."""

    def __init__(self, model, t0: float) -> None:
        self.t0 = t0
        self.cuda = str(model.device).startswith("cuda")
        # [start_s, duration_s, rows, input_tokens, padded, wasted, cpu_s]
        self.rows: list[list] = []
        self._started = self._started_cpu = 0.0
        self._handles = [
            model.register_forward_pre_hook(self._pre, with_kwargs=True),
            model.register_forward_hook(self._post),
        ]

    def _pre(self, module, args, kwargs) -> None:
        self._started, self._started_cpu = time.perf_counter(), time.thread_time()
        ids = kwargs.get("input_ids", args[0] if args else None)  # [B, S]
        mask = kwargs.get("attention_mask")  # [B, T], its last S columns are this input's
        padded = 0 if mask is None else int((mask[:, -ids.shape[1] :] == 0).sum())
        self.rows.append([self._started - self.t0, 0.0, ids.shape[0], ids.numel(), padded, 0, 0.0])

    def _post(self, module, args, output) -> None:
        if self.cuda:  # kernels run asynchronously: the forward ends when the device is done
            import torch

            torch.cuda.synchronize()
        self.rows[-1][1] = time.perf_counter() - self._started
        # this thread's CPU time: unlike wall time, not stretched when the OS runs other work
        self.rows[-1][6] = time.thread_time() - self._started_cpu

    def mark_wasted(self, rows: int) -> None:
        """Say how many rows of the latest forward belonged to finished requests."""
        self.rows[-1][5] = rows

    def close(self) -> tuple[ForwardPass, ...]:
        """Remove the hooks; return the forwards recorded."""
        for handle in self._handles:
            handle.remove()
        return tuple(ForwardPass(*row) for row in self.rows)


def _check(
    strategy: str,
    workload: BatchingWorkload,
    batch_size: int,
    max_wait_ms: float,
    threads: int | None,
) -> None:
    if strategy not in BATCHING_STRATEGIES:
        raise InvalidArgumentError(
            f"unknown batching strategy {strategy!r}; use one of {', '.join(BATCHING_STRATEGIES)}"
        )
    if not isinstance(workload, BatchingWorkload):
        raise InvalidArgumentError(
            f"workload must be a BatchingWorkload, got "
            f"{type(workload).__name__}; make one with "
            "dk.batching_workload(num_requests=32)"
        )
    if len(workload) == 0:
        raise InvalidArgumentError(
            "the workload is empty; make one with dk.batching_workload(num_requests=32)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if not max_wait_ms >= 0:
        raise InvalidArgumentError(
            f"max_wait_ms must be >= 0 (0: take whatever has arrived), got {max_wait_ms}"
        )
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise InvalidArgumentError(
            f"threads must be a whole number >= 1 or None (torch's default), got {threads!r}"
        )
    if any(b.arrival_s < a.arrival_s for a, b in zip(workload.requests, workload.requests[1:])):
        raise InvalidArgumentError(
            "workload requests must be in arrival order; build the "
            "workload with dk.batching_workload"
        )


def _encode(lm: LoadedModel, workload: BatchingWorkload) -> list[list[int]]:
    """Tokenize every prompt; refuse a request that does not fit the model's context."""
    encoded = []
    for req in workload.requests:
        ids = lm.tokenizer(req.prompt).input_ids
        if len(ids) + req.max_new_tokens > lm.context_length:
            raise InvalidArgumentError(
                f"request {req.index} needs {len(ids)} prompt + {req.max_new_tokens} new tokens, "
                f"more than {lm.name}'s context of {lm.context_length}; lower max_new_tokens"
            )
        encoded.append(ids)
    return encoded


def _pad_id(lm: LoadedModel) -> int:
    return lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def _run_batch(
    lm: LoadedModel, prompts: list[list[int]], lengths: list[int], log: _ForwardLog
) -> tuple[float, list[list[int]]]:
    """Prefill the prompts together, decode every row until the longest is done.

    Return when the first tokens existed and each row's tokens; finished rows keep
    decoding (and count as wasted) because a static batch cannot shrink.
    """
    from ..server.kvbatch import KVBatch

    batch = KVBatch(lm.device)
    tokens = batch.prefill(lm.model, prompts, _pad_id(lm)).argmax(dim=-1).tolist()
    first_s = time.perf_counter()
    outputs = [[t] for t in tokens]
    for step in range(1, max(lengths)):
        batch.set_last_tokens(tokens)
        tokens = batch.decode(lm.model).argmax(dim=-1).tolist()
        log.mark_wasted(sum(n <= step for n in lengths))
        for out, token, n in zip(outputs, tokens, lengths):
            if len(out) < n:
                out.append(token)
    return first_s, outputs


def _next_group(
    strategy: str,
    workload: BatchingWorkload,
    start: int,
    batch_size: int,
    max_wait_s: float,
    t0: float,
) -> list[int]:
    """Wait as the strategy would; return the indices of the next batch."""
    reqs = workload.requests
    if strategy == "none":
        _sleep_until(t0 + reqs[start].arrival_s)
        return [start]
    end = min(start + batch_size, len(reqs))
    if strategy == "static":  # a full batch, or whatever is left at the end of the workload
        _sleep_until(t0 + reqs[end - 1].arrival_s)
        return list(range(start, end))
    _sleep_until(t0 + reqs[start].arrival_s)  # dynamic: the first request opens the window
    deadline = t0 + reqs[start].arrival_s + max_wait_s
    while True:
        now = time.perf_counter()
        arrived = [i for i in range(start, end) if t0 + reqs[i].arrival_s <= now]
        if len(arrived) == end - start or now >= deadline:
            return arrived
        _sleep_until(min(deadline, t0 + reqs[arrived[-1] + 1].arrival_s))


def _run_batches(
    strategy: str,
    lm: LoadedModel,
    workload: BatchingWorkload,
    encoded: list[list[int]],
    batch_size: int,
    max_wait_s: float,
    bar,
) -> _Run:
    import torch

    outcomes: list[BatchingOutcome | None] = [None] * len(workload)
    t0, cpu0 = time.perf_counter(), time.process_time()
    log = _ForwardLog(lm.model, t0)
    try:
        with torch.inference_mode():
            start = 0
            while start < len(workload):
                group = _next_group(strategy, workload, start, batch_size, max_wait_s, t0)
                reqs = [workload.requests[i] for i in group]
                first_s, outputs = _run_batch(
                    lm, [encoded[i] for i in group], [r.max_new_tokens for r in reqs], log
                )
                done_s = time.perf_counter()
                for i, req, out in zip(group, reqs, outputs):
                    due = t0 + req.arrival_s
                    outcomes[i] = BatchingOutcome(
                        i, req.arrival_s, len(encoded[i]), tuple(out), first_s - due, done_s - due
                    )
                start += len(group)
                bar.update(len(group))
    finally:
        forwards = log.close()
    cpu_s = time.process_time() - cpu0
    done = cast("list[BatchingOutcome]", outcomes)  # the loop filled every index
    wall_s = max(o.arrival_s + o.latency_s for o in done)
    return tuple(done), forwards, wall_s, cpu_s


async def _drive_engine(
    engine, workload: BatchingWorkload, encoded: list[list[int]], bar, log: _ForwardLog
) -> list[BatchingOutcome]:
    """Submit each request at its arrival time; collect its tokens and timings."""
    from ..server.sampling import SamplingParams

    t0 = log.t0 = time.perf_counter()  # nothing runs before the first submission

    async def one(req, ids) -> BatchingOutcome:
        due = t0 + req.arrival_s
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        submitted = time.perf_counter()
        params = SamplingParams(max_tokens=req.max_new_tokens, temperature=0.0, ignore_eos=True)
        tokens, ttft_s = [], None
        async for out in engine.generate(ids, params, stream=False):
            tokens += out.token_ids
            ttft_s = out.time_to_first_token_s if ttft_s is None else ttft_s
        done = time.perf_counter()
        bar.update(1)
        return BatchingOutcome(
            req.index, req.arrival_s, len(ids), tuple(tokens), submitted - due + ttft_s, done - due
        )

    return await asyncio.gather(*(one(r, ids) for r, ids in zip(workload.requests, encoded)))


def _run_continuous(
    lm: LoadedModel, workload: BatchingWorkload, encoded: list[list[int]], batch_size: int, bar
) -> _Run:
    from ..server.engine import Engine, EngineConfig

    # eager kernels, as static and dynamic batching run them on the same model: the comparison
    # is of strategies, and the engine would otherwise switch lm's layers to oneDNN in place
    config = EngineConfig(max_batch_size=batch_size, max_waiting=len(workload), kernels="eager")
    engine = Engine(lm, config)
    engine.start()  # warms the model up before the clock starts
    log = _ForwardLog(lm.model, time.perf_counter())
    cpu0 = time.process_time()
    try:
        outcomes = _run_sync(_drive_engine(engine, workload, encoded, bar, log))
    finally:
        cpu_s = time.process_time() - cpu0
        engine.stop()
        forwards = log.close()
    wall_s = max(o.arrival_s + o.latency_s for o in outcomes)
    return tuple(outcomes), forwards, wall_s, cpu_s


def _warm_up(lm: LoadedModel, encoded: list[list[int]]) -> None:
    """Run one small padded batch so that first-call costs stay out of the timed run."""
    import torch

    with torch.inference_mode():
        log = _ForwardLog(lm.model, time.perf_counter())
        try:
            _run_batch(lm, encoded[:2], [4] * min(2, len(encoded)), log)
        finally:
            log.close()


def run_batching(
    strategy: str,
    model: LoadedModel | str,
    workload: BatchingWorkload,
    batch_size: int = 8,
    max_wait_ms: float = 10.0,
    threads: int | None = None,
    progress: bool = True,
) -> BatchingResult:
    """Serve the workload with one strategy on one model, greedy; time and record what it did.

    batch_size is static's fixed batch and the most rows dynamic and continuous put in one
    forward; max_wait_ms is dynamic's wait after a batch's first request. threads sets
    torch's threads for the run (None: as they are).
    """
    from .._progress import progress_bar

    _check(strategy, workload, batch_size, max_wait_ms, threads)
    lm = load_model(model, progress=progress) if not isinstance(model, LoadedModel) else model
    encoded = _encode(lm, workload)
    load_before = (load_average() or (0.0,))[0]
    with _torch_threads(threads) as torch_threads:
        bar = progress_bar(
            total=len(workload), desc=f"{strategy} batching", unit="req", disable=not progress
        )
        try:
            if strategy == "continuous":
                run = _run_continuous(lm, workload, encoded, batch_size, bar)
            else:
                _warm_up(lm, encoded)
                run = _run_batches(
                    strategy, lm, workload, encoded, batch_size, max_wait_ms / 1e3, bar
                )
        finally:
            bar.close()
    conditions = {
        "model": lm.name,
        "device": lm.device,
        "dtype": str(lm.dtype).replace("torch.", ""),
        "torch_threads": torch_threads,
        "cpu_count": os.cpu_count(),
        "batch_size": batch_size,
        "max_wait_ms": max_wait_ms,
        "workload": workload.describe(),
        # other work on the machine skews timings: compare runs made side by side
        "load_avg_1m": (round(load_before, 2), round((load_average() or (0.0,))[0], 2)),
    }
    return BatchingResult(strategy, *run, conditions=conditions)


def compare_batching(
    model: LoadedModel | str,
    workload: BatchingWorkload,
    strategies: Sequence[str] = tuple(BATCHING_STRATEGIES),
    batch_size: int = 8,
    max_wait_ms: float = 10.0,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, BatchingResult]:
    """Run each strategy on the same model and workload, one after another; key results by name."""
    if not strategies:
        raise InvalidArgumentError(
            f"strategies is empty; pick from {', '.join(BATCHING_STRATEGIES)}"
        )
    for name in strategies:  # every argument checked before the first run
        _check(name, workload, batch_size, max_wait_ms, threads)
    lm = load_model(model, progress=progress) if not isinstance(model, LoadedModel) else model
    return {
        name: run_batching(name, lm, workload, batch_size, max_wait_ms, threads, progress)
        for name in strategies
    }


def batching_conditions(results: dict[str, BatchingResult]) -> dict[str, Any]:
    """Return the conditions the runs share (model, device, threads, workload)."""
    first = next(iter(results.values())).conditions
    return {
        k: v for k, v in first.items() if all(r.conditions.get(k) == v for r in results.values())
    }
