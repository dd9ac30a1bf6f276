"""What a notebook says about its run, rendered from the run; reference figures, checked against it.

A notebook states a measured figure or a comparison only through these: `Findings` turns a
run's own results into Markdown sentences, and `Reference` holds a figure measured elsewhere
(its source and conditions), which `compare_reference` sets beside the run's value and, where
the two disagree in direction, names the likely reason (a shorter run, a busy CPU, another CPU).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._conditions import cpu_name, load_average

__all__ = [
    "Findings",
    "Markdown",
    "Reference",
    "ReferenceCheck",
    "compare_reference",
    "ratio_text",
    "reference_table",
]


def ratio_text(ratio: float, more: str = "faster", less: str = "slower", digits: int = 2) -> str:
    """Return a ratio as '1.60x (faster)', '0.42x (slower)', or 'n/a' when undefined."""
    if ratio is None or not math.isfinite(ratio):
        return "n/a"
    word = more if ratio > 1 else less if ratio < 1 else "the same"
    return f"{ratio:.{digits}f}x ({word})"


@dataclass
class Findings:
    """Sentences built from a run's results; a notebook shows them as Markdown."""

    title: str = "What this run shows"
    lines: list[str] = field(default_factory=list)

    def add(self, sentence: str) -> Findings:
        """Add one sentence (already holding the run's figures); return self, to chain."""
        self.lines.append(sentence)
        return self

    def _repr_markdown_(self) -> str:
        return f"**{self.title}**\n\n" + "\n".join(f"- {line}" for line in self.lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))  # a notebook's text/plain: the sentences, not the dataclass

    def __str__(self) -> str:
        return self._repr_markdown_()

    # the text a notebook keeps beside the Markdown: the sentences, not the dataclass's fields
    __repr__ = __str__


@dataclass(frozen=True)
class Reference:
    """A figure measured elsewhere: its value, where it comes from, and under which conditions.

    pivot is the value that splits one direction from the other: 1.0 for a ratio (faster or
    slower than the baseline), 0.0 for a change (more or less). cpu and rounds, when known,
    let a disagreement name its likely reason.
    """

    name: str
    value: float
    source: str
    conditions: str
    pivot: float = 1.0
    cpu: str | None = None
    rounds: int | None = None


@dataclass(frozen=True)
class ReferenceCheck:
    """A reference figure beside this run's value, and whether they point the same way."""

    reference: Reference
    run_value: float
    agrees: bool
    reasons: tuple[str, ...] = ()

    def sentence(self) -> str:
        """Return one line: both values, agreement, and the likely reason for a disagreement."""
        ref = self.reference
        text = (
            f"{ref.name}: reference {ref.value:g} ({ref.source}; {ref.conditions}), this run "
            f"{_fmt(self.run_value)}: "
        )
        if self.agrees:
            return text + "same direction."
        return text + "the run disagrees; likely " + "; or ".join(self.reasons) + "."


def _fmt(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "n/a"


def compare_reference(
    reference: Reference, run_value: float, *, rounds: int | None = None
) -> ReferenceCheck:
    """Compare this run's value with a reference figure by direction around its pivot.

    rounds is how many timed rounds this run made; with the reference's, a shorter run is
    named as a reason. The machine's load and CPU name the others.
    """
    pivot = reference.pivot
    agrees = math.isfinite(run_value) and (
        (reference.value - pivot) * (run_value - pivot) > 0 or reference.value == pivot == run_value
    )
    reasons: list[str] = []
    if not agrees:
        if rounds is not None and reference.rounds is not None and rounds < reference.rounds:
            reasons.append(f"a shorter run ({rounds} round(s) here, {reference.rounds} there)")
        load = load_average()
        cores = os.cpu_count() or 1
        if load and load[0] > 0.75 * cores:
            reasons.append(f"a busy CPU (load average {load[0]:.1f} on {cores} cores)")
        here = cpu_name()
        if reference.cpu is None:
            reasons.append(f"a different CPU (this one is {here}; the reference names none)")
        elif reference.cpu != here:
            reasons.append(f"a different CPU ({here} here, {reference.cpu} there)")
        if not reasons:
            reasons.append("noise between runs on the same machine; repeat with more rounds")
    return ReferenceCheck(reference, run_value, agrees, tuple(reasons))


@dataclass(frozen=True)
class Markdown:
    """Markdown text that a notebook renders as such (and prints as plain text)."""

    text: str

    def _repr_markdown_(self) -> str:
        return self.text

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text)  # a notebook's text/plain: the text, not the dataclass

    def __str__(self) -> str:
        return self.text


def reference_table(checks: Iterable[ReferenceCheck]) -> Markdown:
    """Return a Markdown table: each reference figure, this run's value, and the verdict."""
    rows = ["| figure | reference | source | this run | verdict |", "|---|---|---|---|---|"]
    for check in checks:
        ref = check.reference
        verdict = (
            "same direction" if check.agrees else "disagrees: likely " + "; or ".join(check.reasons)
        )
        rows.append(
            f"| {ref.name} | {ref.value:g} | {ref.source} ({ref.conditions}) | "
            f"{_fmt(check.run_value)} | {verdict} |"
        )
    return Markdown("\n".join(rows))
