"""Hosted per-token prices against a GPU by the hour: cost per day and where the lines cross.

Prices are dated and sourced; they go stale, so every function takes your own table too.
Volumes are tokens per day; a workload is its output tokens plus `input_output_ratio` input
tokens for each output token (3.0: three prompt tokens per generated token).

The self-hosted side is arithmetic on a throughput you measured (the notebooks' benchmarks:
aggregate output tokens/s of one GPU under batching, at your prompt lengths), times a
utilization for the share of that peak your traffic keeps up over a day. It does not add
engineering time, storage, egress or idle replicas kept for redundancy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date

from ..errors import InvalidArgumentError

SECONDS_PER_DAY = 86_400
MTOK = 1_000_000


def _positive(name: str, value, hint: str, *, allow_zero: bool = False) -> float:
    """Return value as a float if it is a finite number > 0 (>= 0 with allow_zero)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise InvalidArgumentError(
            f"{name} must be a number {'>=' if allow_zero else '>'} 0 ({hint}), got {value!r}."
        )
    return float(value)


def _as_of(value: str) -> None:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"as_of must be the ISO date the price was read, like '2026-11-27', got {value!r}."
        ) from None


@dataclass(frozen=True)
class TokenPrice:
    """A hosted model's list price per million tokens, with where and when it was read."""

    provider: str
    model: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    source_url: str
    as_of: str  # ISO date the price was read
    note: str = ""

    def __post_init__(self) -> None:
        _positive("input_usd_per_mtok", self.input_usd_per_mtok, "USD per million input tokens")
        _positive("output_usd_per_mtok", self.output_usd_per_mtok, "USD per million output tokens")
        _as_of(self.as_of)

    def usd_per_mtok_output(self, input_output_ratio: float = 3.0) -> float:
        """Return USD per million output tokens with their input tokens included (blended)."""
        ratio = _positive(
            "input_output_ratio",
            input_output_ratio,
            "input tokens per output token, e.g. 3.0",
            allow_zero=True,
        )
        return ratio * self.input_usd_per_mtok + self.output_usd_per_mtok


@dataclass(frozen=True)
class GPUPrice:
    """An on-demand GPU's price per hour, with where and when it was read."""

    provider: str
    gpu: str
    usd_per_hour: float
    source_url: str
    as_of: str  # ISO date the price was read
    note: str = ""

    def __post_init__(self) -> None:
        _positive("usd_per_hour", self.usd_per_hour, "USD per GPU-hour")
        _as_of(self.as_of)


_OPENAI_NOTE = (
    "Standard tier, text. OpenAI's own page could not be fetched when this table was "
    "made; every secondary source read on 2026-11-27 quotes this figure from it. "
    "Re-check before relying on it."
)

# Only prices that could be checked are listed; see each note for how.
PRICES: tuple[TokenPrice, ...] = (
    TokenPrice(
        "openai",
        "gpt-4o-mini",
        0.15,
        0.60,
        "https://platform.openai.com/docs/pricing",
        "2026-11-27",
        _OPENAI_NOTE,
    ),
    TokenPrice(
        "openai",
        "gpt-4.1-mini",
        0.40,
        1.60,
        "https://platform.openai.com/docs/pricing",
        "2026-11-27",
        _OPENAI_NOTE,
    ),
    TokenPrice(
        "anthropic",
        "claude-haiku-4-5",
        1.00,
        5.00,
        "https://platform.claude.com/docs/en/docs/about-claude/pricing",
        "2026-11-27",
        "Anthropic's list price, read from its pricing page. Also on Bedrock as "
        "anthropic.claude-haiku-4-5-20251001-v1:0; Bedrock's own table "
        "(https://aws.amazon.com/bedrock/pricing/) could not be fetched; check it there.",
    ),
)

_REPLICATE_NOTE = (
    "Replicate bills hardware by the second; a deployment or private model pays "
    "for every second an instance is up, so always-on is 24 h a day."
)

