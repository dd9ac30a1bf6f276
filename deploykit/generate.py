"""Single-request generation helpers for recipes: generate, stream, measure.

These call `model.generate` directly, one request at a time; serving many
requests at once is the server's job (deploykit.server).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError
from .models import LoadedModel

__all__ = [
    "Generation",
    "generate",
    "measure_throughput",
    "memory_footprint",
    "record_arrivals",
    "stream",
]


@dataclass(frozen=True)
class Generation:
    """One completion: only the new text, never the prompt."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens per second of wall time."""
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def _sampling_kwargs(
    temperature: float, top_p: float, seed: int | None, max_tokens: int
) -> dict[str, Any]:
    import torch

    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidArgumentError(f"max_tokens must be a whole number >= 1, got {max_tokens!r}")
    if temperature < 0:
        raise InvalidArgumentError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise InvalidArgumentError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        return {"do_sample": False}
    if seed is not None:
        torch.manual_seed(seed)
    return {"do_sample": True, "temperature": temperature, "top_p": top_p}


Prompt = str | list[dict[str, str]]  # text to continue, or chat messages [{"role", "content"}]


def _encode(lm: LoadedModel, prompt: Prompt):
    if not prompt:
        raise InvalidArgumentError(
            "prompt is empty; pass some text to continue, or chat "
            "messages such as [{'role': 'user', 'content': 'Hi'}]"
        )
    if isinstance(prompt, list):  # chat: the model's own template, with the assistant's turn open
        if not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in prompt):
            raise InvalidArgumentError(
                "chat messages must be dicts with 'role' and 'content', "
                "e.g. [{'role': 'user', 'content': 'Hi'}]"
            )
        if not lm.tokenizer.chat_template:
            raise InvalidArgumentError(f"{lm.name} has no chat template; pass plain text instead")
        return lm.tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(lm.model.device)
    return lm.tokenizer(prompt, return_tensors="pt").to(lm.model.device)


def _sync(lm: LoadedModel) -> None:
    import torch

    if str(lm.model.device).startswith("cuda"):
        torch.cuda.synchronize()


def generate(
    lm: LoadedModel,
    prompt: Prompt,
    max_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = 0,
    ignore_eos: bool = False,
) -> Generation:
    """Complete `prompt` (text, or chat messages); return only the new text and token counts."""
    import torch

    inputs = _encode(lm, prompt)
    kwargs = _sampling_kwargs(temperature, top_p, seed, max_tokens)
    if ignore_eos:
        kwargs["min_new_tokens"] = max_tokens
    _sync(lm)
    started = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(
            **inputs, max_new_tokens=max_tokens, pad_token_id=lm.tokenizer.pad_token_id, **kwargs
        )
    _sync(lm)
    seconds = time.perf_counter() - started
    new = out[0, inputs.input_ids.shape[1] :]  # [T_new]: drop the echoed prompt
    return Generation(
        text=lm.tokenizer.decode(new, skip_special_tokens=True),
        prompt_tokens=int(inputs.input_ids.shape[1]),
        completion_tokens=int(new.shape[0]),
        seconds=seconds,
    )


def stream(
    lm: LoadedModel,
    prompt: Prompt,
    max_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = 0,
) -> Iterator[str]:
    """Yield text pieces as the model produces them (generation runs in a thread)."""
    import torch
    from transformers import TextIteratorStreamer

    inputs = _encode(lm, prompt)
    kwargs = _sampling_kwargs(temperature, top_p, seed, max_tokens)
    streamer = TextIteratorStreamer(
        lm.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300.0
    )
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                lm.model.generate(
                    **inputs,
                    max_new_tokens=max_tokens,
                    streamer=streamer,
                    pad_token_id=lm.tokenizer.pad_token_id,
                    **kwargs,
                )
        except BaseException as exc:  # surfaced to the caller below, not lost in the thread
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    yield from (piece for piece in streamer if piece)
    thread.join()
    if errors:
        raise errors[0]


def measure_throughput(
    lm: LoadedModel,
    prompt: Prompt,
    max_tokens: int = 64,
    runs: int = 5,
    warmup: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Time greedy generation of exactly `max_tokens` tokens; report median tokens/s and conditions."""
    import torch

    from ._progress import progress_bar

    for _ in range(warmup):
        generate(lm, prompt, max_tokens=max_tokens, ignore_eos=True)
    rates, latencies = [], []
    for _ in progress_bar(range(runs), desc="timing", disable=not progress):
        g = generate(lm, prompt, max_tokens=max_tokens, ignore_eos=True)
        rates.append(g.tokens_per_s)
        latencies.append(g.seconds)
    return {
        "tokens_per_s": statistics.median(rates),
        "tokens_per_s_runs": rates,
        "latency_s_median": statistics.median(latencies),
        "max_tokens": max_tokens,
        "model": lm.name,
        "device": lm.device,
        "dtype": str(lm.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


@dataclass(frozen=True)
class Arrivals:
    """Text pieces of one streamed answer and when each arrived (seconds since the start)."""

    pieces: tuple[str, ...]
    arrival_s: tuple[float, ...]

    @property
    def text(self) -> str:
        """Return the whole answer."""
        return "".join(self.pieces)

    @property
    def first_s(self) -> float:
        """Return the time to the first piece (NaN when nothing arrived)."""
        return self.arrival_s[0] if self.arrival_s else float("nan")

    def plot(self, title: str = "Streaming: text arrives piece by piece", ax=None):
        """Draw pieces received against time as a step plot; return the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3))
        ax.step(self.arrival_s, range(1, len(self.arrival_s) + 1), where="post")
        if self.arrival_s:  # time to first piece: the wait before anything shows
            ax.axvline(self.first_s, color="gray", linestyle="--", linewidth=1)
            ax.annotate(
                f" first piece after {self.first_s * 1000:.0f} ms",
                (self.first_s, len(self.arrival_s)),
                va="top",
                fontsize=8,
                color="dimgray",
            )
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("seconds since request")
        ax.set_ylabel("pieces received")
        ax.set_title(title)
        ax.figure.tight_layout()
        return ax


def record_arrivals(pieces: Iterable[str | None]) -> Arrivals:
    """Consume a stream of text pieces (empty ones skipped), timing when each arrives.

    Works on `dk.stream(...)` and on a client's stream, e.g.
    `(c.choices[0].delta.content for c in chunks if c.choices)`.
    """
    got, times = [], []
    started = time.perf_counter()
    for piece in pieces:
        if piece:
            times.append(time.perf_counter() - started)
            got.append(piece)
    return Arrivals(tuple(got), tuple(times))


def memory_footprint(lm: LoadedModel) -> dict[str, int]:
    """Return weight bytes, process resident bytes and, on CUDA, allocated GPU bytes."""
    import psutil
    import torch

    report = {
        "weights_bytes": lm.weight_bytes,
        "process_rss_bytes": psutil.Process().memory_info().rss,
    }
    if str(lm.model.device).startswith("cuda"):
        report["cuda_allocated_bytes"] = torch.cuda.memory_allocated(lm.model.device)
        report["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(lm.model.device)
    return report
