"""`deploykit ray bridge|commands`: the namespace bridge a local cluster runs, and the
`ray start` commands of a real cluster."""

from __future__ import annotations

import argparse

from ..argtypes import port
from .cluster import ray_start_commands
from .netns import run_bridge


def _forward(text: str) -> tuple[int, int]:
    listen, _, target = text.partition(":")
    try:
        return port(listen), port(target)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc} (want HOSTPORT:NETNSPORT)") from None


def add_cli(sub) -> None:
    """Add `deploykit ray` to the CLI."""
    ray = sub.add_parser("ray", help="Ray clusters for Ray Serve", description="Ray clusters.")
    cmds = ray.add_subparsers(dest="ray_command", required=True)
    b = cmds.add_parser(
        "bridge",
        help="relay host loopback ports into a network namespace (run by a local cluster)",
        description="Bind 127.0.0.1:HOSTPORT on the host, then relay each connection to "
        "127.0.0.1:NETNSPORT inside the namespace. Needs root.",
    )
    b.add_argument("--netns", required=True, help="the namespace's name (ip netns list)")
    b.add_argument("--forward", type=_forward, action="append", required=True, metavar="P:Q")
    b.set_defaults(func=lambda args: run_bridge(args.netns, args.forward))
    c = cmds.add_parser(
        "commands",
        help="print the `ray start` command of each machine of a real cluster",
        description="Print the `ray start` command to run on each machine, head first.",
    )
    c.add_argument("--head", required=True, metavar="ADDRESS", help="the head machine's address")
    c.add_argument(
        "--worker", action="append", default=[], metavar="ADDRESS", help="a worker's address"
    )
    c.add_argument("--num-cpus", type=int, default=None)
    c.add_argument("--num-gpus", type=int, default=None)
    c.set_defaults(func=_cli_commands)


def _cli_commands(args: argparse.Namespace) -> int:
    workers = {f"worker{i + 1}": address for i, address in enumerate(args.worker)}
    for name, command in ray_start_commands(
        args.head, workers, num_cpus=args.num_cpus, num_gpus=args.num_gpus
    ).items():
        print(f"# on {name}:\n{command}")
    return 0
