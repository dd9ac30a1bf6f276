"""`deploykit workshop prepare`: what takes time or the network, done before the workshop.

It reads what each notebook of the recipe needs from the notebook itself (its parameters on
the recipe, and the `dk.` calls of its code cells): built-in models and hub models, the vLLM
environment, llama.cpp's GGUF converter, Prometheus, nginx, and the Docker images notebook 14
builds on. It builds or fetches what is missing (each heavy step can be skipped), checks the
port range and the free disk, and prints a checklist: each notebook, what it still lacks,
and whether it runs without the network.

It does not run the notebooks: `deploykit cookbook run --recipe workshop` does.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _env
from ..cookbook import list_notebooks, load_recipe, notebook_parameters, resolve
from ..errors import DeployKitError, MissingExtraError, VLLMEnvError
from .lab import default_folder, quiet_papermill, workshop_recipe

__all__ = ["Checklist", "NotebookCheck", "prepare_workshop"]

# the parameters that name a model a notebook loads or serves (others only write its name
# into a file or a command, such as 04's model_id or 16's vllm_model)
MODEL_PARAMETERS = ("model", "chat_model", "convert_model", "run_model")
VLLM_CALLS = {"start_vllm", "offline_generate", "ensure_vllm_env"}
DOCKER_CALLS = {"docker_engine", "build_image"}
PROGRAM_CALLS = {
    "start_prometheus": "prometheus",
    "check_rules": "promtool",
    "test_rules": "promtool",
    "start_nginx": "nginx",
    "check_nginx_config": "nginx",
}
MIN_FREE_GIB = 5.0  # below this on the cache's or the folder's disk, the checklist warns


@dataclass(frozen=True)
class Lack:
    """Something a notebook needs that is not here yet."""

    what: str
    fix: str
    network: bool  # whether getting it needs the network


@dataclass(frozen=True)
class Needs:
    """What one notebook needs on its recipe, read from its parameters and its calls."""

    notebook: str
    models: tuple[str, ...] = ()  # built-in names
    hub_models: tuple[str, ...] = ()  # Hugging Face hub ids
    vllm: bool = False
    gguf_converter: bool = False
    programs: tuple[str, ...] = ()  # Debian programs: prometheus, promtool, nginx
    docker: bool = False


@dataclass(frozen=True)
class NotebookCheck:
    """One checklist row: a notebook and what it still lacks."""

    notebook: str
    lacks: tuple[Lack, ...]

    @property
    def ok(self) -> bool:
        """Return True when the notebook finds everything it needs."""
        return not self.lacks

    @property
    def offline(self) -> bool:
        """Return True when it runs without the network (what it lacks, it makes itself)."""
        return not any(lack.network for lack in self.lacks)


@dataclass
class Checklist:
    """What `prepare_workshop` did and found; str() is the printed checklist."""

    recipe: str
    notebooks: list[NotebookCheck]
    steps: dict[str, str] = field(default_factory=dict)  # step: what happened
    ports: str = ""
    ports_ok: bool = True
    disk: list[str] = field(default_factory=list)
    disk_ok: bool = True

    @property
    def ok(self) -> bool:
        """Return True when every notebook finds what it needs, ports and disk included."""
        return all(row.ok for row in self.notebooks) and self.ports_ok and self.disk_ok

    def __str__(self) -> str:
        width = max(len(row.notebook) for row in self.notebooks) if self.notebooks else 8
        lines = [f"Workshop checklist (recipe {self.recipe})"]
        lines += [f"  {step}: {outcome}" for step, outcome in self.steps.items()]
        lines.append(f"  {'notebook':{width}}  {'status':7}  {'offline':7}  what it lacks")
        for row in self.notebooks:
            lacks = "; ".join(f"{lack.what} (fix: {lack.fix})" for lack in row.lacks)
            status = "ok" if row.ok else "lacks"
            offline = "yes" if row.offline else "no"
            lines.append(f"  {row.notebook:{width}}  {status:7}  {offline:7}  {lacks}".rstrip())
        lines.append(f"  ports: {self.ports}")
        lines += [f"  disk: {line}" for line in self.disk]
        ready = sum(row.ok for row in self.notebooks)
        unplugged = sum(row.offline for row in self.notebooks)
        lines.append(
            f"{ready} of {len(self.notebooks)} notebooks ready, {unplugged} run without the network"
            + ("" if self.ports_ok and self.disk_ok else "; see ports and disk above")
        )
        return "\n".join(lines)


def _calls(path: Path) -> set[str]:
    """Return the names the notebook's code cells use on `dk.`."""
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return set(re.findall(r"\bdk\.([A-Za-z_]\w*)", code))


def _values(path: Path, recipe_values: dict[str, Any]) -> dict[str, Any]:
    """Return every parameter's value on the recipe: the notebook's default, then the recipe's."""
    values: dict[str, Any] = {}
    for name, spec in notebook_parameters(path).items():
        try:
            values[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):  # the parameters cell holds literals only
            values[name] = spec["default"]
    values.update(recipe_values)
    return values


