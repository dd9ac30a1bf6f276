"""A live dashboard in Jupyter: plots of Prometheus queries, redrawn while a load runs.

`watch_live` runs the work (a load) in a background thread and, every `refresh_s`, reads
the panels' range queries from Prometheus and redraws them in an ipywidgets Output. When
the work ends, the widget shows the final figure and stays: an executed notebook (papermill)
keeps its saved state, which JupyterLab and the cookbook site render.
Outside a Jupyter kernel nothing is drawn: plot the returned trace with `plot_panels`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import EngineRunError, InvalidArgumentError
from .prom import Prometheus
from .promql import METRIC_PREFIXES, Panel, standard_panels

T = TypeVar("T")


def live_panels(
    window: str = "15s",
    by: Sequence[str] = ("job",),
    engines: Sequence[str] = METRIC_PREFIXES,
    errors: bool = False,
) -> tuple[Panel, ...]:
    """Return the live view's panels: tokens/s, TTFT p50/p95, requests waiting and running.

    The dashboard's KV-cache panel is left out (deploykit's server reports no paged cache),
    and so is its 5xx panel unless errors=True: a load without failures draws it as a flat
    zero, and the error-ratio alert and its unit tests cover errors.
    """
    left_out = {"percentunit"} | (set() if errors else {"reqps"})
    return tuple(p for p in standard_panels(window, by, engines) if p.unit not in left_out)


@dataclass
class LiveTrace:
    """What the live view drew: per panel, a table of seconds since start by line."""

    panels: tuple[Panel, ...]
    start_s: float  # Unix time the work started
    # Unix time by which the work had finished and Prometheus had scraped every target
    # since: a query at end_s sees everything the servers counted for the work
    end_s: float = float("nan")
    frames: dict[str, Any] = field(default_factory=dict)  # title -> DataFrame
    refreshes: int = 0  # how many times the live figure was redrawn

    @property
    def window(self) -> str:
        """Return a PromQL duration that covers the work, for queries at end_s."""
        return f"{math.ceil(self.end_s - self.start_s) + 2}s"

    def peak(self, title: str) -> float:
        """Return the largest value any line of a panel reached (NaN when it has none)."""
        frame = self.frames.get(title)
        return float("nan") if frame is None or frame.empty else float(frame.max().max())


def read_panels(
    prom: Prometheus,
    panels: Sequence[Panel],
    start: float,
    end: float | None = None,
    step_s: float = 1.0,
    by: Sequence[str] = ("job",),
):
    """Return per panel title a DataFrame: index seconds since start, one column per line."""
    import pandas as pd

    out = {}
    for panel in panels:
        columns = {}
        for prefix, promql in panel.queries:
            long = prom.query_range(promql, start, end, step_s)
            if long.empty:
                continue
            keys = [label for label in by if label in long.columns]
            for values, rows in long.groupby(keys) if keys else [((), long)]:
                values = values if isinstance(values, tuple) else (values,)
                name = (prefix + " ".join(str(v) for v in values)).strip() or panel.title
                seconds = (
                    rows["time"] - pd.Timestamp(start, unit="s", tz="UTC")
                ).dt.total_seconds()
                columns[name] = pd.Series(rows["value"].to_numpy(), index=seconds.to_numpy())
        out[panel.title] = pd.DataFrame(columns).sort_index()
    return out


def _seconds_text(value_s: float) -> str:
    return f"{value_s * 1000:g} ms" if value_s < 1 else f"{value_s:g} s"


def plot_panels(
    frames: dict,
    panels: Sequence[Panel],
    title: str = "",
    thresholds: dict[str, float] | None = None,
    dpi: int = 80,
):
    """Draw each panel's lines in a row of its own, over one time axis; return the figure.

    A series (a job) keeps one colour in every panel, and a panel's queries (p50 and p95,
    waiting and running) differ by line style. Latencies are on a log axis, so that a
    threshold far from the lines (an alert set low on purpose) stays apart from the axis;
    it is drawn labelled with its value. Legends sit beside the axes, never over the lines.
    """
    import math

    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    def split(panel: Panel, column: str) -> tuple[str, str]:
        """Return (query prefix, series name) of a frame column, as read_panels named it."""
        prefix = max((p for p, _ in panel.queries if column.startswith(p)), key=len, default="")
        return prefix, column[len(prefix) :].strip() or panel.title

    series = sorted(
        {
            split(panel, str(column))[1]
            for panel in panels
            if panel.title in frames
            for column in frames[panel.title].columns
        }
    )
    colours = {name: f"C{i % 10}" for i, name in enumerate(series)}
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 0.6 + 2.2 * len(panels)), sharex=True, squeeze=False, dpi=dpi
    )
    for ax, panel in zip(axes[:, 0], panels):
        styles = {
            prefix: ("-", "--", ":", "-.")[n % 4] for n, (prefix, _) in enumerate(panel.queries)
        }
        frame = frames.get(panel.title)
        if frame is not None and frame.empty:
            frame = None
        if frame is not None:
            for column in frame.columns:
                prefix, name = split(panel, str(column))
                ax.plot(
                    frame.index,
                    frame[column],
                    color=colours[name],
                    ls=styles.get(prefix, "-"),
                    marker="o",  # one per sample: the line between two is not measured
                    markersize=3,
                    label=str(column),
                )
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        limit = (thresholds or {}).get(panel.title)
        if limit is not None:
            text = _seconds_text(limit) if panel.unit == "s" else f"{limit:g}"
            ax.axhline(limit, color="red", ls="-.", lw=1, label=f"alert threshold ({text})")
        values = frame.to_numpy().ravel() if frame is not None else []
        positive = [v for v in values if math.isfinite(v) and v > 0] + ([limit] if limit else [])
        if panel.unit == "s" and positive:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        else:  # a rate or a count: from 0, with a line at 0 kept clear of the axis
            ax.set_ylim(bottom=-0.04 * max(ax.get_ylim()[1], 1.0))
        ax.set_ylabel(panel.axis or panel.unit, fontsize=9)
        ax.set_title(panel.title, fontsize=10, loc="left")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[-1, 0].set_xlabel("seconds since the load began")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def _in_kernel() -> bool:
    """Return True inside a Jupyter kernel (where widgets can be drawn)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def watch_live(
    prom: Prometheus,
    work: Callable[[], T] | Sequence[Callable[[], T]],
    *,
    panels: Sequence[Panel] | None = None,
    refresh_s: float = 1.5,
    step_s: float = 1.0,
    by: Sequence[str] = ("job",),
    title: str = "",
    thresholds: dict[str, float] | None = None,
    timeout_s: float = 600.0,
    settle_s: float = 2.0,
) -> tuple[T | list[T], LiveTrace]:
    """Run work() (or several, at once) in threads; redraw the panels every refresh_s until done.

    After the work, it waits settle_s (a scrape or two, so rates have points after the
    load) and until Prometheus has scraped every target since the work ended, so the last
    figure (and a query at trace.end_s) holds the whole load; then it shows that figure as
    an image. Returns work's result (a list for a list
    of works) and the trace; an exception in a work is raised here.
    """
    if not refresh_s > 0 or not timeout_s > 0:
        raise InvalidArgumentError("refresh_s and timeout_s must be above 0 seconds.")
    works = [work] if callable(work) else list(work)
    if not works or not all(callable(w) for w in works):
        raise InvalidArgumentError(
            "work must be a function of no arguments (e.g. a lambda "
            "that runs dk.run_load), or a list of them."
        )
    panels = tuple(panels or live_panels(by=by))
    trace = LiveTrace(panels, start_s=time.time())
    boxes: list[list] = [[] for _ in works]
    threads = [
        threading.Thread(target=lambda w=w, b=b: b.append(_capture(w)), daemon=True)
        for w, b in zip(works, boxes)
    ]
    widget = _LiveWidget() if _in_kernel() else None
    for thread in threads:
        thread.start()
    deadline = trace.start_s + timeout_s
    try:
        while any(t.is_alive() for t in threads) and time.time() < deadline:
            next(t for t in threads if t.is_alive()).join(refresh_s)
            if widget is not None:
                trace.frames = read_panels(prom, panels, trace.start_s, None, step_s, by)
                widget.show(
                    plot_panels(trace.frames, panels, title, thresholds),
                    f"running for {time.time() - trace.start_s:.0f} s",
                )
                trace.refreshes += 1
        work_end_s = time.time()
        if not all(boxes):
            raise EngineRunError(
                f"the watched work did not finish within {timeout_s:g} s; raise timeout_s"
            )
        for box in boxes:
            ok, result = box[0]
            if not ok:
                raise result
        # A query at the moment the work ended reads the scrape before it, which can miss
        # the load's last second: wait for a scrape that began after the work ended.
        time.sleep(settle_s)
        prom.wait_for_scrape(after=work_end_s)
        trace.end_s = time.time()
        trace.frames = read_panels(prom, panels, trace.start_s, None, step_s, by)
        if widget is not None:  # the final figure, in the widget and as a plain image
            widget.finish(
                plot_panels(trace.frames, panels, title, thresholds),
                f"finished: {trace.refreshes} refreshes over {work_end_s - trace.start_s:.0f} s",
            )
            widget = None
    finally:
        if widget is not None:
            widget.finish(None)
    results = [box[0][1] for box in boxes]
    return (results[0] if callable(work) else results), trace


