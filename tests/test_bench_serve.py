"""`deploykit bench --url` against real servers: vLLM's fields, open loop, failures, bad input."""

from __future__ import annotations

import json
import math
import sys
import textwrap

import httpx
import pytest
from _servers import MODEL, start_server

import deploykit as dk
from deploykit.bench.loadgen import arrival_times_s
from deploykit.bench.metrics import completed_latencies_s
from deploykit.bench.serve import EXTRA_FIELDS
from deploykit.bench.tables import failure_reasons
from deploykit.cli import main
from deploykit.launch import free_port, launch_server

# An OpenAI-style streaming server with known timing: after 100 ms the first token, then
# one token per chunk every 20 ms. argv[2]: "ok", "nousage" (no usage chunk), "500" (every
# POST fails), "die" (the process exits after its third answer), "empty" (an answer of no
# tokens) or "cut" (a stream that ends before any token). GET /count: POSTs seen.
FIXTURE = textwrap.dedent("""
    import http.server, json, os, sys, time
    port, mode = int(sys.argv[1]), sys.argv[2]
    seen = [0]
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass
        def do_GET(self):
            body = json.dumps(seen[0] if self.path == "/count" else
                              {"object": "list", "data": [{"id": "fixture"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def event(self, payload):
            self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\\n\\n")
            self.wfile.flush()
        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen[0] += 1
            if mode == "500":
                self.send_response(500)
                self.send_header("Content-Length", "21")
                self.end_headers()
                self.wfile.write(b"internal server error")
                return
            n = request["max_tokens"]
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if mode == "cut":
                return
            if mode == "empty":
                self.event({"choices": [{"text": "", "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 7, "completion_tokens": 0}})
                return
            for i in range(n):
                time.sleep(0.1 if i == 0 else 0.02)
                self.event({"choices": [{"text": f" t{i}",
                                         "finish_reason": "length" if i == n - 1 else None}]})
            if mode != "nousage":
                self.event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n}})
            self.wfile.write(b"data: [DONE]\\n\\n")
            self.wfile.flush()
            if mode == "die" and seen[0] == 3:
                os._exit(0)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
""")


def fixture_server(mode: str):
    """Start the fixture server in mode; healthy once /v1/models answers."""
    return launch_server(
        [sys.executable, "-c", FIXTURE, "{port}", mode],
        health_path="/v1/models",
        name=f"fixture-{mode}",
    )


@pytest.fixture(scope="module")
def server():
    with start_server(name="serve-bench") as srv:
        yield srv


def test_closed_loop_writes_vllms_fields_with_consistent_values(server, tmp_path):
    results = dk.bench_serve(
        server.url,
        concurrency=[1, 4],
        num_prompts=8,
        input_tokens=16,
        output_tokens=8,
        warmups=1,
        result_dir=tmp_path,
        progress=False,
    )
    saved_by_level = {
        r["max_concurrency"]: r
        for r in (json.loads(p.read_text()) for p in tmp_path.glob("*.json"))
    }
    assert [r["max_concurrency"] for r in results] == [1, 4] and len(saved_by_level) == 2
    for result in results:
        saved = saved_by_level[result["max_concurrency"]]
        assert saved == json.loads(json.dumps(result))  # the file holds the returned result
        expected = set(dk.RESULT_FIELDS) | set(EXTRA_FIELDS)
        assert expected <= set(saved), expected - set(saved)
        assert saved["model_id"] == MODEL and saved["request_rate"] == "inf"
        assert saved["completed"] == 8 and saved["failed"] == 0 and set(saved["errors"]) == {""}
        assert saved["output_lens"] == [8] * 8, "ignore_eos: every request is output_tokens long"
        assert saved["input_lens"] == [16] * 8, "prompts are input_tokens long on the server too"
        assert saved["total_output_tokens"] == sum(saved["output_lens"]) == 64
        assert saved["output_throughput"] == pytest.approx(64 / saved["duration"])
        for ttft, itl, e2el in zip(saved["ttfts"], saved["itls"], saved["latencies"]):
            assert 0 < ttft <= e2el <= saved["duration"]
            # gaps between chunks: deploykit may send several tokens, even all 8, in one chunk
            assert len(itl) <= 7
            assert ttft + sum(itl) == pytest.approx(e2el)  # E2EL ends at the last token chunk
        tpots = [(e - t) / 7 for t, e in zip(saved["ttfts"], saved["latencies"])]
        assert saved["mean_tpot_ms"] == pytest.approx(1000 * sum(tpots) / 8)
        assert saved["median_ttft_ms"] <= saved["p99_ttft_ms"] and saved["request_goodput"] is None
        assert saved["environment"]["cpu_cores"] >= 1 and saved["environment"]["model"] == MODEL


