"""Start `deploykit serve` processes for the server tests (real processes, health polled)."""

from __future__ import annotations

from deploykit.server.process import start_server as _start

MODEL = "toy-tiny"


def start_server(*flags: str, name: str = "serve-test", device: str = "cpu"):
    """Start `deploykit serve --model toy-tiny` on a free loopback port with extra flags."""
    # one thread each: several test servers and the test process share two cores
    return _start(MODEL, device=device, args=flags, name=name, timeout_s=180.0,
                  env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})


def assert_openai_error(response, status: int) -> dict:
    """Check status and OpenAI's error shape; return the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return body["error"]
