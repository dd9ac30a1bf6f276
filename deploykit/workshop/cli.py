"""`deploykit workshop`: the attendee's JupyterLab; `deploykit workshop prepare` beforehand.

The hub for several attendees (`deploykit workshop hub`) lives in hub.py, which adds its own
subcommand here when it is present.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import sys
from typing import Any

from ..argtypes import port, positive_float

_HUB = f"{__package__}.hub"


def add_cli(sub: Any) -> None:
    """Add `deploykit workshop [prepare]` to the CLI."""
    p = sub.add_parser(
        "workshop",
        help="start the workshop's JupyterLab on the attendee's copies of the notebooks",
        description="Make or refresh your copies of the notebooks in --dir (the recipe's values "
        "injected; an edited copy is kept and the new version written beside it), then start "
        "JupyterLab on 127.0.0.1 with the deploykit kernel, offline, and print its URL with "
        "the token. Ctrl-C stops it, its kernels and the servers they started.",
    )
    p.add_argument(
        "--dir", default=None, help="your folder of notebooks (default: ~/deploykit-workshop)"
    )
    p.add_argument("--port", type=port, default=0, help="JupyterLab's port (default: a free one)")
    p.add_argument(
        "--recipe", default=None, help="recipe of the copies (default: workshop, else cpu)"
    )
    p.set_defaults(func=_cli_lab)
    wsub = p.add_subparsers(dest="workshop_command", metavar="{prepare,...}")
    prep = wsub.add_parser(
        "prepare",
        help="build and fetch what the notebooks need, then print a checklist",
        description="Build the models the recipe's notebooks use, the vLLM environment and "
        "the Docker images where a notebook needs them (what takes time or the network), "
        "check the ports and the disk, and print each notebook's status and whether it runs "
        "without the network. Exit status 1 when something is still missing.",
    )
    prep.add_argument("--recipe", default=None, help="default: workshop, else cpu")
    prep.add_argument("--dir", default=None, help="the attendees' folder, for the disk check")
    prep.add_argument(
        "--no-models", action="store_true", help="do not build models or fetch the converter"
    )
    prep.add_argument("--no-vllm", action="store_true", help="do not make the vLLM environment")
    prep.add_argument("--no-docker", action="store_true", help="do not make the Docker images")
    prep.add_argument(
        "--hub", action="store_true", help="also install the proxy of `deploykit workshop hub`"
    )
    prep.add_argument(
        "--check", action="store_true", help="make nothing: only check (all three --no-*)"
    )
    prep.add_argument(
        "--min-free-gib", type=positive_float, default=5.0, help="warn below this (default: 5)"
    )
    prep.set_defaults(func=_cli_prepare)
    if importlib.util.find_spec(_HUB) is not None:
        importlib.import_module(_HUB).add_hub_cli(wsub)


def _stop_on(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM and SIGHUP stop the lab the way Ctrl-C does


def _cli_lab(args: Any) -> int:
    from .lab import start_lab

    lab = start_lab(args.dir, port=args.port, recipe=args.recipe)
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _stop_on)
        print(lab.copies, flush=True)
        print(f"JupyterLab on {lab.folder} (log: {lab.log_path}):\n    {lab.url}", flush=True)
        print("Ctrl-C stops it, its kernels and the servers they started.", flush=True)
        code = lab.wait()
        print(
            f"deploykit: JupyterLab exited with status {code}; its log: {lab.log_path}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("stopping JupyterLab, its kernels and their servers", file=sys.stderr, flush=True)
        return 0
    finally:
        lab.stop()


def _cli_prepare(args: Any) -> int:
    from .prepare import prepare_workshop

    checklist = prepare_workshop(
        args.recipe,
        folder=args.dir,
        models=not (args.no_models or args.check),
        vllm=not (args.no_vllm or args.check),
        docker=not (args.no_docker or args.check),
        hub_proxy=args.hub and not args.check,
        min_free_gib=args.min_free_gib,
    )
    print(checklist)
    return 0 if checklist.ok else 1
