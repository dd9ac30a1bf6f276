"""Render a DeploymentConfig as a Dockerfile and a Compose file, and run the image's CMD here.

Every image runs as a non-root user, keeps no model inside (weights are downloaded at first
start into the volume mounted at /models, or already sit there), checks /health, and stops
on SIGTERM. vLLM and TGI images are thin layers over the official ones; their command lines
come from `VLLMArgs` / `TGIArgs`, deploykit's from `serve_command`. `write_docker_files`
writes a folder that is its own build context (the Dockerfile, its .dockerignore, compose.yaml
and, for deploykit's image, deploykit's source archive), every path in it relative to it.
Nothing here builds an image or talks to a Docker engine: `host_command` turns the CPU image's
CMD into a command this machine can run, listing each part it had to change.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, InvalidArgumentError
from ..launch import Server, deploykit_command, launch_server
from .config import MODEL_DIR, PYTHON_IMAGE, TORCH_VERSION, USER_ID, DeploymentConfig

HF_HOME = f"{MODEL_DIR}/huggingface"
DEPLOYKIT_CACHE = f"{MODEL_DIR}/deploykit"
VLLM_CACHE_ROOT = f"{MODEL_DIR}/vllm"  # torch.compile artefacts: later starts skip compiling
HOME = "/home/app"
_HEALTH_TIMEOUT_S = 5


def image_command(config: DeploymentConfig) -> list[str]:
    """Return the arguments the Dockerfile's CMD holds (appended to the base's ENTRYPOINT for vLLM/TGI)."""
    if config.engine == "vllm":
        # the official image's ENTRYPOINT is ["vllm", "serve"]; drop `vllm serve` from the command
        return config.engine_args().to_command(("vllm",), host="0.0.0.0", port=config.port)[2:]
    if config.engine == "tgi":
        # the official image's ENTRYPOINT runs text-generation-launcher
        dtype = ["--dtype", config.dtype] if config.dtype != "auto" else []
        return [*config.engine_args().launcher_args(), *dtype, "--port", str(config.port)]
    from ..server.process import serve_command

    device = "cuda" if config.gpus else "cpu"
    argv = serve_command(
        config.model,
        device=device,
        dtype=config.dtype,
        args=["--drain-timeout-s", str(config.drain_timeout_s)],
    )
    # serve_command starts `python -m deploykit`; the image has the console script
    argv = ["deploykit", *argv[3:]]
    return [a.replace("{host}", "0.0.0.0").replace("{port}", str(config.port)) for a in argv]


def container_command(config: DeploymentConfig) -> list[str]:
    """Return the whole command the container runs: ENTRYPOINT (if the base has one) + CMD."""
    entry = {"vllm": ["vllm", "serve"], "tgi": ["text-generation-launcher"]}.get(config.engine, [])
    return [*entry, *image_command(config)]


def healthcheck_command(config: DeploymentConfig) -> list[str]:
    """Return the HEALTHCHECK probe: GET /health inside the container, exit 0 when it answers 200."""
    url = f"http://127.0.0.1:{config.port}{config.health_path}"
    if config.engine == "tgi":
        return ["curl", "--fail", "--silent", "--max-time", str(_HEALTH_TIMEOUT_S - 1), url]
    python = "python3" if config.engine == "vllm" else "python"
    # no curl in python:slim; urlopen raises (exit 1) on anything but 2xx/3xx
    code = (
        f"import urllib.request; urllib.request.urlopen('{url}', timeout={_HEALTH_TIMEOUT_S - 1})"
    )
    return [python, "-c", code]


def _environment(config: DeploymentConfig) -> dict[str, str]:
    """Return the image's ENV: caches on the volume, and no hub access for a mounted model."""
    env = {"HOME": HOME, "HF_HOME": HF_HOME}
    if config.engine == "deploykit":
        env["DEPLOYKIT_CACHE"] = DEPLOYKIT_CACHE
    if config.engine == "vllm":
        env["VLLM_CACHE_ROOT"] = VLLM_CACHE_ROOT
    if config.engine == "tgi":
        env["HUGGINGFACE_HUB_CACHE"] = f"{HF_HOME}/hub"  # the older name TGI's launcher reads
        env["PORT"] = str(config.port)
    if config.mounted_model:
        env["HF_HUB_OFFLINE"] = "1"  # the weights are on the volume: never reach for the hub
    return env


