"""The run folder: every server deploykit starts, who started it, and how to stop it later.

`launch_server` writes one small JSON file per server into the run folder
(`DEPLOYKIT_RUN_DIR`, default `~/.cache/deploykit/run/`): its process and process group, host
and port, name, command and log, its owner (`DEPLOYKIT_OWNER`, else the Unix user), the
process that started it (a kernel, a script) and the notebook that process runs. A server
that stops normally removes its file. One whose kernel died, even by SIGKILL when no clean-up
code runs, keeps its file: `deploykit ps` lists it as an orphan and `deploykit stop` stops its
whole process group. Files of servers that are gone are pruned when the folder is read.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from . import _env
from .errors import InvalidArgumentError

__all__ = ["RunEntry", "list_servers", "stop_servers"]


# -- process groups (a server and whatever it forked) -------------------------------------


def group_processes(pgid: int) -> list[psutil.Process]:
    """Return the live (not zombie) processes of group pgid."""
    found = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):  # it exited while we looked
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def group_alive(pgid: int) -> bool:
    """Return True while a process of group pgid is alive (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    # killpg also finds zombies that nobody reaped (e.g. under a container's init)
    return bool(group_processes(pgid))


def wait_group_gone(pgid: int, deadline: float) -> bool:
    """Wait until group pgid has no live process or the deadline passes; return True if gone."""
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def marked_processes(name: str, value: str) -> list[psutil.Process]:
    """Return the live processes, other than this one, whose environment has name=value.

    An environment mark rather than the process tree: a server whose kernel was killed has
    been handed to init, but still carries the mark it inherited.
    """
    found = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):  # gone, or another user's
            if (
                proc.pid != os.getpid()
                and proc.info["status"] != psutil.STATUS_ZOMBIE
                and proc.environ().get(name) == value
            ):
                found.append(proc)
    return found


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send sig to every process of group pgid (nothing if the group is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(pgid: int, timeout_s: float = 10.0) -> bool:
    """SIGTERM group pgid, SIGKILL what is left after timeout_s; return True once it is gone."""
    signal_group(pgid, signal.SIGTERM)
    signal_group(pgid, signal.SIGCONT)  # a paused (SIGSTOP) server acts on SIGTERM only awake
    if wait_group_gone(pgid, time.monotonic() + timeout_s):
        return True
    signal_group(pgid, signal.SIGKILL)
    return wait_group_gone(pgid, time.monotonic() + 5.0)


def _started_at(pid: int) -> float | None:
    """Return when process pid started (to tell it from a later one with its number).

    On Linux the clock ticks since boot from /proc/PID/stat, which never change for a process;
    psutil's create_time adds the boot time, which a VM's clock adjustments can move.
    """
    if not os.path.isdir("/proc/self"):  # no /proc (macOS)
        try:
            return psutil.Process(pid).create_time()
        except psutil.Error:
            return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return float(fields[19])  # field 22, starttime; fields[0] is field 3
    except (OSError, ValueError, IndexError):  # gone
        return None


# -- the run folder --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunEntry:
    """One registered server: what `deploykit ps` lists."""

    name: str
    pid: int
    host: str
    port: int  # 0: none of its own (a Ray worker node)
    owner: str
    owner_pid: int  # the process that started it: a kernel, a script, a test
    notebook: str | None
    command: list[str]
    log_path: str | None
    started: float  # Unix time
    pid_started: float | None = None
    owner_started: float | None = None

    @property
    def url(self) -> str:
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def is_alive(self) -> bool:
        """Return True while this server's process group has a live process."""
        started = _started_at(self.pid)
        if started is not None and self.pid_started is not None:
            if started != self.pid_started:  # the pid now names another process
                return False
        return group_alive(self.pid)

    def owner_alive(self) -> bool:
        """Return True while the process that started this server runs."""
        started = _started_at(self.owner_pid)
        if started is None:
            return False
        return self.owner_started is None or started == self.owner_started

    @property
    def orphan(self) -> bool:
        """True when the process that started it is gone (a killed kernel) but it still runs."""
        return not self.owner_alive()


def _path(pid: int) -> Path:
    return _env.run_dir() / f"{pid}.json"


def register(
    pid: int, *, name: str, host: str, port: int, command: Sequence[str], log_path: str | None
) -> RunEntry:
    """Write the run folder's entry for server process pid (its own process group)."""
    entry = RunEntry(
        name=name,
        pid=pid,
        host=host,
        port=port,
        owner=_env.owner(),
        owner_pid=os.getpid(),
        notebook=_env.notebook_name(),
        command=[str(part) for part in command],
        log_path=log_path,
        started=time.time(),
        pid_started=_started_at(pid),
        owner_started=_started_at(os.getpid()),
    )
    path = _path(pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(asdict(entry), indent=1))
    partial.replace(path)  # atomic: a reader sees a whole entry or none
    return entry


def unregister(pid: int) -> None:
    """Remove server pid's entry (it stopped)."""
    with contextlib.suppress(FileNotFoundError):
        _path(pid).unlink()


def _read(path: Path) -> RunEntry | None:
    try:
        data = json.loads(path.read_text())
        return RunEntry(**data)
    except (OSError, ValueError, TypeError):  # half-written by an older version, or unreadable
        return None


def list_servers(*, prune: bool = True) -> list[RunEntry]:
    """Return the registered servers that still run, oldest first; prune the rest's files."""
    folder = _env.run_dir()
    entries = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        entry = _read(path)
        if entry is not None and entry.is_alive():
            entries.append(entry)
        elif prune:
            with contextlib.suppress(FileNotFoundError, PermissionError):
                path.unlink()
    return sorted(entries, key=lambda e: e.started)


def _matches(entry: RunEntry, target: str) -> bool:
    return target in (entry.name, str(entry.pid), str(entry.port))


def stop_servers(
    targets: Iterable[str] = (),
    *,
    all: bool = False,
    orphans: bool = False,
    owner: str | None = None,
    timeout_s: float = 10.0,
) -> list[RunEntry]:
    """Stop registered servers: by name, pid or port, or all (or every orphan) of an owner.

    owner=None means this owner (DEPLOYKIT_OWNER or the Unix user); "*" means everyone's.
    Returns the entries stopped. A target that matches nothing raises InvalidArgumentError
    listing what runs.
    """
    targets = list(targets)
    if not targets and not all and not orphans:
        raise InvalidArgumentError(
            "say which servers to stop: a name, pid or port from `deploykit ps`, or --all "
            "(every server of yours), or --orphans (those whose kernel or script is gone)."
        )
    want_owner = _env.owner() if owner is None else owner
    running = list_servers()
    mine = [e for e in running if want_owner == "*" or e.owner == want_owner]
    chosen: list[RunEntry] = []
    for target in targets:
        found = [e for e in running if _matches(e, target)]
        if not found:
            names = ", ".join(f"{e.name} (pid {e.pid}, port {e.port})" for e in running)
            raise InvalidArgumentError(
                f"no registered server is named {target!r} or has that pid or port; "
                f"running: {names or 'none'}. See `deploykit ps`."
            )
        chosen += found
    if all:
        chosen += mine
    elif orphans:
        chosen += [e for e in mine if e.orphan]
    stopped: dict[int, RunEntry] = {}
    for entry in chosen:
        signal_group(entry.pid, signal.SIGTERM)  # all first, so they shut down in parallel
    deadline = time.monotonic() + timeout_s
    for entry in chosen:
        if entry.pid in stopped:
            continue
        stop_group(entry.pid, max(0.0, deadline - time.monotonic()))
        unregister(entry.pid)
        stopped[entry.pid] = entry
    return list(stopped.values())


def stop_orphans_of_this_notebook(log=None) -> list[RunEntry]:
    """Stop this owner's orphans that an earlier run of this notebook left (its kernel died).

    Nothing to do outside a notebook. A re-run then finds their ports and memory free.
    """
    notebook = _env.notebook_name()
    if notebook is None:
        return []
    me = _env.owner()
    left = [e for e in list_servers() if e.notebook == notebook and e.owner == me and e.orphan]
    for entry in left:
        stop_group(entry.pid, timeout_s=10.0)
        unregister(entry.pid)
        print(
            f"deploykit: stopped {entry.name} (pid {entry.pid}, port {entry.port}), left "
            f"running by an earlier run of {notebook} whose kernel is gone",
            file=log or sys.stderr,
        )
    return left


# -- the command line ------------------------------------------------------------------------


def _age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def format_table(entries: Sequence[RunEntry]) -> str:
    """Return `deploykit ps`'s table."""
    header = ("NAME", "PID", "PORT", "OWNER", "NOTEBOOK", "STATE", "UP", "URL")
    rows = [
        (
            e.name,
            str(e.pid),
            str(e.port or "-"),
            e.owner,
            e.notebook or "-",
            "orphan" if e.orphan else f"owner pid {e.owner_pid}",
            _age(time.time() - e.started),
            e.url if e.port else "-",
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *rows]
    )


def _ps(args) -> int:
    entries = list_servers()
    if args.json:
        print(json.dumps([{**asdict(e), "orphan": e.orphan, "url": e.url} for e in entries]))
    elif not entries:
        print(f"no server registered in {_env.run_dir()} is running")
    else:
        print(format_table(entries))
    return 0


def _stop(args) -> int:
    stopped = stop_servers(
        args.targets,
        all=args.all,
        orphans=args.orphans,
        owner="*" if args.everyone else None,
        timeout_s=args.timeout,
    )
    for entry in stopped:
        print(f"stopped {entry.name} (pid {entry.pid}, port {entry.port}, owner {entry.owner})")
    if not stopped:
        print("nothing to stop")
    return 0


def add_cli(sub) -> None:
    from .argtypes import positive_float

    ps = sub.add_parser(
        "ps",
        help="list the servers deploykit started that still run (also those of dead kernels)",
        description="List every server the library started that still runs: name, pid, port, "
        "owner, notebook, and 'orphan' when the kernel or script that started it is gone.",
    )
    ps.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ps.set_defaults(func=_ps)
    stop = sub.add_parser(
        "stop",
        help="stop servers deploykit started: by name, pid or port, --all, or --orphans",
        description="Stop registered servers and everything they forked (SIGTERM, then SIGKILL "
        "after --timeout seconds). Works after the kernel that started them was killed.",
    )
    stop.add_argument("targets", nargs="*", metavar="NAME|PID|PORT")
    stop.add_argument("--all", action="store_true", help="every server of yours")
    stop.add_argument("--orphans", action="store_true", help="yours whose starter is gone")
    stop.add_argument(
        "--everyone", action="store_true", help="with --all/--orphans: every owner's (instructor)"
    )
    stop.add_argument("--timeout", type=positive_float, default=10.0, metavar="S")
    stop.set_defaults(func=_stop)
