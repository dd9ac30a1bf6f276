"""Render a DeploymentConfig as a Dockerfile and a Compose file, and run the image's CMD here.

Every image runs as a non-root user, keeps no model inside (weights are downloaded at first
start into the volume mounted at /models, or already sit there), checks /health, and stops
on SIGTERM. vLLM and TGI images are thin layers over the official ones; their command lines
come from `VLLMArgs` / `TGIArgs`, deploykit's from `serve_command`. `write_docker_files`
writes a folder that is its own build context (the Dockerfile, its .dockerignore, compose.yaml
and, for deploykit's image, its code in app/ and the wheelhouse/ it installs from), every
path in it relative to it. deploykit's image builds with no network: `FROM` is a build argument
(the official slim Python image where it can be pulled, a local Debian base where it cannot),
and pip installs only from the wheelhouse. Building and running are in `image`; here,
`host_command` turns the CPU image's CMD into a command this machine runs without Docker.
"""

from __future__ import annotations

import compileall
import json
import os
import py_compile
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, InvalidArgumentError
from ..launch import Server, deploykit_command, launch_server
from .config import MODEL_DIR, PYTHON_IMAGE, USER_ID, DeploymentConfig
from .wheels import constraints_text, requirements_text, wheel_files

HF_HOME = f"{MODEL_DIR}/huggingface"
DEPLOYKIT_CACHE = f"{MODEL_DIR}/deploykit"
VLLM_CACHE_ROOT = f"{MODEL_DIR}/vllm"  # torch.compile artefacts: later starts skip compiling
HOME = "/home/app"
APP_DIR = "/opt/app"  # deploykit's code in the image (on PYTHONPATH), the last layer
VENV = "/opt/venv"
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
    return serve_in_image(
        config.model,
        host="0.0.0.0",
        port=config.port,
        device="cuda" if config.gpus else "cpu",
        dtype=config.dtype,
        args=["--drain-timeout-s", str(config.drain_timeout_s)],
    )


def serve_in_image(
    model: str, *, host: str, port: int, device: str, dtype: str, args: Sequence[str] = ()
) -> list[str]:
    """Return `serve_command` as a container runs it: the image's python, host and port set."""
    from ..server.process import serve_command

    argv = serve_command(model, device=device, dtype=dtype, args=args)
    # serve_command starts this interpreter's `-m deploykit`; the image's python is its venv's
    argv = ["python", "-m", "deploykit", *argv[3:]]
    return [a.replace("{host}", host).replace("{port}", str(port)) for a in argv]


def container_command(config: DeploymentConfig) -> list[str]:
    """Return the whole command the container runs: ENTRYPOINT (if the base has one) + CMD."""
    entry = {"vllm": ["vllm", "serve"], "tgi": ["text-generation-launcher"]}.get(config.engine, [])
    return [*entry, *image_command(config)]


