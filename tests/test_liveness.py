"""deploykit.server.liveness: the kubelet's liveness rule, against a server that blocks or not.

The server is a real single-threaded HTTP server on loopback: while its one thread serves a
slow request it answers nothing else, as a server whose event loop is blocked by generation.
"""

from __future__ import annotations

import http.server
import threading
import time

import httpx
import pytest

import deploykit as dk
from deploykit.launch import free_port
from deploykit.server.liveness import LivenessResult

PROBE = dk.LivenessProbe(timeout_s=0.3, period_s=0.4, failure_threshold=3)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/busy"):
            time.sleep(float(self.path.split("=")[1]))  # holds the server's only thread
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def url():
    server = http.server.HTTPServer(("127.0.0.1", free_port()), _Handler)  # one thread
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_blocked_server_fails_its_probes_and_would_be_restarted(url):
    busy = lambda: httpx.get(url + "/busy?s=2.5", timeout=10, trust_env=False).status_code  # noqa: E731
    status, result = dk.probe_liveness(url, busy, PROBE)
    assert status == 200
    assert result.failures >= PROBE.failure_threshold
    assert result.restart_at_s is not None and result.restart_at_s < 2.5
    assert "restarts the container" in result.summary()


def test_a_free_server_answers_every_probe(url):
    value, result = dk.probe_liveness(url, lambda: time.sleep(1.0) or "done", PROBE)
    assert value == "done" and len(result.latencies_s) >= 2
    assert result.failures == 0 and result.restart_at_s is None
    assert result.worst_s < PROBE.timeout_s and "no restart" in result.summary()


def test_an_error_in_the_work_is_raised():
    def fail():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        dk.probe_liveness("http://127.0.0.1:9", fail, PROBE)


def test_restart_needs_failures_in_a_row():
    probe = dk.LivenessProbe(timeout_s=1.0, period_s=1.0, failure_threshold=3)
    broken = LivenessResult(probe, (0.0, 1.0, 2.0, 3.0, 4.0), (None, None, 0.01, None, None))
    assert broken.failures == 4 and broken.restart_at_s is None
    three = LivenessResult(probe, (0.0, 1.0, 2.0, 3.0), (0.01, None, None, None))
    assert three.restart_at_s == pytest.approx(4.0)
    with pytest.raises(dk.InvalidArgumentError):
        dk.LivenessProbe(failure_threshold=0)
