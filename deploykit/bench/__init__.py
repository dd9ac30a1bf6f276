"""Load generation and benchmarks: `loadgen` sends the load, `metrics` computes vLLM's
serving figures from it, `serve` benchmarks any running endpoint (`deploykit bench --url`),
`tables` prints its results and says what a sweep shows, `harness` runs interleaved rounds
and writes the doc section; `overhead` times what a front adds per request; `servers`, `vllm`,
`llamacpp` and `quantize` are the benchmarks that start their own servers (`cli` adds them all
to `deploykit bench`), `prefix_cache` measures what vLLM's prefix cache serves.
"""

from .compare import ServerRuns, bench_servers
from .loadgen import (
    LoadResult,
    LoadSpec,
    RequestResult,
    busy_load,
    probe_during_load,
    run_load,
    summary_rows,
    sweep,
)
from .metrics import goodput
from .overhead import added_latency
from .plots import plot_bench, plot_sweeps
from .prefix_cache import (
    PrefixCacheResult,
    measure_prefix_cache,
    median_ttft_s,
    plot_prefix_cache,
)
from .serve import RESULT_FIELDS, bench_serve, synthetic_prompts
from .tables import bench_table, format_result, goodput_findings, load_table, sweep_findings

__all__ = [
    "ServerRuns",
    "bench_servers",
    "LoadResult",
    "LoadSpec",
    "RequestResult",
    "busy_load",
    "probe_during_load",
    "run_load",
    "summary_rows",
    "sweep",
    "goodput",
    "added_latency",
    "plot_bench",
    "plot_sweeps",
    "PrefixCacheResult",
    "measure_prefix_cache",
    "median_ttft_s",
    "plot_prefix_cache",
    "RESULT_FIELDS",
    "bench_serve",
    "synthetic_prompts",
    "bench_table",
    "format_result",
    "goodput_findings",
    "load_table",
    "sweep_findings",
]
