"""The notebooks' Try-it widget: runs once when built, again per click, one line on failure."""

from __future__ import annotations

import ipywidgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

import deploykit as dk
from deploykit.tryit import CONTROL_CLASS, OUTPUT_CLASS, RUN_CLASS

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _texts(ui: dk.TryIt) -> list[str]:
    return [o.get("text") or o["data"]["text/plain"] for o in ui.output.outputs]


def test_the_defaults_run_once_and_run_changes_the_result(tiny):
    calls = []

    def complete(max_tokens: int, temperature: float):
        calls.append((max_tokens, temperature))
        return dk.generate(
            tiny, "def add(a, b):", max_tokens=max_tokens, temperature=temperature, ignore_eos=True
        )

    ui = dk.try_it(
        complete,
        title="Complete a line of Python",
        max_tokens=dk.slider(1, 16, default=4),
        temperature=dk.slider(0.0, 1.5, default=0.0),
    )
    assert calls == [(4, 0.0)]  # built: one run with the defaults
    assert ui.result.completion_tokens == 4
    assert ui.status.value.startswith("ran in ")
    assert ui.status.value.endswith(": max_tokens=4, temperature=0")
    assert _texts(ui) == [repr(ui.result)]  # not a str: shown as IPython shows it

    result = ui.run(max_tokens=9)
    assert calls[-1] == (9, 0.0) and ui.controls["max_tokens"].value == 9
    assert result is ui.result and result.completion_tokens == 9
    assert ui.status.value.endswith(": max_tokens=9, temperature=0")
    ui.button.click()  # Run, as in JupyterLab: the controls' current values
    assert calls[-1] == (9, 0.0) and len(calls) == 3


def test_the_parts_carry_the_browser_tests_classes_and_the_text_says_what_ran():
    ui = dk.try_it(lambda n, word: word * n, n=dk.slider(1, 5, default=2), word=["ab", "cd"])
    assert ui.result == "abab" and _texts(ui) == ["abab\n"]
    assert isinstance(ui.controls["n"], ipywidgets.IntSlider)
    assert ui.controls["word"].value == "ab"  # a list: a dropdown at its first option
    assert all(CONTROL_CLASS in w._dom_classes for w in ui.controls.values())
    assert RUN_CLASS in ui.button._dom_classes and OUTPUT_CLASS in ui.output._dom_classes
    assert [w.description for w in ui.controls.values()] == ["n", "word"]
    assert ui.run(n=3, word="cd") == "cdcdcd"
    text = repr(ui)
    assert "n=3, word=cd" in text and "JupyterLab" in text and "cdcdcd" in text
    bundle = ui._repr_mimebundle_()
    assert WIDGET_VIEW in bundle and bundle["text/plain"] == text


def test_a_dropdown_of_labelled_values_shows_its_label_in_the_status():
    # (label, value) pairs: the status names the option as the dropdown shows it, not repr(value)
    ui = dk.try_it(
        lambda fault: fault["status"],
        fault=dk.choice(
            [("503 with Retry-After", {"status": 503}), ("reset", {"status": None})],
            default={"status": 503},
        ),
    )
    assert ui.result == 503 and ui.status.value.endswith(": fault=503 with Retry-After")
    assert ui.run(fault={"status": None}) is None and ui.status.value.endswith(": fault=reset")


def test_a_failing_fn_shows_one_line_and_the_widget_stays_usable():
    def fragile(n: int) -> str:
        print("about to divide")
        if n == 0:
            raise RuntimeError("n must not be 0\nsecond line of detail")
        return f"1/{n} = {1 / n:.2f}"

    ui = dk.try_it(fragile, n=dk.slider(0, 4, default=0))  # the defaults fail: no raise
    assert ui.result is None and isinstance(ui.error, RuntimeError)
    assert ui.status.value == "failed: RuntimeError: n must not be 0 ..."
    assert _texts(ui) == ["about to divide\n"]  # what it printed, no traceback
    assert not ui.button.disabled
    assert ui.run(n=4) == "1/4 = 0.25" and ui.error is None
    assert _texts(ui) == ["about to divide\n", "1/4 = 0.25\n"]


def test_a_click_while_it_runs_is_ignored():
    seen = []
    box: list[dk.TryIt] = []

    def impatient(n: int) -> int:
        if box:  # a click on Run, while this run is in progress
            seen.append(box[0].button.disabled)
            box[0].button.click()
        return n

    box.append(dk.try_it(impatient, n=dk.slider(1, 3, default=1)))
    assert box[0].run(n=2) == 2
    assert seen == [True]  # one run only: the click inside it was ignored
    assert not box[0].button.disabled


