"""What an executed notebook hands a user: files written for deployment, commands it prints.

Both must be usable as they are: no temporary or machine path, and (in files) no ephemeral
port that only existed during the run. A log's location printed for information is fine;
papermill's run metadata is not content.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

DEPLOY_DIR = "deploy"  # each notebook writes its deployment files under deploy/<notebook>/
# words a command a user would copy starts with
COMMANDS = (
    "docker",
    "docker-compose",
    "kubectl",
    "deploykit",
    "ollama",
    "curl",
    "helm",
    "python",
    "prometheus",
    "promtool",
    "nginx",
    "vllm",
    "text-generation-launcher",
)
_TEMP = re.compile(r"/tmp/|pytest-of-|/var/folders/|" + re.escape(tempfile.gettempdir() + "/"))
# Linux's ephemeral range (net.ipv4.ip_local_port_range): free_port() hands these out. Fixed
# defaults of tools that fall in it are not ephemeral: Ray's dashboard agent listens on 52365
# on every node, and KubeRay's probes call it there (deploy/kuberay.py's AGENT_PORT).
_FIXED_PORTS = ("52365",)
_EPHEMERAL_PORT = re.compile(
    r"(?<![\d.])(?:127\.0\.0\.1|localhost|0\.0\.0\.0)?:"
    r"(?!(?:" + "|".join(_FIXED_PORTS) + r")\b)(3[2-9]\d{3}|[45]\d{4}|60\d{3})\b"
)


def temporary_paths(text: str) -> list[str]:
    """Return the lines of text that name a temporary or test-run path."""
    return [line.strip() for line in text.splitlines() if _TEMP.search(line)]


def ephemeral_ports(text: str) -> list[str]:
    """Return the lines of text that name a port from the ephemeral range."""
    return [line.strip() for line in text.splitlines() if _EPHEMERAL_PORT.search(line)]


def printed_commands(notebook: dict) -> list[str]:
    """Return the lines of an executed notebook's text outputs that are shell commands."""
    lines = []
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            text = "".join(text) if isinstance(text, list) else text
            for line in text.splitlines():
                words = line.strip().lstrip("$ ").split()
                if words and words[0].split("/")[-1] in COMMANDS:
                    lines.append(line.strip())
    return lines


def deployment_problems(run_dir: Path, executed: Path) -> list[str]:
    """Return what a user could not take away from a notebook's run as it is."""
    problems = []
    deploy = run_dir / DEPLOY_DIR
    files = sorted(p for p in deploy.rglob("*") if p.is_file()) if deploy.exists() else []
    for path in files:
        if {"app", "wheelhouse"} & set(path.relative_to(deploy).parts[1:-1]):
            continue  # an image's build context: deploykit's code and the wheels, copied as is
        text = path.read_text(errors="replace")
        name = path.relative_to(run_dir)
        problems += [f"{name}: temporary path: {line}" for line in temporary_paths(text)]
        problems += [f"{name}: ephemeral port: {line}" for line in ephemeral_ports(text)]
    notebook = json.loads(executed.read_text())
    for line in printed_commands(notebook):
        if temporary_paths(line):
            problems.append(f"printed command holds a temporary path: {line}")
    return problems
