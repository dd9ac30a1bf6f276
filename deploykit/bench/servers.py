"""Benchmark deploykit's server against the one-at-a-time baseline and `transformers serve`.

    deploykit bench servers --models toy-tiny toy-small --write-doc docs/benchmarks.md

Every server of a model runs with the same model, dtype and threads and takes turns round
by round (see `harness`). Not a test: it measures, prints a table with its conditions,
and can rewrite its own section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InvalidArgumentError
from ..launch import Server, launch_server
from ..models import resolve_model
from ..server.process import serve_command
from .harness import Measured, add_arguments, measure, paired_ratio, row, write_section
from .loadgen import LoadSpec

SECTION = "## Reference server vs baseline vs transformers serve"
SERVERS = ("naive", "transformers", "deploykit")
NOTES = """Why deploykit's engine is a hand-written loop and not transformers' own continuous
batching: measured on a 2-core CPU of this kind with toy-tiny, 32 sequences x 64 tokens,
`model.generate_batch` / `init_continuous_batching` (attn_implementation "paged|sdpa",
persistent manager) gave about 2,300 output tokens/s, against about 13,500 for one
decode forward over a left-padded DynamicCache (2.4 ms per step for 32 rows vs 1.4 ms
for one). Paged attention pays off with flash kernels on GPUs; on CPUs its per-step
bookkeeping dominates. The engine therefore runs its own decode loop in a dedicated
thread (`deploykit/server/engine.py`, `kvbatch.py`), and this table is the end-to-end
check over HTTP.

Threads: one intra-op thread per server. With the default (two on a 2-core machine), a
32-row step took 5.8 ms instead of 3.3 ms whenever other work shared the cores,
because each op waits for its second thread to be scheduled; the one-at-a-time
baseline and `transformers serve` get the same setting.

The load generator shares the two cores with the servers, so its own cost counts. In an
A/B against one deploykit server (6 alternating rounds of this load at concurrency 32),
httpx's AsyncClient spent 2.9 ms of CPU per request and aiohttp 0.35 ms, and the server
made 4,995 output tokens/s (median) under httpx against 5,580 under aiohttp (+12%). The
load therefore comes from aiohttp, as in vLLM's serving benchmark. The servers run uvicorn
with uvloop and httptools (`uvicorn[standard]`): 0.17 ms of server CPU per `/health`
request instead of 0.38 ms, 0.92 ms per short completion instead of 1.19 ms.
"""
_LABELS = {
    "naive": "one-at-a-time (`serve --naive`)",
    "transformers": "`transformers serve --continuous-batching`",
    "deploykit": "deploykit `serve`",
}


def server_command(kind: str, model: str, device: str = "cpu", dtype: str = "float32") -> list[str]:
    """Return the launch command (with {host}/{port} placeholders) of one server kind."""
    py = sys.executable
    if kind in ("deploykit", "naive"):
        return serve_command(model, naive=kind == "naive", device=device, dtype=dtype)
    if kind == "transformers":
        # dtype "auto" reads float32 from the toy's config. The KV cache is bounded (1024
        # blocks x 64 tokens, enough for 32 x 2048-token sequences): left to size itself,
        # it takes most free RAM on CPU (17 GB here, then the OOM killer).
        return [
            str(Path(py).with_name("transformers")),
            "serve",
            "--continuous-batching",
            "--host",
            "{host}",
            "--port",
            "{port}",
            "--device",
            device,
            "--cb-block-size",
            "64",
            "--cb-num-blocks",
            "1024",
            "--cb-max-batch-tokens",
            "2048",
            resolve_model(model, progress=False).location,
        ]
    raise InvalidArgumentError(f"unknown server kind {kind!r}; use one of {', '.join(SERVERS)}")


def start_server(kind: str, model: str, args: argparse.Namespace) -> Server:
    """Start one server of kind for model on args.device with args.threads; return it, healthy."""
    return launch_server(
        server_command(kind, model, args.device, args.dtype),
        timeout_s=300.0,
        name=f"bench-{kind}",
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)},
    )


def load_spec(kind: str, model: str, args: argparse.Namespace) -> LoadSpec:
    """Return the load one server of kind gets: same prompt and length for every server."""
    # transformers serve names the model by its path and rejects vLLM's ignore_eos; the
    # prompt is one where greedy decoding does not reach EOS early (the table shows tokens)
    name = resolve_model(model, progress=False).location if kind == "transformers" else model
    return LoadSpec(
        model=name,
        prompt=args.prompt,
        max_tokens=args.max_tokens,
        temperature=0.0,
        ignore_eos=kind != "transformers",
        timeout_s=600.0,
    )


def table(results: dict[tuple[str, str], list[Measured]]) -> str:
    """Return a markdown table: tokens/s per server and concurrency, and the paired ratios."""
    lines = [
        "| model | concurrency | server | output tokens/s (median round) | range of rounds "
        "| p50 latency (s) | tokens/request | vs one-at-a-time | vs transformers serve |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model in dict.fromkeys(m for m, _ in results):
        by_kind = {k: results[(m, k)] for m, k in results if m == model}
        for i in range(len(next(iter(by_kind.values())))):
            base = by_kind.get("naive", [None] * (i + 1))[i]
            hf = by_kind.get("transformers", [None] * (i + 1))[i]
            for kind, res in by_kind.items():
                vs = [
                    f"{paired_ratio(res[i], o):.2f}x" if o and kind != k else ""
                    for o, k in ((base, "naive"), (hf, "transformers"))
                ]
                lines.append(row(model, _LABELS[kind], res[i], vs))
    return "\n".join(lines)


THREADS_HELP = (
    "OMP_NUM_THREADS of every server (default 1: tiny models gain nothing from more, "
    "and a shared machine makes extra threads wait)"
)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed arguments; print the section (and write it if asked)."""
    measured = measure("servers", args, start_server, load_spec)
    body = "\n".join(
        [
            SECTION,
            "",
            f"{args.num_requests} requests x {args.max_tokens} greedy output tokens per round "
            f"(`ignore_eos` where the server supports it; the prompt {args.prompt!r} does not reach "
            f"EOS early, see tokens/request), {args.rounds} timed rounds per server at each "
            "concurrency after 4 warm-up requests and one untimed round. The servers of a model ran "
            f"at the same time on loopback ({args.device}, {args.dtype}, same threads) and took "
            "turns round by round; the table gives the median round, the range over rounds, and the "
            "ratios as the median of per-round ratios. Load from `deploykit.bench.loadgen` (aiohttp).",
            "",
            table(measured.run.results),
            "",
            NOTES,
            f"- Machine: {measured.before['cpu']}; every server ran with "
            f"OMP_NUM_THREADS={args.threads}.",
            measured.run.idle_line(),
            measured.software_line(),
            measured.load_line(),
            *measured.closing_lines(),
        ]
    )
    print(body)
    if args.write_doc:
        write_section(args.write_doc, body, SECTION)
    return 0


def configure(ap: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to its `deploykit bench servers` parser."""
    add_arguments(ap, SERVERS, THREADS_HELP)
