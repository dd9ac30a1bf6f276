"""Build deploykit's image on a Docker engine with no network, run it, stop it, and run a stack.

- `base_image`: the image `FROM ${BASE}` starts from. Your engine pulls the official slim
  Python image. The private engine has no registry, so deploykit makes a Debian bookworm base
  with `debootstrap` (packages from the machine's Debian mirror) and `docker import`, once;
  its root filesystem is kept as a tarball, so a new data root re-imports it in seconds.
- `build_image`: `docker build --network none` of a folder `write_docker_files` wrote, timed,
  with the image's size and layers.
- `run_server` / `ServerContainer`: the image on the host's network, bound to loopback on a
  free port, the model folder mounted read-only, tini as PID 1 (`--init`); its health status,
  logs, and `docker stop` timed (`sigterm_drain` drives it with requests in flight).
- `write_stack` / `Stack`: a Compose project of the server and a Prometheus that scrapes it,
  up (Prometheus waits for `service_healthy`), queried and down.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from .. import _env
from .._progress import progress_bar
from ..errors import DockerError
from ..launch import free_port
from ..monitor.prom import write_prometheus_config
from .config import MODEL_DIR, PYTHON_IMAGE, DeploymentConfig
from .docker import healthcheck_command, serve_in_image, write_docker_files
from .engine import DockerEngine, _users_engine, _which, docker_engine, leftovers
from .wheels import wheelhouse, wheelhouse_ready

BASE_TAG = "deploykit-base:bookworm-py311"
_BASE_PACKAGES = "python3,python3-venv,ca-certificates"  # what python:3.11-slim has, and venv


# ---- the base image -------------------------------------------------------------------------


def _debian_mirror() -> str:
    """Return the Debian mirror apt on this machine uses."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        for line in listing.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    return "http://deb.debian.org/debian"


def base_image(engine: DockerEngine, *, quiet: bool = False) -> str:
    """Return the base image to build FROM; make it first if the engine cannot pull one.

    Your engine: the official `python:3.11-slim-bookworm` (pulled when missing). The private
    engine: `deploykit-base:bookworm-py311`, Debian bookworm (minbase) with python3,
    python3-venv and ca-certificates, from debootstrap; about 2 minutes the first time, a
    4-second import from the kept tarball after that.
    """
    if not engine.private:
        if not engine.has_image(PYTHON_IMAGE):
            engine.docker("pull", PYTHON_IMAGE, timeout=900)
        return PYTHON_IMAGE
    if engine.has_image(BASE_TAG):
        return BASE_TAG
    tarball = base_tarball()
    changes = [
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        "ENV LANG=C.UTF-8",
        "--change",
        'CMD ["python3"]',
    ]
    if not tarball.exists():
        _debootstrap(tarball, quiet=quiet)
    engine.docker("import", *changes, str(tarball), BASE_TAG, timeout=600)
    return BASE_TAG


def base_tarball() -> Path:
    """Return where the private engine's Debian base is kept (debootstrap's root filesystem)."""
    return _env.cache_dir() / "docker" / "base-bookworm-py311.tar"


