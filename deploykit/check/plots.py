"""What doctor measured, drawn: when a stream's events arrived."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import InvalidArgumentError


def plot_stream_arrivals(series: Mapping[str, Sequence[float]], title: str = ""):
    """Plot events received against time, one step line per stream (seconds from the request).

    A stream that arrives as it is made climbs from its first token on; one held by a
    buffering proxy stays flat, then jumps at the end.
    """
    import matplotlib.pyplot as plt

    if not series or not all(series.values()):
        raise InvalidArgumentError(
            "give each stream's event arrival times, e.g. report.data['stream_event_times_s']."
        )
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for label, times in series.items():
        times = sorted(times)
        ax.step([0.0, *times], range(len(times) + 1), where="post", label=label, linewidth=2)
    ax.set_xlabel("time since the request was sent (s)")
    ax.set_ylabel("events received")
    ax.set_title(title or "When a stream's events reached the client")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
