"""Chunked prefill: the running streams' inter-token latency while long prompts arrive.

    deploykit bench prefill --write-doc docs/benchmarks.md

deploykit servers of one model that differ only in `--prefill-chunk-tokens` (0: every prompt
in one forward) take turns round by round. In a round, one server gets `--streams`
closed-loop streams of a short prompt and, once they run, `--long-prompts` long prompts
(about `--long-tokens` tokens, one output token each) one after another. Without chunks,
each long prompt's prefill holds every running stream's next token for the whole forward;
with them, the streams decode between chunks. The table gives the streams' gaps between
tokens (ITL) while a long prompt was in flight (p50, p99, max), the streams' output tokens/s
over the round, and the long prompts' time to first token.
Not a test: it measures, prints, and rewrites only its own section of the doc.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, replace

from .._conditions import cpu_features, machine_conditions
from .._runtime import run_sync
from ..argtypes import non_negative_int, positive_int
from ..errors import InvalidArgumentError
from ..launch import launch_server
from ..models import resolve_model
from ..server.process import serve_command
from .harness import Measurement, Run, add_write_doc, command_line, publish
from .loadgen import LoadResult, LoadSpec, run_load, run_load_async
from .metrics import percentile

SECTION = "## Chunked prefill: ITL under a mixed load"
SHORT_PROMPT = "def main():"
LONG_SENTENCE = "The quick brown fox jumps over the lazy dog while the cat sleeps. "
SENTENCE_TOKENS = 14  # about, for smollm2's tokenizer; the table reports the served count


@dataclass(frozen=True)
class Round:
    """One round on one server: the streams' load, the long prompts' load, and the window in
    which a long prompt was in flight (seconds after the streams' load started)."""

    streams: LoadResult
    long: LoadResult
    window: tuple[float, float]

    @property
    def covered(self) -> bool:
        """Return True if the streams ran until the last long prompt was answered."""
        return self.streams.wall_s >= self.window[1]

    def gaps_s(self) -> list[float]:
        """Return the streams' gaps between tokens that ended inside the window."""
        start, end = self.window
        gaps = []
        for r in self.streams.results:
            if not r.ok or r.time_to_first_token_s is None:
                continue
            t = r.start_s + r.time_to_first_token_s
            for gap in r.itl_s:
                t += gap
                if start <= t <= end:
                    gaps.append(gap)
        return gaps


async def _round(url: str, streams: LoadSpec, long: LoadSpec, args: argparse.Namespace) -> Round:
    began = time.perf_counter()
    short = asyncio.ensure_future(run_load_async(url, streams, args.stream_requests, args.streams))
    await asyncio.sleep(args.lead_s)  # the streams are decoding before the first long prompt
    offset = time.perf_counter() - began
    long_load = await run_load_async(url, long, args.long_prompts, 1)
    window = (offset, offset + long_load.wall_s)
    return Round(await short, long_load, window)


def _specs(model: str, args: argparse.Namespace) -> tuple[LoadSpec, LoadSpec]:
    streams = LoadSpec(model=model, prompt=SHORT_PROMPT, max_tokens=args.stream_tokens, stream=True)
    text = LONG_SENTENCE * max(1, args.long_tokens // SENTENCE_TOKENS)
    return streams, replace(streams, prompt=text, max_tokens=1)


def _start(model: str, chunk: int, args: argparse.Namespace):
    return launch_server(
        serve_command(
            model,
            device="cpu",
            dtype=args.dtype,
            args=["--prefill-chunk-tokens", str(chunk), "--max-batch-size", str(args.streams + 1)],
        ),
        timeout_s=300.0,
        name=f"bench-prefill-{chunk}",
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)},
    )


def _label(chunk: int) -> str:
    return "whole prompt (0)" if chunk == 0 else f"{chunk} tokens"


