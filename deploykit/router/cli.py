"""`deploykit router --replica URL --replica URL ... --port P`: run the router."""

from __future__ import annotations

import argparse
import logging

from ..argtypes import port, positive_float, positive_int
from .proxy import RouterConfig, run


def add_cli(sub) -> None:
    """Add `deploykit router` to the CLI."""
    d = RouterConfig(replicas=("http://127.0.0.1:1",))
    p = sub.add_parser(
        "router",
        help="balance requests over deploykit replicas",
        description="Balance requests over deploykit replicas.",
    )
    p.add_argument(
        "--replica",
        action="append",
        required=True,
        metavar="URL",
        help="a replica's root URL, e.g. http://127.0.0.1:8001 (repeat the flag)",
    )
    p.add_argument("--host", default=d.host, help="address to bind (default: loopback only)")
    p.add_argument("--port", type=port, default=d.port)
    p.add_argument("--health-interval-s", type=positive_float, default=d.health_interval_s)
    p.add_argument("--health-timeout-s", type=positive_float, default=d.health_timeout_s)
    p.add_argument(
        "--failure-threshold",
        type=positive_int,
        default=d.failure_threshold,
        help="failed requests in a row before a replica is cooled down",
    )
    p.add_argument("--cooldown-s", type=positive_float, default=d.cooldown_s)
    p.add_argument("--connect-timeout-s", type=positive_float, default=d.connect_timeout_s)
    p.add_argument("--read-timeout-s", type=positive_float, default=d.read_timeout_s)
    p.add_argument("--max-body-bytes", type=positive_int, default=d.max_body_bytes)
    p.set_defaults(func=_cli_router)


def _cli_router(args: argparse.Namespace) -> int:
    """Check the flags (a bad one is a one-line error), then serve until SIGTERM/SIGINT."""
    config = RouterConfig(
        replicas=tuple(args.replica),
        host=args.host,
        port=args.port,
        health_interval_s=args.health_interval_s,
        health_timeout_s=args.health_timeout_s,
        failure_threshold=args.failure_threshold,
        cooldown_s=args.cooldown_s,
        connect_timeout_s=args.connect_timeout_s,
        read_timeout_s=args.read_timeout_s,
        max_body_bytes=args.max_body_bytes,
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(config)
    return 0
