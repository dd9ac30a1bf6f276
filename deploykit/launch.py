"""Start a server process, wait until it is healthy, and make sure it stops.

Each server runs in its own process group, so stopping it also stops the workers it
forked. Servers are stopped at interpreter exit. No code runs when the Python process itself
is killed (SIGKILL), so each server is also registered in the run folder (`runs`): `deploykit ps`
lists what a dead kernel left, `deploykit stop` stops it, and the next run of the same notebook
stops its own orphans before it starts servers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from . import _env, runs
from .errors import InvalidArgumentError, MissingExtraError, ServerStartError
from .runs import group_processes, signal_group, wait_group_gone

__all__ = ["Job", "Server", "free_port", "launch_server", "run_job", "stop_all"]

_running: set[Server] = set()  # servers this process started and has not stopped yet


def find_executable(
    name: str,
    install_hint: str,
    dirs: Sequence[str] = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"),
) -> str:
    """Return the path of program `name` (on PATH, else in dirs), or raise saying how to install it.

    The sbin folders are searched too: Debian puts nginx there, and a non-root PATH lacks them.
    """
    found = shutil.which(name) or next(
        (p for p in (os.path.join(d, name) for d in dirs) if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise MissingExtraError(f"{name} is not installed. {install_hint}")
    return found


def deploykit_command(*args: str) -> list[str]:
    """Return the command line of a `deploykit` subcommand run by this interpreter.

    `python -m deploykit` rather than the console script, so a process started from a
    kernel or a test runs the same deploykit, installed on PATH or not.
    """
    return [sys.executable, "-m", "deploykit", *args]


_handed_out: dict[int, float] = {}  # ports free_port() returned lately, from a port range
_HANDED_OUT_S = 120.0  # long enough for a caller to start its server on the port


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on host that nothing listens on right now.

    With DEPLOYKIT_PORTS=LOW-HIGH (a workshop attendee's range) the port is from that range,
    and not one this process handed out in the last two minutes; else the system picks one.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bounds = _env.port_range()
    if bounds is None:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])
    low, high = bounds
    now = time.monotonic()
    # a random start: two kernels of one attendee rarely try the same port first
    first = random.randrange(low, high + 1)
    for port in [*range(first, high + 1), *range(low, first)]:
        if now - _handed_out.get(port, -_HANDED_OUT_S) < _HANDED_OUT_S:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out[port] = now
        return port
    raise ServerStartError(
        f"no free port left in DEPLOYKIT_PORTS={low}-{high}: stop servers you no longer need "
        f"(`deploykit ps`, then `deploykit stop NAME` or `deploykit stop --all`)."
    )


def _client_host(host: str) -> str:
    """Return the address that reaches a server bound to host (loopback for all interfaces)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _port_open(host: str, port: int, timeout_s: float) -> bool:
    """Return True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((_client_host(host), port), timeout=timeout_s):
            return True
    except OSError:
        return False


def log_tail(path: str | os.PathLike[str], lines: int = 40) -> str:
    """Return the last lines of a log file ("" when it does not exist)."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 1_000_000))
            text = log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def failure_report(
    what: str,
    command: Sequence[str],
    log_path: str | os.PathLike[str],
    advice: str,
    lines: int = 40,
    exit_code: int | None = None,
) -> str:
    """Return the message of a failed process: what happened, command, log tail, what to do."""
    tail = log_tail(log_path, lines) or "(empty)"
    code = "" if exit_code is None else f"  exit code: {exit_code}\n"
    return (
        f"{what}.\n  command:   {shlex.join(str(c) for c in command)}\n{code}"
        f"  log:       {log_path} (last {lines} lines below)\n"
        f"{textwrap.indent(tail, '    | ')}\n{advice}"
    )


