"""The two figures of the quantization recipe, drawn from `measure_quantization`'s DataFrame."""

from __future__ import annotations

_ENGINE_COLORS = {
    "transformers": "tab:blue",
    "transformers + bitsandbytes": "tab:orange",
    "llama.cpp": "tab:green",
}


def plot_quantization(df, title: str = ""):
    """Plot weight MB against perplexity, and decode tokens/s per method; return the figure.

    Left: each method as a point (lower left is better: smaller and closer to the text).
    Right: tokens/s at each measured batch size, one group of bars per method.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    speed = [c for c in df.columns if c.startswith("tokens_per_s_batch")]
    fig, (ax_q, ax_s) = plt.subplots(1, 2, figsize=(13, 4.2))
    for engine, color in _ENGINE_COLORS.items():
        part = df[df["engine"] == engine]
        ax_q.scatter(part["weight_bytes"] / 1e6, part["perplexity"], color=color, label=engine)
    for method, r in df.iterrows():
        ax_q.annotate(
            method,
            (r["weight_bytes"] / 1e6, r["perplexity"]),
            fontsize=8,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax_q.set_xlabel("weights (MB, real tensors)")
    ax_q.set_ylabel("held-out perplexity (lower is better)")
    ax_q.set_title("memory vs quality")
    ax_q.grid(True, alpha=0.3)
    ax_q.legend(fontsize=8)
    x = np.arange(len(df))
    width = 0.8 / max(len(speed), 1)
    for i, column in enumerate(speed):
        ax_s.bar(
            x + (i - (len(speed) - 1) / 2) * width,
            df[column],
            width,
            label=f"batch {column.rsplit('batch', 1)[1]}",
        )
    ax_s.set_xticks(x, df.index, rotation=35, ha="right", fontsize=8)
    ax_s.set_ylabel("decode tokens/s (median round)")
    ax_s.set_title("speed per method")
    ax_s.grid(True, axis="y", alpha=0.3)
    ax_s.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
