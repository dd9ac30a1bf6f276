"""Hosted endpoints next to self-hosting: the platforms as data, request builders, and costs."""

from .bedrock import bedrock_client, converse_request, converse_text, converse_usage
from .costs import (GPU_PRICES, PRICES, GPUPrice, SelfHostedCost, TokenPrice, break_even,
                    break_even_table, gpu_price, hosted_cost_per_day, plot_break_even,
                    self_hosted_cost_per_day, token_price)
from .platforms import DIALECTS, KINDS, PLATFORMS, Platform, platform_browser, platform_table
from .replicate import PredictionRequest, prediction_request, prediction_text, send_prediction

__all__ = [
    "bedrock_client", "converse_request", "converse_text", "converse_usage",
    "GPU_PRICES", "PRICES", "GPUPrice", "SelfHostedCost", "TokenPrice", "break_even",
    "break_even_table", "gpu_price", "hosted_cost_per_day", "plot_break_even",
    "self_hosted_cost_per_day", "token_price",
    "DIALECTS", "KINDS", "PLATFORMS", "Platform", "platform_browser", "platform_table",
    "PredictionRequest", "prediction_request", "prediction_text", "send_prediction",
]