def notebook_needs(path: Path, recipe_values: dict[str, Any]) -> Needs:
    """Return what one notebook needs when it runs with recipe_values."""
    from ..models.catalog import BUILTIN_MODELS

    calls, values = _calls(path), _values(path, recipe_values)
    named = [v for v in values.values() for v in (v if isinstance(v, list) else [v])]
    models = sorted({v for v in named if isinstance(v, str) and v in BUILTIN_MODELS})
    hub = sorted(
        {
            values[p]
            for p in MODEL_PARAMETERS
            if isinstance(values.get(p), str)
            and values[p] not in BUILTIN_MODELS
            and values[p].count("/") == 1
            and not values[p].startswith((".", "/", "~"))
            and not Path(values[p]).expanduser().exists()
        }
    )
    if isinstance(values.get("servers"), list):  # the benchmark: vLLM when it is on the list
        vllm = "vllm" in values["servers"]
    elif "use_vllm" in values:
        vllm = bool(values["use_vllm"])
    else:
        vllm = bool(calls & VLLM_CALLS)
    converts = any(kind != "shipped" for kind in values.get("gguf_types", []))
    gguf = "export_gguf" in calls or ("measure_quantization" in calls and converts)
    programs = sorted({program for call, program in PROGRAM_CALLS.items() if call in calls})
    return Needs(
        path.stem,
        models=tuple(models),
        hub_models=tuple(hub),
        vllm=vllm,
        gguf_converter=gguf,
        programs=tuple(programs),
        docker=bool(calls & DOCKER_CALLS),
    )


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _hub_cached(repo_id: str) -> bool:
    """Return True when the hub model's config and weights are in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, name), str)

    return cached("config.json") and any(cached(name) for name in WEIGHT_FILES)


def _program_lack(program: str) -> Lack | None:
    from ..monitor.rules import prometheus_path
    from ..router.nginx import nginx_path

    try:
        nginx_path() if program == "nginx" else prometheus_path(program)
    except MissingExtraError as exc:
        return Lack(f"no {program}", str(exc).split(" is not installed. ", 1)[-1], network=True)
    return None


class _Lookup:
    """The checks each notebook's needs are answered from, each asked once."""

    def __init__(self) -> None:
        self._memo: dict[tuple[Callable[..., Lack | None], str], Lack | None] = {}

    def _once(self, check: Callable[..., Lack | None], *args: str) -> Lack | None:
        key = (check, "/".join(args))
        if key not in self._memo:
            self._memo[key] = check(*args)
        return self._memo[key]

    def lacks(self, needs: Needs) -> tuple[Lack, ...]:
        found = [self._once(_model_lack, model) for model in needs.models]
        found += [self._once(_hub_lack, repo_id) for repo_id in needs.hub_models]
        found += [self._once(_program_lack, program) for program in needs.programs]
        for needed, check in (
            (needs.vllm, _vllm_lack),
            (needs.gguf_converter, _converter_lack),
            (needs.docker, _docker_lack),
        ):
            if needed:
                found.append(self._once(check))
        return tuple(lack for lack in found if lack is not None)


def _model_lack(name: str) -> Lack | None:
    from ..models.resolve import is_built
    from ..models.toy import TOY_MODELS

    if is_built(name):
        return None
    trained = name in TOY_MODELS  # trained here from the installed stdlib: no network
    return Lack(
        f"{name} not built",
        "deploykit workshop prepare" + (" (or it trains at first use)" if trained else ""),
        network=not trained,
    )


def _hub_lack(repo_id: str) -> Lack | None:
    if _hub_cached(repo_id):
        return None
    return Lack(
        f"{repo_id} not in the Hugging Face cache",
        "HF_HUB_OFFLINE=0 deploykit workshop prepare (gated models: `hf auth login` first)",
        network=True,
    )


def _vllm_lack() -> Lack | None:
    from ..engines.vllm_env import find_vllm_env

    try:
        find_vllm_env()
    except VLLMEnvError:
        return Lack("no vLLM environment", "deploykit workshop prepare (or make vllm-env)", True)
    return None


def _converter_lack() -> Lack | None:
    from ..models.gguf import converter_ready

    if converter_ready():
        return None
    return Lack("no llama.cpp GGUF converter", "deploykit workshop prepare", network=True)


def _docker_lack() -> Lack | None:
    from ..deploy.image import offline_missing

    missing = offline_missing()
    if not missing:
        return None
    return Lack(
        "Docker: " + ", ".join(missing),
        "deploykit workshop prepare as root (or make docker-images)",
        network=True,
    )


