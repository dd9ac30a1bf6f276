"""Start `deploykit serve` processes for the server tests (real processes, health polled)."""

from __future__ import annotations

import sys

from deploykit.launch import launch

MODEL = "toy-tiny"


def start_server(*flags: str, name: str = "serve-test", device: str = "cpu"):
    """Launch `deploykit serve --model toy-tiny` on a free loopback port with extra flags."""
    command = [sys.executable, "-m", "deploykit.cli", "serve", "--model", MODEL,
               "--host", "{host}", "--port", "{port}", "--device", device, *flags]
    # one thread each: several test servers and the test process share two cores
    return launch(command, timeout_s=180.0, name=name,
                  env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})


def assert_openai_error(response, status: int) -> dict:
    """Check status and OpenAI's error shape; return the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return body["error"]