def test_open_loop_sends_on_the_seeded_poisson_schedule(server):
    [result] = dk.bench_serve(
        server.url,
        request_rate=20.0,
        num_prompts=8,
        input_tokens=8,
        output_tokens=4,
        warmups=0,
        seed=3,
        progress=False,
    )
    planned = arrival_times_s(8, 20.0, 1.0, seed=3)
    assert planned[-1] == pytest.approx(8 / 20.0)  # scaled to the offered load, as in vLLM
    assert result["request_rate"] == 20.0 and result["max_concurrency"] is None
    assert result["completed"] == 8 and result["duration"] >= planned[-1]
    for sent, due in zip(result["start_times"], planned):
        assert due <= sent < due + 0.25  # sent on time, whether or not earlier ones ended
    assert arrival_times_s(8, 20.0, 1.0, seed=3) == planned != arrival_times_s(8, 20.0, 1.0)


def test_gamma_burstiness_bunches_arrivals_and_keeps_the_rate():
    even = arrival_times_s(400, 10.0, burstiness=50.0)
    bursty = arrival_times_s(400, 10.0, burstiness=0.2)
    gaps = {
        name: [b - a for a, b in zip(t, t[1:])] for name, t in (("even", even), ("bursty", bursty))
    }
    assert even[-1] == pytest.approx(40.0) and bursty[-1] == pytest.approx(40.0)
    spread = {k: max(v) / (sum(v) / len(v)) for k, v in gaps.items()}
    assert spread["bursty"] > 5 * spread["even"], spread


@pytest.mark.parametrize("mode, tokens_from", [("ok", "usage"), ("nousage", "chunks")])
def test_one_token_per_chunk_gives_known_ttft_and_itls(mode, tokens_from):
    with fixture_server(mode) as srv:
        [result] = dk.bench_serve(
            srv.url,
            concurrency=2,
            num_prompts=4,
            input_tokens=8,
            output_tokens=5,
            warmups=0,
            progress=False,
        )
    assert result["model_id"] == "fixture" and result["completed"] == 4
    assert result["output_lens"] == [5] * 4  # from usage, or one token per chunk without it
    assert result["input_lens"] == ([7] * 4 if tokens_from == "usage" else [8] * 4)
    assert result["tokenizer_id"] is None and "common words" in result["prompt_source"]
    # the fixture waits 0.1 s before the first token and 0.02 s before each other one; one gap
    # may shrink when two chunks reach the client together, so single gaps are only >= 0
    for ttft, itl in zip(result["ttfts"], result["itls"]):
        assert ttft >= 0.1 and len(itl) == 4 and all(gap >= 0 for gap in itl)
    assert 15 < result["median_itl_ms"] < 500 and 15 < result["mean_tpot_ms"] < 500


def test_a_server_that_cannot_stream_is_measured_without_streaming(server):
    [result] = dk.bench_serve(
        server.url,
        concurrency=2,
        num_prompts=4,
        input_tokens=8,
        output_tokens=5,
        warmups=0,
        stream=False,
        keep_alive=False,
        progress=False,
    )
    assert result["completed"] == 4 and result["output_lens"] == [5] * 4
    assert result["stream"] is False and result["keep_alive"] is False
    # nothing reaches the user before the whole body: TTFT is E2EL, no TPOT or ITL exists
    assert result["ttfts"] == result["latencies"] and result["itls"] == [[]] * 4
    assert result["mean_ttft_ms"] == result["mean_e2el_ms"]
    # undefined, not 0 ms: null in the JSON, "n/a" in the printout, the table and the plot
    assert result["mean_tpot_ms"] is None and result["p99_itl_ms"] is None
    assert completed_latencies_s(result)["tpot"] == [None] * 4
    assert "Mean TPOT (ms):                          n/a" in dk.format_result(result)
    assert dk.bench_table([result])[0]["TPOT ms"] == "n/a"
    fig = dk.plot_bench({"one at a time": [result]})
    assert "not streamed, no TPOT: one at a time" in fig.axes[3].get_title()


