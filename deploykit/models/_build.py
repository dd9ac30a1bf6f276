"""What every built-in model build shares: the cache, atomic folders, the corpus, perplexity.

Built-in models are cached as `cache/<kind>/<name>-<key>` folders, written atomically and
marked finished by a `deploykit_build.json`. The corpus is the docstrings of the Python
standard library that is installed, read at build time; no text is shipped with deploykit
or fetched from anywhere. Its held-out part scores every built-in model's perplexity.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import functools
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import _env, _memo
from ..errors import ModelBuildError

_PIP_TIMEOUT_S = 900
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "dist-packages",
    "lib2to3",
    "turtledemo",
    "__pycache__",
    "ensurepip",
    "tkinter",
    "pydoc_data",
}


@contextlib.contextmanager
def building(dest: Path) -> Iterator[Path]:
    """Yield a fresh folder beside dest; it becomes dest if the block succeeds, else is removed.

    The one way built-in models are written: a reader never sees a half-built folder, and
    when another process finished the same build first, its folder is kept.
    """
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        config = tmp / "config.json"
        mode = config.stat().st_mode & 0o777 if config.exists() else 0o644
        for path in tmp.iterdir():  # transformers writes the weights 0600 (via a temp file)
            if path.is_file():
                path.chmod(mode)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():  # another process finished first; keep theirs
        shutil.rmtree(tmp)
    else:
        tmp.rename(dest)


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:10]


def is_cached(name: str, key: str, kind: str = "models") -> bool:
    """Return True when cache/<kind>/<name>-<key> holds a finished build (nothing is built)."""
    return (_env.cache_dir() / kind / f"{name}-{key}" / "deploykit_build.json").exists()


def cached_build(name: str, key: str, build: Callable[[Path], Any], kind: str = "models") -> Path:
    """Return cache/<kind>/<name>-<key>, running build(dest) once if it is not there yet.

    build(dest) writes dest atomically (`building`) with a deploykit_build.json in
    it: the mark of a finished build.
    """
    root = _env.cache_dir() / kind
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"{name}-{key}"
    if (dest / "deploykit_build.json").exists():
        return dest
    # One builder at a time (several notebooks may ask at once); the others wait.
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "deploykit_build.json").exists():
            build(dest)
    return dest


def _corpus_files() -> Iterator[Path]:
    """Yield the standard library's .py files that the corpus reads, in a stable order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        yield from (Path(root, name) for name in sorted(files) if name.endswith(".py"))


def corpus_fingerprint() -> str:
    """Return a hash of the corpus files' paths, sizes and times: cheap, unlike parsing them."""
    h = hashlib.sha256(sys.version.encode())
    for path in _corpus_files():
        stat = path.stat()
        h.update(f"{path}\x00{stat.st_size}\x00{stat.st_mtime_ns}\x00".encode())
    return h.hexdigest()[:16]


def corpus() -> tuple[list[str], list[str]]:
    """Return (train, held_out) docstrings of the installed standard library."""
    docs: list[str] = []
    for path in _corpus_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 40:
                    docs.append(doc)
    # Held-out split by content hash: stable whatever the walk order.
    train: list[str] = []
    held_out: list[str] = []
    for doc in docs:
        bucket = hashlib.sha1(doc.encode()).digest()[0] % 20
        (held_out if bucket == 0 else train).append(doc)
    return train, held_out


def corpus_digest(train: list[str], held_out: list[str]) -> str:
    """Return a short hash of the corpus, part of the cache key."""
    h = hashlib.sha256()
    for doc in train + ["\x00held-out\x00"] + held_out:
        h.update(doc.encode())
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def corpus_key() -> str:
    """Return the training corpus's hash, remembered on disk by the files' fingerprint.

    Parsing the standard library takes seconds, and every server process that loads a toy
    model asks once; the fingerprint (paths, sizes, times) takes milliseconds.
    """
    return _memo.remembered(
        "corpus-digests.json", corpus_fingerprint(), lambda: corpus_digest(*corpus())
    )


def build_report(path: str | Path) -> dict[str, Any]:
    """Return the build report (sizes, perplexities, seconds) saved beside a built-in model."""
    return json.loads((Path(path) / "deploykit_build.json").read_text())


def set_tokenizer_class(out: Path, name: str = "PreTrainedTokenizerFast") -> None:
    """Name a class in tokenizer_config.json that loads tokenizer.json as is.

    ("TokenizersBackend", which transformers 5 writes, is unknown to transformers 4.)
    """
    path = out / "tokenizer_config.json"
    settings = json.loads(path.read_text())
    settings["tokenizer_class"] = name
    for junk in ("is_local", "local_files_only"):
        settings.pop(junk, None)
    path.write_text(json.dumps(settings, indent=2))


def token_stream(tokenizer, docs: list[str]):
    import torch

    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(doc).input_ids)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def perplexity(model, tokens, seq_len: int, max_windows: int = 64) -> float:
    """Return exp(mean next-token loss) over non-overlapping windows of `tokens`."""
    import torch

    n = min(max_windows, (len(tokens) - 1) // seq_len)
    windows = tokens[: n * seq_len].view(n, seq_len)  # [N, S]
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, n, 16):
            batch = windows[start : start + 16]
            out = model(input_ids=batch, labels=batch)
            total += out.loss.item() * batch.numel()
            count += batch.numel()
    return math.exp(total / count)


def pip_download(command: list[str], folder: Path, pattern: str, what: str, by_hand: str) -> Path:
    """Run `command` (a `pip download ... -d folder`); return the file matching `pattern`.

    Any failure, a timeout included, raises ModelBuildError with pip's last lines, then
    `by_hand` (how to fetch the file on another machine and point deploykit at it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_PIP_TIMEOUT_S,
        )
        output, failure = (
            done.stdout,
            (f"pip exited with status {done.returncode}" if done.returncode else None),
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.output or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        failure = f"pip gave no result in {_PIP_TIMEOUT_S} s"
    found = sorted(folder.glob(pattern))
    if failure is None and not found:
        failure = f"pip reported success but left no {pattern} file"
    if failure is not None:
        tail = "\n".join("    " + line for line in output.strip().splitlines()[-8:])
        raise ModelBuildError(
            f"could not download {what}: {failure}. Its last lines:\n{tail}\n" + by_hand
        )
    return found[0]