def _debootstrap(tarball: Path, *, quiet: bool) -> None:
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if os.access("/usr/sbin/debootstrap", os.X_OK) else None
    )
    if debootstrap is None:
        raise DockerError(
            "no base image can be pulled here, and debootstrap, which makes one, is missing: "
            "`apt-get install debootstrap` (as root; `make test` and `make cookbook` do it)."
        )
    cache = tarball.parent
    rootfs = cache / "base-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    (cache / "debs").mkdir(parents=True, exist_ok=True)
    if not quiet:
        print("making the base image with debootstrap (once; about 2 minutes)")
    started = time.monotonic()
    log = cache / "debootstrap.log"
    with log.open("w") as out:
        done = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--cache-dir={cache / 'debs'}",
                f"--include={_BASE_PACKAGES}",
                "bookworm",
                str(rootfs),
                _debian_mirror(),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        shutil.rmtree(rootfs, ignore_errors=True)
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        raise DockerError(
            f"debootstrap failed (exit {done.returncode}); it needs root and the Debian "
            f"mirror ({_debian_mirror()}):\n{tail}"
        )
    subprocess.run(["chroot", str(rootfs), "apt-get", "clean"], capture_output=True)
    for pattern in (
        "var/lib/apt/lists/*",
        "var/cache/apt/*.bin",
        "usr/share/doc/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "usr/share/locale/*",
        "var/log/*.log",
    ):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    # Debian's stdlib .pyc stay: the server's user cannot write __pycache__
    (rootfs / "usr/bin/python").unlink(missing_ok=True)
    (rootfs / "usr/bin/python").symlink_to("python3")  # python:3.11-slim has `python`
    (rootfs / "etc/apt/sources.list").write_text("")  # the image names no mirror
    for sources in (rootfs / "etc/apt/sources.list.d").glob("*"):
        sources.unlink()
    partial = tarball.with_suffix(".tmp")
    subprocess.run(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], check=True
    )
    partial.replace(tarball)
    shutil.rmtree(rootfs, ignore_errors=True)
    if not quiet:
        print(
            f"base root filesystem: {tarball.stat().st_size / 1e6:,.0f} MB in "
            f"{time.monotonic() - started:.0f} s"
        )


# ---- build ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer of an image: its size and the instruction that made it."""

    size_bytes: int
    created_by: str


@dataclass(frozen=True)
class BuildResult:
    """An image built: its tag, how long the build took, what it holds."""

    tag: str
    seconds: float
    size_bytes: int
    cached_steps: int  # RUN, COPY and ADD steps the cache answered
    layers: tuple[Layer, ...] = field(repr=False)
    rebuilt: tuple[str, ...] = ()  # RUN, COPY and ADD steps that ran (legacy builder's output)

    def __str__(self) -> str:
        ran = "; ran: " + ", ".join(_short(r, 40) for r in self.rebuilt) if self.rebuilt else ""
        return (
            f"{self.tag}: built in {self.seconds:.1f} s, {self.cached_steps} of "
            f"{self.cached_steps + len(self.rebuilt)} RUN/COPY steps from the cache{ran}; "
            f"{self.size_bytes / 1e6:,.0f} MB"
        )

    def layer_table(self) -> list[dict[str, Any]]:
        """Return the layers with content, newest first: MB and the instruction."""
        return [
            {"MB": round(layer.size_bytes / 1e6, 2), "made by": _short(layer.created_by)}
            for layer in self.layers
            if layer.size_bytes
        ]


def build_table(builds: dict[str, BuildResult]) -> list[dict[str, Any]]:
    """Return one row per labelled build: seconds, steps from the cache, steps that ran, MB."""
    return [
        {
            "build": label,
            "seconds": round(b.seconds, 1),
            "RUN/COPY steps from the cache": f"{b.cached_steps} of {b.cached_steps + len(b.rebuilt)}",
            "steps that ran": "; ".join(b.rebuilt) or "none",
            "image MB": round(b.size_bytes / 1e6),
        }
        for label, b in builds.items()
    ]


def _short(created_by: str, width: int = 90) -> str:
    text = re.sub(r"^/bin/sh -c (#\(nop\) )?", "", created_by).strip()
    text = re.sub(r"\s+", " ", text) or "the base image (docker import)"
    return text if len(text) <= width else text[: width - 3] + "..."


def _size(text: str) -> int:
    """Return bytes from docker's human sizes ('1.17GB', '2.4MB', '0B')."""
    match = re.fullmatch(r"([\d.]+)\s*([kKMGT]?B)", text.strip())
    if not match:
        return 0
    factor = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[match.group(2)]
    return int(float(match.group(1)) * factor)


def image_layers(engine: DockerEngine, tag: str) -> tuple[Layer, ...]:
    """Return the image's layers, newest first (`docker history`)."""
    out = engine.docker(
        "history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", tag
    ).stdout
    layers = []
    for line in out.splitlines():
        size, _, created = line.partition("\t")
        layers.append(Layer(_size(size), created))
    return tuple(layers)


def build_image(
    engine: DockerEngine, context: str | Path, tag: str, *, base: str, quiet: bool = False
) -> BuildResult:
    """Build the folder context (Dockerfile inside) as tag, with no network; time it.

    A progress bar follows the Dockerfile's steps; the build's output is kept in
    <context>/build.log, and its tail is in the error if the build fails.
    """
    folder = Path(context)
    argv = ["build", "--network", "none", "--build-arg", f"BASE={base}", "-t", tag, "."]
    previous = _image_id(engine, tag)
    started = time.monotonic()
    log_lines: list[str] = []
    cached = 0
    current = ""  # the RUN/COPY/ADD step being built, until the cache answers it
    rebuilt: list[str] = []
    proc = subprocess.Popen(
        [shutil.which("docker") or "docker", *argv],
        cwd=folder,
        env=engine.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    with progress_bar(total=None, desc=f"docker build {tag}", unit="step", disable=quiet) as bar:
        for line in proc.stdout:
            log_lines.append(line)
            step = re.match(r"Step (\d+)/(\d+) : (.*)", line)
            if step:
                if current:
                    rebuilt.append(current)
                instruction = step.group(3).strip()
                current = instruction if instruction.split()[0] in ("RUN", "COPY", "ADD") else ""
                bar.total = int(step.group(2))
                bar.n = int(step.group(1))
                bar.refresh()
            if "Using cache" in line and current:
                cached += 1
                current = ""
    code = proc.wait()
    if current:
        rebuilt.append(current)
    seconds = time.monotonic() - started
    (folder / "build.log").write_text("".join(log_lines))
    if code != 0:
        raise DockerError(
            f"docker build of {folder.name}/ failed (exit {code}):\n"
            + "".join(log_lines[-15:]).rstrip()
        )
    size = int(engine.docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())
    if previous and previous != _image_id(engine, tag):
        # the tag's previous image, now untagged; its layers that the new one shares stay. (Not
        # `docker image prune`: that also deletes the first stage's images, the build cache.)
        engine.docker("rmi", previous, check=False)
    return BuildResult(tag, seconds, size, cached, image_layers(engine, tag), tuple(rebuilt))


def _image_id(engine: DockerEngine, ref: str) -> str:
    return engine.docker("image", "inspect", "-f", "{{.Id}}", ref, check=False).stdout.strip()


def prometheus_image(engine: DockerEngine, base: str, folder: str | Path) -> str:
    """Return an image of this machine's Prometheus binary on base; build it once.

    No registry here, so no `prom/prometheus`: Debian's binary (it needs only libc) is copied
    onto the same Debian base, and runs as nobody.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise DockerError(
            "the stack's Prometheus image is made from this machine's Prometheus: "
            "`apt-get install prometheus` (as root; `make test` and `make cookbook` do it)."
        )
    version = subprocess.run([binary, "--version"], capture_output=True, text=True)
    found = re.search(r"version (\d+\.\d+\.\d+)", version.stdout + version.stderr)
    digest = hashlib.sha256(Path(binary).read_bytes()).hexdigest()[:8]
    tag = f"deploykit-prometheus:{found.group(1) if found else 'local'}-{digest}"
    if engine.has_image(tag):
        return tag
    context = Path(folder)
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, context / "prometheus")
    (context / "Dockerfile").write_text(
        "# Prometheus from this machine's binary (it needs only libc) on the server's base\n"
        "ARG BASE\n"
        "FROM ${BASE}\n"
        "COPY prometheus /usr/local/bin/prometheus\n"
        "USER 65534:65534\n"
        'ENTRYPOINT ["/usr/local/bin/prometheus"]\n'
    )
    (context / ".dockerignore").write_text("*\n!prometheus\n")
    build_image(engine, context, tag, base=base, quiet=True)
    (context / "prometheus").unlink()
    return tag


# ---- run ------------------------------------------------------------------------------------


class ServerContainer:
    """deploykit's server running in a container on loopback; `sigterm()` is `docker stop`."""

    def __init__(self, engine: DockerEngine, name: str, port: int, model: str) -> None:
        self.engine, self.name, self.port, self.model = engine, name, port, model
        self.url = f"http://127.0.0.1:{port}"
        self._stopper: threading.Thread | None = None
        self.stop_s: float | None = None  # how long `docker stop` took

    def __repr__(self) -> str:
        return f"ServerContainer({self.name}, {self.url}, model {self.model!r}, {self.status()})"

    def status(self) -> str:
        """Return the container's state and health ('running healthy', 'exited', ...)."""
        out = self.engine.docker(
            "inspect",
            "-f",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            self.name,
            check=False,
        )
        return out.stdout.strip() if out.returncode == 0 else "removed"

    def wait_healthy(self, timeout_s: float = 180.0) -> float:
        """Wait until Docker's health check says healthy; return the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            state = self.status().split()
            if state[-1:] == ["healthy"]:
                return time.monotonic() - started
            if state[:1] and state[0] in ("exited", "dead", "removed"):
                raise DockerError(
                    f"container {self.name} {state[0]} before it was healthy; its log:\n"
                    + self.logs(30)
                )
            time.sleep(0.25)
        raise DockerError(
            f"container {self.name} not healthy after {timeout_s:.0f} s ({self.status()}); "
            f"its log:\n{self.logs(30)}"
        )

    def logs(self, tail: int = 20) -> str:
        """Return the last lines of the container's output (stdout and stderr)."""
        out = self.engine.docker("logs", "--tail", str(tail), self.name, check=False)
        return (out.stdout + out.stderr).rstrip()

    def sigterm(self) -> None:
        """Start `docker stop` (SIGTERM, SIGKILL after the stop timeout) and return at once."""

        def stop() -> None:
            started = time.monotonic()
            self.engine.docker("stop", self.name, check=False, timeout=300)
            self.stop_s = time.monotonic() - started

        self._stopper = threading.Thread(target=stop, daemon=True)
        self._stopper.start()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for the container to exit; return its exit code (None: still running)."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else 1e9)
        if self._stopper is not None:
            self._stopper.join(timeout_s)
        while time.monotonic() < deadline:
            state = self.engine.docker(
                "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", self.name, check=False
            ).stdout.split()
            if state and state[0] in ("exited", "dead"):
                return int(state[1])
            time.sleep(0.2)
        return None

    def stop(self) -> int | None:
        """`docker stop`, then remove the container; return its exit code. Idempotent."""
        if self.status() == "removed":
            return None
        if self._stopper is None:
            self.sigterm()
        code = self.wait(300)
        self.engine.docker("rm", "-f", self.name, check=False)
        return code

    def __enter__(self) -> ServerContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_command(
    *, model_mount: str, served_name: str, port: int, drain_timeout_s: int
) -> list[str]:
    """Return the command the container runs: the image's CMD with this run's model and port."""
    args = ["--served-model-name", served_name, "--drain-timeout-s", str(drain_timeout_s)]
    # the host's network: loopback only
    return serve_in_image(
        model_mount, host="127.0.0.1", port=port, device="cpu", dtype="auto", args=args
    )


def run_server(
    engine: DockerEngine,
    image: str,
    *,
    model_folder: str | Path,
    served_name: str | None = None,
    name: str = "deploykit-llm",
    port: int | None = None,
    drain_timeout_s: int = 30,
    stop_timeout_s: int = 40,
    health_interval_s: float = 2.0,
) -> ServerContainer:
    """Run image on the host's network, on 127.0.0.1:port, the model folder mounted read-only.

    The container: `--init` (tini forwards SIGTERM even while the model loads), a read-only
    root with tmpfs for /tmp and the home, `--stop-timeout` longer than the drain so
    `docker stop` never SIGKILLs a draining server, and the image's HEALTHCHECK probed every
    health_interval_s (the image says 30 s, right for production; a notebook waits less).
    """
    folder = Path(model_folder).resolve()
    if not (folder / "config.json").exists():
        raise DockerError(
            f"{folder} is not a model folder (no config.json): mount a built model, e.g. "
            "dk.resolve_model('toy-tiny').folder."
        )
    served = served_name or folder.name
    port = port or free_port()
    engine.docker("rm", "-f", name, check=False)  # a container of an earlier, interrupted run
    mount = f"{MODEL_DIR}/{served}"
    engine.docker(
        "run",
        "--detach",
        "--name",
        name,
        "--init",
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/home/app",
        "--volume",
        f"{folder}:{mount}:ro",
        "--env",
        f"PORT={port}",
        "--env",
        "HF_HUB_OFFLINE=1",
        "--stop-timeout",
        str(stop_timeout_s),
        "--health-interval",
        f"{health_interval_s}s",
        image,
        *server_command(
            model_mount=mount, served_name=served, port=port, drain_timeout_s=drain_timeout_s
        ),
    )
    return ServerContainer(engine, name, port, served)


# ---- the Compose stack ---------------------------------------------------------------------


def stack_compose(
    image: str,
    prometheus: str,
    *,
    model_folder: str,
    served_name: str,
    port: int,
    prometheus_port: int,
    drain_timeout_s: int = 30,
) -> dict[str, Any]:
    """Return the stack's Compose file: the server, and a Prometheus once it is healthy.

    Both on the host's network, bound to loopback (no Compose network is created), read-only
    roots. The file is the Compose Specification, which Debian's docker-compose 1.29 reads
    too (no top-level `name:`, no `start_interval`).
    """
    mount = f"{MODEL_DIR}/{served_name}"
    health = healthcheck_command(DeploymentConfig(port=port))  # the image's own probe
    return {
        "services": {
            "server": {
                "image": image,
                "network_mode": "host",
                "init": True,
                "read_only": True,
                "tmpfs": ["/tmp", "/home/app"],
                "volumes": [f"{model_folder}:{mount}:ro"],  # relative: to the file's folder
                "environment": {"PORT": str(port), "HF_HUB_OFFLINE": "1"},
                "command": server_command(
                    model_mount=mount,
                    served_name=served_name,
                    port=port,
                    drain_timeout_s=drain_timeout_s,
                ),
                "stop_grace_period": f"{drain_timeout_s + 10}s",
                "healthcheck": {
                    "test": ["CMD", *health],
                    "interval": "2s",
                    "timeout": "5s",  # as the image's HEALTHCHECK
                    "retries": 3,
                    "start_period": "120s",
                },
            },
            "prometheus": {
                "image": prometheus,
                "network_mode": "host",
                "read_only": True,
                "tmpfs": ["/prometheus"],
                "depends_on": {"server": {"condition": "service_healthy"}},
                "volumes": ["./prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
                "command": [
                    "--config.file=/etc/prometheus/prometheus.yml",
                    "--storage.tsdb.path=/prometheus",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
            },
        }
    }


@dataclass
class Stack:
    """A Compose project brought up on an engine: its file, ports, and timings."""

    engine: DockerEngine
    compose_file: Path
    project: str
    port: int
    prometheus_port: int
    up_s: float = 0.0
    down_s: float = 0.0
    temporary: bool = False  # the folder is removed by down()

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def up(self) -> float:
        """`up -d`: Compose starts Prometheus once the server is healthy; return the seconds."""
        started = time.monotonic()
        self.engine.compose(self.compose_file, "-p", self.project, "up", "-d", timeout=300)
        self.up_s = time.monotonic() - started
        return self.up_s

    def services(self) -> dict[str, str]:
        """Return each service's state ('running (healthy)', ...)."""
        out = self.engine.docker(
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--format",
            '{{.Label "com.docker.compose.service"}}\t{{.Status}}',
        ).stdout
        return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)

    def scraped_up(self, timeout_s: float = 30.0) -> float:
        """Wait until Prometheus reports the server's target up (1); return the seconds."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            with contextlib.suppress(httpx.HTTPError, KeyError, IndexError, ValueError):
                answer = httpx.get(
                    f"{self.prometheus_url}/api/v1/query",
                    params={"query": 'up{job="deploykit"}'},
                    timeout=5,
                    trust_env=False,
                ).json()
                if answer["data"]["result"][0]["value"][1] == "1":
                    return time.monotonic() - started
            time.sleep(0.5)
        raise DockerError(
            f"Prometheus never saw the server up in {timeout_s:.0f} s: {self.services()}"
        )

    def down(self) -> float:
        """`down`: stop and remove both containers; return the seconds."""
        started = time.monotonic()
        self.engine.compose(self.compose_file, "-p", self.project, "down", timeout=300)
        self.down_s = time.monotonic() - started
        if self.temporary:
            shutil.rmtree(self.compose_file.parent, ignore_errors=True)
        return self.down_s


def write_stack(
    engine: DockerEngine,
    out_dir: str | Path | None = None,
    *,
    image: str,
    base: str,
    model_folder: str | Path,
    served_name: str | None = None,
    project: str = "deploykit-stack",
    drain_timeout_s: int = 30,
) -> Stack:
    """Write the stack's compose.yaml and prometheus.yml into out_dir; return it, not yet up.

    The files name this run's ports. Without out_dir they go into a temporary folder, which
    `down()` removes.
    """
    temporary = out_dir is None
    out = Path(tempfile.mkdtemp(prefix="deploykit-stack-") if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(model_folder).resolve()
    served = served_name or folder.name
    prometheus = prometheus_image(engine, base, _env.cache_dir() / "docker" / "prometheus-image")
    port, prometheus_port = free_port(), free_port()
    write_prometheus_config(
        out / "prometheus.yml", {"deploykit": f"http://127.0.0.1:{port}"}, scrape_interval_s=1
    )
    link = out / "model"  # the file names ./model, a link to the folder: no machine path in it
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(folder, target_is_directory=True)
    compose = stack_compose(
        image,
        prometheus,
        model_folder="./model",
        served_name=served,
        port=port,
        prometheus_port=prometheus_port,
        drain_timeout_s=drain_timeout_s,
    )
    (out / "compose.yaml").write_text(yaml.safe_dump(compose, sort_keys=False))
    return Stack(engine, out / "compose.yaml", project, port, prometheus_port, temporary=temporary)


# ---- set-up: what the notebook and the tests reuse ------------------------------------------


def prepare(*, quiet: bool = False) -> dict[str, float]:
    """Make the base image, the wheelhouse, the server image and the Prometheus image once.

    What `make test` and `make cookbook` run before the notebooks: afterwards a build of
    deploykit's image takes its dependency layers from the engine's cache. Returns the
    seconds each step took; the private engine is stopped at the end.
    """
    times: dict[str, float] = {}
    engine = docker_engine()
    try:
        started = time.monotonic()
        base = base_image(engine, quiet=quiet)
        times["base image"] = time.monotonic() - started
        started = time.monotonic()
        wheels = wheelhouse(quiet=quiet)
        times["wheelhouse"] = time.monotonic() - started
        config = DeploymentConfig()
        context = _env.cache_dir() / "docker" / "prepare"
        write_docker_files(config, context, wheels=wheels)
        built = build_image(engine, context, config.image_ref, base=base, quiet=True)
        times["server image"] = built.seconds
        started = time.monotonic()
        prometheus_image(engine, base, _env.cache_dir() / "docker" / "prometheus-image")
        times["prometheus image"] = time.monotonic() - started
        if not quiet:
            print(built)
    finally:
        engine.stop()
    return times


def offline_missing() -> list[str]:
    """Return what `prepare()` would still fetch from a network; empty: the images build offline.

    Cheap: it asks your engine (if one answers) for the base image, and otherwise looks for
    the private engine's programs and its kept base; it starts no engine.
    """
    missing = [] if wheelhouse_ready() else ["the server image's wheelhouse (PyPI)"]
    users = _users_engine()
    if users is not None:
        if not users.has_image(PYTHON_IMAGE):
            missing.append(f"the base image {PYTHON_IMAGE} (a registry)")
        return missing
    for program in ("dockerd", "docker-compose", "debootstrap"):
        try:
            _which(program)
        except DockerError:
            missing.append(f"{program} (apt-get install docker.io docker-compose debootstrap)")
    if os.geteuid() != 0:
        missing.append("a Docker engine (none answers `docker version`; a private one needs root)")
    if not base_tarball().exists():
        missing.append("the Debian base image (debootstrap, from a Debian mirror)")
    return missing


def add_cli(sub: Any) -> None:
    """Add `deploykit docker` to the CLI."""
    p = sub.add_parser(
        "docker",
        help="prepare the Docker images the notebooks build on (offline afterwards)",
        description="Make the base image, the wheelhouse, deploykit's server image and a "
        "Prometheus image on your Docker engine, or on a private one (root): what notebook "
        "14 builds on. The first run downloads (Debian packages, wheels); later runs reuse.",
    )
    p.add_argument("action", choices=["prepare", "leftovers"])
    p.set_defaults(func=_cli_docker)


def _cli_docker(args: Any) -> int:
    if args.action == "leftovers":
        left = leftovers()
        print("\n".join(left) if left else "nothing of the private engine is running")
        return 1 if left else 0
    for step, seconds in prepare().items():
        print(f"{step}: {seconds:.1f} s")
    return 0
