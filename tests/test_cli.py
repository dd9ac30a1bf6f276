"""The command line and the public surface: one-line errors, every error exported, no renames."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

import deploykit as dk
from deploykit import errors
from deploykit.cli import build_parser, main


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "Llama-2-7B", "--gpu-memory-utilization", "1.5"],
        ["plan", "Llama-2-7B", "--gpu-memory-utilization", "zero"],
        ["plan", "Llama-2-7B", "--context", "-4"],
        ["vllm", "serve", "--gpu-memory-utilization", "0"],
        ["vllm", "serve", "--max-model-len", "0"],
        ["serve", "--port", "70000"],
        ["serve", "--max-batch-size", "0"],
        ["serve", "--drain-timeout-s", "nan"],
        ["cookbook", "run", "--timeout-s", "-1"],
        ["bench", "vllm", "--rounds", "0"],
    ],
)
def test_bad_numbers_are_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ": error: argument --" in err, err
    assert "Traceback" not in err


def test_library_errors_are_one_line_without_traceback():
    # a real process, as a user runs it: the error line and exit status 2, nothing else
    done = subprocess.run(
        [sys.executable, "-m", "deploykit", "plan", "no-such-model"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("deploykit: error: unknown model 'no-such-model'")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_every_subcommand_registers_through_its_module():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == {
        "cookbook",
        "models",
        "gguf",
        "serve",
        "vllm",
        "plan",
        "bench",
        "router",
        "faults",
        "check",
        "compat",
        "doctor",
        "ray",
        "docker",
        "ps",
        "stop",
        "workshop",
    }


def test_a_command_imports_only_its_own_module(tmp_path, capsys):
    # `deploykit ps` and the Ray bridge (a process per cluster) must not wait for torch
    code = (
        "import sys\nfrom deploykit.cli import main\nassert main(['ps']) == 0\n"
        "assert 'torch' not in sys.modules and 'deploykit.server.app' not in sys.modules\n"
    )
    env = {**os.environ, "DEPLOYKIT_RUN_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "no server registered" in done.stdout.lower()
    # the full list when the command is not one of them, as argparse words it
    with pytest.raises(SystemExit):
        main(["no-such-command"])


def test_every_error_class_is_exported():
    classes = {
        name
        for name, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.DeployKitError)
    }
    assert classes <= set(dk.__all__), classes - set(dk.__all__)
    for name in classes:
        assert inspect.getdoc(getattr(errors, name)), f"{name} has no docstring"


def test_public_names_are_not_renamed_on_export():
    for name in dk.__all__:
        obj = getattr(dk, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__name__ == name, f"dk.{name} is {obj.__module__}.{obj.__name__}"


def test_import_is_light():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, deploykit; print(sorted(m for m in "
            "('torch', 'transformers', 'fastapi', 'aiohttp', 'matplotlib') "
            "if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
