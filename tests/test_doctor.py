"""`deploykit doctor` names the cause of each symptom the troubleshooting recipe reproduces,
on real processes, and finds nothing on a healthy server or after the fix."""

from __future__ import annotations

import socket
import sys

import pytest
from _servers import MODEL, start_server

import deploykit as dk
from deploykit.check import _memory
from deploykit.launch import launch_server

GIB = 1 << 30


# ---- from a planned configuration, a log, the CPU --------------------------------------------


def test_oom_on_load_blames_the_kv_cache_when_it_is_the_kv_cache():
    plan = dk.LlamaCppArgs(model="smollm2-135m", ctx_size=4_000_000, n_parallel=1)
    report = dk.doctor(plan=plan)
    d = report.diagnosis("oom_on_load")
    assert "not the weights" in d.fix and "ctx_size" in d.fix
    assert any("KV cache" in e for e in d.evidence)
    fits = dk.doctor(plan=plan.replace(ctx_size=8192))
    assert "oom_on_load" not in fits.causes


def test_oom_on_load_says_quantize_when_the_weights_do_not_fit():
    d = dk.doctor(plan={"model": "Llama-2-70B", "gpu": "L4", "context_tokens": 1024})
    assert "quantize" in d.diagnosis("oom_on_load").fix


def test_oom_on_load_for_vllm_cpu_names_the_context_that_fits_the_kv_space():
    plan = dk.VLLMArgs(model="smollm2-135m", max_model_len=8192, kv_cache_memory_bytes=2**26)
    d = dk.doctor(plan=plan).diagnosis("oom_on_load")
    assert "max_model_len to at most" in d.fix and "would not help" in d.fix
    ok = dk.VLLMArgs(model="smollm2-135m", max_model_len=1024, cpu_kvcache_space_gib=1)
    assert "oom_on_load" not in dk.doctor(plan=ok).causes


def test_an_oom_line_in_the_log_is_found_without_a_plan(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("loading...\nllama_kv_cache: failed to allocate buffer for kv cache\n")
    d = dk.doctor(log=log).diagnosis("oom_on_load")
    assert "failed to allocate" in d.evidence[0]


def test_the_dtype_comes_from_the_log_or_the_plan():
    line = "INFO 05-01 config.py:2495] Downcasting torch.float32 to torch.bfloat16."
    assert _memory.engine_dtype(None, line)[0] == "bfloat16"
    assert _memory.engine_dtype(dk.VLLMArgs(model="toy-tiny"), "")[0] == "bfloat16"
    assert _memory.engine_dtype(dk.VLLMArgs(model="toy-tiny", dtype="float32"), "")[0] == "float32"


def test_bf16_without_native_support_is_diagnosed_and_float32_is_not(monkeypatch):
    plan = dk.VLLMArgs(model="smollm2-135m", max_model_len=1024, cpu_kvcache_space_gib=1)
    monkeypatch.setattr(_memory, "cpu_flags", lambda: {"avx2", "fma"})  # an AVX2-only CPU
    d = dk.doctor(plan=plan).diagnosis("dtype_not_native")
    assert "float32" in d.fix and any("avx512_bf16" in e for e in d.evidence)
    assert "dtype_not_native" not in dk.doctor(plan=plan.replace(dtype="float32")).causes


def test_native_bf16_with_no_slowdown_is_not_diagnosed(monkeypatch):
    plan = dk.VLLMArgs(model="smollm2-135m", max_model_len=1024, cpu_kvcache_space_gib=1)
    monkeypatch.setattr(_memory, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(_memory, "matmul_slowdown", lambda *a, **k: 0.5)
    assert "dtype_not_native" not in dk.doctor(plan=plan).causes


# ---- connection refused ---------------------------------------------------------------------


def test_no_process_on_the_port():
    report = dk.doctor(f"http://127.0.0.1:{dk.free_port()}", model="no-model-serves-this")
    assert report.causes == ["no_process"]


def test_a_server_bound_to_another_address():
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))
        sock.listen()
        port = sock.getsockname()[1]
        report = dk.doctor(f"http://127.0.0.1:{port}")
    d = report.diagnosis("wrong_address")
    assert "127.0.0.2" in d.title and f"http://127.0.0.2:{port}" in d.fix


def test_a_health_path_the_server_does_not_have(tmp_path):
    # python's own http.server: GET / answers 200, /health is a 404
    command = [
        sys.executable,
        "-m",
        "http.server",
        "{port}",
        "--bind",
        "{host}",
        "-d",
        str(tmp_path),
    ]
    with launch_server(command, health_path=None, name="http-server") as srv:
        report = dk.doctor(srv.url)
    d = report.diagnosis("wrong_health_path")
    assert "/ answers 200" in d.title and "status code" in d.fix


