"""The `deploykit` command: thin argument parsing over library calls."""

from __future__ import annotations

import argparse
import sys

from .errors import DeployKitError


def _add_cookbook(sub) -> None:
    from . import cookbook

    p = sub.add_parser("cookbook", help="list or run the cookbook's notebooks")
    csub = p.add_subparsers(dest="cookbook_cmd", required=True)
    csub.add_parser("list", help="list notebooks and recipes").set_defaults(func=cookbook.cli_list)
    run = csub.add_parser("run", help="execute notebooks with papermill")
    run.add_argument("notebooks", nargs="*", help="names such as 01_quickstart (default: all)")
    run.add_argument("--recipe", default="cpu", help="recipe name from recipes/ (default: cpu)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override a notebook parameter (YAML value)")
    run.add_argument("--out", default=None, help="folder for executed copies (default: build/cookbook/<recipe>)")
    run.add_argument("--root", default=None, help="cookbook checkout (default: found from here)")
    run.add_argument("--timeout-s", type=float, default=1800.0, help="per-cell timeout")
    run.set_defaults(func=cookbook.cli_run)


def _add_models(sub) -> None:
    from . import models

    p = sub.add_parser("models", help="build the toy models and print their reports")
    p.add_argument("names", nargs="*", default=["toy-tiny"], help="toy names (default: toy-tiny)")
    p.set_defaults(func=models.cli_models)


def _add_serve(sub) -> None:
    from .server.app import add_serve_command

    add_serve_command(sub)


def _add_vllm(sub) -> None:
    from .vllm import add_cli

    add_cli(sub)


def _add_plan(sub) -> None:
    from .plan import add_cli

    add_cli(sub)


# Each entry adds one subcommand; a new module's command is one more entry here.
_COMMANDS = [_add_cookbook, _add_models, _add_serve, _add_vllm, _add_plan]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="deploykit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; deploykit's own errors print one clear line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeployKitError as exc:
        print(f"deploykit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