def healthcheck_command(config: DeploymentConfig) -> list[str]:
    """Return the HEALTHCHECK probe: GET /health inside the container, exit 0 when it answers 200."""
    url = f"http://127.0.0.1:{config.port}{config.health_path}"
    if config.engine == "tgi":
        return ["curl", "--fail", "--silent", "--max-time", str(_HEALTH_TIMEOUT_S - 1), url]
    if config.engine == "vllm":
        code = f"import urllib.request; urllib.request.urlopen('{url}', timeout={_HEALTH_TIMEOUT_S - 1})"
        return ["python3", "-c", code]
    # no curl in python:slim; urlopen raises (exit 1) on anything but 2xx/3xx. The port is
    # $PORT: a container on the host's network gets its port at `docker run -e PORT=...`
    code = (
        "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s"
        f"{config.health_path}' % os.environ.get('PORT', '{config.port}'), "
        f"timeout={_HEALTH_TIMEOUT_S - 1})"
    )
    return ["python", "-c", code]


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
    lines = [
        f"# Rendered by deploykit from DeploymentConfig(name={config.name!r}, "
        f"engine={config.engine!r}).",
        "# No model inside: it is downloaded at first start "
        f"into the volume at {MODEL_DIR}, or mounted there.",
    ]
    if config.engine == "deploykit":
        lines += _deploykit_build(config)
    else:
        base = config.base_image or config.default_base_image()
        lines += [
            "",
            f"FROM {base}",
            "",
            "# the official image runs as root; add an unprivileged user with a writable home",
            *_user_lines(),
        ]
    env = _environment(config)
    if config.engine == "deploykit":  # the image's own: where Python and the code are
        env = {"PATH": f"{VENV}/bin:$PATH", "PYTHONPATH": APP_DIR, **env}
        env["PORT"] = str(config.port)  # the health check's port; `docker run -e PORT=` moves it
    lines += [
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
    if config.engine == "deploykit":
        lines += [
            "",
            "# deploykit's code, byte-compiled: the last layer, so a code change rebuilds only this",
            f"COPY app/ {APP_DIR}/",
        ]
    return "\n".join(lines) + "\n"


def _user_lines() -> list[str]:
    return [
        f"RUN groupadd --gid {USER_ID} app \\",
        f"    && useradd --uid {USER_ID} --gid {USER_ID} --home-dir {HOME} --create-home "
        "--shell /usr/sbin/nologin app \\",
        f"    && mkdir -p {MODEL_DIR} && chown {USER_ID}:{USER_ID} {MODEL_DIR}",
    ]


def _deploykit_build(config: DeploymentConfig) -> list[str]:
    """Return the stages that install the wheelhouse into a virtualenv and add the user."""
    base = config.base_image or config.default_base_image()
    if config.gpus:  # the CUDA runtime image has no Python: the distribution's, in both stages
        python = [
            "ARG DEBIAN_FRONTEND=noninteractive",
            "# the base image's tag pins the distribution; apt pins would break on its security "
            "updates",
            "# hadolint ignore=DL3008",
            "RUN apt-get update \\",
            "    && apt-get install -y --no-install-recommends python3 python3-venv \\",
            "    && rm -rf /var/lib/apt/lists/*",
        ]
        note = [
            "# Both sit beside this file. BASE: a CUDA runtime image; Python comes from its",
            "# distribution.",
        ]
    else:
        python = []
        note = [
            f"# Both sit beside this file. BASE: {PYTHON_IMAGE} where it can be pulled, or any",
            "# Debian bookworm image with python3 and python3-venv (deploykit makes one with",
            "# debootstrap where nothing can be pulled).",
        ]
    pip = (
        f"{VENV}/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse "
        "--disable-pip-version-check \\\n"
        "        -r /wheelhouse/requirements.txt -c /wheelhouse/constraints.txt"
    )
    return [
        "# Builds with no network: pip installs only from wheelhouse/ (--no-index); the code is app/.",
        *note,
        f"ARG BASE={base}",
        "",
        "# Stage 1: the dependencies, into a virtualenv, from the wheelhouse",
        "FROM ${BASE} AS deps",
        *python,
        "COPY wheelhouse/ /wheelhouse/",
        f"RUN python3 -m venv {VENV} \\",
        f"    && {pip}",
        "",
        "# Stage 2: the server: the virtualenv (not the wheels), a non-root user, then the code",
        "FROM ${BASE}",
        *python,
        *_user_lines(),
        f"COPY --from=deps {VENV} {VENV}",
    ]


def _package_files() -> tuple[Path, list[Path]]:
    """Return the checkout and deploykit's source files (no caches) from it."""
    root = Path(__file__).resolve().parents[2]  # deploykit/deploy/docker.py -> the checkout
    if not (root / "pyproject.toml").is_file():
        raise ConfigurationError(
            f"deploykit is imported from {root / 'deploykit'}, not from a checkout: its "
            "image is built from the source. Install it with `pip install -e .` from a clone."
        )
    files = sorted(
        p
        for p in (root / "deploykit").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    return root, files


def write_app(out: str | Path) -> Path:
    """Write deploykit's code into out (the image's app/ layer), byte-compiled; return out.

    The files come from the checkout this deploykit is imported from. The .pyc files use
    checked hashes: valid whatever the files' times, since the server's user cannot write
    __pycache__. Files no longer in the source are removed, so the layer is what the code is.
    """
    root, files = _package_files()
    dest = Path(out)
    wanted = {dest / f.relative_to(root) for f in files}
    if dest.exists():
        for old in sorted(dest.rglob("*"), reverse=True):
            if old.is_file() and old not in wanted and "__pycache__" not in old.parts:
                old.unlink()
    for file in files:
        target = dest / file.relative_to(root)
        data = file.read_bytes()
        if not target.exists() or target.read_bytes() != data:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    compileall.compile_dir(
        str(dest / "deploykit"),
        quiet=1,
        force=True,  # a file changed back keeps no .pyc of its other version
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )
    return dest


def write_wheelhouse(out: str | Path, wheels: str | Path | None = None) -> Path:
    """Write wheelhouse/: requirements.txt, constraints.txt, and the wheels of `wheels` linked in.

    Without wheels, only the two lists: `pip download -r requirements.txt -c constraints.txt
    --only-binary=:all: -d .` inside the folder fills it (docker_commands prints it).
    """
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "requirements.txt").write_text(requirements_text())
    (dest / "constraints.txt").write_text(constraints_text())
    if wheels is not None:
        source = wheel_files(Path(wheels))
        names = {w.name for w in source}
        for old in dest.glob("*.whl"):
            if old.name not in names:
                old.unlink()
        for wheel in source:
            target = dest / wheel.name
            if target.exists() and target.stat().st_size == wheel.stat().st_size:
                continue
            target.unlink(missing_ok=True)
            try:
                os.link(wheel, target)  # the same disk: no copy of 250 MB
            except OSError:
                shutil.copyfile(wheel, target)
    return dest


def dockerignore(config: DeploymentConfig) -> str:
    """Return the .dockerignore: an allow-list of what the build copies (nothing for vLLM/TGI)."""
    if config.engine != "deploykit":
        return "*\n"  # vLLM and TGI images copy nothing from the context
    return "*\n!app/\n!wheelhouse/\n"


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
        "init": True,  # tini as PID 1 forwards SIGTERM, even before the server's handler is set
        "stop_signal": "SIGTERM",
        # docker stop waits 10 s by default, then SIGKILLs: give the drain its time
        "stop_grace_period": f"{config.drain_timeout_s + 10}s",
        "healthcheck": {
            "test": ["CMD", *health],
            "interval": "30s",
            "timeout": f"{_HEALTH_TIMEOUT_S}s",
            "retries": 3,
            "start_period": f"{config.model_load_s}s",
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
    # no top-level `name:` (the project is the folder's name, or -p): Compose 1.29 rejects it
    return {"services": {config.name: service}, "volumes": volumes}


def volume_name(config: DeploymentConfig) -> str:
    """Return the Docker volume that holds the model cache, shared by Compose and `docker run`."""
    return f"{config.name}-model-cache"


def compose_yaml(config: DeploymentConfig) -> str:
    """Return the Compose file as YAML text."""
    import yaml

    return yaml.safe_dump(compose_file(config), sort_keys=False)


def write_docker_files(
    config: DeploymentConfig, out_dir: str | Path, *, wheels: str | Path | None = None
) -> dict[str, Path]:
    """Write a build context into out_dir; return each file's path (under out_dir as given).

    The folder holds the Dockerfile, its .dockerignore and compose.yaml (`context: .`); for
    deploykit's image also app/ (its code) and wheelhouse/ (requirements.txt, constraints.txt
    and, when `wheels` names a wheelhouse, its wheels, hard-linked). `docker build out_dir`
    and `docker compose -f out_dir/compose.yaml up` work from anywhere, with no network, and
    the folder can be copied elsewhere.
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
        paths["app/"] = write_app(out / "app")
        paths["wheelhouse/"] = write_wheelhouse(out / "wheelhouse", wheels)
    return paths


def folder_size(path: Path) -> tuple[int, int]:
    """Return (files, bytes) under path (a file: 1 and its size)."""
    if path.is_file():
        return 1, path.stat().st_size
    sizes = [p.stat().st_size for p in path.rglob("*") if p.is_file()]
    return len(sizes), sum(sizes)


def docker_commands(config: DeploymentConfig, out_dir: str | Path) -> list[str]:
    """Return the shell commands that build and run the files in out_dir where Docker exists.

    Paths are out_dir as given: run the commands from the folder it is relative to. For
    deploykit's image the first command fills the wheelhouse (the one step with a network).
    """
    out = Path(out_dir)
    gpus = ["--gpus", str(config.gpus)] if config.gpus else []
    run = [
        "docker",
        "run",
        "--rm",
        "--init",
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
    wheelhouse = (out / "wheelhouse").as_posix()
    fill = [
        "python3",
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        "-d",
        wheelhouse,
        "-r",
        f"{wheelhouse}/requirements.txt",
        "-c",
        f"{wheelhouse}/constraints.txt",
    ]
    first = [q(fill)] if config.engine == "deploykit" else []
    return [
        *first,
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

    For the deploykit images' Python probe: `python` becomes this Python, and $PORT the
    local server's port; 0 means healthy.
    """
    argv = exec_form(dockerfile_text, "HEALTHCHECK")
    if argv[0] not in ("python", "python3"):
        raise InvalidArgumentError(
            f"run_healthcheck runs the Python probe of deploykit images; "
            f"this one starts {argv[0]!r}."
        )
    done = subprocess.run(
        [sys.executable, *argv[1:]],
        capture_output=True,
        timeout=timeout_s,
        env={**os.environ, "NO_PROXY": "127.0.0.1", "PORT": str(port)},
    )
    return done.returncode


def host_command(cmd: Sequence[str], *, model: str = "toy-tiny") -> HostCommand:
    """Return the deploykit image's CMD as a command for `launch_server` on this machine.

    Only what cannot exist here changes, each listed: the image's `python` becomes this
    Python; the host 0.0.0.0 becomes launch_server's {host} (loopback:
    servers here bind 127.0.0.1 only); the port becomes {port} (a free one); a model that
    is not a deploykit built-in (a hub id, or a folder on the image's /models volume) becomes
    `model`; device cuda becomes cpu. Every other flag is kept as written.
    """
    from ..models import BUILTIN_MODELS

    argv = list(cmd)
    if argv[:4] != ["python", "-m", "deploykit", "serve"]:
        raise InvalidArgumentError(
            f"host_command runs deploykit images only; this CMD starts "
            f"{shlex.join(argv[:4])!r}. vLLM and TGI images need their "
            "engine and a GPU."
        )
    subs = [
        Substitution(
            "executable",
            "python",
            f"{Path(sys.executable).name} -m deploykit",
            "this machine's Python, with deploykit installed",
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
    rest = argv[4:]
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
