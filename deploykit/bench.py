"""Benchmark deploykit's server against the one-at-a-time baseline and `transformers serve`.

    python -m deploykit.bench --models toy-tiny toy-small --write-doc docs/benchmarks.md

Servers run one after another on this machine, on loopback, with the same model, dtype
and threads; each gets the same load (N requests x max_tokens greedy output tokens) at
each concurrency after a warm-up. Not a test: it measures, prints a table with its
conditions, and can rewrite its own section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

from .launch import launch
from .loadgen import LoadResult, LoadSpec, sweep
from .models import model_path

SECTION = "## Reference server vs baseline vs transformers serve"
SERVERS = ("naive", "transformers", "deploykit")
NOTES = """Why deploykit's engine is a hand-written loop and not transformers' own continuous
batching: measured on the same 2-core CPU with toy-tiny, 32 sequences x 64 tokens,
`model.generate_batch` / `init_continuous_batching` (attn_implementation "paged|sdpa",
persistent manager) gave about 2,300 output tokens/s, against about 13,500 for one
decode forward over a left-padded DynamicCache (2.4 ms per step for 32 rows vs 1.4 ms
for one). Paged attention pays off with flash kernels on GPUs; on CPUs its per-step
bookkeeping dominates. The engine therefore runs its own decode loop in a dedicated
thread (`deploykit/server/engine.py`, `kvbatch.py`), and this table is the end-to-end
check over HTTP.

