"""Every notebook follows the house structure, and runs on the cpu recipe."""

import re

import nbformat
import pytest
from _paths import ROOT

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


def test_every_notebook_has_cpu_recipe_values():
    recipe = cookbook.load_recipe("cpu", ROOT)
    cookbook.resolve(recipe, NOTEBOOKS, NOTEBOOKS)  # raises on any unknown key
    for name in ("gpu-24gb", "gpu-80gb"):
        cookbook.resolve(cookbook.load_recipe(name, ROOT), NOTEBOOKS, NOTEBOOKS)


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_on_cpu_recipe(path, tmp_path):
    [result] = dk.run_cookbook(
        [path.stem], recipe="cpu", root=ROOT, out_dir=tmp_path, progress=False
    )
    assert result.status == "ok", (
        f"{result.notebook} failed in cell {result.failing_cell}: {result.error}"
    )
