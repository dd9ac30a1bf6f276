"""What `doctor` reports: each cause found, the evidence that shows it, and the fix."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._http import redact_url

# every cause doctor can name, with a short title for tables
CAUSES = {
    "no_process": "connection refused: no process",
    "wrong_port": "connection refused: wrong port",
    "wrong_address": "connection refused: bound to another address",
    "wrong_health_path": "wrong health path",
    "unhealthy": "no health path answers",
    "oom_on_load": "out of memory on load",
    "batching_off": "high latency: requests served one at a time",
    "kv_preemption": "high latency: KV-cache preemptions",
    "long_prompts": "high latency: long prompts dominate prefill",
    "cold_start": "slow first request: cold start",
    "context_exceeded": "context length exceeded",
    "overloaded": "429/503 under overload",
    "chat_template_mismatch": "chat-template mismatch",
    "dtype_not_native": "dtype the hardware does not support natively",
    "buffered_stream": "stream arrives all at once (buffering proxy)",
}


@dataclass(frozen=True)
class Diagnosis:
    """One cause found: what is wrong, the evidence (what was measured or read), the fix."""

    cause: str  # a key of CAUSES
    title: str
    evidence: tuple[str, ...]
    fix: str

    def _repr_markdown_(self) -> str:
        lines = [f"**{self.title}** (`{self.cause}`)"]
        lines += [f"- evidence: {_md(e)}" for e in self.evidence]
        lines.append(f"- fix: {_md(self.fix)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "title": self.title,
            "evidence": list(self.evidence),
            "fix": self.fix,
        }


@dataclass(frozen=True)
class DoctorReport:
    """What doctor found about one endpoint and/or planned configuration."""

    url: str | None
    diagnoses: tuple[Diagnosis, ...]
    observations: tuple[str, ...] = ()  # what was checked and found fine, or not checked
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)  # figures behind the evidence

    @property
    def causes(self) -> list[str]:
        """Return the causes found, in the order found."""
        return [d.cause for d in self.diagnoses]

    @property
    def ok(self) -> bool:
        """Return True when nothing was found wrong."""
        return not self.diagnoses

    @property
    def exit_code(self) -> int:
        """Return 0 when nothing was found wrong, else 1."""
        return 0 if self.ok else 1

    def diagnosis(self, cause: str) -> Diagnosis:
        """Return the diagnosis of cause (KeyError when not found)."""
        for d in self.diagnoses:
            if d.cause == cause:
                return d
        raise KeyError(f"doctor did not find {cause!r}; it found {self.causes or 'nothing'}")

    def text(self) -> str:
        """Return the report as plain text: each cause, its evidence and fix, then what was fine."""
        target = redact_url(self.url) if self.url else "the planned configuration"
        lines = [f"deploykit doctor: {target}"]
        if not self.diagnoses:
            lines.append("found nothing wrong")
        for i, d in enumerate(self.diagnoses, 1):
            lines.append(f"{i}. {d.title}  [{d.cause}]")
            lines += [f"   evidence: {e}" for e in d.evidence]
            lines.append(f"   fix: {d.fix}")
        if self.observations:
            lines.append("checked:")
            lines += [f"   {o}" for o in self.observations]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        target = f"`{redact_url(self.url)}`" if self.url else "the planned configuration"
        out = [
            f"**deploykit doctor** on {target}: "
            + ("nothing wrong found" if self.ok else f"{len(self.diagnoses)} cause(s) found")
        ]
        for d in self.diagnoses:
            out.append(f"\n- **{d.title}** (`{d.cause}`)")
            out += [f"  - evidence: {_md(e)}" for e in d.evidence]
            out.append(f"  - fix: {_md(d.fix)}")
        if self.observations:
            out.append("\n<details><summary>checked</summary>\n")
            out += [f"- {_md(o)}" for o in self.observations]
            out.append("\n</details>")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.text()

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": redact_url(self.url) if self.url else None,
            "causes": self.causes,
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "observations": list(self.observations),
            "seconds": round(self.seconds, 2),
            "data": self.data,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def _md(text: str) -> str:
    """Return text safe in a Markdown list (no stray emphasis from * or _)."""
    return text.replace("*", "\\*").replace("<", "&lt;")