def dockerfile(config: DeploymentConfig) -> str:
    """Return the Dockerfile text for config (see the module docstring for what it guarantees)."""
    base = config.base_image or config.default_base_image()
    lines = [
        "# syntax=docker/dockerfile:1",
        f"# Rendered by deploykit from DeploymentConfig(name={config.name!r}, "
        f"engine={config.engine!r}).",
        "# No model inside: it is downloaded at first start "
        f"into the volume at {MODEL_DIR}, or mounted there.",
        "",
    ]
    if config.engine == "deploykit":
        lines += _deploykit_build(config, base)
    else:
        lines += [
            f"FROM {base}",
            "",
            "# the official image runs as root; add an unprivileged user with a writable home",
        ]
    env = _environment(config)
    lines += [
        "",
        f"RUN groupadd --gid {USER_ID} app \\",
        f"    && useradd --uid {USER_ID} --gid {USER_ID} --home-dir {HOME} --create-home "
        "--shell /usr/sbin/nologin app \\",
        f"    && mkdir -p {MODEL_DIR} && chown {USER_ID}:{USER_ID} {MODEL_DIR}",
        "ENV " + " \\\n    ".join(f"{k}={v}" for k, v in env.items()),
        f"WORKDIR {HOME}",
        f"USER {USER_ID}:{USER_ID}",
        f"EXPOSE {config.port}",
        f"HEALTHCHECK --interval=30s --timeout={_HEALTH_TIMEOUT_S}s "
        f"--start-period={config.model_load_s}s --retries=3 \\",
        f"    CMD {json.dumps(healthcheck_command(config))}",
        "STOPSIGNAL SIGTERM",
    ]
    if config.engine == "vllm":
        lines.append('# ENTRYPOINT ["vllm", "serve"] comes from the base image')
    elif config.engine == "tgi":
        lines.append("# ENTRYPOINT (text-generation-launcher) comes from the base image")
    lines.append(f"CMD {json.dumps(image_command(config))}")
    return "\n".join(lines) + "\n"


def source_archive_name() -> str:
    """Return the file name of deploykit's source archive in the build context."""
    from .._version import __version__

    return f"deploykit-{__version__}.tar.gz"


def _deploykit_build(config: DeploymentConfig, base: str) -> list[str]:
    """Return the stages that build deploykit's wheel from its source archive and install it."""
    from .._version import __version__

    wheel = f"deploykit-{__version__}-py3-none-any.whl"
    archive = source_archive_name()
    if config.gpus:  # the CUDA runtime image has no Python: the distribution's, in a venv
        python = [
            f"FROM {base}",
            "ARG DEBIAN_FRONTEND=noninteractive",
            "# the base image's tag pins the distribution; apt pins would break on its security "
            "updates",
            "# hadolint ignore=DL3008",
            "RUN apt-get update \\",
            "    && apt-get install -y --no-install-recommends python3 python3-venv \\",
            "    && rm -rf /var/lib/apt/lists/* \\",
            "    && python3 -m venv /opt/venv",
            'ENV PATH="/opt/venv/bin:$PATH"',
            f"RUN pip install --no-cache-dir torch=={TORCH_VERSION}",
        ]
    else:
        python = [
            f"FROM {base}",
            "# the CPU build of torch (the default one drags in several GB of CUDA libraries)",
            "RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "
            f"torch=={TORCH_VERSION}",
        ]
    return [
        f"# Stage 1: build deploykit's wheel from {archive}, beside this Dockerfile.",
        f"FROM {PYTHON_IMAGE} AS wheel",
        f"COPY {archive} /src/",
        f"RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist /src/{archive} \\"
        f"\n    && test -f /dist/{wheel}",
        "",
        "# Stage 2: the server image: torch, then the wheel (mounted, never a layer); no source.",
        *python,
        "RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \\",
        f"    pip install --no-cache-dir /dist/{wheel}",
    ]


def dockerignore(config: DeploymentConfig) -> str:
    """Return the .dockerignore: an allow-list of what the build copies (nothing for vLLM/TGI)."""
    if config.engine != "deploykit":
        return "*\n"  # vLLM and TGI images copy nothing from the context
    return f"*\n!{source_archive_name()}\n"


