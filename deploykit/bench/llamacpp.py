"""Benchmark deploykit's own server against llama.cpp's server on the same real model and load.

    deploykit bench llamacpp --models smollm2-135m --write-doc docs/benchmarks.md

For each model, deploykit `serve` (float32 weights in PyTorch) and llama.cpp's C++ server
(the `xllamacpp` wheel, serving the model's GGUF) run at the same time on loopback, one
compute thread each, and take turns round by round (see `harness`); each round is
N requests x max_tokens output tokens (greedy, `ignore_eos`) to `/v1/completions`, after
an untimed round at that concurrency. The two engines compute differently (llama.cpp:
quantized weights, its own kernels), so the ratio is what a user gets from each path on
this CPU, not a kernel comparison.
Not a test: it measures, prints a table with its conditions, and rewrites only its own
section of the doc.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from ..engines.llamacpp import LlamaCppArgs, start_llamacpp
from ..errors import MissingExtraError
from ..launch import Server
from ..models import resolve_model
from . import servers
from .harness import Measured, add_arguments, fixed_load, measure, pair_table, publish

SECTION = "## deploykit vs llama.cpp"
_LABELS = {"deploykit": "deploykit `serve`", "llamacpp": "llama.cpp server (xllamacpp)"}
_SHORT = {"deploykit": "deploykit", "llamacpp": "llama.cpp"}
# Small enough for a full run in a few minutes on 2 cores: deploykit decodes the 135M model
# in float32 at roughly 12-20 tokens/s on one thread.
DEFAULTS = {
    "models": ["smollm2-135m"],
    "concurrency": [1, 4],
    "rounds": 3,
    "num_requests": 12,
    "max_tokens": 64,
}
PROMPT_ROOM_TOKENS = 512  # per llama.cpp slot, beside max_tokens: room for the prompt


def llamacpp_build() -> tuple[str, str]:
    """Return xllamacpp's version and llama.cpp's CPU feature line, from a child process.

    A child, so that this process never loads llama.cpp's library; it also fails here,
    before any server starts, when xllamacpp is missing.
    """
    code = (
        "import xllamacpp; print(xllamacpp.__version__); print(xllamacpp.get_system_info().strip())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise MissingExtraError(
            f"cannot import xllamacpp ({last}); install it with "
            f"`{sys.executable} -m pip install xllamacpp`."
        )
    version, _, features = done.stdout.strip().partition("\n")
    return version, features.strip().rstrip("|").strip()


def llamacpp_args(model: str, args: argparse.Namespace) -> LlamaCppArgs:
    """Return llama.cpp's arguments: args.threads, one slot per request of the top concurrency."""
    # n_parallel = the highest concurrency: every request in flight gets a slot, as every
    # one gets a row of deploykit's batch (up to 32), so neither server queues requests.
    n_parallel = max(args.concurrency)
    return LlamaCppArgs(
        model=model,
        threads=args.threads,
        n_parallel=n_parallel,
        ctx_size=n_parallel * (args.max_tokens + PROMPT_ROOM_TOKENS),
    )


def start_server(kind: str, model: str, args: argparse.Namespace) -> Server:
    """Start deploykit's server or llama.cpp's on model; return it, healthy."""
    if kind == "deploykit":
        return servers.start_server("deploykit", model, args)
    return start_llamacpp(llamacpp_args(model, args), timeout_s=300.0, name="bench-llamacpp")


def weights_line(
    models: list[str], args: argparse.Namespace, results: dict[tuple[str, str], list[Measured]]
) -> str:
    """Return the doc line with the weight bytes each engine reads per decode step, per model.

    At concurrency 1 one step makes one token, so bytes x tokens/s is the rate at which an
    engine streams its weights; from concurrency 1 to the highest, a step makes more tokens
    for the same weight bytes, and the gain in tokens/s shows how far that pays.
    """
    parts = []
    top = max(args.concurrency)
    for model in models:
        source = resolve_model(model, progress=False)
        params = source.info.get("num_parameters")
        if not (params and source.gguf_file):
            continue
        sizes = {"deploykit": params * 4, "llamacpp": source.gguf_file.stat().st_size}
        part = (
            f"{model}: {sizes['deploykit'] / 1e6:,.0f} MB of float32 for deploykit, "
            f"{sizes['llamacpp'] / 1e6:,.0f} MB of GGUF for llama.cpp"
        )
        tps = {
            kind: {
                c: m.median.output_tokens_per_s
                for c, m in zip(args.concurrency, results[(model, kind)])
            }
            for kind in sizes
            if (model, kind) in results
        }
        if 1 in args.concurrency and tps:
            part += "; bytes x tokens/s at concurrency 1: " + ", ".join(
                f"{_SHORT[k]} {sizes[k] * v[1] / 1e9:.1f} GB/s" for k, v in tps.items()
            )
            if top > 1:
                part += f"; tokens/s at concurrency {top} over concurrency 1: " + ", ".join(
                    f"{_SHORT[k]} {v[top] / v[1]:.2f}x" for k, v in tps.items() if v[1]
                )
        parts.append(part)
    if not parts:
        return ""
    return (
        "- Weights read per decode step (the whole model, once per step whatever the batch): "
        + "; ".join(parts)
        + ". Fewer bytes are not the whole story: llama.cpp's Q4_1 "
        "kernels also spend arithmetic unpacking 4-bit blocks (with AVX2 only, here). A step "
        "over several sequences reads the weights once for all of them, so tokens/s grows "
        "with concurrency until the step's arithmetic, not its memory traffic, sets the pace."
    )


