"""Start `deploykit serve` as a child process (for notebooks, tests and benchmarks)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from ..launch import Server, launch


def start_server(model: str = "toy-tiny", *, naive: bool = False, block_event_loop: bool = False,
                 device: str = "auto", dtype: str = "auto", port: int = 0,
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 timeout_s: float = 180.0) -> Server:
    """Start `deploykit serve` on a free loopback port and wait until /health answers.

    naive=True starts the one-request-at-a-time baseline; block_event_loop=True (with naive)
    reproduces the seed's bug. args are extra `deploykit serve` flags, e.g.
    ["--max-batch-size", "8"]. The server is stopped at interpreter exit at the latest.
    """
    if block_event_loop and not naive:
        raise ValueError("block_event_loop=True only applies to naive=True servers.")
    command = [sys.executable, "-m", "deploykit.cli", "serve", "--model", model,
               "--host", "{host}", "--port", "{port}", "--device", device, "--dtype", dtype,
               *(["--naive"] if naive else []),
               *(["--block-event-loop"] if block_event_loop else []), *args]
    name = "serve-naive" if naive else "serve"
    return launch(command, port=port, timeout_s=timeout_s, name=name, env=env)
