"""What a quantization run shows, in sentences built from its own table.

`quantization_findings` reads `measure_quantization`'s DataFrame and says, for each promise
of the rule of thumb ("4-bit for dev, 8-bit for production"), what this run measured: so a
notebook's findings match its table in every run, whichever way the figures fall.
`quantization_ratio` gives one method's figure over the baseline's, for comparing a run
with reference figures. Not here: any judgement a run cannot show (why a kernel is slow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..report import Findings, ratio_text

# a perplexity change below this reads as "close" (the rule's "8-bit keeps quality")
CLOSE_PERPLEXITY = 0.05


def baseline(df) -> str:
    """Return the row the others are compared with: fp32 where measured, else the first."""
    return "fp32" if "fp32" in df.index else str(df.index[0])


def quantization_ratio(df, method: str, column: str, base: str | None = None) -> float:
    """Return df[column] of method over the baseline's (NaN when either row is missing)."""
    base = base or baseline(df)
    if method not in df.index or base not in df.index or column not in df.columns:
        return math.nan
    below = float(df.loc[base, column])
    return float(df.loc[method, column]) / below if below else math.nan


def _names(methods: Sequence[str]) -> str:
    quoted = [f"`{m}`" for m in methods]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _change(ratio: float) -> str:
    """Return a ratio as a signed percent change ('+33.4%'), or 'n/a'."""
    if not math.isfinite(ratio):
        return "n/a"
    change = round(100 * (ratio - 1), 1)
    return f"{change:+.1f}%" if change else "0.0%"  # no "-0.0%"


def _speed(df, method: str, base: str, batches: Sequence[str]) -> str:
    """Return 'r1 and r8 at batch 1 and 8', each ratio with its direction."""
    ratios = [ratio_text(quantization_ratio(df, method, c, base)) for c in batches]
    sizes = [c.rsplit("batch", 1)[1] for c in batches]
    return f"{' and '.join(ratios)} at batch {' and '.join(sizes)}"


def quantization_findings(df, nf4_bytes_at_load: int | None = None) -> Findings:
    """Return what this run's table shows about each promise of the rule of thumb.

    df is `measure_quantization`'s DataFrame; figures are relative to its baseline row (fp32
    where measured). nf4_bytes_at_load, the whole model's bytes of an nf4 model before any
    forward pass, adds whether the table's nf4 row (counted after one) is smaller.
    """
    base = baseline(df)
    b = df.loc[base]
    batches = [c for c in df.columns if c.startswith("tokens_per_s_batch")]
    found = Findings(title=f"What this run shows (each figure relative to `{base}`)")
    bnb = df[df["engine"] == "transformers + bitsandbytes"]
    if len(bnb):
        smallest = bnb["linear_ratio"].min()
        four = [
            m for m, r in bnb.iterrows() if math.isclose(r["linear_ratio"], smallest, rel_tol=1e-3)
        ]
        others = [f"`{m}`'s {r['linear_ratio']:.3f}" for m, r in bnb.iterrows() if m not in four]
        transformers = df[df["engine"].str.startswith("transformers")]
        least = str(transformers["weight_bytes"].idxmin())
        verdict = "holds" if least in four else f"does not hold: `{least}` is smallest"
        found.add(
            f"**4-bit saves the most memory** ({verdict} among the transformers rows): the "
            f"linear layers of {_names(four)} take {smallest:.3f} of their float32 bytes, "
            "scales included" + (f"; {', '.join(others)}." if others else ".")
        )
        m = four[0]
        r = df.loc[m]
        other_share = 1 - (r["linear_bytes"] / r["linear_ratio"]) / (
            r["weight_bytes"] / r["weight_ratio"]
        )
        half = (
            f"; plain `bf16` takes {df.loc['bf16', 'weight_ratio']:.3f}"
            if "bf16" in df.index and base != "bf16"
            else ""
        )
        found.add(
            f"**The whole model shrinks less than its linear layers:** `{m}` takes "
            f"{r['weight_ratio']:.3f} of float32 in all, because the layers bitsandbytes leaves "
            f"alone (embeddings, norms, LM head) are {other_share:.0%} of this model's float32 "
            f"bytes{half}."
        )
        if nf4_bytes_at_load is not None and "nf4" in df.index:
            after = float(df.loc["nf4", "weight_bytes"])
            word = (
                "smaller: bitsandbytes repacked the 4-bit layers for its fused CPU kernel"
                if after < nf4_bytes_at_load
                else "no smaller: nothing was repacked"
                if after == nf4_bytes_at_load
                else "larger"
            )
            found.add(
                f"`nf4` weighed {nf4_bytes_at_load / 1e6:.1f} MB as loaded (Step 2) and "
                f"{after / 1e6:.1f} MB after a forward pass (the table): {word}."
            )
    if "int8" in df.index:
        change = quantization_ratio(df, "int8", "perplexity", base)
        same = df.loc["int8", "answer"] == b["answer"]
        close = math.isfinite(change) and abs(change - 1) < CLOSE_PERPLEXITY
        verdict = "holds" if close and same else "does not hold"
        found.add(
            f"**8-bit keeps quality close** ({verdict}, taking close as within "
            f"{CLOSE_PERPLEXITY:.0%} and the same answer): `int8` changes perplexity by "
            f"{_change(change)}, and its answer is {'the same as' if same else 'not'} "
            f"`{base}`'s."
        )
    four_bit = [m for m in ("nf4", "nf4-dq", "fp4") if m in df.index]
    if four_bit:
        changes = ", ".join(
            f"`{m}` {_change(quantization_ratio(df, m, 'perplexity', base))}" for m in four_bit
        )
        worse = all(quantization_ratio(df, m, "perplexity", base) > 1 for m in four_bit)
        verdict = "holds" if worse else "does not hold for every 4-bit row"
        drift = [m for m in four_bit if df.loc[m, "answer"] != b["answer"]]
        answers = (
            f'; {_names(drift)} answer differently from `{base}`: "{df.loc[drift[0], "answer"]}"'
            if drift
            else f"; every 4-bit answer is `{base}`'s."
        )
        found.add(f"**4-bit is not free in quality** ({verdict}): perplexity {changes}{answers}")
    quantized = [m for m in ("int8", *four_bit) if m in df.index and m != base]
    if quantized and batches:
        speeds = "; ".join(f"`{m}` {_speed(df, m, base, batches)}" for m in quantized)
        found.add(f"**Decode speed, fewer bits against `{base}`:** {speeds}.")
    better = [m for m in ("bf16", "gguf q8_0") if m in df.index and m != base]
    for m in better:
        found.add(
            f"**A default the rule skips, `{m}`:** {df.loc[m, 'weight_ratio']:.3f} of float32, "
            f"perplexity {_change(quantization_ratio(df, m, 'perplexity', base))}, decode "
            f"{_speed(df, m, base, batches)}."
        )
    return found


