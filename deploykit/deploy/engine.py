"""A Docker engine to build and run the images: yours when one answers, else a private one.

`docker_engine()` returns, in this order:

1. the engine your `docker` CLI already reaches (DOCKER_HOST, Docker Desktop, a rootless
   engine, /var/run/docker.sock), used as it is; deploykit never stops it;
2. a private engine: Debian's `dockerd` (package docker.io), started as root with its own
   socket, data root and exec root under deploykit's cache (`<cache>/docker/engine`), no
   default bridge (`--bridge=none`), no iptables rules, and its containers in their own
   cgroup. Containers run with `--network host` on loopback, or `--network none`; builds run
   with `--network none`. `stop()` ends it with its containerd, shims and containers, and so
   do the end of a `with` block, the interpreter's exit and this process's death (the kernel
   signals dockerd: PR_SET_PDEATHSIG).

Where neither is possible, DockerError says what to install or start. The data root is the
image cache: the base image, the dependency layers and the Prometheus image survive between
runs, and a later build reuses them.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from .. import _env
from ..errors import DockerError

_PR_SET_PDEATHSIG = 1
CGROUP_PARENT = "deploykit-docker"  # the private engine's containers, for the sweep
_private: DockerEngine | None = None


def _die_with_parent() -> None:  # runs in dockerd's process between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def engine_root() -> Path:
    """Return the private engine's folder: socket, data root, exec root, log."""
    return _env.cache_dir() / "docker" / "engine"