GPU_PRICES: tuple[GPUPrice, ...] = (
    GPUPrice(
        "replicate",
        "T4 16GB",
        0.81,
        "https://replicate.com/pricing",
        "2026-11-27",
        "gpu-t4, $0.000225/s. " + _REPLICATE_NOTE,
    ),
    GPUPrice(
        "replicate",
        "A40 48GB",
        2.07,
        "https://replicate.com/pricing",
        "2026-11-27",
        "gpu-a40-small, $0.000575/s. " + _REPLICATE_NOTE,
    ),
    GPUPrice(
        "replicate",
        "L40S 48GB",
        3.51,
        "https://replicate.com/pricing",
        "2026-11-27",
        "gpu-l40s, $0.000975/s. " + _REPLICATE_NOTE,
    ),
    GPUPrice(
        "replicate",
        "A100 80GB",
        5.04,
        "https://replicate.com/pricing",
        "2026-11-27",
        "gpu-a100-large, $0.001400/s. " + _REPLICATE_NOTE,
    ),
    GPUPrice(
        "replicate",
        "H100 80GB",
        5.49,
        "https://replicate.com/pricing",
        "2026-11-27",
        "gpu-h100, $0.001525/s; listed as reserved for committed-spend contracts. "
        + _REPLICATE_NOTE,
    ),
)


def _find(prices: Sequence, key: str, name: str, what: str, instead: str):
    """Return the price whose `key` attribute is name, ignoring case; else list the known ones."""
    for price in prices:
        if getattr(price, key).lower() == str(name).lower():
            return price
    raise InvalidArgumentError(
        f"no price for {what} {name!r}; known: "
        f"{', '.join(getattr(p, key) for p in prices) or 'none'}. Pass "
        f"{instead}."
    )


def token_price(model: str | TokenPrice, prices: Sequence[TokenPrice] = PRICES) -> TokenPrice:
    """Return the price of `model` from `prices` (a TokenPrice passes through)."""
    if isinstance(model, TokenPrice):
        return model
    return _find(
        prices, "model", model, "model", "dk.TokenPrice(...) for a model that is not listed"
    )


def gpu_price(
    gpu: str | GPUPrice,
    gpu_prices: Sequence[GPUPrice] = GPU_PRICES,
    *,
    usd_per_hour: float | None = None,
) -> GPUPrice:
    """Return the hourly price of `gpu` from `gpu_prices` (a GPUPrice passes through).

    usd_per_hour, when given, is your own price for that GPU: the row comes back with it,
    and its note says so.
    """
    found = (
        gpu
        if isinstance(gpu, GPUPrice)
        else _find(gpu_prices, "gpu", gpu, "GPU", "dk.GPUPrice(...) or a number of USD per hour")
    )
    if usd_per_hour is None:
        return found
    return replace(
        found,
        usd_per_hour=_positive("usd_per_hour", usd_per_hour, "your USD per GPU-hour"),
        note=f"your own price; the list price was ${found.usd_per_hour:.2f}/h",
    )


def _hourly(gpu_hourly_usd: float | GPUPrice) -> float:
    if isinstance(gpu_hourly_usd, GPUPrice):
        return gpu_hourly_usd.usd_per_hour
    return _positive("gpu_hourly_usd", gpu_hourly_usd, "USD per GPU-hour, e.g. 1.0")


