"""The benchmark's machinery: round statistics, idle-CPU measurement, pausing noisy servers."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap

import psutil
import pytest
from _servers import MODEL, start_server

from deploykit.argtypes import Parser as _Parser
from deploykit.bench.cli import add_cli
from deploykit.bench.harness import (
    IDLE_PAUSE_PERCENT,
    Measured,
    _Turns,
    add_arguments,
    idle_cpu_percent,
    paired_ratio,
    run_all,
)
from deploykit.bench.llamacpp import llamacpp_args
from deploykit.bench.loadgen import LoadResult, LoadSpec, RequestResult
from deploykit.bench.servers import SERVERS
from deploykit.cli import main
from deploykit.errors import InvalidArgumentError
from deploykit.launch import launch_server

# Serves /health and, with argv[2] == "spin", burns CPU in a thread while "idle".
IDLE_SERVER = textwrap.dedent("""
    import http.server, sys, threading
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
    def spin():
        while True:
            pass
    if sys.argv[2] == "spin":
        threading.Thread(target=spin, daemon=True).start()
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")


def _round(tokens_per_s: float) -> LoadResult:
    return LoadResult(
        concurrency=1, wall_s=1.0, results=(RequestResult(200, 1.0, None, int(tokens_per_s)),)
    )


def test_measured_reports_the_median_round_and_the_range():
    m = Measured(tuple(_round(x) for x in (300, 100, 200, 500)))
    assert m.median.output_tokens_per_s == 200  # lower middle of an even count
    assert m.tokens_per_s_range == (100, 500)


def test_paired_ratio_compares_rounds_run_side_by_side():
    fast = Measured(tuple(_round(x) for x in (800, 400, 900)))
    slow = Measured(tuple(_round(x) for x in (100, 50, 300)))
    # per-round ratios 8, 8, 3: the median is 8, where the ratio of medians would give 2.67
    assert paired_ratio(fast, slow) == 8
    failed = Measured(tuple(_round(0) for _ in range(3)))  # every request of b failed
    assert math.isnan(paired_ratio(fast, failed))  # a table row, not a crash at the end


def test_idle_cpu_tells_a_spinning_server_from_a_quiet_one():
    command = [sys.executable, "-c", IDLE_SERVER, "{port}"]
    with (
        launch_server([*command, "quiet"], health_path="/", name="idle-quiet") as quiet,
        launch_server([*command, "spin"], health_path="/", name="idle-spin") as spin,
    ):
        idle = idle_cpu_percent({"quiet": quiet, "spin": spin}, seconds=1.0)
    # the contract: the spinning one is above the pause threshold, the quiet one below it (how
    # much of a core the spinner gets depends on what else the machine runs)
    assert idle["quiet"] < IDLE_PAUSE_PERCENT < idle["spin"], idle


def test_turns_pause_the_noisy_server_while_another_runs_and_resume_it():
    with start_server(name="bench-a") as a, start_server(name="bench-b") as b:
        turns = _Turns({"a": a, "b": b}, {"a": 50.0, "b": 0.0})
        spec = LoadSpec(model=MODEL, max_tokens=4)
        try:
            assert turns.load("b", spec, 2, 2).num_ok == 2
            assert psutil.Process(a.pid).status() == psutil.STATUS_STOPPED
            assert psutil.Process(b.pid).status() != psutil.STATUS_STOPPED  # quiet: never paused
            assert turns.load("a", spec, 2, 2).num_ok == 2  # resumed for its own turn
            turns.load("b", spec, 1, 1)
        finally:
            turns.resume_all()
        assert psutil.Process(a.pid).status() != psutil.STATUS_STOPPED


def test_run_all_refuses_empty_settings_before_starting_anything():
    args = add_arguments(argparse.ArgumentParser(), SERVERS, "").parse_args([])
    args.rounds = 0
    with pytest.raises(InvalidArgumentError, match="must be at least 1"):
        run_all(args, start=None, spec_for=None)  # start is never reached


@pytest.mark.parametrize(
    "bench, flags",
    [
        ("servers", ["--rounds", "0"]),
        ("servers", ["--concurrency", "8", "-1"]),
        ("servers", ["--num-requests", "many"]),
        ("servers", ["--servers", "nginx"]),
        ("llamacpp", ["--rounds", "0"]),
        ("llamacpp", ["--servers", "vllm"]),
    ],
)
def test_bench_cli_rejects_bad_numbers_in_one_line(bench, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", bench, *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"deploykit bench {bench}: error:"), err


def test_bench_llamacpp_has_its_own_model_and_one_slot_per_request_in_flight():
    root = _Parser(prog="deploykit")
    add_cli(root.add_subparsers(dest="cmd"))
    args = root.parse_args(["bench", "llamacpp", "--concurrency", "1", "8", "--max-tokens", "32"])
    assert args.models == ["smollm2-135m"] and args.servers == ["deploykit", "llamacpp"]
    engine = llamacpp_args(args.models[0], args)
    # every request in flight gets a slot, and each slot room for its prompt and output
    assert engine.n_parallel == 8 and engine.ctx_size // engine.n_parallel > 32
    assert engine.threads == args.threads == 1


def test_prefix_cache_plot_labels_every_bar_even_an_empty_one():
    import deploykit as dk

    results = {
        "shared": dk.PrefixCacheResult(8, 8, 3584, 4928),
        "off": dk.PrefixCacheResult(8, 8, 0, 0),
    }
    fig = dk.plot_prefix_cache(results)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["73% of 4,928 tokens looked up", "no lookups (prefix caching off)"]
