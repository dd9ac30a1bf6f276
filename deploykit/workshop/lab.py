"""The workshop's JupyterLab: each attendee's own copies of the notebooks, served offline.

`attendee_copies` writes every notebook into the attendee's folder with the recipe's values
injected after its parameters cell (papermill's parameterize, nothing executed) and the
`deploykit` kernel; the originals under notebooks/ are only read. A refresh replaces the
copies nobody edited and writes the new version of an edited one beside it
(`01_quickstart.new.ipynb`): a manifest holds the digest of each copy's cells (their type and
source) as written, so running a notebook, which adds outputs and metadata, is not an edit.

`start_lab` serves that folder with JupyterLab on 127.0.0.1 with a random token and the
`deploykit` kernel by default, and asks nothing of the network: no news feed, no update check
(PyPI), a read-only extension manager (no PyPI listing) and the announcements plugin off.
Its `stop()` also stops what the kernels started, even when a kernel does not exit in time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _env, runs
from ..cookbook import list_notebooks, load_recipe, resolve
from ..errors import MissingExtraError
from ..launch import Server, launch_server

__all__ = ["CopyReport", "Lab", "attendee_copies", "start_lab"]

KERNEL = "deploykit"  # the kernel `make install` registers in the virtualenv
KERNELSPEC = {"name": KERNEL, "display_name": "deploykit (.venv)", "language": "python"}
STATE_DIR = ".deploykit-workshop"  # in the attendee's folder: manifest, lab config, log
MANIFEST = "manifest.json"
LAB_ID = "DEPLOYKIT_LAB_ID"  # set in the lab's environment: its kernels and servers inherit it
INJECTED_ID = "injected-parameters"  # a fixed cell id, so that one recipe renders one file
# JupyterLab's frontend plugin that fetches news and asks PyPI for updates (via the server)
ANNOUNCEMENTS_PLUGIN = "@jupyterlab/apputils-extension:announcements"


def default_folder() -> Path:
    """Return the attendee's folder when none is given: ~/deploykit-workshop."""
    return Path.home() / "deploykit-workshop"


def workshop_recipe(name: str | None, root: Path) -> str:
    """Return the recipe to use: the one named, else "workshop", else "cpu" (no workshop.yaml)."""
    if name:
        return name
    return "workshop" if (root / "recipes" / "workshop.yaml").exists() else "cpu"


@contextlib.contextmanager
def quiet_papermill() -> Iterator[None]:
    """Silence papermill's warnings about parameter comments it cannot parse (they still work)."""
    log = logging.getLogger("papermill")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def render_notebook(path: Path, parameters: dict[str, Any]) -> bytes:
    """Return the attendee's copy of a notebook: parameters injected, the deploykit kernel."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(path))  # as papermill reads it: every cell has its tags
    if parameters:
        nb = parameterize_notebook(nb, parameters, kernel_name="python3", language="python")
    # what papermill's reading added, less its version and timings: the copy is the original
    # plus one cell, and the same recipe renders the same bytes
    nb.metadata.pop("papermill", None)
    if parameters:
        nb.metadata.papermill = nbformat.from_dict({"parameters": parameters})
    for cell in nb.cells:
        if INJECTED_ID in cell.metadata.tags:
            cell.id = INJECTED_ID  # papermill draws a random id each time
        for key in ("tags", "papermill"):
            if not cell.metadata.get(key, True):
                del cell.metadata[key]
    nb.metadata.kernelspec = nbformat.from_dict(KERNELSPEC)
    return (nbformat.writes(nb) + "\n").encode()


def _digest(data: bytes) -> str | None:
    """Return the digest of a notebook's cells (type and source); None if it is not one."""
    try:
        cells = json.loads(data)["cells"]
        text = [(c["cell_type"], "".join(c["source"])) for c in cells]
    except (ValueError, KeyError, TypeError):  # not a notebook any more: treat it as edited
        return None
    return hashlib.sha256(json.dumps(text).encode()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class CopyReport:
    """What a refresh of the attendee's folder did, notebook by notebook (file names)."""

    folder: Path
    recipe: str
    new: tuple[str, ...] = ()  # copied for the first time (or again, after a deletion)
    updated: tuple[str, ...] = ()  # unedited copies replaced by the new material
    unchanged: tuple[str, ...] = ()  # the copy is already the current material
    kept: tuple[str, ...] = ()  # edited copies, left as they are; the new version is beside

    @staticmethod
    def beside(name: str) -> str:
        """Return the name of the new version written beside an edited copy."""
        return name.removesuffix(".ipynb") + ".new.ipynb"

    def lines(self) -> list[str]:
        """Return one line per notebook that was written or kept, then a count."""
        out = [f"new: {name}" for name in self.new]
        out += [f"updated (you had not edited it): {name}" for name in self.updated]
        out += [
            f"kept your edited {name}; the new version is {self.beside(name)}" for name in self.kept
        ]
        out.append(
            f"{len(self.new) + len(self.updated) + len(self.unchanged) + len(self.kept)} "
            f"notebooks in {self.folder} (recipe {self.recipe}): {len(self.new)} new, "
            f"{len(self.updated)} updated, {len(self.kept)} kept with a new version beside, "
            f"{len(self.unchanged)} unchanged"
        )
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _read_manifest(state: Path) -> dict[str, str]:
    """Return the digest of each copy's cells as last written ({} for a new folder)."""
    path = state / MANIFEST
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text()).get("copies", {}))


