"""The fault-injection proxy, a real process in front of a real toy-tiny server."""

from __future__ import annotations

import json

import httpx
import pytest
from _servers import MODEL, start_server

import deploykit as dk

COMPLETION = {"model": MODEL, "prompt": "The answer is", "max_tokens": 8, "temperature": 0}


@pytest.fixture(scope="module")
def upstream():
    server = start_server(name="faults-upstream")
    yield server
    server.stop()


@pytest.fixture()
def proxy(upstream):
    with dk.start_fault_proxy(upstream.url) as fault_proxy:
        yield fault_proxy


@pytest.fixture()
def http():
    with httpx.Client(trust_env=False, timeout=30.0) as client:
        yield client


def _events(lines) -> list[str]:
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


def test_forwards_requests_and_streams_unchanged(proxy, upstream, http):
    direct = http.post(upstream.url + "/v1/completions", json=COMPLETION).json()
    via = http.post(
        proxy.url + "/v1/completions", json=COMPLETION, headers={"Idempotency-Key": "abc"}
    ).json()
    assert via["choices"][0]["text"] == direct["choices"][0]["text"]  # greedy: same text
    with http.stream(
        "POST", proxy.url + "/v1/completions", json={**COMPLETION, "max_tokens": 32, "stream": True}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response.iter_lines())
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")
    stats = proxy.stats()
    assert stats["requests_seen"] == 2 and stats["faults_injected"] == 0
    assert [r["stream"] for r in stats["requests"]] == [False, True]
    assert stats["requests"][0]["idempotency_key"] == "abc"


def test_status_burst_with_retry_after_then_recovers(proxy, http):
    proxy.inject(status=503, count=2, retry_after_s=1)
    answers = [http.post(proxy.url + "/v1/completions", json=COMPLETION) for _ in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["retry-after"] == "1"
    assert "injected" in answers[0].json()["error"]["message"]
    stats = proxy.stats()
    assert stats["faults_by_kind"] == {"status": 2} and stats["active_faults"] == []
    assert len(proxy.request_times_s("/v1/")) == 3


def test_delay_makes_a_short_read_timeout_fire(proxy, http):
    proxy.inject(delay_s=2.0, count=1, path_prefix="/v1/")
    assert http.get(proxy.url + "/health").status_code == 200  # not under the prefix: no delay
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            proxy.url + "/v1/completions", json=COMPLETION, timeout=httpx.Timeout(5.0, read=0.3)
        )
    assert http.post(proxy.url + "/v1/completions", json=COMPLETION).status_code == 200
    assert proxy.stats()["faults_by_kind"] == {"delay": 1}


def test_cut_stream_drops_the_connection_after_k_events(proxy, http):
    proxy.inject(cut_stream_after_chunks=2, count=1)
    # a non-streamed request passes untouched and does not use the cut up
    assert http.post(proxy.url + "/v1/completions", json=COMPLETION).status_code == 200
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream(
            "POST",
            proxy.url + "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 200,
                "ignore_eos": True,
                "stream": True,
            },
        ) as response:
            for line in response.iter_lines():
                received += _events([line])
    assert len(received) == 2 and "[DONE]" not in received
    assert proxy.stats()["faults_by_kind"] == {"cut": 1}


def test_unreachable_upstream_is_a_502_and_a_stopped_proxy_refuses(http):
    with dk.start_fault_proxy(f"http://127.0.0.1:{dk.free_port()}") as proxy:
        answer = http.post(proxy.url + "/v1/completions", json=COMPLETION)
        assert answer.status_code == 502 and "could not reach" in answer.json()["error"]["message"]
    with pytest.raises(httpx.ConnectError):
        http.get(proxy.url + "/faults/health")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"status": 99},
        {"retry_after_s": 1},
        {"status": 503, "count": 0},
        {"delay_s": -1},
        {"cut_stream_after_chunks": -2},
        {"ignore_client_abort": "yes"},
    ],
)
def test_bad_fault_is_refused_before_anything_is_sent(kwargs):
    with pytest.raises(dk.InvalidArgumentError):
        dk.Fault(**kwargs)


def test_a_stream_shorter_than_the_cut_passes_whole(proxy, http):
    proxy.inject(cut_stream_after_chunks=50, count=1)
    with http.stream(
        "POST", proxy.url + "/v1/completions", json={**COMPLETION, "max_tokens": 2, "stream": True}
    ) as response:
        events = _events(response.iter_lines())
    assert events[-1] == "[DONE]" and len(events) < 50
    assert proxy.stats()["faults_by_kind"] == {}