def cpu_vector_line() -> str:
    """Return which of AVX-512 and AMX this CPU has (from /proc/cpuinfo), in words."""
    try:
        flags = next(
            (
                line.split(":", 1)[1].split()
                for line in open("/proc/cpuinfo")
                if line.startswith("flags")
            ),
            [],
        )
    except OSError:
        return "vector extensions unknown"
    has = [name for name, flag in (("AVX-512", "avx512f"), ("AMX", "amx_tile")) if flag in flags]
    missing = [name for name in ("AVX-512", "AMX") if name not in has]
    words = ([f"with {' and '.join(has)}"] if has else []) + (
        [f"no {' or '.join(missing)}"] if missing else []
    )
    return ", ".join(words)


def torch_capability() -> str:
    """Return the vector ISA PyTorch's CPU kernels use here (e.g. AVX512)."""
    import torch

    get = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return get() if get else "unknown"


THREADS_HELP = (
    "compute threads of each server: OMP_NUM_THREADS for deploykit, --threads for "
    "llama.cpp (default 1: on a busy CPU llama.cpp with threads = cores stalls, its "
    "threads waiting for each other)"
)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed arguments; print the section (and write it if asked)."""
    version, features = (
        llamacpp_build() if "llamacpp" in args.servers else ("-", "-")
    )  # fail before any server starts
    measured = measure("llamacpp", args, start_server, fixed_load)
    result, before = measured.run, measured.before
    slots = llamacpp_args(args.models[0], args)
    body = "\n".join(
        [
            SECTION,
            "",
            f"{args.num_requests} requests x {args.max_tokens} output tokens per round (greedy, "
            f"`ignore_eos`, prompt {args.prompt!r}), {args.rounds} timed rounds per server at each "
            "concurrency after 4 warm-up requests and one untimed round, sent by "
            "`deploykit.bench.loadgen` (aiohttp) to `/v1/completions`. The two servers ran at the "
            "same time on loopback with the same model and took turns round by round; the table "
            "gives the median round, the range over rounds, and the ratio as the median of "
            "per-round ratios.",
            "",
            pair_table(result.results, _LABELS, "llama.cpp / deploykit"),
            "",
            "- What each engine computes with: deploykit `serve` runs the model in PyTorch "
            f"({args.dtype} on {args.device}; smollm2-135m's float32 weights are its Q4_1 GGUF "
            "dequantized exactly, so both serve the same quantized model). llama.cpp serves the "
            "Q4_1 GGUF itself (Q8_0 token embedding) with its own CPU kernels, which round the "
            "activations to 8 bits for each Q4_1 dot product, so the two greedy texts can part "
            "after a few tokens; `ignore_eos` keeps the token counts equal (tokens/request). The "
            "ratio is what a user gets from each path on this CPU, not a comparison of kernels.",
            *filter(None, [weights_line(args.models, args, result.results)]),
            f"- Machine: {before['cpu']}, {cpu_vector_line()}. The xllamacpp {version} CPU wheel is "
            "built without AVX-512 or AMX kernels (AVX2/FMA/F16C only); llama.cpp reports "
            f"`{features}`. PyTorch reports CPU capability {torch_capability()} "
            "(`torch.backends.cpu.get_cpu_capability()`).",
            f"- Threads: {args.threads} compute thread(s) per server (deploykit: OMP_NUM_THREADS="
            f"{args.threads}; llama.cpp: `threads={args.threads}`, for prompts too). On a shared or "
            "busy CPU, llama.cpp with as many threads as cores collapses: its threads wait for "
            "each other at every step, and one of them is often waiting for a core.",
            f"- Batching: llama.cpp ran with `n_parallel={slots.n_parallel}` slots (the highest "
            f"concurrency; KV cache `ctx_size={slots.ctx_size}`, split over the slots), deploykit "
            "with its default batch of up to 32 sequences: every request in flight is decoded at "
            "once by both, and neither queues differently.",
            result.idle_line(),
            measured.software_line(f"xllamacpp {version}, "),
            measured.load_line(
                ", so compare the two servers within one run (the ratio column), not across runs"
            ),
            *measured.closing_lines(),
        ]
    )
    publish(body, args.write_doc, SECTION)
    return 0


def configure(ap: argparse.ArgumentParser) -> None:
    """Add this benchmark's options, with its own defaults, to its `deploykit bench llamacpp` parser."""
    add_arguments(ap, tuple(_LABELS), THREADS_HELP)
    ap.set_defaults(**DEFAULTS)