def attendee_copies(
    folder: str | Path | None = None,
    recipe: str | None = None,
    *,
    root: str | Path | None = None,
) -> CopyReport:
    """Make or refresh the attendee's copies of the notebooks in folder; never lose an edit.

    A copy whose cells are as they were written (outputs do not count) is replaced by the new
    material; an edited one (or one this folder's manifest does not know) is kept, and the new
    version is written beside it as NAME.new.ipynb, which each refresh rewrites.
    """
    root = Path(root).resolve() if root else _env.find_root()
    folder = Path(folder or default_folder()).expanduser().resolve()
    name = workshop_recipe(recipe, root)
    notebooks = list_notebooks(root)
    with quiet_papermill():
        parameters = resolve(load_recipe(name, root), notebooks, notebooks)
    state = folder / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    written = _read_manifest(state)
    done: dict[str, list[str]] = {"new": [], "updated": [], "unchanged": [], "kept": []}
    for path in notebooks:
        data = render_notebook(path, parameters[path.stem])
        digest, dest = _digest(data) or "", folder / path.name  # always a notebook here
        if not dest.exists():
            outcome = "new"
        else:
            current = _digest(dest.read_bytes())
            if current == digest:
                outcome = "unchanged"  # outputs and all: a run is not an edit
            elif current is not None and current == written.get(path.name):
                outcome = "updated"
            else:
                outcome = "kept"
        done[outcome].append(path.name)
        if outcome == "kept":
            _write_atomic(folder / CopyReport.beside(path.name), data)
            continue
        if outcome != "unchanged":
            _write_atomic(dest, data)
        written[path.name] = digest
    manifest = {"recipe": name, "root": str(root), "copies": written}
    _write_atomic(
        state / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    )
    return CopyReport(folder, name, **{key: tuple(value) for key, value in done.items()})


def _require_kernel() -> None:
    """Raise, saying how to register it, when this environment has no deploykit kernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        raise MissingExtraError(
            f"no {KERNEL!r} Jupyter kernel. Run `make install`, or register it: "
            f"{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL} "
            '--display-name "deploykit (.venv)"'
        )


def lab_arguments(folder: Path, state: Path) -> list[str]:
    """Return JupyterLab's options: loopback, the folder, the deploykit kernel, offline."""
    root_flag = ["--allow-root"] if os.geteuid() == 0 else []  # containers often run as root
    return [
        "--no-browser",  # ServerApp.open_browser=False: the command prints the URL
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # this port or fail, never a neighbour
        f"--ServerApp.root_dir={folder}",
        f"--MultiKernelManager.default_kernel_name={KERNEL}",
        # offline: the news feed, the update check (PyPI) and the PyPI extension manager are
        # the lab server's only requests to the network
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        # the attendee's lab settings and workspaces stay in the workshop folder
        f"--LabApp.user_settings_dir={state / 'user-settings'}",
        f"--LabApp.workspaces_dir={state / 'workspaces'}",
        *root_flag,
    ]


