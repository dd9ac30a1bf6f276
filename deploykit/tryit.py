"""A "Try it" widget: a row of controls, a Run button, a status line and fn's result.

`dk.try_it(fn, max_tokens=dk.slider(8, 256, default=32))` runs fn once with the controls'
defaults when it is built, so an executed notebook (papermill) shows a result and its saved
widget state keeps it, and again on each click of Run. The result is written into the
Output widget's `outputs` directly rather than through `with output:`, so it is the same in
JupyterLab, in an unattended run and outside a kernel (where the controls cannot show, and
the returned object's text says what ran).

A click runs fn in the kernel, as ipywidgets' `interact_manual` does, not in a thread: a slow
fn keeps the kernel busy until it returns, and the Run button stays disabled meanwhile.
"""

from __future__ import annotations

import contextlib
import html
import inspect
import io
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["try_it", "slider", "choice", "TryIt"]

# CSS classes the browser test finds the parts by
CONTROL_CLASS = "dk-try-it-control"
RUN_CLASS = "dk-try-it-run"
STATUS_CLASS = "dk-try-it-status"
OUTPUT_CLASS = "dk-try-it-output"

_CONTROL_HINT = (
    "pass dk.slider(lo, hi, default=...), dk.choice([...], default=...), "
    "a list of options, or an ipywidgets value widget"
)


def slider(
    lo: float, hi: float, *, default: float, step: float | None = None
) -> Any:  # an IntSlider or a FloatSlider
    """Return a slider from lo to hi starting at default: an IntSlider if all are ints."""
    numbers = [lo, hi, default] + ([] if step is None else [step])
    if any(isinstance(x, bool) or not isinstance(x, int | float) for x in numbers):
        raise InvalidArgumentError(
            f"dk.slider takes numbers: dk.slider(lo, hi, default=..., step=...), e.g. "
            f"dk.slider(1, 64, default=8); got {numbers}."
        )
    if not lo < hi:
        raise InvalidArgumentError(f"dk.slider: lo ({lo}) must be below hi ({hi}).")
    if not lo <= default <= hi:
        raise InvalidArgumentError(
            f"dk.slider: default={default} is outside {lo}..{hi}; pass a default in that range."
        )
    if step is not None and not 0 < step <= hi - lo:
        raise InvalidArgumentError(f"dk.slider: step={step} must be above 0 and at most hi - lo.")
    import ipywidgets as widgets

    if all(isinstance(x, int) for x in numbers):
        return widgets.IntSlider(
            value=default, min=lo, max=hi, step=step or 1, continuous_update=False
        )
    step = step or _round_step((hi - lo) / 100)
    return widgets.FloatSlider(
        value=default,
        min=lo,
        max=hi,
        step=step,
        readout_format=f".{_decimals(step)}f",
        continuous_update=False,
    )


def choice(options: Sequence[Any], *, default: Any) -> Any:  # a Dropdown
    """Return a dropdown over options (values, or (label, value) pairs) starting at default."""
    values = _option_values(options, "dk.choice(options, default=...)")
    if not any(value == default for value in values):
        raise InvalidArgumentError(
            f"dk.choice: default={default!r} is not among the options {values!r}; pass one of them."
        )
    import ipywidgets as widgets

    return widgets.Dropdown(options=list(options), value=default)


def try_it(fn: Callable[..., Any], *, title: str | None = None, **controls: Any) -> TryIt:
    """Return a Try-it widget that calls fn with the controls' values by name; it ran once.

    fn returns what to show (a figure, a string, a table, anything IPython displays) rather
    than displaying it: the Output shows the returned value and what fn printed.
    """
    if not callable(fn):
        raise InvalidArgumentError(
            "dk.try_it: fn must be a function taking the controls by name, e.g. "
            "dk.try_it(lambda n: n * 2, n=dk.slider(1, 10, default=3))."
        )
    built = {name: _control(name, spec) for name, spec in controls.items()}
    try:
        inspect.signature(fn).bind(**built)
    except TypeError as exc:
        raise InvalidArgumentError(
            f"dk.try_it: fn does not take the controls {', '.join(built) or '(none)'} by name "
            f"({exc}); give it one parameter per control."
        ) from None
    except ValueError:  # no signature to read (some builtins): the run will say
        pass
    ui = TryIt(fn, built, title)
    ui.run()
    return ui


