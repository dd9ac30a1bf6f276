"""A troubleshooting casebook: per symptom, what doctor said before the fix and after it.

The troubleshooting recipe records each case it reproduces with `Casebook.record`: the
symptom, doctor's report on the broken setup, the fix applied, doctor's report (or a
measurement) after it. The book renders as one Markdown table, and `all_fixed` is what the
recipe's checks assert: each cause was named before the fix and is gone after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .diagnosis import CAUSES, DoctorReport


@dataclass(frozen=True)
class CaseRecord:
    """One reproduced symptom: the cause expected, what doctor found, and after the fix."""

    symptom: str
    cause: str
    found_before: tuple[str, ...]
    fix: str
    gone_after: bool
    note: str = ""

    @property
    def named(self) -> bool:
        """Return True when doctor named the expected cause on the broken setup."""
        return self.cause in self.found_before


@dataclass
class Casebook:
    """The cases of a troubleshooting run, in the order reproduced."""

    records: list[CaseRecord] = field(default_factory=list)

    def record(
        self,
        symptom: str,
        cause: str,
        before: DoctorReport,
        fix: str,
        after: DoctorReport | bool,
        note: str = "",
    ) -> CaseRecord:
        """Add a case; after is doctor's report after the fix, or whether the symptom is gone."""
        if cause not in CAUSES:
            raise KeyError(f"unknown cause {cause!r}; doctor names {', '.join(CAUSES)}")
        gone = (cause not in after.causes) if isinstance(after, DoctorReport) else bool(after)
        rec = CaseRecord(symptom, cause, tuple(before.causes), fix, gone, note)
        self.records.append(rec)
        return rec

    @property
    def all_fixed(self) -> bool:
        """Return True when every cause was named before its fix and gone after it."""
        return bool(self.records) and all(r.named and r.gone_after for r in self.records)

    def _repr_markdown_(self) -> str:
        rows = [
            "| symptom | doctor named | fix applied | after the fix |",
            "|---|---|---|---|",
        ]
        for r in self.records:
            named = (
                f"`{r.cause}`"
                if r.named
                else f"not `{r.cause}` ({', '.join(r.found_before) or 'nothing'})"
            )
            after = "gone" if r.gone_after else "**still there**"
            rows.append(f"| {r.symptom} | {named} | {r.fix} | {after} |")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self._repr_markdown_()
