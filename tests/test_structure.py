"""The library's shape: one face per package, every notebook name on it, each name once."""

from __future__ import annotations

import ast
import importlib
import json
import re

from _paths import ROOT

import deploykit as dk
from deploykit import cli

PACKAGE = ROOT / "deploykit"


def _notebook_names() -> set[str]:
    names = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                names |= set(re.findall(r"\bdk\.([A-Za-z_]\w*)", "".join(cell["source"])))
    return names


def test_every_name_a_notebook_calls_is_on_dk():
    names = _notebook_names()
    assert len(names) > 100  # the scan found the notebooks' calls
    assert sorted(n for n in names if not hasattr(dk, n)) == []


def test_dk_all_is_the_faces_each_name_once():
    init = (PACKAGE / "__init__.py").read_text()
    faces = re.findall(r"^__all__ \+= _(\w+)\.__all__$", init, re.M)
    expected = [n for f in faces for n in importlib.import_module(f"deploykit.{f}").__all__]
    assert dk.__all__ == expected and len(expected) == len(set(expected))
    assert all(hasattr(dk, name) for name in expected)
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages <= set(faces), (
        f"subpackages without a face on dk: {subpackages - set(faces)}"
    )


def test_package_init_files_are_faces_not_code():
    """An __init__.py holds a docstring, imports and __all__ (server's also its lazy names)."""
    for init in sorted(PACKAGE.rglob("__init__.py")):
        body = ast.parse(init.read_text()).body
        code = [
            node
            for node in body
            if not isinstance(
                node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign, ast.AugAssign)
            )
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
            and not (isinstance(node, ast.FunctionDef) and node.name == "__getattr__")
        ]
        assert code == [], (
            f"{init.relative_to(ROOT)} holds code: {[type(n).__name__ for n in code]}"
        )


def test_every_error_is_in_a_family():
    families = (dk.ConfigurationError, dk.EngineError, dk.RequestError)
    errors = [getattr(dk.errors, n) for n in dk.errors.__all__]
    for error in errors:
        if error is dk.DeployKitError or error in families:
            continue
        assert issubclass(error, families), f"{error.__name__} is in no family"
        assert error.__doc__, f"{error.__name__} has no docstring"
    assert all(issubclass(f, dk.DeployKitError) for f in families)


def test_every_entry_point_is_a_deploykit_subcommand():
    """No package runs as `python -m deploykit.X`: the command line is one."""
    mains = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("__main__.py"))
    assert mains == ["deploykit/__main__.py"]
    scripts = [p for p in PACKAGE.rglob("*.py") if 'if __name__ == "__main__"' in p.read_text()]
    allowed = {"cli.py", "_llamacpp_child.py", "dk_vllm_offline.py", "dk_vllm_cli.py"}
    assert {p.name for p in scripts} <= allowed  # the cli, and child processes (not commands)
    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert {
        "serve",
        "bench",
        "router",
        "faults",
        "cookbook",
        "models",
        "plan",
        "vllm",
        "gguf",
    } <= commands


def test_every_relative_import_stays_inside_the_package():
    """A function-level `from ...x import y` one dot too many fails only when it runs."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        depth = len(path.relative_to(PACKAGE).parts)  # deploykit/x.py: 1, deploykit/a/x.py: 2
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > depth:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.level} dots")
    assert wrong == []
