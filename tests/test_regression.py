"""pytest-notebook regression of the notebooks' deterministic outputs, without running them again.

The notebook tests run each notebook once and keep the executed copy in build/test-notebooks/
(tests/_paths.py: EXECUTED); these tests read that copy. From each checked notebook they take
the cells whose outputs are deterministic (CHECKED: the memory planner's arithmetic, the
rendered Dockerfile, Compose and Kubernetes text, cost tables, the real model's greedy answers)
and compare them, with pytest-notebook's diffing, `diff_replace` and `diff_ignore`, against the
reference outputs in tests/regression/<notebook>.json (each checked cell's pattern and its
expected outputs: data, not a notebook, so no committed notebook carries outputs). A difference
fails with pytest-notebook's diff.

After an intended change, regenerate the references from the last run of the notebook tests:
`pytest tests/test_regression.py --nb-force-regen`, and review the diff of tests/regression/.
"""

from __future__ import annotations

import copy
import json
import re

import nbformat
import pytest
from _paths import EXECUTED, ROOT
from pytest_notebook.diffing import diff_notebooks, diff_to_string, filter_diff
from pytest_notebook.nb_regression import NBRegressionError, NBRegressionFixture
from pytest_notebook.notebook import regex_replace_nb

REFERENCES = ROOT / "tests" / "regression"

# Per notebook, a pattern for each checked code cell: it must match that cell's source only.
CHECKED = {
    "01_quickstart": [
        r"^lm = dk\.load_model\(",  # parameters and size of the real model
        r"^greedy = dk\.generate\(lm, messages",  # its greedy (and seeded) answers, token counts
        r"dk\.record_arrivals\(dk\.stream\(",  # the streamed greedy answer
    ],
    "06_cloud_endpoints": [
        r"^table = dk\.platform_table\(\)",  # the platforms as data
        r"^local = dk\.start_server\(",  # the local server's greedy answer
        r"^bedrock_request = dk\.converse_request\(",  # the hosted APIs' request shapes
    ],
    "08_kv_cache": [
        r"^configs = \[dk\.model_config",  # layers, KV heads, weights, KV bytes per token
        r"^print\(dk\.plan_table\(",  # the memory plans and the smallest GPU that fits
        r"dk\.cache_bytes\(cache\)",  # the planner's bytes against a real KV cache
    ],
    "14_docker_compose": [
        r"^config = dk\.DeploymentConfig\(",  # the config and the combinations refused
        r"^paths = dk\.write_docker_files\(",  # the Dockerfile
        r"^compose_text = ",  # the Compose file and its schema check
        r"dk\.docker_differences\(",  # what changed from the seed
        r"dk\.docker_commands\(",  # the commands for a machine with Docker
    ],
    "15_kubernetes": [
        r"^config = dk\.DeploymentConfig\(",
        r"^wrong = ",  # the manifests a cluster would punish, refused
        r"^probes = dk\.probes\(",  # probes and the pod's timeline
        r"^paths = dk\.write_manifests\(",  # the files written and the Deployment
        r'if file not in \("deployment\.yaml"',  # PVC, Service, HPA, PDB
        r"dk\.kubernetes_differences\(",
        r"dk\.kubernetes_commands\(",
    ],
}

_TEXT = "/cells/*/outputs/*/text"
_PLAIN = "/cells/*/outputs/*/data/text/plain"
_HTML = "/cells/*/outputs/*/data/text/html"
_REPLACEMENTS = [
    # the run's folder: pytest's tmp_path in the notebook tests, build/cookbook/<recipe> in
    # `make cookbook`; then the checkout. (Paths inside an image, /tmp/ or /root/, are content.)
    (r"/\S*?pytest-of-[^/\s]+/pytest-\d+/[^/\s'\"]+", "<run>"),
    (re.escape(str(ROOT)) + r"/build/cookbook/[\w.-]+", "<run>"),
    (re.escape(str(ROOT)), "<root>"),
    (r"(?m)^(\s*(?:context|dockerfile): ).+$", r"\1<path>"),  # Compose's paths to the checkout
    # free ports of the run's servers (Linux's ephemeral range, where free_port() finds them)
    (r"\b(127\.0\.0\.1|localhost):(?:3[2-9]\d{3}|[45]\d{4}|60\d{3})\b", r"\1:<port>"),
    (r"\bpid=\d+", "pid=<pid>"),
    (r"\b\d+\.\d+ ?(?:ms|s)\b", "<time>"),  # measured durations (configured ones are whole)
    (r"\[\d\d:\d\d<[^\]]*\]", "[<time>]"),  # tqdm's elapsed<remaining
    (r"\b[0-9a-f]{32}\b", "<id>"),  # uuid4().hex ids
    (r"Docker CLI here: \S+", "Docker CLI here: <docker>"),  # whether this machine has one
    # the files in app/ and wheelhouse/ change with deploykit's code and this environment
    (r"(written: \S+/) \([\d,]+ files\)", r"\1 (<n> files)"),
    # a seeded sample depends on torch's sampling kernels, not only on the model: greedy only
    (r"(?m)^sampled: .*$", "sampled: <a seeded sample>"),
    (r"'(\w*_API_KEY|\w*_TOKEN|AWS_\w+)': (True|False)", r"'\1': <set?>"),  # this shell's keys
]
FIXTURE = NBRegressionFixture(
    exec_notebook=False,  # the notebook tests ran it; this compares their copy
    diff_replace=tuple(
        (where, pattern, replacement)
        for pattern, replacement in _REPLACEMENTS
        for where in (_TEXT, _PLAIN, _HTML)
    ),
    diff_ignore=(
        "/metadata/widgets",  # widget models, by random ids
        "/cells/*/outputs/*/data/application/vnd.jupyter.widget-view+json",
        "/cells/*/outputs/*/data/image/png",  # plots: pixels differ with fonts and versions
        "/cells/*/outputs/*/metadata",
        "/cells/*/source",  # a reference keeps each cell's pattern, not its source
        "/cells/*/id",
    ),
    diff_use_color=False,
)


