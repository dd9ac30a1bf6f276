"""Several attendees on one host: JupyterHub, one single-user JupyterLab per attendee.

`start_hub(["alice", "bob"], root=DIR)` (or `deploykit workshop hub --attendees alice,bob`)
starts JupyterHub and its proxy on loopback ports. Each attendee logs in with their own
generated password and gets a JupyterLab on the deploykit kernel, in their own folder DIR/NAME
with copies of the notebooks, and an environment that keeps their servers apart from the
others': a port range (DEPLOYKIT_PORTS), their name as owner (DEPLOYKIT_OWNER), the shared run
folder, and on a GPU recipe their share of GPU memory (DEPLOYKIT_GPU_SHARE). Their browser
reaches a server their notebook started at /user/NAME/proxy/PORT/, for ports in their range.

What this does not do: keep attendees' code apart. Every single-user server runs as the Unix
user who started the hub, so code in one attendee's notebook can read the others' files and
reach their ports over loopback (docs/workshop-hub.md says what each part does isolate).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from .. import _env, runs
from ..cookbook import Recipe, load_recipe
from ..errors import InvalidArgumentError, UnknownModelError
from ..launch import Server, free_port, launch_server
from ..plan import attendees_that_fit
from ._proxy import proxy_command
from .lab import (
    STATE_DIR,
    _require_kernel,
    _write_lab_config,
    attendee_copies,
    lab_arguments,
    workshop_recipe,
)

__all__ = ["Attendee", "Hub", "add_hub_cli", "start_hub"]

PORT_BASE = 20000  # attendee i gets PORT_BASE + i * ports_each ...; below Linux's ephemeral ports
PORTS_EACH = 100
GPU_MEMORY_UTILIZATION = 0.9  # what the attendees' vLLM servers claim together
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_MARK = "DEPLOYKIT_HUB_ID"  # set in every process the hub starts, so stop() finds them all


@dataclass(frozen=True)
class Attendee:
    """One attendee: login, folder, ports, and the environment of their server and kernels."""

    name: str
    password: str
    home: Path
    ports: tuple[int, int]  # low, high (inclusive)
    environment: dict[str, str]


class Hub:
    """A running JupyterHub with its attendees; stop() leaves nothing of it running."""

    def __init__(
        self, server: Server, attendees: dict[str, Attendee], hub_id: str, state_dir: Path
    ) -> None:
        self.server = server
        self.attendees = attendees
        self.hub_id = hub_id
        self.state_dir = state_dir

    @property
    def url(self) -> str:
        """Return the hub's address (its proxy's), e.g. http://127.0.0.1:8000."""
        return self.server.url

    def user_url(self, name: str) -> str:
        """Return the URL of an attendee's JupyterLab (/user/NAME/)."""
        return f"{self.url}/user/{name}/"

    def processes(self) -> list[psutil.Process]:
        """Return the live processes this hub started: proxy, servers, kernels, their servers."""
        return runs.marked_processes(_MARK, self.hub_id)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the hub, its proxy, the single-user servers and all they started."""
        # the hub stops the proxy and the single-user servers, whose kernels stop their servers
        self.server.stop(timeout_s)
        # each runs in its own session, so what outlived that is found by the hub's mark
        left = self.processes()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            groups = set()
            for proc in left:
                with contextlib.suppress(OSError):
                    groups.add(os.getpgid(proc.pid))
            for pgid in groups - {os.getpgrp()}:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            for proc in left:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
            _, left = psutil.wait_procs(left, timeout=5.0)
            if not left:
                return

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Hub {self.url} attendees={list(self.attendees)} state='{self.state_dir}'>"


def start_hub(
    attendees: list[str],
    *,
    root: str | os.PathLike[str],
    port: int = 0,
    recipe: str | None = None,
    gpu_share: float | None = None,
    port_base: int = PORT_BASE,
    ports_each: int = PORTS_EACH,
    timeout_s: float = 120.0,
) -> Hub:
    """Start JupyterHub on 127.0.0.1 for these attendees, their folders under root.

    port=0 picks a free port; recipe: default workshop, else cpu. On a GPU recipe (device
    cuda) each attendee's vLLM may claim gpu_share of the GPU's memory (default: 0.9 split
    evenly, checked with the planner when it knows the recipe's model). Passwords are
    generated once and kept in root/.hub.
    """
    names = _check_names(attendees)
    if ports_each < 1 or not 1024 <= port_base <= 65535 - len(names) * ports_each:
        raise InvalidArgumentError(
            f"port_base={port_base}, ports_each={ports_each}: every attendee's range must lie "
            "in 1024-65535; use e.g. port_base=20000, ports_each=100."
        )
    cookbook = _env.find_root()
    _require_kernel()
    recipe = workshop_recipe(recipe, cookbook)
    chosen = load_recipe(recipe, cookbook)
    share = _gpu_share(chosen, len(names), gpu_share, _gpu_memory_gib())
    root = Path(root).resolve()
    state = root / ".hub"
    state.mkdir(parents=True, exist_ok=True)
    passwords = _passwords(state / "passwords.json", names)
    hub_id = uuid.uuid4().hex
    common = {
        **_env.workshop_settings(),
        "DEPLOYKIT_ROOT": str(cookbook),
        "DEPLOYKIT_RUN_DIR": str(_env.run_dir()),  # one run folder: `deploykit ps` sees all
        # HOME is the attendee's folder; built models, the hub cache and vLLM's stay shared
        "XDG_CACHE_HOME": str(_env.user_cache_dir()),
        "DEPLOYKIT_CACHE": str(_env.cache_dir()),
        _MARK: hub_id,
    }
    if share is not None:
        common["DEPLOYKIT_GPU_SHARE"] = f"{share:g}"
    people = {}
    for i, name in enumerate(names):
        low = port_base + i * ports_each
        home = root / name
        # the notebooks with the recipe's values; a restart keeps edited copies (lab.py)
        attendee_copies(home, recipe, root=cookbook)
        environment = {
            **common,
            # the lab's page config: the announcements plugin (news, update checks) off
            "JUPYTER_CONFIG_PATH": str(_write_lab_config(home / STATE_DIR)),
            "DEPLOYKIT_PORTS": f"{low}-{low + ports_each - 1}",
            "DEPLOYKIT_OWNER": name,
        }
        people[name] = Attendee(
            name, passwords[name], home, (low, low + ports_each - 1), environment
        )
    port = port or free_port()
    settings = {
        "state_dir": str(state),
        "port": port,
        "hub_port": free_port(),
        "proxy_api_port": free_port(),
        "proxy_command": proxy_command(),
        "passwords": passwords,
        "home_template": str(root / "{username}"),
        "environment": {name: a.environment for name, a in people.items()},
        "singleuser_config": str(state / "singleuser_config.py"),
        "singleuser_args": {name: _singleuser_arguments(a.home) for name, a in people.items()},
        "spawn_timeout_s": int(timeout_s),
    }
    settings_path = state / "hub.json"
    settings_path.touch(mode=0o600)
    settings_path.write_text(json.dumps(settings, indent=1))
    (state / "jupyterhub_config.py").write_text(
        "# written by deploykit.workshop.hub.start_hub at each start\n"
        "import json, pathlib\n"
        "from deploykit.workshop._jupyterhub import configure\n"
        "configure(c, json.loads(pathlib.Path(__file__).with_name('hub.json').read_text()))\n"
    )
    (state / "singleuser_config.py").write_text(
        "# written by deploykit.workshop.hub.start_hub at each start\n"
        "from deploykit.workshop._singleuser import configure\n"
        "configure(c)\n"
    )
    (state / "jupyterhub.sqlite").unlink(missing_ok=True)  # users come from the config
    server = launch_server(
        [sys.executable, "-m", "jupyterhub", "-f", str(state / "jupyterhub_config.py")],
        port=port,
        health_path="/hub/health",
        timeout_s=timeout_s,
        env={_MARK: hub_id},
        cwd=state,
        name="jupyterhub",
        log_path=state / "hub.log",
    )
    return Hub(server, people, hub_id, state)


def _singleuser_arguments(home: Path) -> list[str]:
    """Return the workshop lab's options that apply to a single-user server (lab.py's).

    The deploykit kernel by default, JupyterLab offline, settings kept in the attendee's
    folder; not its address and port, which JupyterHub chooses.
    """
    keep = ("--LabApp.", "--MultiKernelManager.", "--ServerApp.root_dir=", "--allow-root")
    return [arg for arg in lab_arguments(home, home / STATE_DIR) if arg.startswith(keep)]


def _check_names(attendees: list[str]) -> list[str]:
    names = [a.strip() for a in attendees if a.strip()]
    bad = [n for n in names if not _NAME.fullmatch(n)]
    if not names or bad or len(set(names)) < len(names):
        raise InvalidArgumentError(
            f"attendees {attendees!r}: give distinct names of lowercase letters, digits, - and _ "
            "(starting with a letter, at most 32), e.g. --attendees alice,bob"
        )
    return names


def _gpu_share(
    recipe: Recipe, attendees: int, share: float | None, memory_gib: float | None
) -> float | None:
    """Return each attendee's share of GPU memory (None: a CPU recipe, nothing to share).

    memory_gib: the GPU's memory; with it, the planner checks that the recipe's model fits.
    """
    if share is not None:
        if not 0 < share <= 1:
            raise InvalidArgumentError(f"gpu_share={share} must be in (0, 1], e.g. 0.3")
        return share
    if not str(recipe.parameters.get("device", "cpu")).startswith("cuda"):
        return None
    share = math.floor(GPU_MEMORY_UTILIZATION / attendees * 1000) / 1000  # vLLM takes any float
    model = recipe.parameters.get("model")
    if memory_gib and model:
        try:
            fit = attendees_that_fit(memory_gib, model)
        except UnknownModelError:  # a model the planner cannot read offline: nothing to check
            return share
        if attendees > fit:
            raise InvalidArgumentError(
                f"{attendees} attendees do not fit: the planner gives each vLLM of {model} room "
                f"on this {memory_gib:.0f} GiB GPU for {fit} of them. Use fewer attendees, a "
                "smaller model (or quantized weights), or pass gpu_share to decide yourself."
            )
    return share


def _gpu_memory_gib() -> float | None:
    """Return the first GPU's memory in GiB, as NVML reports it (None: no NVIDIA GPU)."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return float(pynvml.nvmlDeviceGetMemoryInfo(handle).total) / (1 << 30)
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def _passwords(path: Path, names: list[str]) -> dict[str, str]:
    """Return one password per attendee: kept from an earlier start, else generated."""
    known = json.loads(path.read_text()) if path.exists() else {}
    passwords = {name: known.get(name) or secrets.token_urlsafe(9) for name in names}
    path.touch(mode=0o600)
    path.write_text(json.dumps({**known, **passwords}, indent=1))
    return passwords