def replay_live(
    prom: Prometheus,
    trace: LiveTrace,
    window: str,
    *,
    panels: Sequence[str] | None = None,
    end: float | None = None,
    step_s: float = 1.0,
    by: Sequence[str] = ("job",),
    thresholds: dict[str, float] | None = None,
):
    """Draw trace's load again from Prometheus with another rate window; return the figure.

    panels picks the live view's panels by title (default: all of trace's). The plot runs
    from the load's start to end (Unix time; None: now, so what followed the load shows too:
    a long window keeps a rate up long after the load). The PromQL of every line is written
    under the plot, so the reader sees which window each one used.
    """
    titles = [p.title for p in trace.panels] if panels is None else list(panels)
    known = {p.title: p for p in standard_panels(window, by)}
    unknown = [t for t in titles if t not in known]
    if unknown or not titles:
        raise InvalidArgumentError(
            f"panels={titles!r}: pick one or more of {', '.join(map(repr, known))}."
        )
    chosen = [known[t] for t in titles]
    frames = read_panels(prom, chosen, trace.start_s, end, step_s, by)
    fig = plot_panels(frames, chosen, f"The same load, rate window {window}", thresholds)
    queries = [
        f"{', '.join(filter(None, (panel.title, prefix.strip())))}: {promql}"
        for panel in chosen
        for prefix, promql in panel.queries
    ]
    fig.text(0.0, 0.0, "\n".join(queries), family="monospace", fontsize=7, va="top")
    return fig