def checked_cells(executed: nbformat.NotebookNode, patterns: list[str]) -> nbformat.NotebookNode:
    """Return a notebook of the cells that patterns pick out, with stdout and results only."""
    code = [c for c in executed.cells if c.cell_type == "code"]
    cells = []
    for pattern in patterns:
        found = [c for c in code if re.search(pattern, c.source, re.M)]
        if len(found) != 1:
            raise LookupError(
                f"{len(found)} code cells match {pattern!r}, not one: the notebook changed; "
                "update CHECKED in tests/test_regression.py, then regenerate the references"
            )
        cell = copy.deepcopy(found[0])
        cell.metadata, cell.execution_count = {}, None
        # stderr holds the environment's warnings (torch, transformers), not the recipe's output
        cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
        for output in cell.outputs:
            if "execution_count" in output:
                output.execution_count = None
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells, metadata={})


def write_reference(path, nb: nbformat.NotebookNode, patterns: list[str]) -> None:
    """Write each checked cell's pattern and outputs as tests/regression/<notebook>.json."""
    cells = [
        {"pattern": pattern, "outputs": cell.outputs}
        for pattern, cell in zip(patterns, nb.cells, strict=True)
    ]
    path.write_text(json.dumps({"cells": cells}, indent=1, sort_keys=True) + "\n")


def read_reference(path) -> nbformat.NotebookNode:
    """Return a reference as a notebook of code cells (each cell's source is its pattern)."""
    cells = [
        nbformat.v4.new_code_cell(
            cell["pattern"], outputs=[nbformat.from_dict(o) for o in cell["outputs"]]
        )
        for cell in json.loads(path.read_text())["cells"]
    ]
    return nbformat.v4.new_notebook(cells=cells, metadata={})


def run_folder(executed: nbformat.NotebookNode) -> list[tuple[str, str, str]]:
    """Return replacements of the folder papermill ran a notebook in (its output's folder)."""
    output = executed.metadata.get("papermill", {}).get("output_path")
    if not output:
        return []
    folder = re.escape(str((ROOT / output).parent))  # ROOT / an absolute path is that path
    return [(where, folder, "<run>") for where in (_TEXT, _PLAIN, _HTML)]


def compare(
    reference: nbformat.NotebookNode,
    obtained: nbformat.NotebookNode,
    replace: list[tuple[str, str, str]] | None = None,
) -> str:
    """Return pytest-notebook's diff of reference against obtained, after its replacements."""
    replacements = (replace or []) + list(FIXTURE.diff_replace)
    initial = regex_replace_nb(reference, replacements)
    final = regex_replace_nb(obtained, replacements)
    diff = filter_diff(diff_notebooks(initial, final), list(FIXTURE.diff_ignore))
    return diff_to_string(initial, diff, use_color=False) if diff else ""


