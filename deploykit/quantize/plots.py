"""The two figures of the quantization recipe, drawn from `measure_quantization`'s DataFrame."""

from __future__ import annotations

_ENGINE_COLORS = {
    "transformers": "tab:blue",
    "transformers + bitsandbytes": "tab:orange",
    "llama.cpp": "tab:green",
}
_NEAR_PX = 12  # points closer than this on screen share one label


def plot_quantization(df, title: str = ""):
    """Plot weight MB against perplexity, and decode tokens/s per method; return the figure.

    Left: each method as a point (lower left is better: smaller and closer to the text);
    points that land on the same spot share one label, and no label covers another or a
    point. Right: tokens/s at each measured batch size, one group of bars per method, in
    its engine's colour (lighter for the smaller batch).
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    speed = [c for c in df.columns if c.startswith("tokens_per_s_batch")]
    fig, (ax_q, ax_s) = plt.subplots(1, 2, figsize=(13, 4.6))
    for engine, color in _ENGINE_COLORS.items():
        part = df[df["engine"] == engine]
        if len(part):
            ax_q.scatter(part["weight_bytes"] / 1e6, part["perplexity"], color=color, label=engine)
    ax_q.set_xlabel("weights (MB, real tensors)")
    ax_q.set_ylabel("held-out perplexity (lower is better)")
    ax_q.margins(x=0.12, y=0.15)
    ax_q.grid(True, alpha=0.3)
    ax_q.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False)
    x = np.arange(len(df))
    width = 0.8 / max(len(speed), 1)
    colors = [_ENGINE_COLORS.get(e, "tab:gray") for e in df["engine"]]
    shades = np.linspace(0.4, 1.0, len(speed)) if len(speed) > 1 else [1.0]
    for i, column in enumerate(speed):
        ax_s.bar(
            x + (i - (len(speed) - 1) / 2) * width,
            df[column],
            width,
            color=colors,
            alpha=shades[i],
            edgecolor="black",
            linewidth=0.4,
        )
    ax_s.set_xticks(x, df.index, rotation=35, ha="right", fontsize=8)
    ax_s.set_ylabel("decode tokens/s (median round)")
    ax_s.grid(True, axis="y", alpha=0.3)
    batches = [
        Patch(
            facecolor="0.4",
            alpha=shade,
            edgecolor="black",
            label=f"batch {c.rsplit('batch', 1)[1]}",
        )
        for c, shade in zip(speed, shades)
    ]
    ax_s.legend(
        handles=batches,
        fontsize=8,
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncol=len(speed),
        frameon=False,
        title="bar shade",
        title_fontsize=8,
        alignment="left",
    )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _label_points(
        ax_q, list(df["weight_bytes"] / 1e6), list(df["perplexity"]), [str(m) for m in df.index]
    )
    return fig


def _label_points(ax, xs: list[float], ys: list[float], names: list[str]) -> None:
    """Label each point (one label for points on the same spot) where no label overlaps.

    Tries positions around each spot, nearest first, and keeps the first whose box stays in
    the axes and clear of every point and earlier label; a label set off its spot gets a
    leader line. Call after the figure's layout is final: the test is in screen pixels.
    """
    import numpy as np

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    points = ax.transData.transform(np.column_stack([xs, ys]))  # [N, 2] pixels
    groups: list[list[int]] = []
    for i in sorted(range(len(names)), key=lambda i: -ys[i]):
        near = [g for g in groups if any(np.hypot(*(points[i] - points[j])) < _NEAR_PX for j in g)]
        if near:
            near[0].append(i)
        else:
            groups.append([i])
    frame = ax.get_window_extent(renderer)
    taken: list = []
    for group in sorted(groups, key=lambda g: (-len(g), points[g[0]][0])):
        text = "\n".join(names[j] for j in group)  # top to bottom, as the points lie
        spot = (float(np.mean([xs[j] for j in group])), float(np.mean([ys[j] for j in group])))
        label = None
        for step in (6, 18, 32, 50, 72):
            for dx, dy, ha, va in (
                (step, 0, "left", "center"),
                (-step, 0, "right", "center"),
                (step, step, "left", "bottom"),
                (step, -step, "left", "top"),
                (-step, step, "right", "bottom"),
                (-step, -step, "right", "top"),
                (0, step, "center", "bottom"),
                (0, -step, "center", "top"),
            ):
                label = ax.annotate(
                    text,
                    spot,
                    xytext=(dx, dy),
                    textcoords="offset points",
                    ha=ha,
                    va=va,
                    fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if step > 6 else None,
                )
                box = label.get_window_extent(renderer).padded(2)
                clear = (
                    frame.contains(box.x0, box.y0)
                    and frame.contains(box.x1, box.y1)
                    and not any(box.overlaps(t) for t in taken)
                    and not any(box.contains(px, py) for px, py in points)
                )
                if clear:
                    break
                label.remove()
                label = None
            if label is not None:
                break
        if label is None:  # no clear spot: the nearest one, overlapping
            label = ax.annotate(
                text, spot, xytext=(6, 0), textcoords="offset points", va="center", fontsize=8
            )
        taken.append(label.get_window_extent(renderer).padded(2))
