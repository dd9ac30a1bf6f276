"""Argument types and the parser class every `deploykit` subcommand uses.

A leaf: the command line (`cli.py`) and each module's `add_cli` import these; it imports
no other deploykit module.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block) and exit status 2."""

    def error(self, message: str):  # argparse's own error() prints the whole usage first
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _number(text: str, convert: Callable[[str], Any], what: str) -> Any:
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


def non_negative_int(text: str) -> int:
    """Parse an integer >= 0 (argparse type)."""
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
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


def number_list(convert: Callable[[str], Any], what: str) -> Callable[[str], list]:
    """Return an argparse type for a comma-separated list, e.g. 1,8,32."""

    def parse(text: str) -> list:
        try:
            return [convert(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {what}, e.g. 1,8,32"
            ) from None

    return parse


def slo(text: str) -> tuple[str, float]:
    """Parse a latency target METRIC:MS, e.g. ttft:500 (argparse type)."""
    name, _, value = text.partition(":")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not METRIC:MS, e.g. ttft:500") from None