def add_hub_cli(workshop_sub) -> None:
    """Add `deploykit workshop hub --attendees alice,bob [--dir DIR]` to the workshop command."""
    from ..argtypes import fraction, port

    p = workshop_sub.add_parser("hub", help="JupyterHub for several attendees on this host")
    p.add_argument("--attendees", required=True, help="comma-separated names, e.g. alice,bob")
    p.add_argument(
        "--dir", default="workshop-hub", help="attendees' folders (default: %(default)s)"
    )
    p.add_argument("--port", type=port, default=0, help="the hub's port (default: a free one)")
    p.add_argument("--recipe", default=None, help="default: workshop, else cpu")
    p.add_argument(
        "--gpu-share",
        type=fraction,
        default=None,
        help="share of GPU memory each attendee's vLLM may claim (default: 0.9 / attendees)",
    )
    p.set_defaults(func=_cli_hub)


def _stop_on(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM and SIGHUP stop the hub the way Ctrl-C does


def _cli_hub(args) -> int:
    hub = start_hub(
        args.attendees.split(","),
        root=args.dir,
        port=args.port,
        recipe=args.recipe,
        gpu_share=args.gpu_share,
    )
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _stop_on)
        log = hub.server.log_path
        print(f"JupyterHub for {len(hub.attendees)} attendees at {hub.url}/ (log: {log})")
        for a in hub.attendees.values():
            share = a.environment.get("DEPLOYKIT_GPU_SHARE")
            gpu = f"  GPU share {share}" if share else ""
            ports = f"{a.ports[0]}-{a.ports[1]}"
            print(f"  {a.name:<12} password {a.password}  ports {ports}{gpu}  folder {a.home}")
        print(
            "Each attendee logs in with their own password. Ctrl-C stops the hub and every server.",
            flush=True,
        )
        code = hub.server.wait()
        print(
            f"deploykit: JupyterHub exited with status {code}; its log: {hub.server.log_path}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            "stopping JupyterHub, the attendees' servers and what they started",
            file=sys.stderr,
            flush=True,
        )
        return 0
    finally:
        hub.stop()
