"""The run folder: servers the library starts are registered, listed and stopped, also after
the kernel that started them was killed with SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from deploykit import launch, runs
from deploykit.errors import InvalidArgumentError, ServerStartError

HTTP_SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"]


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A run folder of the test's own, with this test as the owner and no notebook."""
    folder = tmp_path / "run"
    monkeypatch.setenv("DEPLOYKIT_RUN_DIR", str(folder))
    monkeypatch.setenv("DEPLOYKIT_OWNER", "tester")
    monkeypatch.delenv("DEPLOYKIT_NOTEBOOK", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    return folder


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploykit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_server_is_registered_while_it_runs_and_removed_when_it_stops(run_dir, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_NOTEBOOK", "99_drill")
    server = launch.launch_server(HTTP_SERVER, health_path="/", name="files")
    try:
        (entry,) = runs.list_servers()
        assert (entry.name, entry.pid, entry.port) == ("files", server.pid, server.port)
        assert (entry.owner, entry.notebook, entry.owner_pid) == ("tester", "99_drill", os.getpid())
        assert not entry.orphan and entry.url == server.url
        listed = json.loads(_cli("ps", "--json").stdout)
        assert [(e["name"], e["pid"], e["orphan"]) for e in listed] == [
            ("files", server.pid, False)
        ]
    finally:
        server.stop()
    assert runs.list_servers() == [] and list(run_dir.glob("*.json")) == []
    assert "no server registered" in _cli("ps").stdout


KERNEL_CODE = textwrap.dedent(
    """
    import os, deploykit as dk
    server = dk.start_server("toy-tiny", device="cpu", env={"OMP_NUM_THREADS": "1"})
    print(os.getpid(), server.pid, server.port)
    """
)


def test_ps_and_stop_find_the_server_of_a_kernel_killed_with_sigkill(run_dir, monkeypatch):
    from jupyter_client.manager import start_new_kernel

    monkeypatch.setenv("DEPLOYKIT_NOTEBOOK", "01_quickstart")  # as the cookbook sets it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=120)
    try:
        seen: list[str] = []
        reply = client.execute_interactive(
            KERNEL_CODE,
            timeout=300,
            output_hook=lambda msg: seen.append(msg["content"].get("text", "")),
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        kernel_pid, server_pid, port = map(int, "".join(seen).split())
        os.kill(kernel_pid, signal.SIGKILL)  # no atexit handler runs
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert _port_open(port), "the server should outlive its killed kernel"

    listed = _cli("ps")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if str(server_pid) in line)
    assert "orphan" in row and "01_quickstart" in row and "tester" in row and str(port) in row

    stopped = _cli("stop", "--orphans")
    assert stopped.returncode == 0, stopped.stderr
    assert f"pid {server_pid}, port {port}" in stopped.stdout
    assert not runs.group_alive(server_pid) and not _port_open(port)
    assert "no server registered" in _cli("ps").stdout


ORPHAN_MAKER = textwrap.dedent(
    """
    import os, sys
    from deploykit import launch
    cmd = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
    server = launch.launch_server(cmd, port=int(sys.argv[1]), health_path="/", name="files")
    print(server.pid, flush=True)
    os.kill(os.getpid(), 9)
    """
)


def test_a_rerun_of_a_notebook_stops_what_its_killed_kernel_left_on_the_port(run_dir, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_NOTEBOOK", "13_load_balancing")
    port = launch.free_port()
    first = subprocess.run(
        [sys.executable, "-c", ORPHAN_MAKER, str(port)], capture_output=True, text=True, timeout=60
    )
    old_pid = int(first.stdout)
    assert first.returncode == -signal.SIGKILL and _port_open(port)

    # the same notebook, run again, asks for the same port
    server = launch.launch_server(HTTP_SERVER, port=port, health_path="/", name="files")
    try:
        assert not runs.group_alive(old_pid)
        assert [e.pid for e in runs.list_servers()] == [server.pid]
    finally:
        server.stop()


def test_another_notebooks_server_on_the_port_is_named_not_stopped(run_dir, monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_NOTEBOOK", "12_resilient_client")
    held = launch.launch_server(HTTP_SERVER, health_path="/", name="files")
    try:
        monkeypatch.setenv("DEPLOYKIT_NOTEBOOK", "13_load_balancing")
        with pytest.raises(ServerStartError, match=f"deploykit stop {held.pid}"):
            launch.launch_server(HTTP_SERVER, port=held.port, health_path="/")
        assert held.is_running()
    finally:
        held.stop()


def _free_run(length: int) -> int:
    """Return the first of `length` consecutive free ports below the system's ephemeral range."""
    for low in range(21000, 29000, 7):
        with contextlib.ExitStack() as stack:
            try:
                for port in range(low, low + length):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return low
    raise AssertionError("no run of free ports")


def test_ports_come_from_the_attendees_range(run_dir, monkeypatch):
    low = _free_run(3)
    monkeypatch.setenv("DEPLOYKIT_PORTS", f"{low}-{low + 2}")
    picked = set()
    for _ in range(3):
        picked.add(launch.free_port())
    assert picked <= {low, low + 1, low + 2} and len(picked) == 3  # none handed out twice
    with pytest.raises(ServerStartError, match="no free port left in DEPLOYKIT_PORTS"):
        launch.free_port()
    monkeypatch.setenv("DEPLOYKIT_PORTS", "80-20")
    with pytest.raises(InvalidArgumentError, match="LOW-HIGH"):
        launch.free_port()


def test_stop_says_what_to_do_when_nothing_matches(run_dir):
    with pytest.raises(InvalidArgumentError, match="deploykit ps"):
        runs.stop_servers(["nope"])
    with pytest.raises(InvalidArgumentError, match="--all"):
        runs.stop_servers()
    result = _cli("stop", "nope")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr


def test_running_a_cell_again_in_the_same_kernel_frees_the_port_of_its_first_run(
    run_dir, monkeypatch
):
    monkeypatch.setenv("DEPLOYKIT_NOTEBOOK", "13_load_balancing")
    first = launch.launch_server(HTTP_SERVER, health_path="/", name="files")
    again = launch.launch_server(HTTP_SERVER, port=first.port, health_path="/", name="files")
    try:
        assert not first.is_running() and again.is_running()
        assert [e.pid for e in runs.list_servers()] == [again.pid]
    finally:
        again.stop()