def test_a_figure_is_shown_once_and_closed():
    def plot(points: int):
        fig, ax = plt.subplots()
        ax.plot(range(points))
        return fig

    open_before = plt.get_fignums()  # figures earlier tests of the session left open
    ui = dk.try_it(plot, points=dk.choice([2, 5, 10], default=5))
    [shown] = ui.output.outputs
    assert shown["data"]["image/png"].startswith("iVBORw0KGgo")  # a PNG, base64
    # closed: the inline backend will not show it again
    assert not plt.fignum_exists(ui.result.number) and plt.get_fignums() == open_before
    assert ui.result.axes[0].lines[0].get_xdata().tolist() == [0, 1, 2, 3, 4]


def test_rich_results_are_shown_as_ipython_shows_them_and_none_shows_nothing():
    pd = pytest.importorskip("pandas")
    ui = dk.try_it(lambda rows: pd.DataFrame({"n": range(rows)}), rows=[2, 3])
    [shown] = ui.output.outputs
    assert "<table" in shown["data"]["text/html"]
    assert ui.run(rows=3).shape == (3, 1)
    assert dk.try_it(lambda: None).output.outputs == ()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: dk.try_it(lambda x: x, x={"a": 1}), "not a control; pass dk.slider"),
        (lambda: dk.try_it(lambda x: x, x=[]), "empty"),
        (lambda: dk.try_it(lambda x: x, x=3), "not a control"),
        (lambda: dk.try_it(lambda y: y, x=[1, 2]), "does not take the controls x"),
        (lambda: dk.try_it("not a function"), "fn must be a function"),
        (lambda: dk.choice([1, 2], default=3), "not among the options"),
        (lambda: dk.choice({"a": 1}, default=1), "must be a list"),
        (lambda: dk.slider(5, 1, default=2), "must be below hi"),
        (lambda: dk.slider(1, 5, default=9), "outside 1..5"),
        (lambda: dk.slider(1, 5, default=2, step=0), "step=0"),
        (lambda: dk.slider("1", 5, default=2), "takes numbers"),
        (lambda: dk.try_it(lambda n: n, n=[1, 2]).run(n=7), "not among its options"),
        (lambda: dk.try_it(lambda n: n, n=dk.slider(1, 2, default=1)).run(n=9), "range 1..2"),
        (lambda: dk.try_it(lambda n: n, n=[1]).run(m=1), "no control named m"),
    ],
)
def test_wrong_controls_are_configuration_errors_saying_what_to_pass(make, says):
    with pytest.raises(dk.InvalidArgumentError, match=says) as caught:
        make()
    assert isinstance(caught.value, dk.ConfigurationError)


def test_sliders_take_the_type_of_their_numbers():
    ints = dk.slider(1, 64, default=8)
    floats = dk.slider(0, 2, default=0.7)
    assert type(ints).__name__ == "IntSlider" and (ints.value, ints.step) == (8, 1)
    assert type(floats).__name__ == "FloatSlider" and floats.value == 0.7
    assert floats.step == 0.01 and floats.readout_format == ".2f"
    assert dk.slider(0.0, 1.0, default=0.5, step=0.25).readout_format == ".2f"


# ---- in a kernel: what an executed notebook saves --------------------------------------------

CELLS = [
    "import matplotlib.pyplot as plt\nimport deploykit as dk",
    'dk.try_it(lambda n: f"{n} squared is {n * n}", n=dk.slider(1, 9, default=3))',
    "dk.try_it(lambda k: plt.subplots()[0], k=[1, 2])",
]


def test_an_executed_notebook_keeps_the_result_in_its_widget_state(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    client = NotebookClient(nb, kernel_name="python3", timeout=120, startup_timeout=120)
    client.resources = {"metadata": {"path": str(tmp_path)}}
    client.execute()  # store_widget_state, as papermill runs it
    state = nb.metadata.widgets[WIDGET_STATE]["state"]

    def output_model(cell) -> dict:
        [display] = [o for o in cell.outputs if o.output_type != "stream"]
        assert "image/png" not in display.data  # the widget only, no second copy of a figure
        assert "JupyterLab" in display.data["text/plain"]
        box = state[display.data[WIDGET_VIEW]["model_id"]]
        assert box["model_name"] == "VBoxModel"
        return state[box["state"]["children"][-1].removeprefix("IPY_MODEL_")]  # the Output

    squared = output_model(nb.cells[1])
    assert squared["model_name"] == "OutputModel"
    assert squared["state"]["outputs"][0]["text"] == "3 squared is 9\n"
    assert OUTPUT_CLASS in squared["state"]["_dom_classes"]
    [figure] = output_model(nb.cells[2])["state"]["outputs"]
    assert figure["data"]["image/png"].startswith("iVBORw0KGgo")