class DockerEngine:
    """A Docker engine deploykit talks to through the `docker` CLI (see the module docstring)."""

    def __init__(self, env: dict[str, str], *, private: bool, root: Path | None = None) -> None:
        self.env = env
        self.private = private
        self.root = root
        self.server_version = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        kind = "private dockerd, loopback only" if self.private else "your Docker engine"
        state = "running" if self.is_running() else "stopped"
        return f"DockerEngine({kind}, server {self.server_version or '?'}, {state})"

    # ---- commands -----------------------------------------------------------------------

    def docker(
        self, *args: str, check: bool = True, timeout: float | None = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker args...` against this engine; a failure raises DockerError with its output."""
        return self._run([_docker_cli(), *args], check=check, timeout=timeout)

    def compose(
        self, compose_file: str | Path, *args: str, check: bool = True, timeout: float | None = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run Compose on compose_file (`docker compose`, else Debian's `docker-compose` 1.29)."""
        path = Path(compose_file)
        argv = [*self.compose_command(), "-f", path.name, *args]
        return self._run(argv, check=check, timeout=timeout, cwd=path.parent)

    def compose_command(self) -> list[str]:
        """Return how Compose is started for this engine."""
        if not self.private:
            probe = subprocess.run(
                [_docker_cli(), "compose", "version"], env=self.env, capture_output=True
            )
            if probe.returncode == 0:
                return [_docker_cli(), "compose"]
        found = shutil.which("docker-compose")
        if found is None:
            raise DockerError(
                "no Compose: install Debian's docker-compose (`apt-get install docker-compose`) "
                "or the Docker Compose plugin."
            )
        return [found]

    def _run(
        self,
        argv: list[str],
        *,
        check: bool,
        timeout: float | None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                argv, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd
            )
        except subprocess.TimeoutExpired as exc:
            raise DockerError(f"`{' '.join(argv[:3])} ...` did not finish in {timeout} s.") from exc
        if check and done.returncode != 0:
            raise DockerError(
                f"`{' '.join(argv[1:4])} ...` failed (exit {done.returncode}):\n"
                f"{_tail(done.stderr or done.stdout)}"
            )
        return done

    def has_image(self, ref: str) -> bool:
        """Return True when the engine holds the image ref."""
        return self.docker("image", "inspect", ref, check=False).returncode == 0

    # ---- the private engine ---------------------------------------------------------------

    def is_running(self) -> bool:
        """Return True while the engine answers (a private one: while its dockerd lives)."""
        if self.private:
            return self._proc is not None and self._proc.poll() is None
        return self.docker("version", check=False, timeout=20).returncode == 0

    def _start(self, timeout_s: float = 60.0, wait_s: float = 900.0) -> DockerEngine:
        root = self.root
        assert root is not None
        for sub in ("data", "exec", "config"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = (root / "lock").open("w")
        waiting_since = time.monotonic()
        told = False
        while True:  # one private engine per machine: another deploykit process may hold it
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    print("waiting for another deploykit process to stop the private Docker engine")
                    told = True
                if time.monotonic() - waiting_since > wait_s:
                    self._lock.close()
                    raise DockerError(
                        f"another deploykit process has used the private Docker engine in "
                        f"{root} for over {wait_s:.0f} s; wait until it ends, or stop it."
                    ) from None
                time.sleep(0.5)
        deadline = time.monotonic() + timeout_s
        _stop_stale(root)  # left by a process that died before it could stop it
        argv = [
            _which("dockerd"),
            "--host",
            f"unix://{root / 'docker.sock'}",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "--bridge=none",  # never Docker's 172.17 bridge: containers use host or none
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--userland-proxy=false",
            "--cgroup-parent",
            CGROUP_PARENT,
            "--log-level",
            "warn",
        ]
        self._log = (root / "dockerd.log").open("ab")
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        atexit.register(self.stop)
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = (root / "dockerd.log").read_text(errors="replace")
                self.stop()
                raise DockerError(f"dockerd exited ({self._proc.returncode}):\n{_tail(log)}")
            version = self.docker("version", "--format", "{{.Server.Version}}", check=False)
            if version.returncode == 0:
                self.server_version = version.stdout.strip()
                return self
            time.sleep(0.2)
        self.stop()
        raise DockerError(f"dockerd did not answer in {timeout_s:.0f} s; see {root}/dockerd.log")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop a private engine: its containers, dockerd, containerd and shims. Idempotent.

        Does nothing to your own engine.
        """
        global _private
        if not self.private or self.root is None:
            return
        proc = self._proc
        if proc is not None and proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=60)
            proc.terminate()  # dockerd stops its containers, then its containerd
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _clean_up(self.root)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        if _private is self:
            _private = None

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _docker_cli() -> str:
    return _which("docker")


def _which(name: str) -> str:
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in ("/usr/sbin", "/sbin") if os.access(f"{d}/{name}", os.X_OK)), None
    )
    if found is None:
        raise DockerError(
            f"no `{name}` on this machine. Install a Docker engine: on Debian or Ubuntu, as "
            "root, `apt-get install docker.io docker-compose debootstrap` (what `make test` "
            "and `make cookbook` do); elsewhere Docker Desktop or a rootless engine, with "
            "DOCKER_HOST set."
        )
    return found


def _users_engine() -> DockerEngine | None:
    """Return the engine the docker CLI reaches as configured, if one answers."""
    if shutil.which("docker") is None:
        return None
    env = dict(os.environ)
    try:
        done = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    engine = DockerEngine(env, private=False)
    engine.server_version = done.stdout.strip()
    return engine


def docker_engine(*, private: bool | None = None) -> DockerEngine:
    """Return a running Docker engine: yours if one answers, else a private one (see above).

    private=True always uses the private engine; private=False never starts one. Within one
    process the private engine is shared: a second call returns the one already running.
    """
    global _private
    if private is not True:
        users = _users_engine()
        if users is not None:
            return users
        if private is False:
            raise DockerError(
                "no Docker engine answers `docker version`: start Docker (Docker Desktop, "
                "`systemctl start docker`, a rootless engine) or set DOCKER_HOST."
            )
    if _private is not None and _private.is_running():
        return _private
    if os.geteuid() != 0:
        raise DockerError(
            "no Docker engine answers `docker version`, and a private engine needs root "
            "(dockerd runs as root). Start your Docker (Docker Desktop, `systemctl start "
            "docker`, a rootless engine, or set DOCKER_HOST), or run as root."
        )
    root = engine_root()
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{root / 'docker.sock'}",
        "DOCKER_BUILDKIT": "0",  # the client's BuildKit needs buildx, which dockerd 20.10 lacks
        "COMPOSE_DOCKER_CLI_BUILD": "0",
        "DOCKER_CONFIG": str(root / "config"),  # no credentials or contexts of yours
    }
    _private = DockerEngine(env, private=True, root=root)._start()
    return _private


