"""The load generator against a real `deploykit serve`: plain, streamed, refused, probed."""

from __future__ import annotations

import sys
import textwrap

import pytest
from _servers import MODEL, start_server

from deploykit.bench.loadgen import (
    LoadResult,
    LoadSpec,
    RequestResult,
    _token_chunk,
    probe_during_load,
    run_load,
)
from deploykit.bench.tables import load_table
from deploykit.errors import InvalidArgumentError
from deploykit.launch import free_port, launch_server


@pytest.fixture(scope="module")
def server():
    with start_server(name="serve-loadgen") as srv:
        yield srv


def test_plain_load_counts_every_token(server):
    spec = LoadSpec(model=MODEL, prompt="def main():", max_tokens=8)
    load = run_load(server.url, spec, num_requests=12, concurrency=4)
    assert load.num_ok == 12 and load.concurrency == 4
    assert [r.output_tokens for r in load.results] == [8] * 12
    assert load.output_tokens_per_s == pytest.approx(96 / load.wall_s)
    assert load.latency_s(0.5) <= load.latency_s(0.9) <= load.wall_s


def test_streamed_chat_load_measures_time_to_first_token(server):
    spec = LoadSpec(model=MODEL, prompt="Say hi", max_tokens=6, stream=True, chat=True)
    load = run_load(server.url, spec, num_requests=4, concurrency=2)
    assert load.num_ok == 4 and all(r.output_tokens == 6 for r in load.results)
    assert all(0 < r.time_to_first_token_s <= r.latency_s for r in load.results)


def test_load_table_has_a_row_per_load_with_its_own_figures(server):
    plain = run_load(server.url, LoadSpec(model=MODEL, max_tokens=4), num_requests=4, concurrency=2)
    streamed = LoadSpec(model=MODEL, prompt="Say hi", max_tokens=4, stream=True, chat=True)
    sweep = [run_load(server.url, streamed, num_requests=2, concurrency=c) for c in (1, 2)]
    refused = run_load(server.url, LoadSpec(model="no-such-model", max_tokens=4), 2, None)
    table = load_table({"plain": plain, "streamed": sweep, "refused": refused})
    assert list(table["server"]) == ["plain", "streamed", "streamed", "refused"]
    assert list(table["concurrency"]) == [2, 1, 2, "no limit"]
    assert list(table["ok"]) == ["4/4", "2/2", "2/2", "0/2"]
    assert table["output tok/s"][0] == round(plain.output_tokens_per_s, 1) > 0
    assert table["latency p50 ms"][1] == round(sweep[0].latency_s(0.5) * 1e3, 1)
    assert table["TTFT p50 ms"].isna().tolist() == [True, False, False, True]  # streamed only
    assert table["latency p90 ms"].isna().tolist() == [False, False, False, True]


def test_refused_requests_are_recorded_not_raised(server):
    wrong = run_load(server.url, LoadSpec(model="no-such-model", max_tokens=4), 3, 3)
    assert [r.status for r in wrong.results] == [404] * 3 and wrong.num_ok == 0
    assert "does not exist" in wrong.results[0].error
    assert wrong.output_tokens_per_s == 0
    nobody = run_load(f"http://127.0.0.1:{free_port()}", LoadSpec(max_tokens=4), 2, 2)
    assert [r.status for r in nobody.results] == [0, 0]
    assert all("Connect" in r.error for r in nobody.results)


def test_probe_answers_while_the_server_generates(server):
    spec = LoadSpec(model=MODEL, prompt="def main():", max_tokens=64)
    load, probes = probe_during_load(
        server.url, spec, num_requests=4, concurrency=1, interval_s=0.02
    )
    assert load.num_ok == 4 and probes
    assert max(probes) < load.wall_s  # /health never waits for a whole generation


# Answers every POST with 200 and an empty JSON object: no usage, so no token count.
NO_USAGE_SERVER = textwrap.dedent("""
    import http.server, sys
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")


def test_a_200_without_usage_counts_as_failed_and_says_why():
    with launch_server(
        [sys.executable, "-c", NO_USAGE_SERVER, "{port}"], health_path="/", name="no-usage"
    ) as srv:
        load = run_load(srv.url, LoadSpec(max_tokens=4), 2, 2)
    assert load.num_ok == 0 and [r.status for r in load.results] == [200, 200]
    assert load.results[0].error == "the response has no usage field"


@pytest.mark.parametrize("num_requests, concurrency", [(0, 1), (4, 0), (4, -2), (2.5, 1)])
def test_bad_counts_fail_before_any_request(num_requests, concurrency):
    import deploykit as dk

    port = free_port()  # nothing listens: a request sent would come back as a failure, not raise
    with pytest.raises(dk.InvalidArgumentError, match=">= 1"):
        run_load(f"http://127.0.0.1:{port}", LoadSpec(), num_requests, concurrency)


# Keep-alive HTTP/1.1 server that answers POSTs with a usage body and GET /ports with the
# client ports it has seen (one per TCP connection).
PORTS_SERVER = textwrap.dedent("""
    import http.server, json, sys
    seen = set()
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def _send(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def do_GET(self):
            self._send(sorted(seen))
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.add(self.client_address[1])
            self._send({"usage": {"completion_tokens": 1}})
        def log_message(self, *args):
            pass
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")


@pytest.mark.parametrize("keep_alive, most_connections", [(True, 2), (False, 8)])
def test_keep_alive_reuses_connections_unless_turned_off(keep_alive, most_connections):
    import httpx

    with launch_server(
        [sys.executable, "-c", PORTS_SERVER, "{port}"], health_path="/ports", name="ports"
    ) as srv:
        load = run_load(srv.url, LoadSpec(max_tokens=1, keep_alive=keep_alive), 8, 2)
        ports = httpx.get(srv.url + "/ports", trust_env=False).json()
    assert load.num_ok == 8
    assert len(ports) <= most_connections and (keep_alive or len(ports) == 8), ports


@pytest.mark.parametrize(
    "event, chat, is_token",
    [
        ({"choices": [{"text": " the", "finish_reason": None}]}, False, True),
        ({"choices": [{"text": "", "finish_reason": None}]}, False, True),  # half a character
        ({"choices": [{"text": "", "finish_reason": "length"}], "usage": {}}, False, False),
        ({"choices": [], "usage": {"completion_tokens": 8}}, False, False),
        ({"choices": [{"delta": {"role": "assistant", "content": ""}}]}, True, False),
        ({"choices": [{"delta": {"content": " hi"}, "finish_reason": None}]}, True, True),
    ],
)
def test_only_chunks_that_carry_a_token_count_as_arrivals(event, chat, is_token):
    # llama.cpp closes with an empty, finished chunk; a chat stream opens with a role-only one
    assert _token_chunk(event, chat) is is_token


def test_streamed_requests_record_token_arrivals_and_prompt_lengths(server):
    spec = LoadSpec(model=MODEL, max_tokens=6, stream=True)
    load = run_load(
        server.url,
        spec,
        num_requests=3,
        concurrency=3,
        prompts=["def main():", "import os"],
        prompt_tokens=[99, 99],
    )
    assert load.num_ok == 3 and [r.output_tokens for r in load.results] == [6] * 3
    for r in load.results:
        assert r.input_tokens not in (None, 99)  # the server's usage wins over the estimate
        assert r.time_to_first_token_s + sum(r.itl_s) == pytest.approx(r.latency_s)
    assert load.serve_metrics()["output_throughput"] == load.output_tokens_per_s


def test_busy_load_fills_busy_s_with_as_many_requests_as_the_context_needs():
    from deploykit.bench.loadgen import busy_load

    spec = LoadSpec(model=MODEL, prompt="def main():", max_tokens=50)

    def short(latency_s):  # a run of spec: 50 tokens in latency_s
        return LoadResult(1, 1.0, tuple(RequestResult(200, latency_s, None, 50) for _ in range(3)))

    # 10 ms a token: 6 s is 600 tokens, one request would do; at least two are sent
    busy, count = busy_load(spec, short(0.5), busy_s=6.0, max_tokens=1900)
    assert (busy.max_tokens, count) == (600, 2) and busy.prompt == spec.prompt
    # 1 ms a token: 6000 tokens do not fit; 1900-token requests, 4 of them (7.6 s)
    busy, count = busy_load(spec, short(0.05), busy_s=6.0, max_tokens=1900)
    assert (busy.max_tokens, count) == (1900, 4)
    failed = LoadResult(1, 1.0, (RequestResult(0, 0.1, None, 0, error="refused"),))
    with pytest.raises(InvalidArgumentError, match="short run with successful requests"):
        busy_load(spec, failed, busy_s=6.0, max_tokens=1900)
    with pytest.raises(InvalidArgumentError, match="busy_s > 0"):
        busy_load(spec, short(0.5), busy_s=0, max_tokens=1900)
