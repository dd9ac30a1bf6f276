"""`python -m deploykit.router --replica URL --replica URL ... --port P`: run the router."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import DeployKitError
from .proxy import RouterConfig, run


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, check them, and serve until SIGTERM/SIGINT."""
    from ..cli import port, positive_float, positive_int

    d = RouterConfig(replicas=("http://127.0.0.1:1",))
    parser = argparse.ArgumentParser(prog="python -m deploykit.router",
                                     description="Balance requests over deploykit replicas.")
    parser.add_argument("--replica", action="append", required=True, metavar="URL",
                        help="a replica's root URL, e.g. http://127.0.0.1:8001 (repeat the flag)")
    parser.add_argument("--host", default=d.host, help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=port, default=d.port)
    parser.add_argument("--health-interval-s", type=positive_float, default=d.health_interval_s)
    parser.add_argument("--health-timeout-s", type=positive_float, default=d.health_timeout_s)
    parser.add_argument("--failure-threshold", type=positive_int, default=d.failure_threshold,
                        help="failed requests in a row before a replica is cooled down")
    parser.add_argument("--cooldown-s", type=positive_float, default=d.cooldown_s)
    parser.add_argument("--connect-timeout-s", type=positive_float, default=d.connect_timeout_s)
    parser.add_argument("--read-timeout-s", type=positive_float, default=d.read_timeout_s)
    parser.add_argument("--max-body-bytes", type=positive_int, default=d.max_body_bytes)
    args = parser.parse_args(argv)
    try:
        config = RouterConfig(
            replicas=tuple(args.replica), host=args.host, port=args.port,
            health_interval_s=args.health_interval_s, health_timeout_s=args.health_timeout_s,
            failure_threshold=args.failure_threshold, cooldown_s=args.cooldown_s,
            connect_timeout_s=args.connect_timeout_s, read_timeout_s=args.read_timeout_s,
            max_body_bytes=args.max_body_bytes)
    except DeployKitError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