def test_goodput_counts_requests_within_the_latency_targets(server):
    [result] = dk.bench_serve(
        server.url,
        concurrency=2,
        num_prompts=6,
        input_tokens=8,
        output_tokens=6,
        warmups=0,
        progress=False,
        goodput_slo_ms={"ttft": 60_000, "tpot": 60_000},
    )
    assert result["request_goodput"] == pytest.approx(result["request_throughput"])
    assert dk.goodput(result, ttft_ms=60_000, tpot_ms=60_000) == result["request_goodput"]
    assert dk.goodput(result, ttft_ms=0) == 0.0  # no request answers in zero time
    half = sorted(result["ttfts"])[2] * 1000  # the third-fastest TTFT: three meet it
    assert dk.goodput(result, ttft_ms=half) == pytest.approx(3 / result["duration"])
    with pytest.raises(dk.InvalidArgumentError, match="at least one latency target"):
        dk.goodput(result)


def test_rejected_model_and_server_errors_are_failures_with_reasons(server):
    with pytest.warns(UserWarning, match="serves"):
        [wrong] = dk.bench_serve(
            server.url,
            model="no-such-model",
            tokenizer=MODEL,
            concurrency=2,
            num_prompts=3,
            input_tokens=8,
            output_tokens=4,
            warmups=0,
            progress=False,
        )
    assert wrong["completed"] == 0 and wrong["failed"] == 3
    assert all("does not exist" in e for e in wrong["errors"])
    assert wrong["output_throughput"] == 0 and wrong["mean_ttft_ms"] is None  # none measured
    with fixture_server("500") as srv:
        [broken] = dk.bench_serve(
            srv.url,
            concurrency=2,
            num_prompts=3,
            input_tokens=8,
            output_tokens=4,
            warmups=0,
            progress=False,
        )
    assert broken["failed"] == 3 and failure_reasons(broken) == {"internal server error": 3}
    assert "failed x3: internal server error" in dk.format_result(broken)


@pytest.mark.parametrize("mode, ok", [("empty", True), ("cut", False)])
def test_an_empty_answer_counts_but_a_stream_cut_short_fails(mode, ok):
    with fixture_server(mode) as srv:
        load = dk.run_load(srv.url, dk.LoadSpec(model="fixture", max_tokens=4, stream=True), 2, 2)
    assert [(r.ok, r.output_tokens, r.time_to_first_token_s) for r in load.results] == [
        (ok, 0, None)
    ] * 2
    if not ok:
        assert "without a token or a finish_reason" in load.results[0].error


def test_a_server_that_goes_away_mid_run_leaves_failures_not_a_crash():
    with fixture_server("die") as srv:
        [result] = dk.bench_serve(
            srv.url,
            concurrency=1,
            num_prompts=6,
            input_tokens=8,
            output_tokens=2,
            warmups=0,
            progress=False,
        )
    assert result["completed"] == 3 and result["failed"] == 3
    assert all("Connect" in e for e in result["errors"][3:]), result["errors"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"concurrency": 0}, "concurrency=0 must be a whole number >= 1"),
        ({"concurrency": [1, 0]}, "concurrency=0"),
        ({"request_rate": -2.0}, "request_rate=-2.0 must be a number above 0"),
        ({"request_rate": math.inf}, "must be finite"),
        ({"concurrency": 4, "request_rate": 2.0}, "exactly one of concurrency .* not both"),
        ({}, "exactly one of concurrency"),
        ({"concurrency": 2, "burstiness": 0.5}, "burstiness shapes open-loop arrivals"),
        ({"request_rate": 2.0, "burstiness": 0}, "burstiness=0 must be a number above 0"),
        ({"concurrency": 2, "num_prompts": 0}, "num_prompts=0"),
        ({"concurrency": 2, "goodput_slo_ms": {"latency": 5}}, "not one of ttft, tpot, e2el"),
    ],
)
def test_bad_arguments_fail_before_any_load(options, message):
    with fixture_server("ok") as srv:
        with pytest.raises(dk.InvalidArgumentError, match=message):
            dk.bench_serve(srv.url, **options)
        assert httpx.get(srv.url + "/count", trust_env=False).json() == 0