class _LiveWidget:
    """An Output widget showing the latest figure, with a status line above it."""

    def __init__(self) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self.status = widgets.HTML("starting...")
        self.output = widgets.Output()
        self.box = widgets.VBox([self.status, self.output])
        self.handle = display(self.box, display_id=True)

    def show(self, fig, status: str) -> None:
        import matplotlib.pyplot as plt
        from IPython.display import clear_output, display

        self.status.value = status
        with self.output:
            clear_output(wait=True)
            display(_image(fig))
        plt.close(fig)

    def finish(self, fig, status: str = "finished") -> None:
        """Leave fig in the widget, which stays open; None: just close the widget.

        An executed notebook saves the widget's state (the status line and the last figure),
        which JupyterLab and the cookbook site render. The image is saved once, in the state:
        a second copy as a plain PNG would double the notebook's largest output.
        """
        import matplotlib.pyplot as plt
        from IPython.display import clear_output, display

        if fig is None:
            self.box.close()
            return
        image = _image(fig)
        plt.close(fig)
        self.status.value = status
        with self.output:
            clear_output(wait=True)
            display(image)
        bundle = self.box._repr_mimebundle_()
        bundle["text/plain"] = f"live view, {status} (a widget: JupyterLab and the site show it)"
        self.handle.update(bundle, raw=True)


def _png(fig) -> bytes:
    """Return fig as PNG bytes at its own dpi, whatever matplotlib's backend."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    return buffer.getvalue()


def _image(fig):
    """Return fig as an image for IPython's display inside the live widget."""
    from IPython.display import Image

    return Image(data=_png(fig), format="png")


def _capture(work: Callable[[], T]) -> tuple[bool, object]:
    try:
        return True, work()
    except BaseException as exc:  # handed to the caller's thread
        return False, exc