class Server:
    """A server process started by launch(); stop it with stop() or a with block."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        command: list[str],
        host: str,
        port: int,
        name: str,
        log_path: Path,
    ) -> None:
        self.command = command
        self.host = host
        self.port = port
        self.name = name
        self.log_path = log_path
        self._process = process
        self._owner_pid = os.getpid()
        self._stopped = False
        _running.add(self)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def url(self) -> str:
        host = _client_host(self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def is_running(self) -> bool:
        """Return True while the server process has not exited."""
        return self._process.poll() is None

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for the server process to exit; return its exit code, or None on timeout."""
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the server's combined stdout and stderr."""
        return log_tail(self.log_path, lines)

    def cpu_s(self) -> float:
        """Return the CPU seconds (user + system) the server's live processes have used."""
        total = 0.0
        for proc in group_processes(self.pid):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def pause(self, timeout_s: float = 5.0) -> None:
        """Freeze every process of the server (SIGSTOP); resume() or stop() wakes it.

        Returns once each process is seen stopped (SIGSTOP is delivered asynchronously), or
        after timeout_s.
        """
        self._signal_group(signal.SIGSTOP)
        deadline = time.monotonic() + timeout_s
        while any(
            proc.info["status"] != psutil.STATUS_STOPPED for proc in group_processes(self.pid)
        ):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        self._signal_group(signal.SIGCONT)

    def stop(self, timeout_s: float = 10.0) -> int:
        """Send SIGTERM to the process group, SIGKILL it after timeout_s; return the exit code.

        A negative exit code means the server died of that signal (subprocess convention).
        """
        if self._stopped:
            return int(self._process.returncode)
        deadline = time.monotonic() + timeout_s
        self._signal_group(signal.SIGTERM)
        self._signal_group(signal.SIGCONT)  # a paused server acts on SIGTERM only once resumed
        self.wait(timeout_s)
        # workers may outlive the leader; they get the rest of the grace period too
        if not wait_group_gone(self.pid, deadline):
            self._signal_group(signal.SIGKILL)
            # SIGKILL is delivered asynchronously: return only once the whole group is gone
            wait_group_gone(self.pid, time.monotonic() + 5.0)
        code = self._process.wait()
        self._stopped = True
        _running.discard(self)
        runs.unregister(self.pid)
        return code

    def _signal_group(self, sig: signal.Signals) -> None:
        signal_group(self.pid, sig)  # start_new_session made the pid the group id

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        code = self._process.poll()
        state = "running" if code is None else f"exited {code}"
        # the log's name only: its folder is a temporary one, and log_path has the whole path
        return (
            f"<Server {self.name!r} {self.url} pid={self.pid} {state} log={self.log_path.name!r}>"
        )


def stop_all(timeout_s: float = 10.0) -> None:
    """Stop every server this process started, all within one grace period of timeout_s."""
    # a forked child inherits _running (and this atexit handler); only the launcher stops
    servers = [server for server in _running if server._owner_pid == os.getpid()]
    for server in servers:
        server._signal_group(signal.SIGTERM)  # signal all first so they shut down in parallel
    deadline = time.monotonic() + timeout_s
    for server in servers:
        server.stop(timeout_s=max(0.0, deadline - time.monotonic()))


# One handler for all servers, signalled at once: a Jupyter kernel gets about 5 s to exit,
# not one grace period per server in turn.
atexit.register(stop_all)


def _probe(
    client: httpx.Client,
    server: Server,
    health_path: str | None,
    expect_status: Collection[int],
    timeout_s: float,
) -> str | None:
    """Return None when the server is healthy, else what the health check saw."""
    if health_path is None:
        return None if _port_open(server.host, server.port, timeout_s) else "port closed"
    try:
        status = client.get(server.url + health_path, timeout=timeout_s).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return None if status in expect_status else f"HTTP {status}"


