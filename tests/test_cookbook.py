"""The cookbook runner: recipes, parameter validation, failure reporting, leftovers."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import deploykit as dk
from deploykit import cookbook


def _notebook(path: Path, params: str, body: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Test: a notebook"), cell]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in body]
    nbformat.write(nb, path)


@pytest.fixture
def mini(tmp_path):
    """A cookbook with two small notebooks and a cpu recipe."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "recipes").mkdir()
    _notebook(
        tmp_path / "notebooks" / "01_hello.ipynb",
        "greeting: str = 'hi'  # text\nn: int = 1  # count",
        ["print(greeting * n)"],
    )
    _notebook(
        tmp_path / "notebooks" / "02_boom.ipynb",
        "n: int = 1  # count",
        ["x = n + 1", "raise RuntimeError('boom at cell three')", "print('never')"],
    )
    (tmp_path / "recipes" / "cpu.yaml").write_text(
        "description: test\nparameters:\n  n: 2\nnotebooks:\n  01_hello:\n    greeting: yo\n"
    )
    return tmp_path


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "deploykit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_resolve_merges_shared_per_notebook_and_flags(mini):
    nbs = cookbook.list_notebooks(mini)
    recipe = cookbook.load_recipe("cpu", mini)
    params = cookbook.resolve(recipe, nbs, nbs, {"n": 5})
    assert params == {"01_hello": {"n": 5, "greeting": "yo"}, "02_boom": {"n": 5}}


def test_run_writes_executed_copy_with_parameters(mini, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    [result] = dk.run_cookbook(["01_hello"], recipe="cpu", root=mini, out_dir=out, progress=False)
    assert result.status == "ok"
    executed = nbformat.read(out / "01_hello.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("yoyo" in o.get("text", "") for o in outputs)
    assert json.loads((out / "summary.json").read_text())[0]["notebook"] == "01_hello"


def test_failing_notebook_is_named_with_its_cell_and_exit_code(mini):
    proc = _cli("cookbook", "run", "--recipe", "cpu", "--root", str(mini), cwd=mini)
    assert proc.returncode == 1
    row = next(line for line in proc.stdout.splitlines() if "02_boom" in line)
    cells = [c.strip() for c in row.split("|")]
    assert cells[2] == "failed" and cells[4] == "3" and "boom at cell three" in row
    hello = next(line for line in proc.stdout.splitlines() if "01_hello" in line)
    assert "| ok |" in hello  # one failure does not stop the others
    assert "boom at cell three" in proc.stderr  # the cell's traceback is logged


def test_unknown_recipe_name(mini):
    proc = _cli("cookbook", "run", "--recipe", "tpu", "--root", str(mini), cwd=mini)
    assert proc.returncode == 2
    assert "unknown recipe 'tpu'" in proc.stderr and "cpu" in proc.stderr


def test_unknown_recipe_key(mini):
    (mini / "recipes" / "bad.yaml").write_text("parameters:\n  n: 1\n  temprature: 0.5\n")
    with pytest.raises(dk.RecipeKeyError) as err:
        dk.run_cookbook(recipe="bad", root=mini)
    assert "temprature" in str(err.value) and "greeting" in str(err.value) and "n" in str(err.value)


def test_unknown_per_notebook_key_and_section(mini):
    (mini / "recipes" / "bad.yaml").write_text("notebooks:\n  02_boom:\n    greeting: x\n")
    with pytest.raises(dk.RecipeKeyError, match="02_boom.*greeting.*valid: n"):
        dk.run_cookbook(recipe="bad", root=mini)
    (mini / "recipes" / "bad.yaml").write_text("notebooks:\n  09_nothing:\n    n: 1\n")
    with pytest.raises(dk.RecipeKeyError, match="09_nothing"):
        dk.run_cookbook(recipe="bad", root=mini)


def test_unknown_p_flag(mini):
    proc = _cli("cookbook", "run", "01_hello", "--root", str(mini), "-p", "tokens=3", cwd=mini)
    assert proc.returncode == 2
    assert "tokens" in proc.stderr and "greeting" in proc.stderr


def test_malformed_p_flag():
    with pytest.raises(dk.RecipeKeyError, match="key=value"):
        cookbook.parse_overrides(["max_tokens"])
    assert cookbook.parse_overrides(["n=8", "s=hi"]) == {"n": 8, "s": "hi"}


def test_unknown_notebook_name(mini):
    with pytest.raises(dk.NotebookNotFoundError, match="01_hello"):
        dk.run_cookbook(["07_nope"], root=mini)


def test_leftover_server_fails_the_notebook(mini, tmp_path_factory):
    _notebook(
        mini / "notebooks" / "03_leaky.ipynb",
        "n: int = 1  # count",
        [
            "import subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
            " start_new_session=True)"
        ],
    )
    out = tmp_path_factory.mktemp("leaky")
    [result] = dk.run_cookbook(["03_leaky"], root=mini, out_dir=out, progress=False)
    assert result.status == "failed" and "left processes running" in result.error


def test_list_shows_notebooks_and_recipes(mini, monkeypatch, capsys):
    monkeypatch.setenv("DEPLOYKIT_ROOT", str(mini))
    from deploykit.cli import main

    assert main(["cookbook", "list"]) == 0
    out = capsys.readouterr().out
    assert "01_hello: greeting, n" in out and "recipes: cpu" in out
