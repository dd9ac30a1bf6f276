"""The README's JupyterLab set-up: the `deploykit` kernel runs this venv and shows widgets."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import nbformat
import psutil
import pytest
from jupyter_client.kernelspec import NoSuchKernel
from nbclient import NotebookClient

from deploykit.launch import launch_server

KERNEL = "deploykit"
VENV_BIN = Path(sys.prefix) / "bin"  # the venv running these tests
JUPYTER = VENV_BIN / "jupyter"
INSTALL_HINT = (
    f"Run `make install` (on a fresh checkout), or register the kernel by hand: "
    f"{VENV_BIN / 'python'} -m ipykernel install --sys-prefix --name {KERNEL} "
    f'--display-name "deploykit (.venv)"'
)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def jupyter_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point Jupyter's and IPython's writable dirs at tmp_path, here and in child processes.

    Kernelspecs are still found under sys.prefix/share/jupyter, where --sys-prefix put them;
    the user's own dirs are not searched, so a stray user-level kernel cannot pass the tests.
    """
    env = {
        name: str(tmp_path / dirname)
        for name, dirname in [
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("IPYTHONDIR", "ipython"),
        ]
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    return env


def _kernelspecs() -> dict[str, dict]:
    """Return `jupyter kernelspec list --json` of this venv's jupyter, by kernel name."""
    done = subprocess.run(
        [str(JUPYTER), "kernelspec", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)["kernelspecs"]


def _live(proc: psutil.Process) -> bool:
    """Return True while proc runs (an unreaped zombie counts as exited)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_processes(pgid: int) -> list[psutil.Process]:
    """Return the live (not zombie) processes of process group pgid."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and _live(proc):
                found.append(proc)
        except OSError:  # it exited while we looked
            pass
    return found


def test_deploykit_kernel_is_registered_in_this_venv(jupyter_env: dict[str, str]) -> None:
    specs = _kernelspecs()
    assert KERNEL in specs, f"no {KERNEL!r} kernel (found {sorted(specs)}). {INSTALL_HINT}"
    spec = specs[KERNEL]
    assert Path(spec["resource_dir"]).is_relative_to(sys.prefix), (
        f"the {KERNEL!r} kernel lives outside this venv: {spec['resource_dir']}. {INSTALL_HINT}"
    )
    python = Path(spec["spec"]["argv"][0])
    assert python.parent == VENV_BIN, (
        f"the {KERNEL!r} kernel runs {python}, not this venv's python. {INSTALL_HINT}"
    )
    assert spec["spec"]["display_name"] == "deploykit (.venv)"


def test_jupyter_lab_serves_the_deploykit_kernel(
    tmp_path: Path, jupyter_env: dict[str, str]
) -> None:
    token = secrets.token_hex(16)
    root_dir = tmp_path / "lab-root"
    root_dir.mkdir()
    # IdentityProvider.token is ServerApp.token's non-deprecated name (jupyter_server 2);
    # port_retries=0: {port} or fail; CI containers often run as root, which lab refuses
    root_flag = ["--allow-root"] if os.geteuid() == 0 else []
    # /api answers without the token once the server is up
    server = launch_server(
        [
            JUPYTER,
            "lab",
            "--no-browser",
            f"--IdentityProvider.token={token}",
            "--ServerApp.ip={host}",
            "--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root_dir}",
            *root_flag,
        ],
        health_path="/api",
        expect_status=(200,),
        timeout_s=60.0,
        env=jupyter_env,
        name="jupyter-lab",
        log_path=tmp_path / "jupyter-lab.log",
    )
    try:
        with httpx.Client(
            base_url=server.url,
            trust_env=False,
            timeout=10.0,
            headers={"Authorization": f"token {token}"},
        ) as client:
            assert client.get("/api/kernelspecs", headers={"Authorization": ""}).status_code == 403
            specs = client.get("/api/kernelspecs").raise_for_status().json()["kernelspecs"]
    finally:
        server.stop(timeout_s=10.0)
    assert KERNEL in specs, f"JupyterLab offers no {KERNEL!r} ({sorted(specs)}). {INSTALL_HINT}"
    assert specs[KERNEL]["spec"]["display_name"] == "deploykit (.venv)"
    assert not server.is_running()
    assert not _group_processes(server.pid), "jupyter lab left processes behind"


def test_tqdm_auto_draws_a_widget_in_the_deploykit_kernel(
    tmp_path: Path, jupyter_env: dict[str, str]
) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("from tqdm.auto import tqdm"),
            nbformat.v4.new_code_cell("for _ in tqdm(range(3)):\n    pass"),
        ]
    )
    before = {proc.pid for proc in psutil.Process().children(recursive=True)}
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=60,
        startup_timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()  # starts the kernel, runs both cells, shuts the kernel down
    except NoSuchKernel:
        pytest.fail(f"no {KERNEL!r} kernel. {INSTALL_HINT}")
    left = [
        proc
        for proc in psutil.Process().children(recursive=True)
        if proc.pid not in before and _live(proc)
    ]
    assert not left, f"the kernel outlived the run: {left}"
    outputs = [output for cell in nb.cells for output in cell.outputs]
    assert "IProgress not found" not in json.dumps(outputs), (
        "tqdm fell back to text: ipywidgets is missing from the kernel's env"
    )
    assert any(WIDGET_VIEW in output.get("data", {}) for output in outputs), (
        f"no widget output from tqdm.auto; outputs: {outputs}"
    )
