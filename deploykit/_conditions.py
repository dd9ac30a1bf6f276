"""The machine and software facts that go with every measured figure, collected in one place.

Benchmarks, the quantization measurement, the batching runs and `deploykit bench --url`
all report them, so a reader can judge a figure (and a busy machine shows in the load).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess


def _cpuinfo(field: str) -> str | None:
    """Return the first value of field in /proc/cpuinfo (None where there is none)."""
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith(field))
    return None


def cpu_name() -> str:
    """Return the CPU's model name (from /proc/cpuinfo where there is one)."""
    return _cpuinfo("model name") or platform.processor() or "unknown"


# the vector extensions that decide which dtypes a CPU computes natively
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16")


def cpu_features() -> str:
    """Return the CPU's vector extensions that matter for dtypes, and torch's kernel level.

    e.g. "avx2, avx512f, avx512_bf16 (not avx512_fp16, amx_bf16); torch CPU capability AVX512".
    """
    flags = set((_cpuinfo("flags") or "").split())
    have = [f for f in _CPU_FLAGS if f in flags]
    lack = [f for f in _CPU_FLAGS if f not in flags]
    text = ", ".join(have) or "no AVX2"
    if lack:
        text += f" (not {', '.join(lack)})"
    with contextlib.suppress(ImportError, AttributeError):
        import torch

        text += f"; torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    return text


def load_average() -> tuple[float, ...]:
    """Return the 1, 5 and 15-minute load averages (empty where the OS has none)."""
    return os.getloadavg() if hasattr(os, "getloadavg") else ()


def gpu_names() -> list[str]:
    """Return the names of the NVIDIA GPUs nvidia-smi lists (none without the driver)."""
    if not shutil.which("nvidia-smi"):
        return []
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def package_versions(*packages: str) -> dict[str, str]:
    """Return the installed version of each package that is installed."""
    versions = {}
    for package in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def machine_conditions() -> dict[str, str]:
    """Return the CPU, the Python, torch and transformers versions, the load and the time."""
    import torch
    import transformers

    return {
        "cpu": f"{cpu_name()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average": " / ".join(f"{x:.2f}" for x in load_average()),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }
