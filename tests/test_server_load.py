"""`deploykit serve` under stress: clients leaving, overload, SIGTERM drain, failing streams."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
from _servers import MODEL, start_server, wait_for

import deploykit as dk

LONG = {
    "model": MODEL,
    "prompt": "def main():",
    "max_tokens": 1500,
    "ignore_eos": True,
    "temperature": 0,
}


def metric(server, name: str) -> float:
    return dk.scrape_metrics(server.url).value(name)  # MetricNotFoundError when absent


async def send_many(url: str, body: dict, n: int, timeout_s: float) -> list:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:

        async def one():
            try:
                return await client.post("/v1/completions", json=body)
            except httpx.HTTPError as exc:
                return exc

        return await asyncio.gather(*(one() for _ in range(n)))


def test_clients_that_leave_are_dropped():
    with start_server("--max-waiting", "256", name="serve-cancel") as srv:
        results = asyncio.run(send_many(srv.url, LONG, 200, timeout_s=0.5))
        answered = [r for r in results if not isinstance(r, httpx.TimeoutException)]
        assert not answered, [getattr(r, "status_code", r) for r in answered][:5]
        start = time.monotonic()
        resp = httpx.post(
            srv.url + "/v1/completions",
            timeout=30,
            json={"model": MODEL, "prompt": "hi", "max_tokens": 16},
        )
        assert resp.status_code == 200 and time.monotonic() - start < 5.0
        wait_for(
            lambda: (
                metric(srv, "deploykit:num_requests_running") == 0
                and metric(srv, "deploykit:num_requests_waiting") == 0
            ),
            timeout_s=10,
        )


def test_overload_gets_503_with_retry_after_and_recovers():
    with start_server("--max-batch-size", "2", "--max-waiting", "4", name="serve-overload") as srv:
        body = {**LONG, "max_tokens": 100}
        results = asyncio.run(send_many(srv.url, body, 40, timeout_s=120))
        statuses = [r.status_code for r in results]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(503) >= 20 and statuses.count(200) >= 2
        refused = next(r for r in results if r.status_code == 503)
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["error"]["type"] == "overloaded_error"
        ok = httpx.post(
            srv.url + "/v1/completions",
            timeout=30,
            json={"model": MODEL, "prompt": "hi", "max_tokens": 8},
        )
        assert ok.status_code == 200


def test_sigterm_drains_in_flight_requests_then_exits():
    srv = start_server("--drain-timeout-s", "60", name="serve-drain")
    with srv:
        body = {**LONG, "max_tokens": 300}

        async def scenario():
            inflight = asyncio.ensure_future(send_many(srv.url, body, 10, timeout_s=120))
            await asyncio.to_thread(
                wait_for,
                lambda: (
                    metric(srv, "deploykit:num_requests_running")
                    + metric(srv, "deploykit:num_requests_waiting")
                    >= 10
                ),
            )
            os.kill(srv.pid, signal.SIGTERM)
            await asyncio.sleep(0.2)
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    late = await client.post(
                        srv.url + "/v1/completions", json={"model": MODEL, "prompt": "hi"}
                    )
                    ready = await client.get(srv.url + "/ready")
                late = (late.status_code, ready.status_code)
            except httpx.ConnectError:
                late = "refused"
            return await inflight, late

        results, late = asyncio.run(scenario())
        assert [getattr(r, "status_code", r) for r in results] == [200] * 10
        assert all(r.json()["usage"]["completion_tokens"] == 300 for r in results)
        assert late in ("refused", (503, 503))
        assert srv.wait(timeout_s=30) is not None  # the process exited by itself


def test_stream_cut_by_drain_timeout_ends_with_error_then_done():
    srv = start_server("--drain-timeout-s", "0.5", name="serve-cut")
    with srv:
        lines = []
        with httpx.stream(
            "POST", srv.url + "/v1/completions", timeout=60, json={**LONG, "stream": True}
        ) as resp:
            for line in resp.iter_lines():
                if not line:
                    continue
                lines.append(line)
                if len(lines) == 3:
                    os.kill(srv.pid, signal.SIGTERM)
        assert lines[-1] == "data: [DONE]"
        error = json.loads(lines[-2][6:])
        assert set(error["error"]) == {"message", "type", "param", "code"}
        assert len(lines) < 1500  # it really was cut short
        assert srv.wait(timeout_s=30) is not None
