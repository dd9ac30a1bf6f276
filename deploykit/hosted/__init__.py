"""Hosted endpoints next to self-hosting: the platforms as data, request builders, costs, and
the GPU rates that price self-hosting."""

from .bedrock import converse_request
from .costs import GPU_PRICES, PRICES, break_even, break_even_table, gpu_price, plot_break_even
from .gpu_rates import GPU_THROUGHPUTS, GPUThroughput, SelfHostedRate, self_hosted_rate
from .platforms import PLATFORMS, platform_browser, platform_table
from .replicate import prediction_request
from .summary import break_even_findings, break_even_view

__all__ = [
    "converse_request",
    "GPU_PRICES",
    "GPU_THROUGHPUTS",
    "GPUThroughput",
    "SelfHostedRate",
    "self_hosted_rate",
    "PRICES",
    "break_even",
    "break_even_findings",
    "break_even_table",
    "break_even_view",
    "gpu_price",
    "plot_break_even",
    "PLATFORMS",
    "platform_browser",
    "platform_table",
    "prediction_request",
]
