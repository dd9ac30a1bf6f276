"""Hosted endpoints next to self-hosting: the platforms as data, request builders, and costs."""

from .bedrock import converse_request
from .costs import GPU_PRICES, PRICES, break_even, break_even_table, gpu_price, plot_break_even
from .platforms import PLATFORMS, platform_browser, platform_table
from .replicate import prediction_request

__all__ = [
    "converse_request",
    "GPU_PRICES",
    "PRICES",
    "break_even",
    "break_even_table",
    "gpu_price",
    "plot_break_even",
    "PLATFORMS",
    "platform_browser",
    "platform_table",
    "prediction_request",
]
