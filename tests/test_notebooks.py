"""Every notebook follows the house structure, and runs on the cpu recipe."""

import ast
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from _outputs import deployment_problems, ephemeral_ports, printed_commands, temporary_paths
from _paths import EXECUTED, ROOT
from _prose import REFERENCE_MARK, prose_figures

import deploykit as dk
from deploykit import cookbook

NOTEBOOKS = cookbook.list_notebooks(ROOT)
IDS = [p.stem for p in NOTEBOOKS]


def test_there_are_notebooks():
    assert "01_quickstart" in IDS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_structure(path):
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and re.match(r"# \S.*: \S", cells[0].source), (
        "first cell must be a '# <Deployment path>: <what you get>' title"
    )
    assert "You will" in cells[0].source
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    for line in params[0].source.splitlines():
        if line.strip():
            assert re.match(r"^\w+: [\w\[\], |]+ = .+  # \S", line), (
                f"untyped or uncommented: {line}"
            )
    for cell in cells:
        if cell.cell_type == "code":
            assert not re.search(r"^\s*(async\s+)?def |^\s*class ", cell.source, re.M), (
                "no def/class in notebooks: put it in deploykit with a test"
            )
            assert not re.search(r"^\s*[!%]pip", cell.source, re.M), "no pip installs in notebooks"
            if "parameters" not in cell.metadata.get("tags", []):
                lines = len(cell.source.strip().splitlines())
                assert lines <= 15, f"a code cell of {lines} lines: move the work into deploykit"
            assert not re.search(
                r"^\s*from deploykit[.\w]* import|^\s*import deploykit\.", cell.source, re.M
            ), "notebooks import deploykit as dk only"
            assert cell.get("outputs", []) == [] and cell.get("execution_count") is None, (
                "outputs must be stripped before commit"
            )
    headings = [c.source for c in cells if c.cell_type == "markdown"]
    assert any(h.startswith("## Clean up") for h in headings)
    assert any(h.startswith("## Next steps") for h in headings)
    assert any(h.startswith("## Step 1") for h in headings)
    checks = next((i for i, c in enumerate(cells) if c.source.startswith("## Checks")), None)
    assert checks is not None, "a '## Checks' heading before the cell that asserts"
    assert "assert " in cells[checks + 1].source, "the cell after '## Checks' asserts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_a_try_it_cell_follows_its_heading_between_the_steps_and_the_clean_up(path):
    """Every notebook has one Try-it cell, after its steps (at the latest before the step that
    stops its servers, as in 03 and 12) and before Clean up."""
    cells = nbformat.read(path, as_version=4).cells
    ids = [c.get("id") for c in cells]
    assert "try-it" in ids, f"{path.stem} has no Try-it cell (ids try-it-md and try-it)"
    at = ids.index("try-it")
    assert ids.count("try-it") == 1 and ids.count("try-it-md") == 1
    heading, code = cells[at - 1], cells[at]
    assert heading.get("id") == "try-it-md" and heading.cell_type == "markdown", (
        "the try-it code cell must come right after the try-it-md markdown cell"
    )
    assert heading.source.startswith("## Try it") and heading.source.strip() != "## Try it", (
        "the try-it-md cell starts '## Try it' and says what to move and what to watch"
    )
    assert code.cell_type == "code" and code.source.startswith("dk.try_it("), (
        "the try-it cell is a code cell starting 'dk.try_it('"
    )
    markdown = [(i, c.source) for i, c in enumerate(cells) if c.cell_type == "markdown"]
    step_1 = min(i for i, text in markdown if text.startswith("## Step 1"))
    clean_up = min(i for i, text in markdown if text.startswith("## Clean up"))
    assert step_1 < at - 1 and at < clean_up, "Try it goes after the steps, before Clean up"


def test_every_notebook_has_cpu_recipe_values():
    recipe = cookbook.load_recipe("cpu", ROOT)
    cookbook.resolve(recipe, NOTEBOOKS, NOTEBOOKS)  # raises on any unknown key
    for name in ("gpu-smoke", "gpu-24gb", "gpu-80gb", "workshop"):
        cookbook.resolve(cookbook.load_recipe(name, ROOT), NOTEBOOKS, NOTEBOOKS)
    assert set(cookbook.list_recipes(ROOT)) == {
        "cpu",
        "gpu-smoke",
        "gpu-24gb",
        "gpu-80gb",
        "workshop",
    }


def test_the_workshop_recipe_runs_every_notebook_on_the_cpu_with_built_in_models():
    """What an attendee's laptop runs offline: no hub model, no GPU, every notebook resolved."""
    for path, values in recipe_values("workshop"):
        if "device" in values:
            assert values["device"] == "cpu", f"{path.stem} runs on {values['device']}"
        assert values.get("gpus", 0) == 0, path.stem
        hub = {
            k: values[k] for k in MODEL_KEYS if values.get(k, "") not in ("", *dk.BUILTIN_MODELS)
        }
        assert hub == {}, f"{path.stem} would fetch from a model hub: {hub}"


MODEL_KEYS = ("model", "chat_model", "convert_model", "run_model")  # parameters naming a model


def recipe_values(recipe: str) -> list[tuple[Path, dict]]:
    """Return each notebook with the values its parameters take on recipe (defaults overridden)."""
    resolved = cookbook.resolve(cookbook.load_recipe(recipe, ROOT), NOTEBOOKS, NOTEBOOKS)
    assert sorted(resolved) == IDS
    found = []
    for path in NOTEBOOKS:
        declared = cookbook.notebook_parameters(path)
        values = {k: ast.literal_eval(v["default"]) for k, v in declared.items()}
        found.append((path, values | resolved[path.stem]))
    return found