Threads: one intra-op thread per server. With the default (two on this machine), a
32-row step took 5.8 ms instead of 3.3 ms whenever other work shared the cores,
because each op waits for its second thread to be scheduled; the one-at-a-time
baseline and `transformers serve` get the same setting.
"""
_LABELS = {"naive": "one-at-a-time (`serve --naive`)",
           "transformers": "`transformers serve --continuous-batching`",
           "deploykit": "deploykit `serve`"}


def server_command(kind: str, model: str) -> list[str]:
    """Return the launch command (with {host}/{port} placeholders) of one server kind."""
    py = sys.executable
    if kind in ("deploykit", "naive"):
        return [py, "-m", "deploykit.cli", "serve", *(["--naive"] if kind == "naive" else []),
                "--model", model, "--host", "{host}", "--port", "{port}", "--device", "cpu",
                "--dtype", "float32"]
    if kind == "transformers":
        # dtype "auto" reads float32 from the toy's config. The KV cache is bounded (1024
        # blocks x 64 tokens, enough for 32 x 2048-token sequences): left to size itself,
        # it takes most free RAM on CPU (17 GB here, then the OOM killer).
        return [str(Path(py).with_name("transformers")), "serve", "--continuous-batching",
                "--host", "{host}", "--port", "{port}", "--device", "cpu",
                "--cb-block-size", "64", "--cb-num-blocks", "1024", "--cb-max-batch-tokens", "2048",
                model_path(model, progress=False)]
    raise ValueError(f"unknown server kind {kind!r}; use one of {SERVERS}")


def run_server(kind: str, model: str, concurrencies: list[int], num_requests: int,
               max_tokens: int, prompt: str, threads: int) -> list[LoadResult]:
    """Start one server, sweep the concurrencies, stop it; return one result per concurrency."""
    # transformers serve names the model by its path and rejects vLLM's ignore_eos; the
    # prompt is one where greedy decoding does not reach EOS early (the table shows tokens)
    name = model_path(model, progress=False) if kind == "transformers" else model
    spec = LoadSpec(model=name, prompt=prompt, max_tokens=max_tokens, temperature=0.0,
                    ignore_eos=kind != "transformers", timeout_s=600.0)
    with launch(server_command(kind, model), timeout_s=300.0, name=f"bench-{kind}",
                env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}) as server:
        return sweep(server.url, concurrencies, spec, num_requests=num_requests,
                     warmup_requests=4, progress=True)


def conditions() -> dict[str, str]:
    """Return the machine and software facts a reader needs to judge the figures."""
    import torch
    import transformers

    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    return {"cpu": f"{cpu}, {os.cpu_count()} cores",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(),
            "load_average": " / ".join(f"{x:.2f}" for x in load),
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


def parser(prog: str, doc: str, servers: tuple[str, ...], threads_help: str) -> argparse.ArgumentParser:
    """Return the command line both benchmarks share: models, servers, load, threads, doc."""
    ap = argparse.ArgumentParser(prog=prog, description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["toy-tiny", "toy-small"])
    ap.add_argument("--servers", nargs="+", default=list(servers), choices=servers)
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--num-requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt", default="def main():")
    ap.add_argument("--threads", type=int, default=1, help=threads_help)
    ap.add_argument("--write-doc", type=Path, default=None,
                    help="rewrite this benchmark's section of this markdown file")
    return ap


def run_all(args: argparse.Namespace, run_one) -> dict[tuple[str, str], list[LoadResult]]:
    """Run run_one(kind, model, ...) for every model and server; print each sweep as it ends."""
    results: dict[tuple[str, str], list[LoadResult]] = {}
    for model in args.models:
        for kind in args.servers:
            print(f"--- {model} / {kind}", flush=True)
            results[(model, kind)] = run_one(kind, model, args.concurrency, args.num_requests,
                                             args.max_tokens, args.prompt, args.threads)
            for r in results[(model, kind)]:
                print(r.summary(), flush=True)
                errors = sorted({x.error or f"HTTP {x.status}" for x in r.results if not x.ok})
                if errors:
                    print(f"  failed requests: {errors[:3]}", flush=True)
    return results


def row(model: str, label: str, r: LoadResult, ratios: list[str]) -> str:
    """Return one table row: throughput (with failures), p50 latency, tokens/request, ratios."""
    tok = sum(x.output_tokens for x in r.results if x.ok) / max(r.num_ok, 1)
    failed = len(r.results) - r.num_ok
    errors = f" ({failed} failed)" if failed else ""
    return (f"| {model} | {r.concurrency} | {label} | {r.output_tokens_per_s:,.0f}{errors} | "
            f"{r.latency_s(0.5):.3f} | {tok:.1f} | " + " | ".join(ratios) + " |")


def table(results: dict[tuple[str, str], list[LoadResult]]) -> str:
    """Return a markdown table: tokens/s per server and concurrency, and the ratios."""
    lines = ["| model | concurrency | server | output tokens/s | p50 latency (s) | tokens/request "
             "| vs one-at-a-time | vs transformers serve |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for model in dict.fromkeys(m for m, _ in results):
        by_kind = {k: results[(m, k)] for m, k in results if m == model}
        for i in range(len(next(iter(by_kind.values())))):
            base = by_kind.get("naive", [None] * (i + 1))[i]
            hf = by_kind.get("transformers", [None] * (i + 1))[i]
            for kind, res in by_kind.items():
                r = res[i]
                vs = [f"{r.output_tokens_per_s / o.output_tokens_per_s:.2f}x" if o and kind != k
                      else "" for o, k in ((base, "naive"), (hf, "transformers"))]
                lines.append(row(model, _LABELS[kind], r, vs))
    return "\n".join(lines)


def write_section(doc: Path, body: str, section: str = SECTION) -> None:
    """Replace (or append) one benchmark's section of doc, leaving other sections alone."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start = text.find(section + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    else:
        nxt = text.find("\n## ", start + len(section))
        rest = "" if nxt == -1 else "\n" + text[nxt + 1:]
        text = text[:start] + body.rstrip("\n") + "\n" + rest
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    args = parser("python -m deploykit.bench", __doc__, SERVERS,
                  "OMP_NUM_THREADS of every server (default 1: tiny models gain nothing "
                  "from more, and a shared machine makes extra threads wait)").parse_args(argv)
    before = conditions()
    results = run_all(args, run_server)
    after = conditions()
    command = "HF_HUB_OFFLINE=1 python -m deploykit.bench " + shlex.join(argv or sys.argv[1:])
    body = "\n".join([
        SECTION, "",
        f"{args.num_requests} requests x {args.max_tokens} greedy output tokens per request "
        f"(`ignore_eos` where the server supports it; the prompt {args.prompt!r} does not reach "
        "EOS early, see tokens/request), at each concurrency, after 4 warm-up requests. "
        "Servers ran one after another on loopback, CPU, float32, same threads.", "",
        table(results), "", NOTES,
        f"- Machine: {before['cpu']}; every server ran with OMP_NUM_THREADS={args.threads}.",
        f"- Software: torch {before['torch']}, transformers {before['transformers']}, "
        f"Python {before['python']}.",
        f"- Load average (1/5/15 min) before: {before['load_average']}; after: "
        f"{after['load_average']}. Other work shared the machine if these exceed 0.5.",
        f"- Run {before['date']} to {after['date']}.",
        f"- Command: `{command}`", ""])
    print(body)
    if args.write_doc:
        write_section(args.write_doc, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