def table(rounds: dict[int, list[Round]]) -> str:
    """Return the table: per chunk size, the streams' ITL while long prompts ran, and more."""
    lines = [
        "| prefill chunk | streams' ITL p50 (ms) | ITL p99 (ms) | ITL max (ms) "
        "| streams' output tokens/s (median round) | long prompt TTFT p50 (ms) "
        "| long prompt tokens | failed requests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for chunk, runs in rounds.items():
        gaps = [g * 1e3 for r in runs for g in r.gaps_s()]
        ttfts = [
            x.time_to_first_token_s * 1e3
            for r in runs
            for x in r.long.results
            if x.ok and x.time_to_first_token_s is not None
        ]
        rates = sorted(r.streams.output_tokens_per_s for r in runs)
        tokens = sorted({x.input_tokens for r in runs for x in r.long.results if x.input_tokens})
        failed = sum(len(load.results) - load.num_ok for r in runs for load in (r.streams, r.long))
        lines.append(
            f"| {_label(chunk)} | {percentile(gaps, 50):.1f} | {percentile(gaps, 99):.1f} | "
            f"{max(gaps, default=float('nan')):.1f} | {rates[len(rates) // 2]:,.0f} | "
            f"{percentile(ttfts, 50):,.0f} | {', '.join(map(str, tokens)) or '-'} | {failed} |"
        )
    return "\n".join(lines)


def _coverage_line(rounds: dict[int, list[Round]], args: argparse.Namespace) -> str:
    short = [f"{_label(c)} round {i + 1}" for c, runs in rounds.items()
             for i, r in enumerate(runs) if not r.covered]  # fmt: skip
    if not short:
        return "- In every round the streams ran until the last long prompt was answered."
    return (
        f"- The streams ended before the last long prompt was answered in: {', '.join(short)} "
        f"(raise --stream-requests above {args.stream_requests} for a full window)."
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed arguments; print the section (and write it if asked)."""
    if len(set(args.chunks)) != len(args.chunks):
        raise InvalidArgumentError(f"--chunks {args.chunks}: name each chunk size once.")
    resolve_model(args.model)  # a built-in model not built yet is built here, not in a server
    streams, long = _specs(args.model, args)
    before = machine_conditions()
    rounds: dict[int, list[Round]] = {chunk: [] for chunk in args.chunks}
    with contextlib.ExitStack() as stack:
        servers = {}
        for chunk in args.chunks:
            print(f"--- starting deploykit serve --prefill-chunk-tokens {chunk}", flush=True)
            servers[chunk] = stack.enter_context(_start(args.model, chunk, args))
        for server in servers.values():  # warm-up: first requests load code paths
            run_load(server.url, streams, 2, 2)
            run_load(server.url, long, 1, 1)
        for i in range(args.rounds):
            order = args.chunks[i % len(args.chunks) :] + args.chunks[: i % len(args.chunks)]
            for chunk in order:
                r = run_sync(_round(servers[chunk].url, streams, long, args))
                rounds[chunk].append(r)
                gaps = r.gaps_s()
                print(
                    f"round {i + 1} chunk {chunk}: {len(gaps)} gaps while long prompts ran, "
                    f"max {max(gaps, default=float('nan')) * 1e3:.0f} ms, long TTFT "
                    f"{[round((x.time_to_first_token_s or 0) * 1e3) for x in r.long.results]} ms",
                    flush=True,
                )
    done = Measurement(Run(), before, machine_conditions(), command_line("prefill", args))
    body = "\n".join(
        [
            SECTION,
            "",
            f"{args.model} in {args.dtype}, deploykit `serve` with each --prefill-chunk-tokens "
            f"below. Per round and server: {args.stream_requests} requests of "
            f"{args.stream_tokens} output tokens from {args.streams} closed-loop streams "
            f"(prompt {SHORT_PROMPT!r}, greedy, `ignore_eos`, streamed) and, from "
            f"{args.lead_s:g} s after they start, {args.long_prompts} long prompts (the "
            "tokens in the table, one output token each) sent one after another. ITL columns: "
            "the streams' gaps between tokens that ended while a long prompt was in flight, "
            f"pooled over {args.rounds} rounds per server (servers took turns round by round). "
            "Throughput: the streams' output tokens over the round.",
            "",
            table(rounds),
            "",
            _coverage_line(rounds, args),
            f"- Machine: {before['cpu']}; {cpu_features()}; OMP_NUM_THREADS={args.threads}.",
            done.software_line(),
            done.load_line(),
            *done.closing_lines(),
        ]
    )
    publish(body, args.write_doc, SECTION)
    return 0


def configure(ap: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to its `deploykit bench prefill` parser."""
    ap.add_argument("--model", default="smollm2-135m", help="built-in name or local folder")
    ap.add_argument("--dtype", default="bfloat16", help="the servers' dtype")
    ap.add_argument(
        "--chunks",
        nargs="+",
        type=non_negative_int,
        default=[0, 512, 128],
        help="--prefill-chunk-tokens of each server (0: whole prompts)",
    )
    ap.add_argument("--streams", type=positive_int, default=8, help="closed-loop short streams")
    ap.add_argument(
        "--stream-requests", type=positive_int, default=64, help="short requests per round"
    )
    ap.add_argument(
        "--stream-tokens", type=positive_int, default=64, help="output tokens per short request"
    )
    ap.add_argument("--long-prompts", type=positive_int, default=3, help="long prompts per round")
    ap.add_argument(
        "--long-tokens", type=positive_int, default=1024, help="about this many tokens each"
    )
    ap.add_argument(
        "--lead-s",
        type=float,
        default=1.0,
        help="seconds between the streams' start and the first long prompt",
    )
    ap.add_argument("--rounds", type=positive_int, default=2, help="timed rounds per server")
    ap.add_argument("--threads", type=positive_int, default=1, help="OMP_NUM_THREADS of each")
    add_write_doc(ap)