def test_gpu_smoke_runs_every_notebook_on_cuda_with_built_in_models():
    """What a GPU machine without network runs: no hub model, nothing left on the CPU default."""
    for path, values in recipe_values("gpu-smoke"):
        if "device" in values:
            assert values["device"] == "cuda", f"{path.stem} runs on {values['device']}"
        if "dtype" in values:
            assert values["dtype"] == "bfloat16", f"{path.stem}: dtype {values['dtype']}"
        if "model" in values:
            assert values["model"] == "smollm2-135m", f"{path.stem}: model {values['model']}"
        hub = {
            k: values[k] for k in MODEL_KEYS if values.get(k, "") not in ("", *dk.BUILTIN_MODELS)
        }
        assert hub == {}, f"{path.stem} would fetch from a model hub: {hub}"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_on_cpu_recipe(path, tmp_path):
    kept = EXECUTED / path.name  # what the regression and site tests read, once this passed
    kept.unlink(missing_ok=True)
    [result] = dk.run_cookbook(
        [path.stem], recipe="cpu", root=ROOT, out_dir=tmp_path, progress=False
    )
    assert result.status == "ok", (
        f"{result.notebook} failed in cell {result.failing_cell}: {result.error}"
    )
    executed = Path(result.output_path)
    EXECUTED.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(executed, kept)  # a run that completed, whatever the checks below find
    assert executed.stat().st_size < MAX_EXECUTED_BYTES, f"{executed.stat().st_size:,} bytes"
    assert deployment_problems(tmp_path, executed) == []
    assert try_it_problems(executed) == []


# an executed notebook a reader opens (plots, tables, text); the Try-it's result, often a
# figure, is kept a second time in the widget state, which a rendered page shows
MAX_EXECUTED_BYTES = 400_000
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def try_it_problems(executed: Path) -> list[str]:
    """Return what is wrong with the Try-it of an executed notebook: its default run must have
    succeeded under papermill, and its result must be in the saved widget state."""
    nb = nbformat.read(executed, as_version=4)
    [cell] = [c for c in nb.cells if c.get("id") == "try-it"]
    views = [o.data[WIDGET_VIEW] for o in cell.outputs if WIDGET_VIEW in o.get("data", {})]
    if len(views) != 1:
        return [f"the try-it cell shows {len(views)} widgets, not one"]
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    if views[0]["model_id"] not in state:
        return ["the executed notebook did not keep the Try-it's widget state"]
    models = [m for m in state.values() if "dk-try-it-status" in m["state"].get("_dom_classes", ())]
    outputs = [
        m for m in state.values() if "dk-try-it-output" in m["state"].get("_dom_classes", ())
    ]
    status = [m["state"].get("value", "") for m in models]
    problems = []
    if len(status) != 1 or not status[0].startswith("ran in "):
        problems.append(f"the default run did not succeed: status {status}")
    if len(outputs) != 1 or not outputs[0]["state"].get("outputs"):
        problems.append("the Try-it's Output kept no result in the widget state")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_prose_states_no_figure_its_run_does_not_show(path):
    cells = json.loads(path.read_text())["cells"]
    assert prose_figures(cells) == [], (
        "state measured figures from the run (dk.Findings), or in a '**Reference figures**' "
        "cell with its source, compared with the run (dk.compare_reference)"
    )
    references = [
        c
        for c in cells
        if c["cell_type"] == "markdown" and "".join(c["source"]).lstrip().startswith(REFERENCE_MARK)
    ]
    code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    for cell in references:
        text = "".join(cell["source"]).lower()
        assert "source" in text and "conditions" in text, (
            "a reference names its source and conditions"
        )
    assert not references or "dk.compare_reference" in code, (
        "compare reference figures with the run"
    )


def _markdown_cell(text: str) -> dict:
    return {"cell_type": "markdown", "source": text}


def test_a_figure_in_prose_is_caught_and_a_reference_block_is_not():
    claim = "NF4 decodes 1.6x faster and adds about 22% perplexity, at 40 tokens/s, in about 45 s."
    found = prose_figures([_markdown_cell(claim)])
    assert {kind for _, kind, _ in found} == {"ratio", "percentage", "rate", "approximate quantity"}
    reference = f"{REFERENCE_MARK} (source: docs/benchmarks.md; conditions: 16 windows)\n\n{claim}"
    assert prose_figures([_markdown_cell(reference)]) == []
    assert prose_figures([_markdown_cell("set `timeout_s=45` and `--dtype float32`")]) == []


def test_a_temporary_path_in_a_written_file_or_a_printed_command_is_caught(tmp_path):
    (tmp_path / "deploy" / "nb").mkdir(parents=True)
    (tmp_path / "deploy" / "nb" / "compose.yaml").write_text(f"build: {{context: {tmp_path}}}\n")
    (tmp_path / "deploy" / "nb" / "prometheus.yml").write_text("targets: ['127.0.0.1:41234']\n")
    executed = tmp_path / "run.ipynb"
    outputs = [
        {
            "output_type": "stream",
            "name": "stdout",
            "text": [f"kubectl apply -f {tmp_path}/manifests.yaml\n", f"log: {tmp_path}/x.log\n"],
        }
    ]
    executed.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": outputs}]}))
    problems = deployment_problems(tmp_path, executed)
    assert len(problems) == 3, problems  # the file's path and port, the command; not the log
    assert printed_commands(json.loads(executed.read_text())) == [
        f"kubectl apply -f {tmp_path}/manifests.yaml"
    ]
    assert temporary_paths("docker compose -f deploy/14/compose.yaml up") == []
    assert ephemeral_ports("url = 'http://localhost:52365/api/healthz'") == []  # Ray's fixed port
    assert ephemeral_ports("url = 'http://localhost:52366/api/healthz'") != []