class TryIt:
    """The widget try_it returns: controls, a Run button, a status line, an Output."""

    def __init__(self, fn: Callable[..., Any], controls: dict[str, Any], title: str | None):
        import ipywidgets as widgets

        self.fn = fn
        self.title = title
        self.controls = controls
        self.button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.button.add_class(RUN_CLASS)
        self.status = widgets.Label("")
        self.status.add_class(STATUS_CLASS)
        self.output = widgets.Output()
        self.output.add_class(OUTPUT_CLASS)
        self.result: Any = None  # fn's last value; None after a failure
        self.error: Exception | None = None  # what the last run raised
        self._running = False
        row = widgets.HBox(
            [*controls.values(), self.button], layout=widgets.Layout(flex_flow="row wrap")
        )
        heading = [widgets.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        self.widget = widgets.VBox([*heading, row, self.status, self.output])
        self.button.on_click(lambda _button: self._run())

    def run(self, **values: Any) -> Any:
        """Set the named controls, run fn as Run does, and return its result (None if it failed)."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise InvalidArgumentError(
                f"no control named {', '.join(unknown)}; the controls are "
                f"{', '.join(self.controls) or '(none)'}."
            )
        for name, value in values.items():
            _set_value(name, self.controls[name], value)
        self._run()
        return self.result

    def _run(self) -> None:
        if self._running:  # a click while fn runs (the button is disabled meanwhile)
            return
        self._running = True
        self.button.disabled = True
        kwargs = {name: widget.value for name, widget in self.controls.items()}
        settings = ", ".join(f"{name}={_setting(w)}" for name, w in self.controls.items())
        self.status.value = f"running: {settings}" if settings else "running"
        plt = sys.modules.get("matplotlib.pyplot")
        figures_before = set(plt.get_fignums()) if plt else set()
        printed = io.StringIO()
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(printed):
                result = self.fn(**kwargs)
        except Exception as exc:  # any failure of fn: one line, and the widget stays usable
            self.result, self.error = None, exc
            self.output.outputs = _stream(printed.getvalue())
            self.status.value = f"failed: {type(exc).__name__}: {_one_line(exc)}"
        else:
            seconds = time.perf_counter() - started
            self.result, self.error = result, None
            figures = _new_figures(figures_before)
            self.output.outputs = (*_stream(printed.getvalue()), *_outputs(result, figures))
            took = f"ran in {_duration(seconds)}"
            self.status.value = f"{took}: {settings}" if settings else took
        finally:
            _close(_new_figures(figures_before))  # shown in the Output, or fn failed
            self._running = False
            self.button.disabled = False

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        head = f"try it{f' ({self.title})' if self.title else ''}: {self.status.value}"
        lines = [head, "(a widget: its controls show in JupyterLab)"]
        for output in self.output.outputs:
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            lines += text.rstrip("\n").splitlines()[:20]
        return "\n".join(lines)


def _control(name: str, spec: Any) -> Any:
    """Return the widget for one control, labelled with its name and classed for the browser."""
    import ipywidgets as widgets

    if isinstance(spec, widgets.ValueWidget):
        widget = spec
    elif isinstance(spec, list | tuple):
        _option_values(spec, f"{name}=[...]")
        widget = widgets.Dropdown(options=list(spec))  # starts at the first option
    else:
        raise InvalidArgumentError(f"dk.try_it: {name}={spec!r} is not a control; {_CONTROL_HINT}.")
    if not widget.description:
        widget.description = name
        widget.style.description_width = "initial"  # the whole name, not cut at 90 px
    widget.add_class(CONTROL_CLASS)
    return widget


def _option_values(options: Any, usage: str) -> list[Any]:
    """Return the values of a non-empty list of options, as ipywidgets pairs them with labels."""
    if isinstance(options, Mapping) or not isinstance(options, list | tuple):
        raise InvalidArgumentError(
            f"{usage}: the options must be a list (of values, or of (label, value) pairs), "
            f"not {type(options).__name__}."
        )
    if not options:
        raise InvalidArgumentError(f"{usage}: the list of options is empty; give at least one.")
    if all(isinstance(o, list | tuple) and len(o) == 2 for o in options):
        return [value for _label, value in options]
    return list(options)


def _set_value(name: str, widget: Any, value: Any) -> None:
    """Set a control's value, refusing what the widget would clamp or not offer."""
    import traitlets

    options = getattr(widget, "options", None)
    if options is not None and not any(v == value for v in _option_values(options, name)):
        raise InvalidArgumentError(f"{name}={value!r} is not among its options: {options!r}.")
    low, high = getattr(widget, "min", None), getattr(widget, "max", None)
    if low is not None and high is not None and not low <= value <= high:
        raise InvalidArgumentError(f"{name}={value!r} is outside its range {low}..{high}.")
    try:
        widget.value = value
    except traitlets.TraitError as exc:
        raise InvalidArgumentError(f"{name}={value!r} does not fit its control: {exc}") from None


def _new_figures(before: set[int]) -> list[Any]:
    """Return the pyplot figures opened since `before` was read (fn may import pyplot)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    return [plt.figure(num) for num in plt.get_fignums() if num not in before]


def _close(figures: list[Any]) -> None:
    plt = sys.modules.get("matplotlib.pyplot")
    for fig in figures:
        if plt is not None:
            plt.close(fig)


def _outputs(result: Any, new_figures: list[Any]) -> list[dict[str, Any]]:
    """Return the Output's entries for fn's result: a figure as PNG, a string as text, ..."""
    mpl_figure = sys.modules.get("matplotlib.figure")
    mpl_axes = sys.modules.get("matplotlib.axes")
    is_figure = mpl_figure is not None and isinstance(result, mpl_figure.Figure)
    figures = ([result] if is_figure else []) + [f for f in new_figures if f is not result]
    outputs = [_figure_output(fig) for fig in figures]
    _close(figures)  # the inline backend would show them a second time under the cell
    if result is None or is_figure:
        return outputs
    if mpl_axes is not None and isinstance(result, mpl_axes.Axes) and result.figure in figures:
        return outputs  # its figure is shown; the Axes' repr says nothing more
    if isinstance(result, str):
        return [*outputs, *_stream(result if result.endswith("\n") else result + "\n")]
    return [*outputs, _display_output(result)]


def _stream(text: str) -> list[dict[str, Any]]:
    return [{"output_type": "stream", "name": "stdout", "text": text}] if text else []


def _figure_output(fig: Any) -> dict[str, Any]:
    from IPython.core.pylabtools import print_figure

    return {
        "output_type": "display_data",
        "metadata": {},
        "data": {"image/png": print_figure(fig, "png", base64=True), "text/plain": repr(fig)},
    }


def _display_output(obj: Any) -> dict[str, Any]:
    """Return obj as IPython would display it: _repr_html_, _repr_pretty_, ..., its repr."""
    import base64

    from IPython import get_ipython
    from IPython.core.formatters import DisplayFormatter

    shell = get_ipython()
    formatter = shell.display_formatter if shell is not None else DisplayFormatter()
    data, metadata = formatter.format(obj)
    # binary data (a _repr_png_) as base64 text, as a display message carries it
    data = {
        mime: base64.b64encode(value).decode() if isinstance(value, bytes) else value
        for mime, value in data.items()
    }
    return {"output_type": "display_data", "metadata": metadata, "data": data}


def _one_line(exc: Exception) -> str:
    """Return the first line of exc's message, cut at 300 characters."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else ""
    more = len(lines) > 1 or len(line) > 300
    return line[:300] + (" ..." if more else "")


def _setting(widget: Any) -> str:
    """Return a control's value as its reader knows it: a dropdown's label, else the value."""
    label = getattr(widget, "label", None)  # a Dropdown's selected label; sliders have none
    return label if isinstance(label, str) and label else _brief(widget.value)


def _brief(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 30 else text[:29] + "..."


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 0.1 else f"{seconds * 1000:.0f} ms"


def _decimals(step: float) -> int:
    """Return how many decimals step has (0.05: 2), for the slider's readout."""
    return len(f"{step:.10f}".rstrip("0").partition(".")[2])


def _round_step(raw: float) -> float:
    """Return the power of ten at or below raw (0.015: 0.01)."""
    import math

    return 10.0 ** math.floor(math.log10(raw))
