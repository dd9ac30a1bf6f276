"""`deploykit bench`: benchmark a running endpoint, or run a benchmark that starts its own.

deploykit bench --url http://127.0.0.1:8000 --concurrency 1,8,32 --num-prompts 64
deploykit bench servers --models toy-tiny --write-doc docs/benchmarks.md
deploykit bench vllm --models toy-tiny toy-small --write-doc docs/benchmarks.md
deploykit bench engines --models smollm2-135m --write-doc docs/benchmarks.md
deploykit bench kernels --write-doc docs/benchmarks.md
deploykit bench llamacpp --models smollm2-135m --write-doc docs/benchmarks.md
deploykit bench quantize --write-doc docs/benchmarks.md
deploykit bench prefill --write-doc docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import importlib
import os

from ..argtypes import number_list, slo
from ..errors import InvalidArgumentError

# subcommand -> (module, help)
_BENCHMARKS = {
    "servers": ("servers", "deploykit serve vs the one-at-a-time baseline vs transformers serve"),
    "vllm": ("vllm", "deploykit serve vs vLLM on the same models and load"),
    "engines": ("engines", "deploykit serve in each mode (dtype, kernels) vs vLLM at each dtype"),
    "kernels": (
        "kernels",
        "deploykit's decode step per dtype and kernels: time, roofline, perplexity",
    ),
    "llamacpp": ("llamacpp", "deploykit serve vs llama.cpp's server on smollm2-135m, same load"),
    "quantize": ("quantize", "every quantization method side by side, transformers and llama.cpp"),
    "prefill": (
        "prefill",
        "chunked prefill: streams' ITL while long prompts arrive, per chunk size",
    ),
}


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of `deploykit bench --url` (the names of `vllm bench serve` where it has one)."""
    g = p.add_argument_group("benchmark a running endpoint (deploykit bench --url URL ...)")
    g.add_argument(
        "--url", help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000"
    )
    g.add_argument("--model", help="model name to send (default: the first of GET /v1/models)")
    g.add_argument(
        "--concurrency",
        dest="concurrency_levels",
        metavar="N[,N...]",
        type=number_list(int, "whole numbers"),
        help="closed loop: requests in flight at once, one run each, e.g. 1,8,32",
    )
    g.add_argument(
        "--request-rate",
        dest="rate_levels",
        metavar="R[,R...]",
        type=number_list(float, "numbers"),
        help="open loop: requests per second, one run each, e.g. 2,4,8",
    )
    g.add_argument(
        "--burstiness",
        type=float,
        default=1.0,
        help="gamma shape of the gaps between arrivals (1: Poisson; <1 burstier)",
    )
    g.add_argument("--num-prompts", type=int, default=64, help="measured requests per level")
    g.add_argument("--input-tokens", type=int, default=128, help="prompt length in tokens")
    g.add_argument("--output-tokens", type=int, default=128, help="tokens asked per request")
    g.add_argument("--warmups", type=int, default=2, help="unmeasured requests before each level")
    g.add_argument("--seed", type=int, default=0, help="seed of the prompts and arrival times")
    g.add_argument(
        "--tokenizer",
        help="tokenizer for the prompts: built-in name, folder or hub id (default: --model)",
    )
    g.add_argument(
        "--endpoint",
        choices=("completions", "chat"),
        default="completions",
        help="/v1/completions (default) or /v1/chat/completions",
    )
    g.add_argument(
        "--no-ignore-eos",
        dest="ignore_eos",
        action="store_false",
        help="do not send ignore_eos (for servers that reject it)",
    )
    g.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="for servers that cannot stream: TTFT becomes the whole latency",
    )
    g.add_argument(
        "--no-keep-alive",
        dest="keep_alive",
        action="store_false",
        help="a new connection per request (for servers that drop kept-alive ones)",
    )
    g.add_argument(
        "--metric-percentiles",
        type=number_list(float, "numbers"),
        default=[99.0],
        metavar="P[,P...]",
        help="percentiles to report, e.g. 50,90,99",
    )
    g.add_argument(
        "--goodput",
        nargs="+",
        type=slo,
        default=[],
        metavar="METRIC:MS",
        help="latency targets for goodput, METRIC:MS (ttft, tpot, e2el)",
    )
    g.add_argument("--label", help="name of this endpoint in the results (default: the model)")
    g.add_argument("--dtype", help="the server's dtype, recorded with the results")
    g.add_argument("--api-key-env", help="environment variable holding the API key to send")
    g.add_argument("--timeout-s", type=float, default=600.0, help="per-request time limit")
    g.add_argument("--result-dir", help="write one JSON result per level here")
    g.add_argument("--plot", help="save throughput, latency and TTFT-CDF plots to this file")


def run_serve(args: argparse.Namespace) -> int:
    """Run `deploykit bench --url ...`: benchmark, print vLLM-style blocks, save and plot."""
    from .serve import bench_serve, save_results
    from .tables import format_result

    if args.url is None:
        raise InvalidArgumentError(
            "give --url URL to benchmark a running server (e.g. deploykit bench --url "
            "http://127.0.0.1:8000 --concurrency 1,8), or name a benchmark that starts its own: "
            + ", ".join(_BENCHMARKS)
            + "."
        )
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise InvalidArgumentError(
                f"--api-key-env {args.api_key_env}: that environment "
                "variable is unset or empty; export it first."
            )
    results = bench_serve(
        args.url,
        model=args.model,
        concurrency=args.concurrency_levels,
        request_rate=args.rate_levels,
        burstiness=args.burstiness,
        num_prompts=args.num_prompts,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        warmups=args.warmups,
        seed=args.seed,
        tokenizer=args.tokenizer,
        chat=args.endpoint == "chat",
        ignore_eos=args.ignore_eos,
        stream=args.stream,
        keep_alive=args.keep_alive,
        percentiles=args.metric_percentiles,
        goodput_slo_ms=dict(args.goodput),
        label=args.label,
        dtype=args.dtype,
        api_key=api_key,
        timeout_s=args.timeout_s,
    )
    for result in results:
        print(format_result(result))
    if args.result_dir:
        for path in save_results(results, args.result_dir):
            print(f"wrote {path}")
    if args.plot:
        from .plots import plot_bench

        plot_bench(results).savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0


def _run_benchmark(module, args: argparse.Namespace) -> int:
    if args.url is not None:
        raise InvalidArgumentError(
            f"`bench {args.bench_cmd}` starts its own servers and takes no --url; drop one of them."
        )
    return module.run(args)


def add_cli(sub) -> None:
    """Add `deploykit bench --url ...` and `deploykit bench servers|vllm|llamacpp|quantize`."""
    p = sub.add_parser(
        "bench",
        help="benchmark a running endpoint (--url), or run a benchmark that starts its own servers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(p)
    p.set_defaults(func=run_serve)
    bsub = p.add_subparsers(dest="bench_cmd", required=False)
    for name, (module_name, help_text) in _BENCHMARKS.items():
        module = importlib.import_module(f"{__package__}.{module_name}")
        cmd = bsub.add_parser(
            name,
            help=help_text,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(cmd)
        cmd.set_defaults(func=lambda args, module=module: _run_benchmark(module, args))
