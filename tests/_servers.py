"""Start `deploykit serve` processes for the server tests (real processes, health polled),
load them, and wait for what they do in the background."""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from deploykit.router import start_replicas as _start_replicas
from deploykit.server.process import start_server as _start

MODEL = "toy-tiny"

COMPLETION = {"model": MODEL, "prompt": "The answer is", "max_tokens": 8, "temperature": 0}


def post_completions(url: str, requests: int, concurrency: int) -> list[httpx.Response]:
    """POST COMPLETION to url's /v1/completions `requests` times, `concurrency` at a time."""

    async def load() -> list[httpx.Response]:
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as client:

            async def one():
                async with sem:
                    return await client.post("/v1/completions", json=COMPLETION)

            return await asyncio.gather(*(one() for _ in range(requests)))

    return asyncio.run(load())


def start_server(*flags: str, name: str = "serve-test", device: str = "cpu", model: str = MODEL):
    """Start `deploykit serve --model toy-tiny` (or model) on a free loopback port with flags."""
    # one thread each: several test servers and the test process share two cores
    return _start(
        model,
        device=device,
        args=flags,
        name=name,
        timeout_s=180.0,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )


def assert_openai_error(response, status: int) -> dict:
    """Check status and OpenAI's error shape; return the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return body["error"]


def wait_for(
    condition,
    timeout_s: float = 30.0,
    poll_s: float = 0.05,
    message: str = "condition not met in time",
) -> None:
    """Poll condition() until it is true; fail the test with message after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(poll_s)


@contextlib.contextmanager
def three_replicas(name: str):
    """Start three toy-tiny replicas side by side (one thread each); stop what the list holds."""
    # each takes ~10 s to load; they load side by side, one thread each on the shared cores
    servers = _start_replicas(MODEL, 3, device="cpu", threads=1, name=name)
    try:
        yield servers  # a test may put a restarted replica in the list: it is stopped too
    finally:
        with ThreadPoolExecutor(3) as pool:  # stop them side by side too
            list(pool.map(lambda server: server.stop(), servers))