def test_an_unreachable_url_fails_before_any_load():
    with pytest.raises(dk.EndpointUnreachableError, match="nothing answers at"):
        dk.bench_serve(f"http://127.0.0.1:{free_port()}", concurrency=1)
    with pytest.raises(dk.InvalidArgumentError, match="http\\(s\\) URL"):
        dk.bench_serve("127.0.0.1:8000", concurrency=1)


def test_synthetic_prompts_are_seeded_and_exactly_as_long_as_asked():
    one = dk.synthetic_prompts(4, 24, tokenizer=MODEL, seed=1)
    assert one == dk.synthetic_prompts(4, 24, tokenizer=MODEL, seed=1)
    assert one.texts != dk.synthetic_prompts(4, 24, tokenizer=MODEL, seed=2).texts
    assert one.token_counts == (24,) * 4 and len(set(one.texts)) == 4
    # seed 0's 36th prompt of 32 tokens never settled in vLLM's way (byte tokens cut from
    # their character): 33 tokens plus BOS reached the servers; it is drawn again now
    sweep = dk.synthetic_prompts(36, 32, tokenizer=MODEL, seed=0)
    assert sweep.token_counts == (32,) * 36 and "not 32 tokens" not in sweep.source
    words = dk.synthetic_prompts(2, 10, tokenizer="no/such-model-anywhere")
    assert words.token_counts is None and all(len(t.split()) == 10 for t in words.texts)


def test_cli_runs_a_sweep_saves_json_and_plots(server, tmp_path, capsys):
    code = main(
        [
            "bench",
            "--url",
            server.url,
            "--concurrency",
            "1,2",
            "--num-prompts",
            "4",
            "--input-tokens",
            "8",
            "--output-tokens",
            "4",
            "--warmups",
            "0",
            "--metric-percentiles",
            "50,90",
            "--goodput",
            "ttft:60000",
            "--result-dir",
            str(tmp_path),
            "--plot",
            str(tmp_path / "bench.png"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and out.count("Serving Benchmark Result") == 2
    assert "P90 TTFT (ms):" in out and "Request goodput (req/s):" in out
    saved = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert [r["max_concurrency"] for r in saved] == [1, 2]
    assert all(r["completed"] == 4 and "p90_itl_ms" in r for r in saved)
    assert (tmp_path / "bench.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench"], "give --url URL"),
        (["bench", "--url", "http://127.0.0.1:9", "--concurrency", "0"], "concurrency=0"),
        (
            ["bench", "--url", "http://127.0.0.1:9", "--concurrency", "1", "--request-rate", "2"],
            "exactly one of",
        ),
        (
            ["bench", "--url", "http://127.0.0.1:9", "--concurrency", "1", "servers"],
            "takes no --url",
        ),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_plot_bench_draws_each_server_and_refuses_mixed_loads(server):
    closed = dk.bench_serve(
        server.url,
        concurrency=[1, 2],
        num_prompts=2,
        input_tokens=8,
        output_tokens=3,
        warmups=0,
        progress=False,
    )
    fig = dk.plot_bench({"a": closed, "b": closed})
    assert len(fig.axes) == 4 and len(fig.axes[0].lines) == 2
    assert len(fig.axes[1].lines) == 2  # one TTFT CDF per server
    opened = dk.bench_serve(
        server.url,
        request_rate=50.0,
        num_prompts=2,
        input_tokens=8,
        output_tokens=3,
        warmups=0,
        progress=False,
    )
    with pytest.raises(dk.InvalidArgumentError, match="mix closed-loop"):
        dk.plot_bench({"closed": closed, "open": opened})
