"""Slow hashes remembered on disk, in a small JSON file in deploykit's cache."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable

from . import _env


def remembered(file_name: str, key: str, compute: Callable[[], str]) -> str:
    """Return the value stored under key in cache/<file_name>, computing and storing it if absent.

    The key must change whenever the value would (a fingerprint of the inputs: paths, sizes,
    times). A missing or unreadable file counts as empty; it is rewritten atomically, so a
    reader in another process sees the old file or the new one, never half of one.
    """
    path = _env.cache_dir() / file_name
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    scratch.write_text(json.dumps({**known, key: value}))
    os.replace(scratch, path)
    return value