# ---- cleaning up after a private engine ------------------------------------------------------


def _processes(root: Path) -> list[tuple[int, str]]:
    """Return (pid, name) of the live dockerd, containerd and shims of the engine in root."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue
        daemon = comm in ("dockerd", "containerd") or comm.startswith("containerd-shim")
        if daemon and str(root) in cmdline:
            found.append((int(proc.name), comm))
    return found


def _container_pids() -> list[int]:
    pids: list[int] = []
    for procs in Path("/sys/fs/cgroup").glob(f"**/{CGROUP_PARENT}/*/cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def _sweep(root: Path) -> list[int]:
    """SIGKILL what is left of the engine in root: daemons, shims, container processes."""
    pids = {pid for pid, _ in _processes(root)} | set(_container_pids())
    pids.discard(os.getpid())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for group in Path("/sys/fs/cgroup").glob(f"**/{CGROUP_PARENT}"):  # empty by now
        for child in sorted(group.glob("*/"), reverse=True):
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            group.rmdir()
    return sorted(pids)


def _unmount(root: Path) -> None:
    """Unmount what dockerd leaves under root (its private bind mount, netns), deepest first."""
    points = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(f"{root}/"):
            points.add(point)
    for point in sorted(points, key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


def _stop_stale(root: Path, timeout_s: float = 20.0) -> None:
    """SIGTERM a dockerd still running on root (it stops its containers), then sweep."""
    with contextlib.suppress(OSError, ValueError):
        pid = int((root / "dockerd.pid").read_text())
        if "dockerd" in Path(f"/proc/{pid}/comm").read_text():
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    _clean_up(root)


def _clean_up(root: Path) -> None:
    """Kill what is left of the engine in root, unmount its mounts, remove its socket and pid."""
    _sweep(root)
    _unmount(root)
    for name in ("docker.sock", "dockerd.pid"):  # dockerd refuses to start beside a pid file
        (root / name).unlink(missing_ok=True)


def _held_elsewhere(root: Path) -> bool:
    """Return True when another process holds the private engine's lock (it is in use)."""
    if _private is not None or not (root / "lock").exists():
        return False
    with (root / "lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False


def leftovers(root: Path | None = None) -> list[str]:
    """Return what still runs of the private engine ('pid name') with no process owning it.

    Empty when all is stopped. An engine another deploykit process is using (it holds the
    engine's lock) is not left over.
    """
    root = root or engine_root()
    if _held_elsewhere(root):
        return []
    out = [f"{pid} {name}" for pid, name in _processes(root)]
    out += [f"{pid} (container)" for pid in _container_pids()]
    return sorted(out)


def engine_summary(engine: DockerEngine) -> dict[str, Any]:
    """Return what a notebook shows about the engine: kind, versions, storage driver."""
    info = engine.docker(
        "info", "--format", "{{.ServerVersion}}|{{.Driver}}|{{.CgroupVersion}}"
    ).stdout.strip()
    version, driver, cgroup = (info.split("|") + ["", "", ""])[:3]
    client = engine.docker("version", "--format", "{{.Client.Version}}").stdout.strip()
    return {
        "engine": "a private dockerd, loopback only" if engine.private else "your Docker engine",
        "server": version,
        "client": client,
        "storage driver": driver,
        "cgroup": f"v{cgroup}" if cgroup else "?",
        "builder": "legacy (DOCKER_BUILDKIT=0)"
        if engine.env.get("DOCKER_BUILDKIT") == "0"
        else "default",
    }