# ---- on real servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good():
    with start_server(name="serve-doctor") as srv:
        yield srv


def test_a_healthy_server_under_load_has_nothing_wrong(good):
    report = dk.doctor(good.url, load=True)
    assert report.ok, report.text()
    assert report.data["speedup"] > 1.6  # the same figure a serial server falls short of


def test_one_at_a_time_and_a_short_queue_are_batching_off_and_overload():
    # a queue as long as doctor's concurrent set (8), so that set is queued, not shed; the burst is
    args = ("--max-batch-size", "1", "--max-waiting", "8")
    with start_server(*args, name="serve-serial") as srv:
        report = dk.doctor(srv.url, load=True, concurrency=8, burst=24)
    assert {"batching_off", "overloaded"} <= set(report.causes), report.text()
    assert "--max-batch-size" in report.diagnosis("batching_off").fix
    # named only after a second round was slow too
    assert len(report.data["speedups"]) == 2 and max(report.data["speedups"]) < 1.6
    assert report.data["statuses"].get("503", 0) > 0


def test_the_wrong_port_is_told_from_the_model_it_serves(good):
    report = dk.doctor(f"http://127.0.0.1:{dk.free_port()}", model=MODEL)
    d = report.diagnosis("wrong_port")
    assert f":{good.port}" in d.fix or any(f":{good.port}" in e for e in d.evidence)


def test_a_stream_held_by_a_buffering_proxy(good):
    # gzip keeps what proxy buffering does not flush: the stream arrives at its end (Recipe 17)
    with dk.start_nginx([good.url], buffering=True, gzip=True) as proxy:
        report = dk.doctor(proxy.url)
    assert "buffered_stream" in report.causes, report.text()
    assert "proxy_buffering off" in report.diagnosis("buffered_stream").fix
    with dk.start_nginx([good.url], gzip=True) as proxy:
        assert "buffered_stream" not in dk.doctor(proxy.url).causes


def test_context_exceeded_says_how_many_tokens_fit(good):
    # " hello" is two of toy-tiny's tokens: about 1,200 of its 2,048
    request = {"model": MODEL, "prompt": "hello " * 600, "max_tokens": 1000}
    report = dk.doctor(good.url, request=request)
    room = report.data["room_tokens"]
    assert "context_exceeded" in report.causes and 0 < room < 1000
    fixed = dk.doctor(good.url, request={**request, "max_tokens": room})
    assert "context_exceeded" not in fixed.causes


def test_long_prompts_dominating_prefill_are_read_from_metrics(good):
    long = dk.LoadSpec(model=MODEL, max_tokens=4, prompt="hello " * 600)
    before = dk.scrape_metrics(good.url)
    dk.run_load(good.url, long, num_requests=6, concurrency=1)
    assert "long_prompts" in dk.doctor(good.url, metrics_since=before).causes
    short = dk.LoadSpec(model=MODEL, max_tokens=16, prompt="hello " * 20)
    before = dk.scrape_metrics(good.url)
    dk.run_load(good.url, short, num_requests=6, concurrency=1)
    assert "long_prompts" not in dk.doctor(good.url, metrics_since=before).causes


def test_a_server_that_died_loading_is_no_process_and_its_plan_is_oom(tmp_path):
    plan = dk.LlamaCppArgs(model="smollm2-135m", ctx_size=4_000_000, n_parallel=1, threads=1)
    port, log = dk.free_port(), tmp_path / "llama.log"
    with pytest.raises(dk.ServerStartError):
        dk.start_llamacpp(plan, port=port, log_path=log)
    report = dk.doctor(f"http://127.0.0.1:{port}", model="smollm2-135m", plan=plan, log=log)
    assert {"no_process", "oom_on_load"} <= set(report.causes), report.text()


def test_a_chat_template_that_is_not_the_models():
    wrong = dk.LlamaCppArgs(model="smollm2-135m", n_parallel=1, threads=1, chat_template="llama2")
    with dk.start_llamacpp(wrong) as srv:
        report = dk.doctor(srv.url)
    assert "chat_template_mismatch" in report.causes, report.text()
    with dk.start_llamacpp(wrong.replace(chat_template=None)) as srv:
        assert "chat_template_mismatch" not in dk.doctor(srv.url).causes


def test_a_lazy_loading_server_has_a_cold_start():
    # smollm2-135m: a load long enough to notice (toy-tiny's takes a fraction of a second)
    with dk.start_transformers_serve("smollm2-135m") as srv:
        name = dk.served_name("transformers", "smollm2-135m")
        cold = dk.doctor(srv.url, model=name)
        warm = dk.doctor(srv.url, model=name)
    assert "cold_start" in cold.causes, cold.text()
    assert "cold_start" not in warm.causes
