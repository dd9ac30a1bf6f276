"""Which output rate prices a GPU: this run's, measured on a GPU, else a published figure.

A GPU's hourly price means something only divided by the tokens per second it serves. A rate
measured on this machine prices a GPU only when it was measured on one; a CPU's rate never
does. Without a GPU here, `self_hosted_rate` takes the rate from `GPU_THROUGHPUTS`: figures
others published, each with its source, engine, model and conditions, marked as references
(not measured here). Like the prices in `costs.py`, they go stale: pass your own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .._conditions import gpu_names
from ..errors import InvalidArgumentError
from .costs import _as_of, _positive

_LAMBDA = "https://github.com/LambdaLabsML/vllm-benchmark/blob/main/benchmark_v0.md"
_LAMBDA_CONDITIONS = (
    "one GPU, tensor parallel 1, vLLM 0.5.4 with its default settings, ShareGPT prompts, "
    "--num-prompts 320 sent at once; the first figure of the 'throughput/latency' pairs in "
    "the table of section 'Tensor Parallel v.s. Data Parallel'"
)


@dataclass(frozen=True)
class GPUThroughput:
    """A published output rate of one GPU serving one model: a reference, not measured here."""

    gpu: str  # as in GPU_PRICES, so that the two tables join
    model: str
    output_tokens_per_s: float  # aggregate over all concurrent requests
    engine: str
    conditions: str
    publisher: str
    title: str  # of the publication
    source_url: str
    published: str  # when the source published it, as it says
    as_of: str  # ISO date the figure was read

    def __post_init__(self) -> None:
        _positive("output_tokens_per_s", self.output_tokens_per_s, "output tokens per second")
        _as_of(self.as_of)

    def label(self) -> str:
        """Return a short line naming the figure as a reference, for titles and legends."""
        return (
            f"published figure: {self.model} on {self.engine}, {self.publisher}, {self.published}"
        )


GPU_THROUGHPUTS: tuple[GPUThroughput, ...] = (
    GPUThroughput(
        "A100 80GB",
        "Meta-Llama-3.1-8B-FP8",
        1517.54,
        "vLLM 0.5.4",
        "1x A100-80GB-SXM; " + _LAMBDA_CONDITIONS,
        "Lambda",
        "LLMs inference benchmarks, using vLLM, on Lambda Cloud",
        _LAMBDA,
        "September 2024",
        "2026-12-03",
    ),
    GPUThroughput(
        "H100 80GB",
        "Meta-Llama-3.1-8B-FP8",
        3400.4,
        "vLLM 0.5.4",
        "1x H100-80GB-SXM; " + _LAMBDA_CONDITIONS,
        "Lambda",
        "LLMs inference benchmarks, using vLLM, on Lambda Cloud",
        _LAMBDA,
        "September 2024",
        "2026-12-03",
    ),
)


@dataclass(frozen=True)
class SelfHostedRate:
    """The output rate that prices a GPU, and where it comes from."""

    gpu: str  # the GPU being priced
    output_tokens_per_s: float
    measured: bool  # True: measured in this run on a GPU; False: a published reference
    source: str  # one line: what was measured where, or the reference's label
    reference: GPUThroughput | None = None


def self_hosted_rate(
    gpu: str,
    measured_tokens_per_s: float | None = None,
    *,
    device: str = "auto",
    what: str = "",
    throughputs: Sequence[GPUThroughput] = GPU_THROUGHPUTS,
) -> SelfHostedRate:
    """Return the rate that prices `gpu`: the one measured here if it ran on a GPU, else a
    published figure for that GPU.

    device is where the measurement ran ("cpu", "cuda", or "auto": a GPU if nvidia-smi lists
    one); what names the measurement (model, load) for the label.
    """
    on_gpu = device.startswith("cuda") or (device == "auto" and bool(gpu_names()))
    if measured_tokens_per_s is not None and on_gpu:
        rate = _positive("measured_tokens_per_s", measured_tokens_per_s, "output tokens/s")
        names = gpu_names()
        where = names[0] if names else device
        label = f"measured in this run on {where}" + (f", {what}" if what else "")
        return SelfHostedRate(gpu, rate, True, label)
    for row in throughputs:
        if row.gpu.lower() == gpu.lower():
            return SelfHostedRate(gpu, row.output_tokens_per_s, False, row.label(), row)
    raise InvalidArgumentError(
        f"no GPU ran here and no published rate for {gpu!r} is listed (known: "
        f"{', '.join(r.gpu for r in throughputs) or 'none'}); measure one on that GPU "
        "(a GPU recipe, or `deploykit bench`), or pass a dk.GPUThroughput(...) in throughputs."
    )