_ENGINES = {"transformers": "torch", "transformers + bitsandbytes": "torch+bnb"}


def quantization_summary(df):
    """Return the table to read beside the findings: one row per method, short columns.

    MB and tokens/s rounded, ratios to float32 (`x fp32`, `linear x fp32`) and perplexity
    over the baseline's (`ppl x <base>`); the greedy answers and the file sizes stay in df.
    """
    import pandas as pd

    base = baseline(df)
    out = pd.DataFrame(index=df.index)
    out["engine"] = df["engine"].map(lambda e: _ENGINES.get(e, e))
    out["MB"] = (df["weight_bytes"] / 1e6).round(1)
    out["x fp32"] = df["weight_ratio"].round(3)
    out["linear x fp32"] = df["linear_ratio"].round(3)
    out["load s"] = df["load_s"].round(1)
    out["perplexity"] = df["perplexity"].round(2)
    out[f"ppl x {base}"] = (df["perplexity"] / df.loc[base, "perplexity"]).round(3)
    for column in (c for c in df.columns if c.startswith("tokens_per_s_batch")):
        out[f"tok/s b{column.rsplit('batch', 1)[1]}"] = df[column].round(1)
    out.index.name = None
    return out


def quantization_conditions(df, width: int = 96) -> str:
    """Return the run's conditions as short lines: what was measured, on what, how busy."""
    import textwrap

    c = df.attrs["conditions"]
    before, after = c["before"], c["after"]
    facts = [
        f"{c['model']} on {c['device']} ({before['cpu']}), {c['threads']} thread(s);",
        f"perplexity on {c['scored_tokens']} held-out tokens; decode {c['max_tokens']} tokens"
        f" per request, median of {c['repeats']} round(s);",
        f"torch {before['torch']}, transformers {before['transformers']}"
        + (f", bitsandbytes {before['bitsandbytes']}" if "bitsandbytes" in before else "")
        + ";",
        f"load average {before['load_average']} before, {after['load_average']} after"
        f" ({c['started']} to {c['finished']}).",
    ]
    return textwrap.fill(" ".join(facts), width=width)
