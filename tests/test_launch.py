"""Tests for deploykit.launch with real server processes on 127.0.0.1."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import psutil
import pytest
from _paths import ROOT

from deploykit.errors import ServerStartError
from deploykit.launch import free_port, launch_server, stop_all

HTTP_SERVER = [sys.executable, "-m", "http.server", "{port}", "--bind", "{host}"]

# Answers every GET with the status in argv[2], after printing its pid.
STATUS_SERVER = textwrap.dedent("""
    import http.server, os, sys
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(int(sys.argv[2]))
            self.end_headers()
    print(f"pid={os.getpid()}")
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")

# Spawns a child that ignores SIGTERM, then listens on argv[1]; ignores SIGTERM itself
# when argv[2] is "leader-too".
STUBBORN_SERVER = textwrap.dedent("""
    import signal, socket, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    print(f"child={child.pid}")
    if sys.argv[2] == "leader-too":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket()
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen()
    time.sleep(600)
""")


def _gone(pid: int) -> bool:
    """Return True when pid has exited (an unreaped zombie counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def test_launch_serves_and_stops() -> None:
    srv = launch_server(HTTP_SERVER, health_path="/", timeout_s=30)
    try:
        assert srv.port > 0
        assert srv.url == f"http://127.0.0.1:{srv.port}"
        assert srv.command[3] == str(srv.port) and srv.command[5] == "127.0.0.1"
        assert httpx.get(srv.url + "/", trust_env=False).status_code == 200
        assert srv.is_running()
        assert srv.wait(timeout_s=0.1) is None
        assert f"pid={srv.pid}" in repr(srv) and srv.url in repr(srv)
        assert f"log={srv.log_path.name!r}" in repr(srv) and str(srv.log_path.parent) not in repr(
            srv
        )
    finally:
        code = srv.stop()
    assert code == srv.stop()  # idempotent
    assert not srv.is_running()
    assert _gone(srv.pid)


def test_explicit_port_env_cwd_and_log_path(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "logs" / "server.log"
    script = (
        "import os, socket, sys, time; print(os.environ['DK_MARK'], bool(os.environ['PATH']),"
        " os.getcwd()); s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])));"
        " s.listen(); time.sleep(600)"
    )
    with launch_server(
        [sys.executable, "-c", script, "{port}"],
        port=port,
        health_path=None,
        env={"DK_MARK": "marker-42"},
        cwd=tmp_path,
        log_path=log_path,
        timeout_s=30,
    ) as srv:
        assert srv.port == port and srv.command[-1] == str(port)
        assert srv.log_path == log_path
        assert srv.log_tail() == f"marker-42 True {tmp_path}"


def test_context_manager_closes_port() -> None:
    with launch_server(HTTP_SERVER, health_path="/", timeout_s=30) as srv:
        assert _accepts(srv.port)
    assert not srv.is_running()
    assert not _accepts(srv.port)


def test_port_in_use_is_refused() -> None:
    with launch_server(HTTP_SERVER, health_path="/", timeout_s=30) as srv:
        with pytest.raises(ServerStartError, match="port=0"):
            launch_server(HTTP_SERVER, port=srv.port, health_path="/", timeout_s=30)


def test_process_that_exits_at_once_raises_with_its_log() -> None:
    script = "import sys; print('boom', file=sys.stderr); sys.exit(3)"
    start = time.monotonic()
    with pytest.raises(ServerStartError) as info:
        launch_server([sys.executable, "-c", script], timeout_s=60)
    message = str(info.value)
    assert time.monotonic() - start < 30  # it did not wait for the 60 s deadline
    assert "exited while starting" in message
    assert "boom" in message
    assert "exit code: 3" in message
    assert "sys.exit(3)" in message  # the command


def test_never_healthy_raises_after_deadline_and_kills_it() -> None:
    start = time.monotonic()
    with pytest.raises(ServerStartError) as info:
        launch_server([sys.executable, "-c", STATUS_SERVER, "{port}", "503"], timeout_s=2)
    message = str(info.value)
    assert time.monotonic() - start >= 2
    assert "within 2 s" in message and "HTTP 503" in message
    assert "raise timeout_s" in message
    pid = int(re.search(r"pid=(\d+)", message).group(1))
    assert _gone(pid)


def test_expect_status_accepts_other_codes() -> None:
    with launch_server(
        [sys.executable, "-c", STATUS_SERVER, "{port}", "204"], expect_status={204}, timeout_s=30
    ) as srv:
        assert httpx.get(srv.url + "/health", trust_env=False).status_code == 204


@pytest.mark.parametrize(("who_ignores", "exit_code"), [("leader-too", -9), ("child-only", -15)])
def test_stop_kills_group_that_ignores_sigterm(who_ignores: str, exit_code: int) -> None:
    srv = launch_server(
        [sys.executable, "-c", STUBBORN_SERVER, "{port}", who_ignores],
        health_path=None,
        timeout_s=30,
    )
    child_pid = int(re.search(r"child=(\d+)", srv.log_tail()).group(1))
    try:
        assert psutil.Process(child_pid).is_running()
        code = srv.stop(timeout_s=1.0)
        assert code == exit_code  # -9: the leader needed SIGKILL; -15: SIGTERM was enough for it
        assert _gone(srv.pid) and _gone(child_pid)
    finally:  # if stop() is broken, don't leave SIGTERM-proof sleepers behind
        for pid in (srv.pid, child_pid):
            if not _gone(pid):
                psutil.Process(pid).kill()


def test_stop_all_stops_every_server() -> None:
    servers = [launch_server(HTTP_SERVER, health_path="/", timeout_s=30) for _ in range(2)]
    stop_all()
    assert not any(srv.is_running() for srv in servers)
    assert not any(_accepts(srv.port) for srv in servers)


def test_server_stops_when_python_exits() -> None:
    script = textwrap.dedent(f"""
        import sys
        from deploykit.launch import launch_server
        srv = launch_server({HTTP_SERVER!r}, health_path="/", timeout_s=30)
        print(srv.pid)
    """)  # exits without stopping the server
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[-1])
    try:
        assert _gone(pid)
    finally:
        if not _gone(pid):
            psutil.Process(pid).kill()


def test_a_paused_server_uses_no_cpu_and_still_stops_at_once():
    with launch_server(HTTP_SERVER, health_path="/", name="paused") as srv:
        srv.pause()
        assert psutil.Process(srv.pid).status() == psutil.STATUS_STOPPED
        before = srv.cpu_s()
        time.sleep(0.3)
        assert srv.cpu_s() == before
        start = time.monotonic()
        srv.stop(timeout_s=10)  # SIGTERM alone would wait for a SIGCONT, then the SIGKILL
        assert time.monotonic() - start < 5 and not srv.is_running()