def _write_lab_config(state: Path) -> Path:
    """Write the workshop's Jupyter config folder (page config: plugins off); return it."""
    config = state / "config"
    (config / "labconfig").mkdir(parents=True, exist_ok=True)
    page_config = {"disabledExtensions": {ANNOUNCEMENTS_PLUGIN: True}}
    (config / "labconfig" / "page_config.json").write_text(json.dumps(page_config, indent=1))
    return config


def _started_by(lab_id: str) -> list[Any]:
    """Return the live processes that inherited the lab's id: kernels and their servers.

    An environment variable rather than the process tree: a server whose kernel was killed
    has been handed to init, but still carries the id.
    """
    return runs.marked_processes(LAB_ID, lab_id)


@dataclass
class Lab:
    """A running workshop JupyterLab; `url` carries the token. Stop it with stop()."""

    server: Server
    token: str
    folder: Path
    copies: CopyReport
    lab_id: str
    _stopped: bool = field(default=False, repr=False)

    @property
    def base_url(self) -> str:
        """Return http://127.0.0.1:PORT, without the token."""
        return self.server.url

    @property
    def url(self) -> str:
        """Return the URL to open: JupyterLab with the token."""
        return f"{self.server.url}/lab?token={self.token}"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    def is_running(self) -> bool:
        """Return True while JupyterLab runs."""
        return self.server.is_running()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for JupyterLab to exit; return its exit code, or None on timeout."""
        return self.server.wait(timeout_s)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop JupyterLab, its kernels and every process they started.

        JupyterLab gets SIGTERM and shuts its kernels down (each kernel stops the servers it
        started as it exits). Whatever is still alive then, a stuck kernel or a server whose
        kernel was killed, is found by the lab's id in its environment and stopped with its
        process group: SIGTERM, then SIGKILL after 5 s.
        """
        if self._stopped:
            return
        self.server.stop(timeout_s=timeout_s)
        _stop_processes(_started_by(self.lab_id), grace_s=5.0)
        self._stopped = True

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _stop_processes(procs: list[Any], grace_s: float) -> None:
    """SIGTERM each process's group (a server's workers too), then SIGKILL what is left."""
    import psutil

    groups = set()
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            groups.add(os.getpgid(proc.pid))
    groups.discard(os.getpgid(0))  # never our own group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not any(_alive(proc) for proc in procs):
            return
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        deadline = time.monotonic() + grace_s
        while any(_alive(proc) for proc in procs) and time.monotonic() < deadline:
            time.sleep(0.05)


def _alive(proc: Any) -> bool:
    """Return True while proc runs (a zombie counts as exited)."""
    import psutil

    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def start_lab(
    folder: str | Path | None = None,
    *,
    port: int = 0,
    recipe: str | None = None,
    root: str | Path | None = None,
    token: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> Lab:
    """Refresh the attendee's copies in folder, then serve it with JupyterLab on 127.0.0.1.

    port=0 picks a free port; the token is random unless given. The lab's kernels run with
    DEPLOYKIT_ROOT set to this checkout, so they find the vLLM environment as the cookbook
    runner's do. `env` adds to the lab's environment (the kernels inherit it).
    """
    root = Path(root).resolve() if root else _env.find_root()
    copies = attendee_copies(folder, recipe, root=root)
    _require_kernel()
    state = copies.folder / STATE_DIR
    config = _write_lab_config(state)
    token = token or secrets.token_hex(24)
    lab_id = secrets.token_hex(8)
    extra = dict(env or {})
    inherited = extra.get("JUPYTER_CONFIG_PATH") or os.environ.get("JUPYTER_CONFIG_PATH")
    config_path = [str(config)] + ([inherited] if inherited else [])
    lab_env = {
        **extra,
        # the token in the environment, not in argv, where `ps` shows it to every user
        "JUPYTER_TOKEN": token,
        "JUPYTER_CONFIG_PATH": os.pathsep.join(config_path),
        "DEPLOYKIT_ROOT": str(root),
        LAB_ID: lab_id,
    }
    server = launch_server(
        [sys.executable, "-m", "jupyterlab", *lab_arguments(copies.folder, state)],
        port=port,
        health_path="/api",  # answers 200 without the token once the server is up
        timeout_s=timeout_s,
        env=lab_env,
        cwd=copies.folder,
        name="workshop-lab",
        log_path=state / "lab.log",
    )
    return Lab(server, token, copies.folder, copies, lab_id)
