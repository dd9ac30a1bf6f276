"""Progress bars on long work: tqdm's, in a notebook or a terminal; none in an unattended run.

A run of `deploykit cookbook run` (papermill) saves the notebook as it ends, and a bar drawn
as a widget is saved in whatever state its last redraw left, often not the final one; so the
library draws none there (the cookbook runner sets DEPLOYKIT_RUN_ID). DEPLOYKIT_PROGRESS=0
turns them off anywhere.
"""

from __future__ import annotations

from typing import Any

from . import _env


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """Return tqdm.auto's bar over iterable (or with total=...); disabled when unattended."""
    from tqdm.auto import tqdm

    if not _env.progress_bars():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