def _utilization(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise InvalidArgumentError(
            f"utilization must be in (0, 1]: the share of the measured "
            f"tokens/s your traffic sustains over a day, got {value!r}."
        )
    return float(value)


def hosted_cost_per_day(
    price: TokenPrice | str, input_tokens_per_day: float, output_tokens_per_day: float
) -> float:
    """Return USD per day for a hosted API at these daily token volumes."""
    price = token_price(price)
    tokens_in = _positive(
        "input_tokens_per_day", input_tokens_per_day, "tokens per day", allow_zero=True
    )
    tokens_out = _positive(
        "output_tokens_per_day", output_tokens_per_day, "tokens per day", allow_zero=True
    )
    return (tokens_in * price.input_usd_per_mtok + tokens_out * price.output_usd_per_mtok) / MTOK


@dataclass(frozen=True)
class SelfHostedCost:
    """What serving a daily volume on your own GPUs costs, and how many it takes."""

    usd_per_day: float
    gpus: int  # GPUs the volume needs (always on: the GPUs you pay for all day)
    gpu_hours_per_day: float  # hours billed: gpus x 24 always on, else the busy hours
    capacity_tokens_per_day: float  # output tokens one GPU serves in 24 h at this utilization


def self_hosted_cost_per_day(
    gpu_hourly_usd: float | GPUPrice,
    output_tokens_per_s: float,
    output_tokens_per_day: float,
    *,
    utilization: float = 1.0,
    always_on: bool = True,
) -> SelfHostedCost:
    """Return the daily cost of serving output_tokens_per_day on GPUs at gpu_hourly_usd each.

    output_tokens_per_s: one GPU's measured aggregate output rate (all concurrent requests).
    always_on: pay 24 h/day for every GPU the peak volume needs, whatever the traffic; else pay
    only the hours the volume takes at the measured rate (scale-to-zero, no idle cost).
    utilization=1.0 is the best case: traffic that keeps the GPU at its benchmark rate all day.
    """
    hourly = _hourly(gpu_hourly_usd)
    rate = _positive(
        "output_tokens_per_s", output_tokens_per_s, "one GPU's measured output tokens per second"
    )
    volume = _positive(
        "output_tokens_per_day", output_tokens_per_day, "tokens per day", allow_zero=True
    )
    capacity = rate * _utilization(utilization) * SECONDS_PER_DAY
    busy_hours = volume / capacity * 24
    if always_on:
        gpus = max(1, math.ceil(volume / capacity))
        hours = gpus * 24.0
    else:
        gpus = math.ceil(volume / capacity)
        hours = busy_hours
    return SelfHostedCost(
        usd_per_day=hours * hourly,
        gpus=gpus,
        gpu_hours_per_day=hours,
        capacity_tokens_per_day=capacity,
    )


def break_even(
    price: TokenPrice | str,
    gpu_hourly_usd: float | GPUPrice,
    output_tokens_per_s: float,
    *,
    input_output_ratio: float = 3.0,
    utilization: float = 1.0,
    always_on: bool = True,
) -> float | None:
    """Return the output tokens/day above which self-hosting is cheaper, or None if it never is.

    Always on, one GPU costs 24 x hourly per day; the hosted bill grows linearly, so they cross
    at 24 x hourly / (hosted USD per output token). That only counts if one GPU can serve that
    volume: when a fully loaded GPU still costs more than the hosted API would charge for its
    whole capacity, adding GPUs never helps, and the answer is None. (Past each GPU's capacity
    the next one is bought whole, so the hosted API briefly wins again just above k GPUs' worth.)
    Pay-per-use (always_on=False) is linear too: 0.0 when a GPU-token is cheaper, else None.
    """
    hosted = token_price(price).usd_per_mtok_output(input_output_ratio) / MTOK  # USD/output token
    cost = self_hosted_cost_per_day(
        gpu_hourly_usd, output_tokens_per_s, 0, utilization=utilization, always_on=always_on
    )
    capacity = cost.capacity_tokens_per_day
    if not always_on:
        per_token = _hourly(gpu_hourly_usd) * 24 / capacity
        return 0.0 if per_token < hosted else None
    crossing = cost.usd_per_day / hosted  # one GPU's daily cost in hosted output tokens
    return crossing if crossing < capacity else None


def break_even_table(
    output_tokens_per_s: float | Mapping[str, float],
    *,
    prices: Sequence[TokenPrice] = PRICES,
    gpu_prices: Sequence[GPUPrice] = GPU_PRICES,
    input_output_ratio: float = 3.0,
    utilization: float = 1.0,
    always_on: bool = True,
):
    """Return a DataFrame with one row per (hosted model, GPU): costs and the break-even volume.

    output_tokens_per_s: one measured rate for every GPU, or {gpu name: rate} for the GPUs you
    measured (only those are listed).
    """
    import pandas as pd

    if isinstance(output_tokens_per_s, Mapping):
        rates = {
            gpu_price(name, gpu_prices).gpu: rate for name, rate in output_tokens_per_s.items()
        }
    else:
        rates = {g.gpu: output_tokens_per_s for g in gpu_prices}
    rows = []
    for price in prices:
        for gpu in gpu_prices:
            if gpu.gpu not in rates:
                continue
            rate = rates[gpu.gpu]
            base = self_hosted_cost_per_day(
                gpu, rate, 0, utilization=utilization, always_on=always_on
            )
            capacity = base.capacity_tokens_per_day
            crossing = break_even(
                price,
                gpu,
                rate,
                input_output_ratio=input_output_ratio,
                utilization=utilization,
                always_on=always_on,
            )
            full = self_hosted_cost_per_day(
                gpu, rate, capacity, utilization=utilization, always_on=always_on
            )
            rows.append(
                {
                    "model": price.model,
                    "provider": price.provider,
                    "gpu": gpu.gpu,
                    "gpu_usd_per_hour": gpu.usd_per_hour,
                    "output_tokens_per_s": float(rate),
                    "capacity_tokens_per_day": capacity,
                    "hosted_usd_per_mtok_output": price.usd_per_mtok_output(input_output_ratio),
                    "hosted_usd_per_day_at_capacity": hosted_cost_per_day(
                        price, capacity * input_output_ratio, capacity
                    ),
                    "self_hosted_usd_per_day_at_capacity": full.usd_per_day,
                    "break_even_output_tokens_per_day": math.nan if crossing is None else crossing,
                    "breaks_even": crossing is not None,
                }
            )
    return pd.DataFrame(rows)


def plot_break_even(
    prices: TokenPrice | str | Sequence[TokenPrice | str],
    gpu_hourly_usd: float | GPUPrice,
    output_tokens_per_s: float,
    *,
    input_output_ratio: float = 3.0,
    utilization: float = 1.0,
    always_on: bool = True,
    tokens_per_day: Sequence[float] | None = None,
    ax=None,
    rate_note: str = "",
):
    """Plot cost per day against output tokens per day (log-log): hosted lines, GPU steps.

    Break-even points are marked; the dotted line is one GPU's capacity. rate_note says where
    output_tokens_per_s comes from ("measured", "published figure"); the legend shows it.
    Returns the figure.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if isinstance(prices, (TokenPrice, str)):
        prices = [prices]
    resolved = [token_price(p) for p in prices]
    if not resolved:
        raise InvalidArgumentError("prices is empty; pass one TokenPrice (or model name) or more.")
    hourly = _hourly(gpu_hourly_usd)
    base = self_hosted_cost_per_day(
        hourly, output_tokens_per_s, 0, utilization=utilization, always_on=always_on
    )
    capacity = base.capacity_tokens_per_day
    crossings = [
        break_even(
            p,
            hourly,
            output_tokens_per_s,
            input_output_ratio=input_output_ratio,
            utilization=utilization,
            always_on=always_on,
        )
        for p in resolved
    ]
    if tokens_per_day is None:
        top = max([capacity * 4] + [c * 4 for c in crossings if c])
        volumes = np.geomspace(capacity / 1000, top, 600)
    else:
        volumes = np.asarray(
            sorted(_positive("tokens_per_day", v, "output tokens per day") for v in tokens_per_day)
        )
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, 4.5))
    else:
        fig = ax.figure
    gpu_label = gpu_hourly_usd.gpu if isinstance(gpu_hourly_usd, GPUPrice) else "GPU"
    mode = "always on" if always_on else "pay per use"
    self_costs = [
        self_hosted_cost_per_day(
            hourly, output_tokens_per_s, v, utilization=utilization, always_on=always_on
        ).usd_per_day
        for v in volumes
    ]
    ax.plot(
        volumes,
        self_costs,
        color="black",
        lw=2,
        drawstyle="steps-post" if always_on else "default",
        label=f"self-hosted {gpu_label} ${hourly:.2f}/h, {output_tokens_per_s:,.0f} tok/s"
        + (f" ({rate_note})" if rate_note else "")
        + f", {mode}",
    )
    for price, crossing in zip(resolved, crossings):
        (line,) = ax.plot(
            volumes,
            [hosted_cost_per_day(price, v * input_output_ratio, v) for v in volumes],
            label=f"{price.provider} {price.model} (as of {price.as_of})",
        )
        if crossing:
            cost = hosted_cost_per_day(price, crossing * input_output_ratio, crossing)
            ax.scatter([crossing], [cost], color=line.get_color(), zorder=5, s=40)
            ax.annotate(
                f"{crossing / 1e6:.3g}M/day",
                (crossing, cost),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
                color=line.get_color(),
            )
    ax.axvline(
        capacity, color="gray", ls=":", label=f"one GPU's capacity ({capacity / 1e6:.3g}M/day)"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"output tokens per day (plus {input_output_ratio:g} input tokens each)")
    ax.set_ylabel("USD per day")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
