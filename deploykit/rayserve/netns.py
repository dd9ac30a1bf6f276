"""A loopback-only network namespace for a local Ray cluster, and the bridge into it.

Why a namespace: Ray advertises a node's routable address unless it is told 127.0.0.1, and
on the host's own network stack its CLI rewrites 127.0.0.1 to that address. Inside a
namespace whose only interface is loopback, 127.0.0.1 is all there is, so every node keeps
it and every Ray port (GCS, raylets, object managers, agents, workers, Serve) listens on
127.0.0.1 of the namespace: nothing is reachable from any network, nor from the host.

The host side (a notebook's kernel, a test) reaches the namespace through `bridge`, a small
TCP relay run as `deploykit ray bridge`: it binds its ports on the host's 127.0.0.1 first,
then moves itself into the namespace (setns(2), through ctypes: Python 3.11 has no
os.setns), so each connection it accepts on the host is relayed to a port inside.

Making a namespace takes root (CAP_SYS_ADMIN) and iproute2's `ip`; `netns_unavailable`
says why not, and the cluster then falls back to host mode (see cluster.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence

from ..errors import InvalidArgumentError, ServerStartError
from ..launch import Server, deploykit_command, free_port, launch_server

NETNS_DIR = "/var/run/netns"  # where `ip netns add` mounts a named namespace
_CLONE_NEWNET = 0x40000000  # <sched.h>
_COPY_BYTES = 65536


def netns_unavailable() -> str | None:
    """Return why a network namespace cannot be made here, or None when it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "making a network namespace needs root (CAP_SYS_ADMIN)"
    if shutil.which("ip") is None and not os.access("/usr/sbin/ip", os.X_OK):
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    return None


def _ip() -> str:
    return shutil.which("ip") or "/usr/sbin/ip"


def create_netns(name: str) -> None:
    """Make a network namespace with only loopback, up (`ip netns add`); it must not exist."""
    reason = netns_unavailable()
    if reason is not None:
        raise InvalidArgumentError(f"cannot make network namespace {name!r}: {reason}.")
    for argv in (
        [_ip(), "netns", "add", name],
        [*netns_command(name, ["ip", "link", "set", "lo", "up"])],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise ServerStartError(
                f"`{' '.join(argv)}` failed: {done.stderr.strip()}. Delete a stale namespace "
                f"with `ip netns del {name}`, or use network='host'."
            )


def delete_netns(name: str) -> None:
    """Delete a network namespace made by create_netns (nothing happens if it is gone)."""
    if os.path.exists(os.path.join(NETNS_DIR, name)):
        subprocess.run([_ip(), "netns", "del", name], capture_output=True, timeout=30)


def netns_command(name: str, argv: Sequence[str]) -> list[str]:
    """Return argv run inside namespace name (`ip netns exec NAME ...`)."""
    return [_ip(), "netns", "exec", name, *argv]


def enter_netns(name: str) -> None:
    """Move the calling thread (and the threads it starts later) into namespace name."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into network namespace {name!r}: {os.strerror(err)}")
    finally:
        os.close(fd)


# ---- the bridge ---------------------------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_COPY_BYTES):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()  # half-close: the other direction may still be sending


async def _relay(
    client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, host: str, port: int
) -> None:
    try:
        target_r, target_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.close()  # nothing listens inside: the client sees the connection close
        return
    try:
        await asyncio.gather(_pipe(client_r, target_w), _pipe(target_r, client_w))
    finally:
        for writer in (client_w, target_w):
            writer.close()


async def _serve(listeners: list[tuple[socket.socket, str, int]]) -> None:
    servers = []
    for sock, host, port in listeners:

        async def handle(r, w, host=host, port=port):
            await _relay(r, w, host, port)

        servers.append(await asyncio.start_server(handle, sock=sock))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def run_bridge(netns: str, forwards: Sequence[tuple[int, int]], host: str = "127.0.0.1") -> None:
    """Relay host:listen_port (host side) to 127.0.0.1:target_port inside netns, until SIGTERM."""
    listeners = []
    for listen_port, target_port in forwards:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, listen_port))  # bound before setns: on the host's loopback
        sock.listen(256)
        sock.setblocking(False)
        listeners.append((sock, "127.0.0.1", target_port))
    enter_netns(netns)  # from here on, every connect() is made inside the namespace
    asyncio.run(_serve(listeners))


def start_bridge(
    netns: str, target_ports: Sequence[int], *, timeout_s: float = 30.0
) -> tuple[Server, dict[int, int]]:
    """Start `deploykit ray bridge`; return it and {target port in netns: host port}."""
    ports = {target: free_port() for target in target_ports}
    forwards = [arg for target, port in ports.items() for arg in ("--forward", f"{port}:{target}")]
    first = next(iter(ports.values()))
    server = launch_server(
        [*deploykit_command("ray", "bridge", "--netns", netns, *forwards)],
        port=first,
        health_path=None,  # the first forward's port accepting means the bridge is up
        timeout_s=timeout_s,
        name=f"ray-bridge-{netns}",
    )
    return server, ports
