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


def test_bench_engines_reads_each_server_as_engine_dtype_kernels():
    from deploykit.bench.engines import ServerSpec, parse_server

    assert parse_server("deploykit:bf16:onednn") == ServerSpec("deploykit", "bfloat16", "onednn")
    assert parse_server("deploykit:float32") == ServerSpec("deploykit", "float32", "auto")
    assert parse_server("vllm:bfloat16").label == "vLLM `serve`, bfloat16"
    compiled = parse_server("deploykit:bf16:eager:compiled")
    assert compiled == ServerSpec("deploykit", "bfloat16", "eager", "compiled")
    assert compiled.label == "deploykit `serve`, bfloat16, eager, compiled step"
    assert parse_server("llamacpp:Q4_1") == ServerSpec("llamacpp", "q4_1")
    assert parse_server("llamacpp:q8_0").label == "llama.cpp server, Q8_0 GGUF"
    for bad, says in [
        ("llamacpp:q2_k", "llama.cpp's QUANT is one of q4_1, q8_0"),
        ("llamacpp:q4_1:eager", "llama.cpp's QUANT is one of"),
        ("deploykit:bf16:onednn:fast", "STEP is one of auto, deploykit, compiled"),
        ("tgi:float32", "ENGINE is one of deploykit, vllm"),
        ("vllm:float32:onednn", "vLLM picks its own kernels"),
        ("deploykit:float8", "unknown dtype 'float8'"),
        ("deploykit:float32:fast", "KERNELS is one of auto, eager, onednn, int8"),
        ("deploykit", "write ENGINE:DTYPE"),
    ]:
        with pytest.raises(InvalidArgumentError, match=says):
            parse_server(bad)


def test_bench_engines_refuses_a_bad_server_before_starting_any(capsys):
    code = main(["bench", "engines", "--servers", "deploykit:float32:eager", "vllm:fp32:eager"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("deploykit: error: --servers 'vllm:fp32:eager'") and "starting" not in err


def test_bench_engines_table_compares_every_server_with_the_fastest_vllm():
    from deploykit.bench.engines import table

    kinds = ["deploykit:bfloat16:onednn", "vllm:float32", "vllm:bfloat16"]
    speeds = {kinds[0]: (300, 310, 320), kinds[1]: (200, 100, 250), kinds[2]: (150, 155, 160)}
    results = {
        ("m", kind): [Measured(tuple(_round(x) for x in rounds))] for kind, rounds in speeds.items()
    }
    rows = {line.split(" | ")[2]: line for line in table(results, kinds).splitlines()[2:]}
    # vLLM float32 has the faster median round (200 > 155), so it is the reference: per-round
    # ratios 1.5, 3.1 and 1.28 have the median 1.5 (the ratio of medians would say 1.55)
    assert rows["vLLM `serve`, float32"].endswith("|  |")
    assert rows["deploykit `serve`, bfloat16, onednn"].endswith("| 1.50x |")
    assert rows["vLLM `serve`, bfloat16"].endswith("| 0.75x |")


def test_bench_kernels_modes_and_table():
    from deploykit.bench.kernels import ModeResult, parse_mode, table

    assert parse_mode("bf16:int8") == ("bfloat16", "int8", "auto")
    assert parse_mode("float32:onednn:transformers") == ("float32", "onednn", "transformers")
    with pytest.raises(InvalidArgumentError, match="KERNELS is one of eager, onednn, int8"):
        parse_mode("float32:auto")
    assert parse_mode("bf16:eager:compiled") == ("bfloat16", "eager", "compiled")
    with pytest.raises(InvalidArgumentError, match="STEP one of auto, deploykit, compiled"):
        parse_mode("float32:onednn:fast")
    base = ModeResult("float32:eager", "transformers", 400_000_000, 33.2, {1: [0.040, 0.044]})
    fast = ModeResult("bfloat16:onednn", "deploykit", 200_000_000, 33.3, {1: [0.020, 0.011]})
    rows = table([base, fast], [1], bandwidth=20.0).splitlines()[2:]
    # median step 15.5 ms; per-round speed-ups 2.0 and 4.0; 200 MB in 15.5 ms is 12.9 GB/s
    assert rows[1] == (
        "| bfloat16:onednn | deploykit | 1 | 15.5 | 65 | 3.00x | 200 | 12.9 (65%) | 33.30 |"
    )


def test_bench_kernels_times_each_mode_on_a_real_model(tmp_path, capsys):
    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n")
    modes = ["float32:onednn:transformers", "float32:onednn"]
    code = main(["bench", "kernels", "--model", "toy-tiny", "--modes", *modes, "--batch-sizes",
                 "1", "3", "--steps", "2", "--rounds", "1", "--windows", "1", "--seq-len", "16",
                 "--write-doc", str(doc)])  # fmt: skip
    assert code == 0
    rows = [line for line in doc.read_text().splitlines() if line.startswith("| float32")]
    # mode, whose step ran, batch; the first mode is its own baseline
    assert [r.split(" | ")[:3] for r in rows] == [
        ["| float32:onednn:transformers", "transformers", "1"],
        ["| float32:onednn:transformers", "transformers", "3"],
        ["| float32:onednn", "deploykit", "1"],
        ["| float32:onednn", "deploykit", "3"],
    ]
    assert all(" | 1.00x | " in r for r in rows[:2])
    # one model, one dtype: the same weight bytes and the same perplexity in every row
    assert len({tuple(r.split(" | ")[-3::2]) for r in rows}) == 1


def test_bench_prefill_counts_only_the_gaps_that_ended_while_a_long_prompt_ran():
    from deploykit.bench.prefill import Round, table

    # a stream sent at 0.0 s: first token at 0.1, then tokens at 0.2, 1.4 (a stalled gap of
    # 1.2 s), 1.5 and 3.0; the long prompt was in flight from 1.0 to 2.0 s
    stream = RequestResult(200, 3.0, 0.1, 5, itl_s=(0.1, 1.2, 0.1, 1.5), start_s=0.0)
    failed = RequestResult(0, 1.0, None, 0, error="timeout", itl_s=(1.2,), start_s=0.0)
    long = RequestResult(200, 0.9, 0.9, 1, input_tokens=1000, start_s=0.0)
    r = Round(LoadResult(1, 3.0, (stream, failed)), LoadResult(1, 1.0, (long,)), (1.0, 2.0))
    assert r.gaps_s() == pytest.approx([1.2, 0.1])
    assert r.covered
    row = table({0: [r]}).splitlines()[2]
    assert row.startswith("| whole prompt (0) | 650.0 |") and "| 1200.0 |" in row
    assert row.endswith("| 900 | 1000 | 1 |")  # TTFT, prompt tokens, the failed stream


def test_bench_prefill_refuses_a_chunk_size_named_twice(capsys):
    assert main(["bench", "prefill", "--chunks", "0", "128", "128"]) == 2
    assert "name each chunk size once" in capsys.readouterr().err