def write_source_archive(path: str | Path) -> Path:
    """Write deploykit's source (pyproject.toml, README.md, deploykit/) as a .tar.gz; return path.

    The files the wheel is built from, taken from the checkout this deploykit is imported
    from, under one top folder as in a source distribution; pip builds a wheel from it. Byte
    for byte the same for the same source: entries sorted, owners and times zeroed.
    """
    from .._version import __version__

    root = Path(__file__).resolve().parents[2]  # deploykit/deploy/docker.py -> the checkout
    if not (root / "pyproject.toml").is_file():
        raise ConfigurationError(
            f"deploykit is imported from {root / 'deploykit'}, not from a checkout: its "
            "image is built from the source. Install it with `pip install -e .` from a clone."
        )
    top = f"deploykit-{__version__}"
    files = [root / "pyproject.toml", root / "README.md"]
    files += sorted(
        p
        for p in (root / "deploykit").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file in files:
            info = tar.gettarinfo(str(file), f"{top}/{file.relative_to(root).as_posix()}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o644
            with file.open("rb") as handle:
                tar.addfile(info, handle)
    out = Path(path)
    with out.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(buffer.getvalue())
    return out


def compose_file(config: DeploymentConfig) -> dict[str, Any]:
    """Return the Compose file (a dict) that builds and runs the image with its volume.

    The build context is the compose file's own folder, where `write_docker_files` puts the
    Dockerfile and everything it copies.
    """
    health = healthcheck_command(config)
    service: dict[str, Any] = {
        "build": {"context": ".", "dockerfile": "Dockerfile"},
        "image": config.image_ref,
        "ports": [f"{config.port}:{config.port}"],
        # the name alone passes the variable from the shell (or .env) if set: no value in the file
        "environment": [config.hf_token_env],
        "volumes": [f"model-cache:{MODEL_DIR}"],
        "restart": "unless-stopped",
        "stop_signal": "SIGTERM",
        # docker stop waits 10 s by default, then SIGKILLs: give the drain its time
        "stop_grace_period": f"{config.drain_timeout_s + 10}s",
        "healthcheck": {
            "test": ["CMD", *health],
            "interval": "30s",
            "timeout": f"{_HEALTH_TIMEOUT_S}s",
            "retries": 3,
            "start_period": f"{config.model_load_s}s",
            "start_interval": "5s",
        },
        "deploy": {"resources": {"limits": {"memory": f"{config.memory_gib}g"}}},
    }
    if config.gpus:
        service["deploy"]["resources"]["reservations"] = {
            "devices": [{"driver": "nvidia", "count": config.gpus, "capabilities": ["gpu"]}]
        }
        # NCCL and PyTorch workers share tensors through /dev/shm (Docker's default is 64 MB)
        service["shm_size"] = "8g" if config.engine != "tgi" else config.engine_args().shm_size
    # named explicitly (Compose would prefix the project): `docker run` mounts the same volume
    volumes = {"model-cache": {"name": volume_name(config)}}
    return {"name": config.name, "services": {config.name: service}, "volumes": volumes}


def volume_name(config: DeploymentConfig) -> str:
    """Return the Docker volume that holds the model cache, shared by Compose and `docker run`."""
    return f"{config.name}-model-cache"


def compose_yaml(config: DeploymentConfig) -> str:
    """Return the Compose file as YAML text."""
    import yaml

    return yaml.safe_dump(compose_file(config), sort_keys=False)


def write_docker_files(config: DeploymentConfig, out_dir: str | Path) -> dict[str, Path]:
    """Write a build context into out_dir; return each file's path (under out_dir as given).

    The folder holds the Dockerfile, its .dockerignore, compose.yaml (`context: .`) and, for
    deploykit's image, deploykit's source archive: `docker build out_dir` and `docker compose
    -f out_dir/compose.yaml up` work from anywhere, and the folder can be copied elsewhere.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "Dockerfile": out / "Dockerfile",
        ".dockerignore": out / ".dockerignore",
        "compose.yaml": out / "compose.yaml",
    }
    paths["Dockerfile"].write_text(dockerfile(config))
    paths[".dockerignore"].write_text(dockerignore(config))
    paths["compose.yaml"].write_text(compose_yaml(config))
    if config.engine == "deploykit":
        archive = source_archive_name()
        paths[archive] = write_source_archive(out / archive)
    return paths


def docker_commands(config: DeploymentConfig, out_dir: str | Path) -> list[str]:
    """Return the shell commands that build and run the files in out_dir where Docker exists.

    Paths are out_dir as given: run the commands from the folder it is relative to.
    """
    out = Path(out_dir)
    gpus = ["--gpus", str(config.gpus)] if config.gpus else []
    run = [
        "docker",
        "run",
        "--rm",
        "-p",
        f"{config.port}:{config.port}",
        *gpus,
        "-v",
        f"{volume_name(config)}:{MODEL_DIR}",
        "-e",
        config.hf_token_env,
        config.image_ref,
    ]
    compose = ["docker", "compose", "-f", (out / "compose.yaml").as_posix()]
    q = shlex.join
    return [
        q(["docker", "build", "-t", config.image_ref, out.as_posix()]),
        q(run),
        q([*compose, "up", "--detach", "--wait"]),
        f"curl -s localhost:{config.port}{config.ready_path}",
        q([*compose, "down"]),
    ]


# ---- the CPU image's CMD, run on this machine -------------------------------------------------


@dataclass(frozen=True)
class Substitution:
    """One part of the image's command changed to run here, and why."""

    part: str
    in_image: str
    here: str
    why: str


@dataclass(frozen=True)
class HostCommand:
    """The image's CMD made runnable on this machine: the argv and every change made to it."""

    argv: tuple[str, ...]
    substitutions: tuple[Substitution, ...]

    def table(self) -> list[dict[str, str]]:
        """Return the substitutions as rows (part, in the image, here, why)."""
        return [
            {"part": s.part, "in the image": s.in_image, "here": s.here, "why": s.why}
            for s in self.substitutions
        ]

    def start(self, *, timeout_s: float = 180.0, env: dict[str, str] | None = None) -> Server:
        """Start the command with launch_server (own process group, free loopback port, /health)."""
        return launch_server(
            list(self.argv),
            timeout_s=timeout_s,
            name="image-cmd",
            env={"HF_HUB_OFFLINE": "1", **(env or {})},
        )


def exec_form(dockerfile_text: str, instruction: str = "CMD") -> list[str]:
    """Return the exec-form (JSON array) arguments of the last CMD, ENTRYPOINT or HEALTHCHECK."""
    joined = dockerfile_text.replace("\\\n", " ")
    found = None
    for line in joined.splitlines():
        words = line.strip().split(None, 1)
        if words and words[0].upper() == instruction.upper() and len(words) == 2:
            found = words[1]
    if found is None:
        raise InvalidArgumentError(f"no {instruction} instruction in the Dockerfile.")
    if instruction.upper() == "HEALTHCHECK":
        found = found[found.index(" CMD ") + 5 :] if " CMD " in found else found
    try:
        value = json.loads(found)
    except json.JSONDecodeError:
        raise InvalidArgumentError(
            f"{instruction} {found} is in shell form; deploykit renders "
            "the exec form, a JSON array."
        ) from None
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise InvalidArgumentError(f"{instruction} {found} is not a JSON array of strings.")
    return value


def run_healthcheck(dockerfile_text: str, port: int, timeout_s: float = 30.0) -> int:
    """Run the Dockerfile's HEALTHCHECK command here against port; return its exit code.

    For the deploykit images' Python probe: `python` becomes this Python, the container's
    port 127.0.0.1:<port> in the URL becomes the local server's; 0 means healthy.
    """
    argv = exec_form(dockerfile_text, "HEALTHCHECK")
    if argv[0] not in ("python", "python3"):
        raise InvalidArgumentError(
            f"run_healthcheck runs the Python probe of deploykit images; "
            f"this one starts {argv[0]!r}."
        )
    code = re.sub(r"127\.0\.0\.1:\d+/", f"127.0.0.1:{port}/", argv[-1])
    done = subprocess.run(
        [sys.executable, *argv[1:-1], code],
        capture_output=True,
        timeout=timeout_s,
        env={**os.environ, "NO_PROXY": "127.0.0.1"},
    )
    return done.returncode


def host_command(cmd: Sequence[str], *, model: str = "toy-tiny") -> HostCommand:
    """Return the deploykit image's CMD as a command for `launch_server` on this machine.

    Only what cannot exist here changes, each listed: the console script becomes this
    Python's `-m deploykit`; the host 0.0.0.0 becomes launch_server's {host} (loopback:
    servers here bind 127.0.0.1 only); the port becomes {port} (a free one); a model that
    is not a deploykit built-in (a hub id, or a folder on the image's /models volume) becomes
    `model`; device cuda becomes cpu. Every other flag is kept as written.
    """
    from ..models import BUILTIN_MODELS

    argv = list(cmd)
    if argv[:2] != ["deploykit", "serve"]:
        raise InvalidArgumentError(
            f"host_command runs deploykit images only; this CMD starts "
            f"{shlex.join(argv[:2])!r}. vLLM and TGI images need their "
            "engine and a GPU."
        )
    subs = [
        Substitution(
            "executable",
            "deploykit",
            f"{Path(sys.executable).name} -m deploykit",
            "same entry point as the image's console script",
        )
    ]
    out = deploykit_command("serve")
    # flag: (whether value must change, what runs here, what the table shows, why)
    changes = {
        "--host": lambda v: (
            v != "{host}",
            "{host}",
            "127.0.0.1",
            "loopback only: unreachable from outside",
        ),
        "--port": lambda v: (True, "{port}", "a free port", "launch_server picks one at start"),
        "--model": lambda v: (
            v not in BUILTIN_MODELS,
            model,
            model,
            f"neither the hub nor {MODEL_DIR} is reachable here",
        ),
        "--device": lambda v: (v != "cpu", "cpu", "cpu", "no GPU on this machine"),
    }
    rest = argv[2:]
    i = 0
    while i < len(rest):
        flag = rest[i]
        if flag in changes and i + 1 < len(rest):
            value = rest[i + 1]
            changed, new, shown, why = changes[flag](value)
            out += [flag, new if changed else value]
            if changed:
                subs.append(Substitution(flag, value, shown, why))
            i += 2
        else:
            out.append(flag)
            i += 1
    return HostCommand(tuple(out), tuple(subs))
