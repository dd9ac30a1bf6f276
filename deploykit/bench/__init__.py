"""Load generation and benchmarks: `loadgen` sends the load, `harness` runs interleaved
rounds and writes the doc section, `servers`, `vllm` and `llamacpp` are the benchmarks.

    deploykit bench servers --models toy-tiny --write-doc docs/benchmarks.md
    deploykit bench vllm --models toy-tiny toy-small --write-doc docs/benchmarks.md
    deploykit bench llamacpp --models smollm2-135m --write-doc docs/benchmarks.md
"""

from __future__ import annotations

import importlib

# subcommand -> (module, help)
_BENCHMARKS = {
    "servers": ("servers", "deploykit serve vs the one-at-a-time baseline vs transformers serve"),
    "vllm": ("vllm", "deploykit serve vs vLLM on the same models and load"),
    "llamacpp": ("llamacpp", "deploykit serve vs llama.cpp's server on smollm2-135m, same load"),
}


def add_cli(sub) -> None:
    """Add `deploykit bench servers|vllm|llamacpp` to the CLI."""
    from .harness import add_arguments

    p = sub.add_parser("bench", help="benchmarks: interleaved rounds, paired ratios, doc tables")
    bsub = p.add_subparsers(dest="bench_cmd", required=True)
    for name, (module_name, help_text) in _BENCHMARKS.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        cmd = bsub.add_parser(name, help=help_text, description=module.__doc__)
        add_arguments(cmd, module.SERVERS if hasattr(module, "SERVERS") else tuple(module._LABELS),
                      module.THREADS_HELP)
        cmd.set_defaults(**getattr(module, "DEFAULTS", {}))  # a benchmark's own model, sizes
        cmd.set_defaults(func=lambda args, module=module: module.run(args))
