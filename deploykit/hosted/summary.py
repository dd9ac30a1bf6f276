"""A break-even table, for reading: a narrow view of it, and what it says as sentences.

`break_even_table` (costs.py) keeps every figure as a number, for arithmetic. A reader wants
fewer, shorter columns with units, "never" where there is no break-even (not NaN), and the
verdict for each hosted model in words, with the origin of the GPU's rate on every line.
"""

from __future__ import annotations

import math

from ..errors import InvalidArgumentError
from ..report import Findings
from .gpu_rates import SelfHostedRate

_NEEDED = {
    "model",
    "provider",
    "gpu",
    "gpu_usd_per_hour",
    "output_tokens_per_s",
    "capacity_tokens_per_day",
    "hosted_usd_per_mtok_output",
    "hosted_usd_per_day_at_capacity",
    "self_hosted_usd_per_day_at_capacity",
    "break_even_output_tokens_per_day",
}


def _check(table) -> None:
    missing = _NEEDED - set(table.columns)
    if missing:
        raise InvalidArgumentError(
            f"the table lacks {', '.join(sorted(missing))}; pass dk.break_even_table(...)."
        )


def _millions(tokens: float) -> str:
    return f"{tokens / 1e6:,.1f}M"


def break_even_view(table):
    """Return the table with short columns and units, and "never" where nothing breaks even."""
    import pandas as pd

    _check(table)
    rows = [
        {
            "hosted model": f"{row.provider} {row.model}",
            "hosted $/M out": f"{row.hosted_usd_per_mtok_output:.2f}",
            "GPU": row.gpu,
            "GPU $/h": f"{row.gpu_usd_per_hour:.2f}",
            "GPU tok/s": f"{row.output_tokens_per_s:,.0f}",
            "capacity/day": _millions(row.capacity_tokens_per_day),
            "break-even/day": (
                "never"
                if math.isnan(row.break_even_output_tokens_per_day)
                else _millions(row.break_even_output_tokens_per_day)
            ),
        }
        for row in table.itertuples()
    ]
    return pd.DataFrame(rows)


def break_even_findings(table, rate: SelfHostedRate | None = None) -> Findings:
    """Return one sentence per row: where self-hosting breaks even, or why it never does.

    rate, when given, opens the findings with where the GPU's rate comes from (measured in
    this run, or a published figure).
    """
    _check(table)
    findings = Findings("What the prices and the rate give")
    if rate is not None:
        kind = "measured" if rate.measured else "not measured here"
        findings.add(
            f"{rate.gpu}: {rate.output_tokens_per_s:,.0f} output tokens/s ({kind}; {rate.source})"
        )
    for row in table.itertuples():
        head = (
            f"{row.provider} {row.model} at ${row.hosted_usd_per_mtok_output:.2f} per million "
            f"output tokens (inputs included) against {row.gpu} at ${row.gpu_usd_per_hour:.2f}/h"
        )
        crossing = row.break_even_output_tokens_per_day
        if math.isnan(crossing):
            findings.add(
                f"{head}: never breaks even; one GPU's full capacity "
                f"({_millions(row.capacity_tokens_per_day)} output tokens/day) costs "
                f"${row.self_hosted_usd_per_day_at_capacity:,.2f}/day, the hosted API "
                f"${row.hosted_usd_per_day_at_capacity:,.2f}"
            )
        else:
            share = crossing / row.capacity_tokens_per_day
            findings.add(
                f"{head}: self-hosting is cheaper above {_millions(crossing)} output tokens/day, "
                f"{share:.0%} of one GPU's capacity"
            )
    return findings
