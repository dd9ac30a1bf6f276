"""The wheelhouse an image is built from: the server's packages, downloaded once on the host.

An air-gapped build installs Python packages from files, not from an index. `wheelhouse()`
downloads, with this machine's pip and its configuration, the wheels of what `deploykit serve`
imports (SERVER_REQUIREMENTS) at the versions this environment runs (every installed
distribution pinned as a constraint), into deploykit's cache. The image's `pip install
--no-index --find-links` then needs no network, and the image runs the versions the tests ran.
Only the first call downloads (PyPI); later calls find the folder complete and return at once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import subprocess
import sys
import time
from pathlib import Path

from .. import _env
from ..errors import DockerError

# What `deploykit serve` imports (measured inside the image), nothing else: no jupyterlab,
# papermill, matplotlib, pandas, xllamacpp, bitsandbytes, boto3 or openai. transformers
# imports accelerate, sentencepiece and protobuf when they are installed; gguf reads GGUF files.
SERVER_REQUIREMENTS = (
    "torch",
    "transformers",
    "safetensors",
    "tokenizers",
    "sentencepiece",
    "protobuf",
    "accelerate",
    "gguf",
    "numpy",
    "pyyaml",
    "tqdm",
    "jinja2",
    "psutil",
    "httpx",
    "pydantic",
    "fastapi",
    "uvicorn[standard]",
    "prometheus_client",
    "nvidia-ml-py",
    "tenacity",
)
PYTHON = "3.11"  # the image's Python: Debian bookworm's, and python:3.11-slim's


def requirements_text() -> str:
    """Return requirements.txt: the server's packages, one per line."""
    return "# what `deploykit serve` imports; versions come from constraints.txt\n" + "".join(
        f"{name}\n" for name in SERVER_REQUIREMENTS
    )


def constraints_text() -> str:
    """Return constraints.txt: every distribution of this environment, pinned (but deploykit)."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() == "deploykit":
            continue
        pins[re.sub(r"[-_.]+", "-", name).lower()] = dist.version
    lines = [f"{name}=={version}\n" for name, version in sorted(pins.items())]
    return "# this environment's versions: the image runs what the tests ran\n" + "".join(lines)


def _check_python() -> None:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != PYTHON:
        raise DockerError(
            f"the image's Python is {PYTHON} (Debian bookworm, python:{PYTHON}-slim), and the "
            f"wheelhouse holds wheels for the Python that downloads them; this one is {here}. "
            f"Run deploykit from a Python {PYTHON} environment to build the image."
        )


def _folder(req: str, cons: str) -> Path:
    key = hashlib.sha256((req + cons).encode()).hexdigest()[:12]
    return _env.cache_dir() / "docker" / f"wheelhouse-{key}"


def wheelhouse_ready() -> bool:
    """Return True when the wheelhouse for this environment is complete (no download needed)."""
    return (_folder(requirements_text(), constraints_text()) / ".complete").exists()


def wheelhouse(*, quiet: bool = False) -> Path:
    """Return the folder of wheels the server image installs; download them on first use.

    The folder's name hashes the requirements and constraints, so a changed environment gets
    a new, complete folder. The download uses `python -m pip download --only-binary=:all:`
    with pip's own configuration (indexes, find-links): the only step that needs a network.
    """
    _check_python()
    req, cons = requirements_text(), constraints_text()
    folder = _folder(req, cons)
    stamp = folder / ".complete"
    if stamp.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text(req)
    (folder / "constraints.txt").write_text(cons)
    base = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check"]
    args = ["--only-binary=:all:", "-d", str(folder), "-r", str(folder / "requirements.txt")]
    args += ["-c", str(folder / "constraints.txt")]
    # complete from an earlier, interrupted run? checked offline first (seconds)
    offline = subprocess.run(
        [*base, "--quiet", "--no-index", "--find-links", str(folder), *args],
        capture_output=True,
        text=True,
    )
    if offline.returncode != 0:
        if not quiet:
            print(f"downloading the server's wheels into {folder.name} (once; about 250 MB)")
        started = time.monotonic()
        done = subprocess.run([*base, "--quiet", *args], capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            raise DockerError(
                f"pip could not download the server image's wheels into {folder}:\n{tail}\n"
                "The first build needs the package index that pip is configured with (PyPI, "
                "or PIP_INDEX_URL / PIP_EXTRA_INDEX_URL for a CPU or CUDA build of torch); "
                "later builds reuse the folder and need no network."
            )
        if not quiet:
            size = sum(p.stat().st_size for p in folder.glob("*.whl"))
            print(f"wheelhouse: {size / 1e6:,.0f} MB in {time.monotonic() - started:.0f} s")
    stamp.touch()
    return folder


def wheel_files(folder: Path) -> list[Path]:
    """Return the wheels in a wheelhouse folder, sorted."""
    return sorted(folder.glob("*.whl"))
