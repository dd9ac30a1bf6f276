"""The `deploykit` command: thin argument parsing over library calls.

Every subcommand lives beside the code it runs: its module has `add_cli(sub)`, which adds
the subcommand and sets `func`, and `_COMMANDS` below names the module. Any error, bad
arguments included, prints one line and exits with status 2. `python -m deploykit ...`
runs the same command (the servers the library starts use that form).
"""

from __future__ import annotations

import importlib
import sys

from .argtypes import Parser
from .errors import DeployKitError

# Modules (relative to deploykit) whose add_cli(sub) adds a subcommand; imported lazily.
_COMMANDS = [
    "cookbook",
    "models.load",
    "models.gguf",
    "server.cli",
    "engines.vllm",
    "plan.memory",
    "bench.cli",
    "check.cli",
    "check.doctor",
    "router.cli",
    "rayserve.cli",
    "drills.faults",
    "deploy.image",
    "runs",
    "workshop.cli",
]


def build_parser() -> Parser:
    """Return the argument parser with every subcommand."""
    parser = Parser(prog="deploykit", description="The deploykit cookbook's command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _COMMANDS:
        importlib.import_module(f"{__package__}.{module}").add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; deploykit's own errors print one clear line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeployKitError as exc:
        print(f"deploykit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deploykit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
