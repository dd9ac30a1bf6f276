"""Reading bench_serve results: vLLM's printout, the table, and the findings of a sweep."""

from __future__ import annotations

import deploykit as dk


def _result(label, concurrency=None, rate=None, throughput=10.0, ttft_ms=50.0, stream=True):
    """Return a bench_serve-shaped result of 10 requests, 8 tokens each, 1 s long."""
    ttfts = [ttft_ms / 1000] * 10
    latencies = [t + (0.07 if stream else 0.0) for t in ttfts]
    tpot = 10.0 if stream else None
    return {
        "label": label,
        "request_rate": "inf" if rate is None else rate,
        "max_concurrency": concurrency,
        "duration": 10 / throughput,
        "completed": 10,
        "failed": 0,
        "total_input_tokens": 80,
        "total_output_tokens": 80,
        "request_throughput": throughput,
        "request_goodput": None,
        "output_throughput": 8 * throughput,
        "total_token_throughput": 16 * throughput,
        "mean_ttft_ms": ttft_ms,
        "median_ttft_ms": ttft_ms,
        "p99_ttft_ms": ttft_ms,
        "mean_tpot_ms": tpot,
        "median_tpot_ms": tpot,
        "p99_tpot_ms": tpot,
        "mean_itl_ms": tpot,
        "median_itl_ms": tpot,
        "p99_itl_ms": tpot,
        "mean_e2el_ms": 1000 * latencies[0],
        "median_e2el_ms": 1000 * latencies[0],
        "p99_e2el_ms": 1000 * latencies[0],
        "output_lens": [8] * 10,
        "ttfts": ttfts,
        "latencies": latencies,
        "errors": [""] * 10,
        "stream": stream,
    }


def test_printout_has_a_column_per_server_and_na_where_nothing_was_measured():
    text = dk.format_result(
        {"batching": _result("batching", 4), "naive": _result("naive", 4, stream=False)}
    )
    lines = text.splitlines()
    assert lines[1].split() == ["batching", "naive"]
    assert "Mean TPOT (ms):" in text and [
        line.split()[-2:] for line in lines if line.startswith("Mean TPOT")
    ] == [["10.00", "n/a"]]
    assert max(len(line) for line in lines) <= 100
    assert "0.00" not in dk.format_result(_result("naive", 4, stream=False)).split("TPOT")[1]


def test_table_rows_fit_a_page_and_say_na():
    rows = dk.bench_table({"naive": [_result("naive", 1, stream=False)]})
    assert rows[0]["load"] == "concurrency 1" and rows[0]["TPOT ms"] == "n/a"
    assert rows[0]["TPOT p99"] == "n/a" and rows[0]["TTFT ms"] == 50.0 and rows[0]["failed"] == 0
    assert sum(max(len(str(k)), len(str(v))) + 2 for k, v in rows[0].items()) < 100


def test_sweep_findings_hold_each_servers_figures():
    runs = {
        "batching": [_result("b", 1, throughput=10.0), _result("b", 4, throughput=30.0)],
        "naive": [
            _result("n", 4, throughput=9.0, ttft_ms=400.0, stream=False),
            _result("n", 1, throughput=10.0, ttft_ms=100.0, stream=False),
        ],
    }
    findings = dk.sweep_findings(runs)
    lines = findings.lines
    # a text-only view of the notebook shows the sentences, not the dataclass's fields
    assert repr(findings) == str(findings) == findings._repr_markdown_()
    assert "80 → 240 (×3.00) tokens/s from concurrency 1 to 4" in lines[0]
    assert "median TTFT 100.0 → 400.0 (×4.00) ms" in lines[1] and "not streamed" in lines[1]
    assert (
        lines[2]
        == "At concurrency 4, the most output tokens/s: batching (240); the fewest: naive (72)."
    )
    opened = {
        "a": [_result("a", rate=4.0, throughput=3.9), _result("a", rate=16.0, throughput=9.5)]
    }
    assert "offered 4 → 16 requests/s, completed 3.90 → 9.50 (×2.44)" in str(
        dk.sweep_findings(opened)
    )


def test_goodput_findings_name_a_server_that_wins_throughput_and_loses_goodput():
    fast_late = _result("fast", 4, throughput=12.0, ttft_ms=500.0)
    slow_on_time = _result("slow", 4, throughput=8.0, ttft_ms=50.0)
    found = dk.goodput_findings({"fast": [fast_late], "slow": [slow_on_time]}, ttft_ms=100)
    assert found.lines == [
        "At concurrency 4, fast completed more requests/s than slow (12.00 against 8.00) "
        "but fewer within the SLO (0.00 against 8.00)."
    ]
    alike = dk.goodput_findings({"slow": [slow_on_time]}, ttft_ms=100)
    assert alike.lines[0].startswith("At no load level")