def check_ports() -> tuple[str, bool]:
    """Return a line about the DEPLOYKIT_PORTS range (how many ports are free), and whether all are."""
    allotted = _env.port_range()
    if allotted is None:
        return "DEPLOYKIT_PORTS is not set: servers take any free port", True
    lo, hi = allotted
    busy = [port for port in range(lo, hi + 1) if not _port_free(port)]
    total = hi - lo + 1
    line = f"DEPLOYKIT_PORTS {lo}-{hi}: {total - len(busy)} of {total} free"
    if busy:
        shown = ", ".join(map(str, busy[:10])) + (" ..." if len(busy) > 10 else "")
        line += f"; in use: {shown} (`deploykit ps` lists deploykit's servers)"
    return line, not busy


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_disk(folders: list[Path], min_free_gib: float) -> tuple[list[str], bool]:
    """Return a line per disk holding folders (its free GiB), and whether each has enough."""
    by_disk: dict[int, list[Path]] = {}
    for folder in folders:
        existing = next(p for p in [folder, *folder.parents] if p.exists())
        by_disk.setdefault(existing.stat().st_dev, []).append(folder)
    lines, ok = [], True
    for held in by_disk.values():
        existing = next(p for p in [held[0], *held[0].parents] if p.exists())
        free_gib = shutil.disk_usage(existing).free / 2**30
        low = free_gib < min_free_gib
        ok &= not low
        lines.append(
            f"{free_gib:.1f} GiB free for {', '.join(map(str, held))}"
            + (f" (below {min_free_gib:g} GiB: free some space)" if low else "")
        )
    return lines, ok


def _step(steps: dict[str, str], name: str, run: Callable[..., object], *args: str) -> None:
    """Run one heavy step; record its time, or its error (the others still run)."""
    started = time.monotonic()
    try:
        run(*args)
    except DeployKitError as exc:
        steps[name] = f"failed: {str(exc).splitlines()[0]}"
        return
    steps[name] = f"done in {time.monotonic() - started:.1f} s"


def prepare_workshop(
    recipe: str | None = None,
    *,
    folder: str | Path | None = None,
    root: str | Path | None = None,
    models: bool = True,
    vllm: bool = True,
    docker: bool = True,
    hub_proxy: bool = False,
    min_free_gib: float = MIN_FREE_GIB,
) -> Checklist:
    """Build and fetch what the recipe's notebooks need, then check everything; return the list.

    models=False skips building models and fetching the GGUF converter and hub models,
    vllm=False the vLLM environment, docker=False the Docker images: the checklist then
    reports what is missing without making it. hub_proxy=True also installs JupyterHub's proxy
    (configurable-http-proxy, from npm) for `deploykit workshop hub`.
    """
    root = Path(root).resolve() if root else _env.find_root()
    name = workshop_recipe(recipe, root)
    notebooks = list_notebooks(root)
    with quiet_papermill():
        values = resolve(load_recipe(name, root), notebooks, notebooks)
        needs = [notebook_needs(path, values[path.stem]) for path in notebooks]
    steps: dict[str, str] = {}
    builtins = sorted({m for n in needs for m in n.models})
    hub = sorted({m for n in needs for m in n.hub_models})
    if models:
        from ..models.gguf import converter_path, converter_ready
        from ..models.resolve import is_built, resolve_model

        for model in builtins:
            if is_built(model):
                steps[f"model {model}"] = "already built"
            else:
                _step(steps, f"model {model}", resolve_model, model)
        if any(n.gguf_converter for n in needs):
            if converter_ready():
                steps["GGUF converter"] = "already fetched"
            else:
                _step(steps, "GGUF converter", converter_path)
        for repo_id in hub:
            if _hub_cached(repo_id):
                steps[f"hub model {repo_id}"] = "already in the Hugging Face cache"
            elif _env.hub_offline():
                steps[f"hub model {repo_id}"] = "skipped: HF_HUB_OFFLINE=1 (set it to 0 to fetch)"
            else:
                _step(steps, f"hub model {repo_id}", _download, repo_id)
    if vllm and any(n.vllm for n in needs):
        from ..engines.vllm_env import ensure_vllm_env

        _step(steps, "vLLM environment", ensure_vllm_env)
    if docker and any(n.docker for n in needs):
        from ..deploy.image import prepare

        _step(steps, "Docker images", prepare)
    if hub_proxy:
        from ._proxy import proxy_command

        _step(steps, "JupyterHub's proxy (npm)", proxy_command)
    lookup = _Lookup()
    rows = [NotebookCheck(n.notebook, lookup.lacks(n)) for n in needs]
    ports, ports_ok = check_ports()
    folder = Path(folder or default_folder()).expanduser()
    disk, disk_ok = check_disk([folder, _env.cache_dir(), root], min_free_gib)
    return Checklist(name, rows, steps, ports, ports_ok, disk, disk_ok)


def _download(repo_id: str) -> None:
    """Fetch a hub model into the Hugging Face cache (vLLM and transformers read it there)."""
    from huggingface_hub import snapshot_download

    from ..errors import ModelBuildError

    try:
        snapshot_download(repo_id)
    except Exception as exc:  # gated, missing, or no network: the checklist says which
        raise ModelBuildError(
            f"could not download {repo_id} ({type(exc).__name__}: {exc}); for a gated model "
            "run `hf auth login` first"
        ) from exc
