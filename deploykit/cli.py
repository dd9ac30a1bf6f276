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

# Each subcommand and the module (relative to deploykit) whose add_cli(sub) adds it. Only the
# module of the command being run is imported: `deploykit ps` or the Ray bridge must not wait
# for torch, which the server's module imports.
_COMMANDS = {
    "cookbook": "cookbook",
    "models": "models.load",
    "gguf": "models.gguf",
    "serve": "server.cli",
    "vllm": "engines.vllm",
    "plan": "plan.memory",
    "bench": "bench.cli",
    "check": "check.cli",
    "compat": "check.cli",
    "doctor": "check.doctor",
    "router": "router.cli",
    "ray": "rayserve.cli",
    "faults": "drills.faults",
    "docker": "deploy.image",
    "ps": "runs",
    "stop": "runs",
    "workshop": "workshop.cli",
}


def build_parser(command: str | None = None) -> Parser:
    """Return the argument parser: with command's subcommand only, or (None) with all."""
    parser = Parser(prog="deploykit", description="The deploykit cookbook's command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = [_COMMANDS[command]] if command in _COMMANDS else _COMMANDS.values()
    for module in dict.fromkeys(modules):
        importlib.import_module(f"{__package__}.{module}").add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; deploykit's own errors print one clear line and exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
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
