"""Start `deploykit serve` as a child process: the one way notebooks, tests and benchmarks do it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import InvalidArgumentError
from ..launch import Server, deploykit_command, launch_server


def serve_command(
    model: str = "toy-tiny",
    *,
    naive: bool = False,
    block_event_loop: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    args: Sequence[str] = (),
) -> list[str]:
    """Return the `deploykit serve` command line, with {host}/{port} for launch_server to fill."""
    if block_event_loop and not naive:
        raise InvalidArgumentError("block_event_loop=True only applies to naive=True servers.")
    if isinstance(args, str):
        raise InvalidArgumentError(
            "args must be a list of separate flags, e.g. ['--max-batch-size', '8'], not one string."
        )
    return [
        *deploykit_command("serve"),
        "--model",
        model,
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--device",
        device,
        "--dtype",
        dtype,
        *(["--naive"] if naive else []),
        *(["--block-event-loop"] if block_event_loop else []),
        *args,
    ]


def start_server(
    model: str = "toy-tiny",
    *,
    naive: bool = False,
    block_event_loop: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    port: int = 0,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout_s: float = 180.0,
    name: str | None = None,
) -> Server:
    """Start `deploykit serve` on a free loopback port and wait until /health answers.

    naive=True starts the one-request-at-a-time baseline; block_event_loop=True (with naive)
    reproduces the seed's bug. args are extra `deploykit serve` flags, e.g.
    ["--max-batch-size", "8"]. The server is stopped at interpreter exit at the latest.
    """
    command = serve_command(
        model, naive=naive, block_event_loop=block_event_loop, device=device, dtype=dtype, args=args
    )
    return launch_server(
        command,
        port=port,
        timeout_s=timeout_s,
        env=env,
        name=name or ("serve-naive" if naive else "serve"),
    )
