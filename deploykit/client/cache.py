"""A response cache for deterministic requests: in memory (LRU + TTL) or SQLite (persistent).

Only requests that ask for a reproducible answer are cached: temperature 0 (greedy), or an
explicit seed. A request without a temperature samples (OpenAI's default is 1.0, and vLLM
takes the model's generation_config default), so it is never cached, nor is any other
sampled request: a cache would turn "a fresh sample each time" into "the same answer forever".

The key is the sha256 of the route, the normalized request and the model's identity (its
name and a digest of its weights), so a new model or new weights never get an old entry.
Normalized: keys sorted, null fields dropped (null means the server's default), integral
floats written as ints (0.0 is 0), and three fields that do not change the answer dropped:
`stream` and `stream_options` (a stream and a non-stream of one request share an entry) and
`user` (an end-user id for abuse tracking; give each tenant its own cache if answers must not
be shared). Errors, partial streams and answers without a finish_reason are never stored.

It does not do semantic (similar-prompt) caching, and it cannot make GPUs bit-exact: where
batch composition changes a greedy answer in a near tie, the cache pins the first answer.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, generate_latest

from .. import _memo
from ..errors import InvalidArgumentError

IGNORED_FIELDS = frozenset({"stream", "stream_options", "user"})
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.pth")
# besides weights, the files that change an answer: architecture, defaults, tokenizer
_ANSWER_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class ModelIdentity:
    """Which model answers: its name and a digest of its weights (or a provider's version)."""

    name: str
    digest: str

    def __post_init__(self) -> None:
        if not (
            isinstance(self.name, str)
            and self.name
            and isinstance(self.digest, str)
            and self.digest
        ):
            raise InvalidArgumentError(
                "ModelIdentity needs a name and a digest, e.g. dk.model_identity('toy-tiny'), or "
                "ModelIdentity('gpt-4o-mini', '2024-07-18') for a hosted model's dated version."
            )


_digests: dict[tuple, str] = {}


def model_digest(name_or_path: str | Path) -> str:
    """Return the sha256 of a local model's weight, config and tokenizer files (cached)."""
    from ..models import resolve_model

    source = resolve_model(name_or_path, progress=False)
    if source.folder is None:
        raise InvalidArgumentError(
            f"{name_or_path!r} has no local folder to hash. Download it first (or pass its "
            f"folder), or use ModelIdentity({str(name_or_path)!r}, '<revision sha>') with the "
            f"hub revision you serve."
        )
    folder = source.folder.resolve()
    files = sorted(
        {
            p
            for pattern in _WEIGHT_PATTERNS + _ANSWER_FILES
            for p in folder.glob(pattern)
            if p.is_file()
        }
    )
    if not any(p.match(pattern) for p in files for pattern in _WEIGHT_PATTERNS):
        raise InvalidArgumentError(
            f"{folder} has no weight files ({', '.join(_WEIGHT_PATTERNS)})"
            f"; point model_digest at a model folder."
        )
    signature = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    memo_key = (str(folder), signature)
    if memo_key not in _digests:
        # hashing a 7B model's 15 GB takes a minute: keep digests on disk, keyed by size and mtime
        def digest() -> str:
            total = hashlib.sha256()
            for path in files:
                total.update(path.name.encode() + b"\0" + _file_sha256(path).encode())
            return total.hexdigest()

        disk_key = hashlib.sha256(json.dumps(memo_key).encode()).hexdigest()
        _digests[memo_key] = _memo.remembered("model-digests.json", disk_key, digest)
    return _digests[memo_key]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(name_or_path: str | Path, name: str | None = None) -> ModelIdentity:
    """Return the ModelIdentity of a local model: name (default: as given) + model_digest."""
    return ModelIdentity(name or str(name_or_path), model_digest(name_or_path))


def is_deterministic(request: dict) -> bool:
    """Return True when a request asks for a reproducible answer: temperature 0 or a seed."""
    temperature, seed = request.get("temperature"), request.get("seed")
    greedy = (
        isinstance(temperature, (int, float))
        and not isinstance(temperature, bool)
        and temperature == 0
    )
    return greedy or (isinstance(seed, int) and not isinstance(seed, bool))


def _normalize(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def route_of(path: str) -> str:
    """Return "chat" or "completions" for a request path (a base URL's /v1 prefix may vary)."""
    path = path.rstrip("/")
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/completions"):
        return "completions"
    raise InvalidArgumentError(
        f"only /v1/completions and /v1/chat/completions are cached, not {path!r}."
    )


def cache_key(path: str, request: dict, identity: ModelIdentity) -> str | None:
    """Return the cache key of a request, or None when it samples (never cached)."""
    if not is_deterministic(request):
        return None
    fields = _normalize({k: v for k, v in request.items() if k not in IGNORED_FIELDS})
    text = json.dumps(
        {
            "route": route_of(path),
            "model": identity.name,
            "digest": identity.digest,
            "request": fields,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def cacheable_response(response: Any) -> bool:
    """Return True for a whole answer: choices, each with a finish_reason, and no error."""
    if not isinstance(response, dict) or response.get("error"):
        return False
    choices: Any = response.get("choices")  # JSON: a list when present
    return bool(choices) and all(isinstance(c, dict) and c.get("finish_reason") for c in choices)


_counters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class CacheMetrics:
    """Hit, miss, store and skip counters of one cache, in a Prometheus registry."""

    def __init__(self, registry: CollectorRegistry | None = None, cache_name: str = "default"):
        self.registry = registry or CollectorRegistry()
        self.cache_name = cache_name
        if self.registry not in _counters:  # several caches may share a registry: one set
            make = lambda name, doc, *labels: Counter(  # noqa: E731
                f"deploykit_response_cache_{name}", doc, ["cache", *labels], registry=self.registry
            )
            _counters[self.registry] = {
                "hits": make("hits", "Requests answered from the response cache"),
                "misses": make("misses", "Deterministic requests not found in the cache"),
                "stores": make("stores", "Whole answers written to the cache"),
                "skipped": make("skipped", "Requests or answers not cached, by reason", "reason"),
            }
        self._c = _counters[self.registry]

    def hit(self) -> None:
        self._c["hits"].labels(self.cache_name).inc()

    def miss(self) -> None:
        self._c["misses"].labels(self.cache_name).inc()

    def stored(self) -> None:
        self._c["stores"].labels(self.cache_name).inc()

    def skipped(self, reason: str) -> None:
        """Count a request or answer not cached: nondeterministic, error, partial_stream..."""
        self._c["skipped"].labels(self.cache_name, reason).inc()

    def value(self, name: str, reason: str | None = None) -> float:
        """Return a counter's value: "hits", "misses", "stores" or "skipped" (with a reason)."""
        labels = {"cache": self.cache_name, **({"reason": reason} if reason else {})}
        return (
            self.registry.get_sample_value(f"deploykit_response_cache_{name}_total", labels) or 0.0
        )

    def text(self) -> str:
        """Return the registry in Prometheus' text exposition format."""
        return generate_latest(self.registry).decode()


@runtime_checkable
class ResponseCache(Protocol):
    """What the client and the middleware need of a cache."""

    metrics: CacheMetrics

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, response: dict) -> None: ...

    def lookup(
        self, path: str, request: dict, identity: ModelIdentity
    ) -> tuple[str | None, dict | None]: ...

    def store(self, key: str, response: dict) -> bool: ...


class _CountingCache:
    """lookup() and store() over get()/put(), counting every outcome."""

    metrics: CacheMetrics

    if TYPE_CHECKING:  # each subclass defines them

        def get(self, key: str) -> dict | None: ...

        def put(self, key: str, response: dict) -> None: ...

    def lookup(
        self, path: str, request: dict, identity: ModelIdentity
    ) -> tuple[str | None, dict | None]:
        """Return (key, stored answer or None); key None: the request samples, do not store."""
        key = cache_key(path, request, identity)
        if key is None:
            self.metrics.skipped("nondeterministic")
            return None, None
        found = self.get(key)
        self.metrics.hit() if found is not None else self.metrics.miss()
        return key, found

    def store(self, key: str, response: dict) -> bool:
        """Store a whole answer under key; refuse (and count) errors and partial answers."""
        if not cacheable_response(response):
            self.metrics.skipped("incomplete_or_error")
            return False
        self.put(key, response)
        self.metrics.stored()
        return True


def _check_limits(max_entries: int | None, ttl_s: float) -> None:
    if max_entries is not None and (
        isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1
    ):
        raise InvalidArgumentError(f"max_entries must be an int >= 1, got {max_entries!r}.")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not ttl_s > 0:
        raise InvalidArgumentError(f"ttl_s must be > 0 seconds (e.g. 3600), got {ttl_s!r}.")


class MemoryCache(_CountingCache):
    """An in-process LRU cache whose entries expire ttl_s after they were stored."""

    def __init__(
        self,
        max_entries: int = 1024,
        ttl_s: float = 3600.0,
        *,
        registry: CollectorRegistry | None = None,
        name: str = "memory",
    ) -> None:
        _check_limits(max_entries, ttl_s)
        self.max_entries, self.ttl_s = max_entries, ttl_s
        self.metrics = CacheMetrics(registry, name)
        self._entries: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._lock = threading.Lock()  # the notebook's threads and the middleware share one

    def get(self, key: str) -> dict | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if time.monotonic() - entry[1] > self.ttl_s:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return json.loads(entry[0])  # a fresh copy: callers may change what they get

    def put(self, key: str, response: dict) -> None:
        text = json.dumps(response)
        with self._lock:
            self._entries[key] = (text, time.monotonic())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class SQLiteCache(_CountingCache):
    """A cache in an SQLite file: it survives restarts; entries expire ttl_s after storing."""

    def __init__(
        self,
        path: str | Path,
        ttl_s: float = 86400.0,
        *,
        max_entries: int | None = None,
        registry: CollectorRegistry | None = None,
        name: str = "sqlite",
    ) -> None:
        _check_limits(max_entries, ttl_s)
        self.path, self.ttl_s, self.max_entries = Path(path), ttl_s, max_entries
        self.metrics = CacheMetrics(registry, name)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # autocommit: each put is its own transaction; WAL lets other processes read meanwhile
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, "
            "response TEXT NOT NULL, stored_at REAL NOT NULL)"
        )

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response, stored_at FROM responses WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            if time.time() - row[1] > self.ttl_s:  # wall clock: entries outlive this process
                self._db.execute("DELETE FROM responses WHERE key = ?", (key,))
                return None
        return json.loads(row[0])

    def put(self, key: str, response: dict) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                (key, json.dumps(response), time.time()),
            )
            if self.max_entries is not None:
                self._db.execute(
                    "DELETE FROM responses WHERE key NOT IN (SELECT key FROM "
                    "responses ORDER BY stored_at DESC LIMIT ?)",
                    (self.max_entries,),
                )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    @classmethod
    def temporary(cls, ttl_s: float = 86400.0, **kwargs: Any) -> SQLiteCache:
        """Return a cache in a new file in the temp folder (close(delete=True) removes it)."""
        import tempfile

        return cls(
            Path(tempfile.mkdtemp(prefix="deploykit-cache-")) / "responses.sqlite", ttl_s, **kwargs
        )

    def close(self, delete: bool = False) -> None:
        """Close the database file; its entries stay in it unless delete=True."""
        with self._lock:
            self._db.close()
        if delete:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def __enter__(self) -> SQLiteCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
