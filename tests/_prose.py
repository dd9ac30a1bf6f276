"""Find measured figures stated in a notebook's prose, where no run can back them.

A notebook states a measured figure or a comparison through its output (`dk.Findings`,
printed tables), or in a markdown cell that begins with "**Reference figures**" and names
its source and conditions (which the checks cell compares with the run). Elsewhere in its
markdown, outside code spans, these forms are flagged: a ratio ("1.6x", "x1.6"), a
percentage, a rate in tokens or requests per second, and an approximate quantity of time or
size ("about 45 s", "took 2.5 minutes", "~13 GB").
"""

from __future__ import annotations

import re

REFERENCE_MARK = "**Reference figures**"
_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_UNIT = r"(?:ms|s|sec|seconds?|minutes?|min|hours?|h|MB|GB|KB|kB|MiB|GiB|KiB|TB)"
PATTERNS = {
    "ratio": re.compile(rf"(?<![\w.]){_NUMBER}\s?[x×](?![\w])|(?<![\w.])[x×]{_NUMBER}(?![\w.])"),
    "percentage": re.compile(rf"(?<![\w.]){_NUMBER}\s?%"),
    "rate": re.compile(
        rf"(?<![\w.]){_NUMBER}\s?(?:tok(?:en)?s?/s|tokens per second|"
        r"req(?:uest)?s?/s|requests per second)",
        re.I,
    ),
    "approximate quantity": re.compile(
        rf"(?:about|around|roughly|nearly|almost|~|≈|took|takes|took about|in about)\s+"
        rf"{_NUMBER}\s?{_UNIT}(?![\w])",
        re.I,
    ),
}


def _prose(markdown: str) -> str:
    """Return markdown without fenced code blocks and code spans."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    return re.sub(r"`[^`\n]*`", " ", text)


def prose_figures(cells: list[dict]) -> list[tuple[int, str, str]]:
    """Return (cell index, kind, text) for each measured figure stated in markdown prose."""
    found = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if source.lstrip().startswith(REFERENCE_MARK):
            continue
        prose = _prose(source)
        for kind, pattern in PATTERNS.items():
            found += [(index, kind, m.group(0).strip()) for m in pattern.finditer(prose)]
    return found