def _wait_healthy(
    server: Server,
    health_path: str | None,
    expect_status: Collection[int],
    timeout_s: float,
    poll_interval_s: float,
) -> str | None:
    """Poll until the server is healthy; return why not if it dies or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    target = server.url + health_path if health_path is not None else f"port {server.port}"
    seen: str | None = "nothing yet"
    # trust_env=False: a proxy from HTTP_PROXY must not intercept loopback health checks
    with httpx.Client(trust_env=False) as client:
        while True:
            if not server.is_running():
                return "exited while starting"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return (
                    f"did not become healthy at {target} within {timeout_s:g} s "
                    f"(last check: {seen})"
                )
            seen = _probe(client, server, health_path, expect_status, min(remaining, 2.0))
            if seen is None:
                return None
            # wait() returns early when the process exits, so a crash is reported at once
            server.wait(max(0.0, min(poll_interval_s, deadline - time.monotonic())))


def _failure_message(server: Server, problem: str, code: int, exited: bool) -> str:
    """Return a ServerStartError message: what happened, the log tail, and what to check."""
    hint = (
        "Run the command by hand to reproduce; look for a missing package, a wrong model "
        "path or flag, or the port already in use."
        if exited
        else "If the log shows it still loading, raise timeout_s. If it is serving, check "
        "health_path and expect_status, or pass health_path=None to wait for the port only."
    )
    killed = "" if exited else " (stopped by deploykit at the deadline)"
    return failure_report(
        f"Server {server.name!r} {problem}{killed}",
        server.command,
        server.log_path,
        f"Check the log above first. {hint}",
        exit_code=code,
    )


def _stop_earlier_run_on(port: int) -> None:
    """Stop the server on port that an earlier run of this notebook, in this kernel, started.

    Running a notebook's cells again must not fail on the port its first run still holds.
    """
    notebook = _env.notebook_name()
    if notebook is None:
        return
    earlier = {e.pid for e in runs.list_servers() if e.notebook == notebook and e.port == port}
    for server in [s for s in _running if s.pid in earlier and s._owner_pid == os.getpid()]:
        print(
            f"deploykit: stopping {server.name} (pid {server.pid}), which an earlier run of "
            f"{notebook} started on port {port}",
            file=sys.stderr,
        )
        server.stop()


def launch_server(
    command: Sequence[str | os.PathLike[str]],
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    health_path: str | None = "/health",
    expect_status: Collection[int] = (200,),
    timeout_s: float = 120.0,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    name: str | None = None,
    log_path: str | os.PathLike[str] | None = None,
    poll_interval_s: float = 0.1,
) -> Server:
    """Start command as a server in its own process group and wait until it is healthy.

    `{port}` and `{host}` in the arguments are replaced once the port is chosen (port=0
    picks a free one). health_path=None waits only for the TCP port to accept.
    """
    if isinstance(command, (str, bytes)):
        raise InvalidArgumentError(
            "launch_server() takes the command as a list of arguments, "
            "e.g. shlex.split('python -m http.server {port}')."
        )
    port = port or free_port(host)
    # str.replace, not str.format: arguments may hold JSON braces
    argv = [os.fspath(arg).replace("{port}", str(port)).replace("{host}", host) for arg in command]
    name = name or Path(argv[0]).name
    if health_path is not None:
        health_path = "/" + health_path.lstrip("/")
    left = runs.stop_orphans_of_this_notebook()  # what a killed kernel of this notebook left
    _stop_earlier_run_on(port)
    if any(entry.port == port for entry in left):
        # its group is gone; on a busy machine its listener can take a moment longer to close
        deadline = time.monotonic() + 5.0
        while _port_open(host, port, timeout_s=1.0) and time.monotonic() < deadline:
            time.sleep(0.1)
    if _port_open(host, port, timeout_s=1.0):
        holder = next((e for e in runs.list_servers() if e.port == port), None)
        held = (
            f" by {holder.name} (pid {holder.pid}, owner {holder.owner}, notebook "
            f"{holder.notebook or '-'}): `deploykit stop {holder.pid}` stops it"
            if holder is not None
            else ""
        )
        raise ServerStartError(
            f"Port {port} on {host} already accepts connections{held}, so health checks would "
            f"reach another server. Stop that server, or pass port=0 to pick a free port."
        )
    if log_path is None:
        # a name may hold a hub id ("org/model"): keep the file in the temp folder
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
        fd, log_path = tempfile.mkstemp(prefix=f"deploykit-{safe}-", suffix=".log")
        os.close(fd)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # unbuffered so a Python server's prints reach the log before it hangs or dies
    extra_env = {key: str(value) for key, value in (env or {}).items()}
    child_env = {"PYTHONUNBUFFERED": "1", **os.environ, **extra_env}
    with open(log_path, "wb") as log:
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerStartError(
                f"Could not start {shlex.join(argv)}: {exc}. Check that {argv[0]!r} is installed "
                f"and on PATH (or give its full path), and that cwd exists."
            ) from exc
    server = Server(process, command=argv, host=host, port=port, name=name, log_path=log_path)
    runs.register(
        process.pid, name=name, host=host, port=port, command=argv, log_path=str(log_path)
    )
    try:
        problem = _wait_healthy(server, health_path, expect_status, timeout_s, poll_interval_s)
    except BaseException:  # e.g. KeyboardInterrupt in a notebook: leave nothing running
        server.stop(timeout_s=2.0)
        raise
    if problem is not None:
        exited = not server.is_running()
        code = server.stop(timeout_s=5.0)
        raise ServerStartError(_failure_message(server, problem, code, exited))
    return server


@dataclass(frozen=True)
class Job:
    """How a one-shot process started by run_job() ended."""

    command: tuple[str, ...]
    exit_code: int | None  # None: stopped at the deadline
    seconds: float
    log_path: Path

    @property
    def ok(self) -> bool:
        """Return True when the process exited with status 0 in time."""
        return self.exit_code == 0

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the job's combined stdout and stderr."""
        return log_tail(self.log_path, lines)


def run_job(
    command: Sequence[str | os.PathLike[str]],
    *,
    log_path: str | os.PathLike[str],
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Job:
    """Run a one-shot command in its own process group, output to log_path, and wait.

    Whatever it forked is killed when it returns, times out or the caller is interrupted
    (vLLM's offline engine forks an engine core that would otherwise outlive it).
    """
    argv = [os.fspath(arg) for arg in command]
    log_path = Path(log_path)
    extra_env = {key: str(value) for key, value in (env or {}).items()}
    started = time.monotonic()
    with open(log_path, "wb") as log:
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                env={"PYTHONUNBUFFERED": "1", **os.environ, **extra_env},
            )
        except OSError as exc:
            raise ServerStartError(
                f"Could not start {shlex.join(argv)}: {exc}. Check that {argv[0]!r} is installed."
            ) from exc
        try:
            code: int | None = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            wait_group_gone(process.pid, time.monotonic() + 5.0)
    return Job(tuple(argv), code, time.monotonic() - started, log_path)
