"""The response cache: keys, LRU/TTL, SQLite across a restart, the client and the middleware."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from _servers import MODEL, start_server
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import deploykit as dk
from deploykit.client.cache import cache_key, model_digest
from deploykit.models.toy import toy_path

GREEDY = {"model": MODEL, "prompt": "The answer is", "max_tokens": 8, "temperature": 0}
IDENTITY = dk.ModelIdentity(MODEL, "digest-a")
FAST = dk.RetryPolicy(max_attempts=2, backoff_initial_s=0.05)


@pytest.fixture(scope="module")
def proxy():
    server = start_server(name="cache-upstream")
    with dk.start_fault_proxy(server.url) as fault_proxy:
        yield fault_proxy
    server.stop()


@pytest.fixture()
def faults(proxy):
    proxy.clear(stats=True)
    yield proxy
    proxy.clear(stats=True)


def _forwarded(proxy) -> int:
    return sum(r["path"].startswith("/v1/") for r in proxy.stats()["requests"])


def _client(proxy, cache, identity=IDENTITY) -> dk.ResilientClient:
    return dk.ResilientClient(
        proxy.url + "/v1", model=MODEL, cache=cache, model_identity=identity, retry=FAST
    )


def test_keys_follow_the_answer_not_the_spelling():
    key = cache_key("/v1/completions", GREEDY, IDENTITY)
    same = {
        "temperature": 0.0,
        "max_tokens": 8,
        "prompt": "The answer is",
        "model": MODEL,
        "stream": True,
        "user": "u1",
        "top_p": None,
    }
    assert cache_key("/completions", same, IDENTITY) == key
    assert cache_key("/v1/completions", {**GREEDY, "max_tokens": 9}, IDENTITY) != key
    assert cache_key("/v1/chat/completions", GREEDY, IDENTITY) != key
    assert cache_key("/v1/completions", GREEDY, dk.ModelIdentity(MODEL, "digest-b")) != key
    assert cache_key("/v1/completions", {**GREEDY, "temperature": 0.8}, IDENTITY) is None
    no_temperature = {k: v for k, v in GREEDY.items() if k != "temperature"}
    assert cache_key("/v1/completions", no_temperature, IDENTITY) is None  # default samples
    assert cache_key("/v1/completions", {**GREEDY, "temperature": 0.8, "seed": 7}, IDENTITY)


def test_memory_cache_is_lru_with_ttl():
    cache = dk.MemoryCache(max_entries=2, ttl_s=0.2)
    answer = {"choices": [{"text": "x", "finish_reason": "stop"}]}
    for key in "abc":
        cache.put(key, answer)
    assert cache.get("a") is None and cache.get("b") == answer and len(cache) == 2
    cache.get("b")["choices"].clear()  # callers get copies
    assert cache.get("b") == answer
    time.sleep(0.25)
    assert cache.get("b") is None


def test_model_digest_changes_with_the_weights(tmp_path):
    digest = model_digest(MODEL)
    assert len(digest) == 64 and model_digest(MODEL) == digest
    folder = tmp_path / "copy"
    shutil.copytree(toy_path(MODEL, progress=False), folder)
    assert model_digest(folder) == digest  # same bytes, another path: same model
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_digest(folder) != digest
    assert dk.model_identity(folder, name=MODEL).name == MODEL
    with pytest.raises(dk.InvalidArgumentError, match="no local folder"):
        model_digest("some-org/some-model")


def test_identical_greedy_requests_hit_and_sampling_never_caches(faults):
    cache = dk.MemoryCache()
    with _client(faults, cache) as client:
        first = client.completions(GREEDY["prompt"], max_tokens=8, temperature=0)
        second = client.completions(GREEDY["prompt"], max_tokens=8, temperature=0.0)
        assert not first.cached and second.cached and second.attempts == 0
        assert second.text == first.text and _forwarded(faults) == 1
        for _ in range(2):
            client.completions(GREEDY["prompt"], max_tokens=8, temperature=0.8)
        assert _forwarded(faults) == 3 and len(cache) == 1
    assert cache.metrics.value("hits") == 1 and cache.metrics.value("misses") == 1
    assert cache.metrics.value("skipped", "nondeterministic") == 2
    text = cache.metrics.text()
    assert 'deploykit_response_cache_hits_total{cache="memory"} 1.0' in text


def test_errors_and_partial_streams_are_not_cached(faults):
    cache = dk.MemoryCache()
    with _client(faults, cache) as client:
        faults.inject(status=503)
        with pytest.raises(dk.RetryBudgetExhaustedError):
            client.completions(GREEDY["prompt"], max_tokens=8, temperature=0)
        faults.clear()
        with pytest.raises(dk.RequestRejectedError):
            client.completions(GREEDY["prompt"], max_tokens=-1, temperature=0)
        assert len(cache) == 0
        chat = [{"role": "user", "content": "hi"}]
        faults.inject(cut_stream_after_chunks=3, count=1)
        with pytest.raises(dk.StreamInterruptedError):
            "".join(client.stream_chat(chat, max_tokens=300, ignore_eos=True, temperature=0))
        assert len(cache) == 0 and cache.metrics.value("skipped", "partial_stream") == 1
        streamed = "".join(client.stream_chat(chat, max_tokens=24, temperature=0))
        assert len(cache) == 1  # a whole stream is stored, and answers the non-stream request
        forwarded = _forwarded(faults)
        again = client.chat(chat, max_tokens=24, temperature=0)
        assert again.cached and again.text == streamed and _forwarded(faults) == forwarded


def test_sqlite_cache_survives_a_restart_and_a_new_digest_misses(faults, tmp_path):
    path = tmp_path / "responses.sqlite"
    with dk.SQLiteCache(path) as cache, _client(faults, cache) as client:
        stored = client.completions(GREEDY["prompt"], max_tokens=8, temperature=0).text
    # a new process, with no server at all: the answer comes from the file
    script = (
        f"import deploykit as dk; c = dk.ResilientClient('http://127.0.0.1:1/v1', "
        f"model={MODEL!r}, cache=dk.SQLiteCache({str(path)!r}), model_identity="
        f"dk.ModelIdentity({MODEL!r}, 'digest-a')); a = c.completions("
        f"{GREEDY['prompt']!r}, max_tokens=8, temperature=0); print(a.cached, a.text)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"True {stored}".strip()
    with dk.SQLiteCache(path) as cache:
        retrained = dk.ModelIdentity(MODEL, "digest-b")
        with _client(faults, cache, retrained) as client:
            assert not client.completions(GREEDY["prompt"], max_tokens=8, temperature=0).cached
        assert len(cache) == 2 and cache.metrics.value("misses") == 1
    assert _forwarded(faults) == 2


def test_sqlite_entries_expire(tmp_path):
    with dk.SQLiteCache(tmp_path / "c.sqlite", ttl_s=0.1, max_entries=1) as cache:
        answer = {"choices": [{"text": "x", "finish_reason": "stop"}]}
        cache.put("a", answer)
        cache.put("b", answer)
        assert cache.get("a") is None and cache.get("b") == answer  # max_entries=1
        time.sleep(0.15)
        assert cache.get("b") is None


def _tiny_app() -> Starlette:
    calls = []

    async def completions(request):
        body = await request.json()
        calls.append(body)
        if body.get("prompt") == "fail":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        return JSONResponse(
            {"choices": [{"text": f"answer {len(calls)}", "finish_reason": "stop"}]}
        )

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
    app.state.calls = calls
    return app


def test_middleware_caches_200_deterministic_answers_only():
    app, cache = _tiny_app(), dk.MemoryCache()
    with TestClient(dk.ResponseCacheMiddleware(app, cache, IDENTITY)) as http:
        first = http.post("/v1/completions", json=GREEDY)
        hit = http.post("/v1/completions", json=dict(reversed(GREEDY.items())))
        assert first.headers["x-deploykit-cache"] == "miss"
        assert hit.headers["x-deploykit-cache"] == "hit" and hit.json() == first.json()
        sampled = [
            http.post("/v1/completions", json={**GREEDY, "temperature": 1.0}) for _ in range(2)
        ]
        assert "x-deploykit-cache" not in sampled[0].headers
        assert sampled[0].json() != sampled[1].json()
        for _ in range(2):
            assert (
                http.post("/v1/completions", json={**GREEDY, "prompt": "fail"}).status_code == 500
            )
        streamed = http.post("/v1/completions", json={**GREEDY, "stream": True})
        assert "x-deploykit-cache" not in streamed.headers
    assert len(app.state.calls) == 1 + 2 + 2 + 1  # the hit never reached the app
    assert cache.metrics.value("skipped", "error") == 2 and len(cache) == 1


def test_middleware_needs_an_identity():
    with pytest.raises(dk.InvalidArgumentError, match="model_identity"):
        dk.ResponseCacheMiddleware(_tiny_app(), dk.MemoryCache(), "toy-tiny")
    with pytest.raises(dk.InvalidArgumentError):
        dk.MemoryCache(max_entries=0)
    with pytest.raises(dk.InvalidArgumentError):
        dk.SQLiteCache("x.sqlite", ttl_s=0)
    with pytest.raises(dk.InvalidArgumentError, match="digest"):
        dk.ModelIdentity(MODEL, "")