@pytest.mark.executed
@pytest.mark.parametrize("name", sorted(CHECKED))
def test_deterministic_outputs_match_the_reference(name, request):
    executed = EXECUTED / f"{name}.ipynb"
    source = ROOT / "notebooks" / f"{name}.ipynb"
    if not executed.exists():
        pytest.skip(f"no executed copy in {EXECUTED}: the notebook tests write it (-m notebook)")
    if executed.stat().st_mtime < source.stat().st_mtime:
        pytest.skip(f"{executed} is older than {source}: run its notebook test again")
    run = nbformat.read(executed, as_version=4)
    obtained, replace = checked_cells(run, CHECKED[name]), run_folder(run)
    reference_path = REFERENCES / f"{name}.json"
    if request.config.getoption("nb_force_regen"):
        reference = regex_replace_nb(obtained, replace + list(FIXTURE.diff_replace))
        for output in (o for cell in reference.cells for o in cell.outputs):
            if "image/png" in output.get("data", {}):
                output.data["image/png"] = ""  # plots are not compared: keep no pixels here
        reference_path.parent.mkdir(parents=True, exist_ok=True)
        write_reference(reference_path, reference, CHECKED[name])
        pytest.skip(f"regenerated {reference_path.relative_to(ROOT)}")
    assert reference_path.exists(), (
        f"no reference {reference_path}: run this test with --nb-force-regen"
    )
    diff = compare(read_reference(reference_path), obtained, replace)
    if diff:
        cells = "".join(
            f"\n  /cells/{i}: {cell.source.splitlines()[0]}"
            for i, cell in enumerate(obtained.cells)
        )
        raise NBRegressionError(
            f"{name}: outputs differ from {reference_path.relative_to(ROOT)}. If the change is "
            f"intended, regenerate with `pytest tests/test_regression.py --nb-force-regen`.\n"
            f"The cells checked:{cells}\n{diff}"
        )


def _reference(name: str) -> nbformat.NotebookNode:
    return read_reference(REFERENCES / f"{name}.json")


def _edit_first_stdout(nb: nbformat.NotebookNode, old: str, new: str) -> None:
    for cell in nb.cells:
        for output in cell.outputs:
            if output.get("name") == "stdout" and old in output.text:
                output.text = output.text.replace(old, new, 1)
                return
    raise LookupError(old)


def test_every_checked_notebook_has_a_reference():
    assert len(CHECKED) >= 4
    assert sorted(p.stem for p in REFERENCES.glob("*.json")) == sorted(CHECKED)
    assert not list(REFERENCES.glob("*.ipynb"))  # outputs live in data, not in notebooks
    for name, patterns in CHECKED.items():
        assert [c.source for c in _reference(name).cells] == patterns, name
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert set(CHECKED) <= notebooks


def test_a_changed_output_fails_with_a_readable_diff():
    """One figure of the planner's table changed: the diff names the cell and both lines."""
    reference = _reference("08_kv_cache")
    changed = copy.deepcopy(reference)
    _edit_first_stdout(changed, "Llama-2-7B         32       32", "Llama-2-7B         32       16")
    diff = compare(reference, changed)
    assert "--- expected" in diff and "+++ obtained" in diff
    assert "cell" in diff.lower() and "outputs" in diff
    assert "-Llama-2-7B         32       32" in diff, diff
    assert "+Llama-2-7B         32       16" in diff, diff


def test_ports_paths_times_and_widget_ids_are_not_differences():
    reference = _reference("14_docker_compose")
    moved = copy.deepcopy(reference)
    for cell in moved.cells:
        for output in cell.outputs:
            if "text" in output:
                output.text = output.text.replace("<run>", f"{ROOT}/build/cookbook/cpu")
    assert compare(reference, moved) == ""
    run = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "start()",
                outputs=[
                    nbformat.v4.new_output(
                        "stream", name="stdout", text="<Server http://127.0.0.1:39947 pid=27958>"
                    ),
                    nbformat.v4.new_output(
                        "display_data",
                        data={
                            "application/vnd.jupyter.widget-view+json": {"model_id": "a" * 32},
                            "image/png": "iVBORw0KGgoAAAA",
                            "text/plain": "first piece after 700.1 ms",
                        },
                    ),
                ],
            )
        ]
    )
    again = copy.deepcopy(run)
    again.cells[0].outputs[0].text = "<Server http://127.0.0.1:41003 pid=31337>"
    again.cells[0].outputs[1].data = {
        "application/vnd.jupyter.widget-view+json": {"model_id": "b" * 32},
        "image/png": "iVBORw0KGgoBBBB",
        "text/plain": "first piece after 93.4 ms",
    }
    assert compare(run, again) == ""


def test_a_cell_the_notebook_no_longer_has_is_named():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    with pytest.raises(LookupError, match="update CHECKED"):
        checked_cells(nb, [r"^config = dk\.DeploymentConfig\("])


def test_reference_copies_hold_no_machine_paths():
    for path in sorted(REFERENCES.glob("*.json")):
        text = path.read_text()
        assert str(ROOT) not in text and "pytest-of-" not in text, path.name
