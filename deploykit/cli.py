"""The `deploykit` command: thin argument parsing over library calls.

Every subcommand lives beside the code it runs: its module has `add_cli(sub)`, which adds
the subcommand and sets `func`, and `_COMMANDS` below names the module. Any error, bad
arguments included, prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import DeployKitError

# Modules (relative to deploykit) whose add_cli(sub) adds a subcommand; imported lazily.
_COMMANDS = ["cookbook", "models", "gguf", "server.app", "engines.vllm", "plan", "bench"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block) and exit status 2."""

    def error(self, message: str):  # argparse's own error() prints the whole usage first
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _number(text: str, convert, what: str):
    """Convert text with int or float; an unparsable value is an argparse error naming `what`."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    """Parse an integer >= 1 (argparse type)."""
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def positive_float(text: str) -> float:
    """Parse a number > 0 (argparse type)."""
    value = _number(text, float, "a number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number above 0")
    return value


def fraction(text: str) -> float:
    """Parse a share in (0, 1], e.g. 0.9 (argparse type)."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text} must be in (0, 1], e.g. 0.9 for 90%")
    return value


def port(text: str) -> int:
    """Parse a TCP port, 0 (pick a free one) to 65535 (argparse type)."""
    value = _number(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0-65535; 0 picks a free one)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = _Parser(prog="deploykit", description="The deploykit cookbook's command line.")
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
