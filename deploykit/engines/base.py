"""What every inference engine run as a server process shares.

typed arguments, validated when built -> a command line and environment -> `launch_server`
(own process group, free port, health wait, log tail in the error) -> `Server.stop()`.

An engine module (vllm.py, llamacpp.py, tgi.py) subclasses `EngineArgs`, fills in
`to_command` (and `to_env` if it needs variables), and calls `start_engine`. Nothing
here imports an engine: each one runs in its own process, often its own virtualenv.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import EngineArgumentError
from ..launch import Server, launch_server


@dataclass(frozen=True)
class EngineArgs:
    """Arguments of one engine server; subclasses add typed fields and check them.

    `model` is anything `resolve_model` takes: a built-in name, a folder or a hub id.
    """

    model: str

    engine: ClassVar[str] = "engine"  # short name: process names, error messages
    health_path: ClassVar[str] = "/health"

    def __post_init__(self) -> None:
        if not self.model:
            raise EngineArgumentError(
                f"{type(self).__name__}(model=...) is empty; pass a "
                "built-in name such as 'toy-tiny', a model folder, or a hub id."
            )

    @property
    def served_name(self) -> str:
        """Return the model name clients send (the name given, not the resolved folder)."""
        return self.model

    def replace(self, **changes: Any) -> EngineArgs:
        """Return a copy with some fields changed (checked again, like a new one)."""
        return dataclasses.replace(self, **changes)

    def model_location(self) -> str:
        """Return the folder or hub id the engine loads (a built-in is built on first use)."""
        from ..models import resolve_model

        return resolve_model(self.model, progress=False).location

    def to_command(
        self, launcher: Sequence[str], host: str = "{host}", port: str | int = "{port}"
    ) -> list[str]:
        """Return the server's command line; launch_server fills {host} and {port}."""
        raise NotImplementedError

    def to_env(self) -> dict[str, str]:
        """Return the environment variables the engine needs (secrets travel here, not in argv)."""
        return {}


def start_engine(
    args: EngineArgs,
    launcher: Sequence[str | os.PathLike[str]],
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    timeout_s: float = 600.0,
    log_path: str | Path | None = None,
    name: str | None = None,
) -> Server:
    """Start the engine server for args and return it once its health route answers."""
    args.model_location()  # an unknown model fails here, before any process starts
    command = args.to_command([os.fspath(part) for part in launcher])
    return launch_server(
        command,
        port=port,
        host=host,
        health_path=args.health_path,
        timeout_s=timeout_s,
        env=args.to_env(),
        name=name or f"{args.engine}-{args.served_name}",
        log_path=log_path,
    )


def check_choice(engine: str, name: str, value: Any, choices: Iterable[str]) -> None:
    """Reject a value that is not one of the engine's choices, listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise EngineArgumentError(
            f"{name}={value!r} is not one {engine} knows; use one of: {', '.join(choices)}."
        )


def check_positive_ints(args: EngineArgs, *names: str, default_owner: str = "the engine") -> None:
    """Reject fields that are set but not integers >= 1 (None keeps the engine's default)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise EngineArgumentError(
                f"{name}={value!r} must be a positive integer or None "
                f"(None keeps {default_owner}'s default)."
            )


def optional_flags(flags: Mapping[str, Any]) -> list[str]:
    """Return `--flag value` pairs for the values that are set (None keeps the engine's default)."""
    return [arg for flag, value in flags.items() if value is not None for arg in (flag, str(value))]


def check_flags(extra_args: Any) -> None:
    """Reject extra command-line flags given as one string instead of separate arguments."""
    if isinstance(extra_args, (str, list)):
        raise EngineArgumentError(
            "extra_args must be a tuple of separate arguments, e.g. "
            "('--enforce-eager',) or tuple(shlex.split('--seed 1'))."
        )
