"""`deploykit serve`'s /metrics: vLLM's names and buckets, exact counts, bounded labels."""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from _servers import MODEL, start_server, wait_for
from prometheus_client.parser import text_string_to_metric_families

from deploykit.engines.vllm_env import find_vllm_env
from deploykit.server import metrics as m

HISTOGRAMS = (
    "time_to_first_token_seconds",
    "inter_token_latency_seconds",
    "request_time_per_output_token_seconds",
    "e2e_request_latency_seconds",
    "request_queue_time_seconds",
)
GAUGES = ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc")
COUNTERS = ("prompt_tokens", "generation_tokens", "request_success")


@pytest.fixture(scope="module")
def server():
    with start_server("--max-batch-size", "8", name="serve-metrics") as srv:
        yield srv


def families(server) -> dict:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict, family: str, sample: str | None = None, **labels: str) -> float:
    """Sum the samples of a family (named sample, e.g. a histogram's _count) matching labels."""
    fam = fams[family]
    name = sample or (family + "_total" if fam.type == "counter" else family)
    return sum(
        s.value for s in fam.samples if s.name == name and labels.items() <= s.labels.items()
    )


def complete(server, n: int, max_tokens: int, stream: bool = False, **extra) -> list[dict]:
    """Send n completions one after another; return their usage."""
    usages = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(n):
            body = {
                "model": MODEL,
                "prompt": f"Count to {i}:",
                "max_tokens": max_tokens,
                "ignore_eos": True,
                "temperature": 0,
                **extra,
            }
            if not stream:
                response = client.post("/v1/completions", json=body)
                assert response.status_code == 200, response.text
                usages.append(response.json()["usage"])
                continue
            body.update(stream=True, stream_options={"include_usage": True})
            with client.stream("POST", "/v1/completions", json=body) as response:
                lines = [line for line in response.iter_lines() if line.startswith("data: {")]
            usages.append(sse_json(lines[-1])["usage"])
    return usages


def sse_json(line: str) -> dict:
    import json

    return json.loads(line[len("data: ") :])


# ---- names, types, units, buckets ---------------------------------------------------------


def test_metrics_parse_with_vllms_names_types_and_buckets(server):
    complete(server, 1, 4)
    fams = families(server)  # prometheus_client's parser: it raises on any malformed line
    for suffix, kind in [
        *((h, "histogram") for h in HISTOGRAMS),
        *((g, "gauge") for g in GAUGES),
        *((c, "counter") for c in COUNTERS),
    ]:
        fam = fams[f"deploykit:{suffix}"]
        assert fam.type == kind, (suffix, fam.type)
        assert {s.labels["model_name"] for s in fam.samples} == {MODEL}
        assert {s.labels["engine"] for s in fam.samples} == {"0"}
    ttft = [
        s.labels["le"]
        for s in fams["deploykit:time_to_first_token_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert ttft[0] == "0.001" and ttft[-2:] == ["2560.0", "+Inf"] and len(ttft) == 23
    reasons = {s.labels["finished_reason"] for s in fams["deploykit:request_success"].samples}
    assert reasons == {"stop", "length", "abort", "error"}
    # vLLM removed it in 2026: its successors are inter_token_latency and request_time_per_output_token
    assert not any(
        "time_per_output_token_seconds" in name and "request_" not in name for name in fams
    )
    assert value(fams, "process_cpu_seconds") > 0
    assert value(fams, "process_resident_memory_bytes") > 10_000_000
    assert not any(name.startswith("deploykit:gpu_") for name in fams), "no GPU here"


def _vllm_source() -> Path:
    """Return vLLM's package folder in its own environment (located, not imported)."""
    env = find_vllm_env()
    out = subprocess.run(
        [
            str(env.python),
            "-c",
            "import importlib.util; print(importlib.util."
            "find_spec('vllm').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return Path(out.stdout.strip())


def test_buckets_and_help_texts_are_vllms_own():
    source = _vllm_source() / "v1" / "metrics"
    tree = ast.parse((source / "buckets.py").read_text())
    lists = {
        node.targets[0].id if isinstance(node, ast.Assign) else node.target.id: ast.literal_eval(
            node.value
        )
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and node.value is not None
        and isinstance(node.value, ast.Tuple)
    }
    assert m.TIME_TO_FIRST_TOKEN_BUCKETS_S == lists["TIME_TO_FIRST_TOKEN_BUCKETS"]
    assert m.INTER_TOKEN_LATENCY_BUCKETS_S == lists["INTER_TOKEN_LATENCY_BUCKETS"]
    assert m.REQUEST_LATENCY_BUCKETS_S == lists["REQUEST_LATENCY_BUCKETS"]
    loggers = (source / "loggers.py").read_text()
    helps = {
        name: doc
        for name, doc in re.findall(r'name="vllm:(\w+)",\s*documentation=\(?\s*"([^"]+)"', loggers)
    }
    registry = m.ServerMetrics(MODEL, gpu=False).registry
    ours = {
        f.name.split(":", 1)[1]: f.documentation
        for f in registry.collect()
        if f.name.startswith("deploykit:")
    }
    assert set(ours) == set(HISTOGRAMS + GAUGES + COUNTERS)
    for suffix, doc in ours.items():
        assert helps[suffix] == doc, suffix


# ---- exact counts -------------------------------------------------------------------------


def test_histogram_counts_move_by_exactly_n(server):
    n, max_tokens = 6, 5
    before = families(server)
    usages = complete(server, n // 2, max_tokens) + complete(
        server, n // 2, max_tokens, stream=True
    )
    after = families(server)

    def grew(family, sample=None, **labels):
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    for suffix in (
        "time_to_first_token_seconds",
        "e2e_request_latency_seconds",
        "request_queue_time_seconds",
        "request_time_per_output_token_seconds",
    ):
        family = f"deploykit:{suffix}"
        assert grew(family, family + "_count") == n, suffix
        assert grew(family, family + "_bucket", le="+Inf") == n, suffix
    itl = "deploykit:inter_token_latency_seconds"
    assert grew(itl, itl + "_count") == n * (max_tokens - 1)  # one per token after the first
    assert grew("deploykit:generation_tokens") == n * max_tokens
    assert grew("deploykit:prompt_tokens") == sum(u["prompt_tokens"] for u in usages)
    assert grew("deploykit:request_success", finished_reason="length") == n
    assert grew("deploykit:request_success", finished_reason="abort") == 0
    # the middleware counts a response once its last byte is sent: poll briefly
    wait_for(
        lambda: (
            value(families(server), "http_requests", handler="/v1/completions", status="2xx")
            - value(before, "http_requests", handler="/v1/completions", status="2xx")
            >= n
        )
    )
    assert (
        value(families(server), "http_requests", handler="/v1/completions", status="2xx")
        - value(before, "http_requests", handler="/v1/completions", status="2xx")
        == n
    )
    assert value(after, "deploykit:num_requests_running") == 0
    assert value(after, "deploykit:kv_cache_usage_perc") == 0


def test_stop_strings_and_clients_that_leave_are_counted_by_reason(server):
    before = families(server)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        # a stop string the toy model soon writes ends the request as "stop"
        client.post(
            "/v1/completions",
            json={
                "model": MODEL,
                "prompt": "a b c",
                "max_tokens": 200,
                "stop": ["e"],
                "temperature": 0,
            },
        )
        body = {
            "model": MODEL,
            "prompt": "Once",
            "max_tokens": 2000,
            "ignore_eos": True,
            "stream": True,
        }
        with client.stream("POST", "/v1/completions", json=body) as response:
            next(response.iter_lines())  # the first chunk arrived: leave mid-generation

    def grew(reason):
        return value(families(server), "deploykit:request_success", finished_reason=reason) - value(
            before, "deploykit:request_success", finished_reason=reason
        )

    wait_for(lambda: grew("abort") == 1)
    assert grew("stop") == 1 and grew("length") == 0


# ---- bounded labels -----------------------------------------------------------------------


def test_labels_stay_bounded_after_1000_bogus_paths_and_model_names(server):
    async def flood():
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            sem = asyncio.Semaphore(16)

            async def one(i: int):
                async with sem:
                    await client.get(f"/bogus/{i}?x={i}")
                    await client.post(
                        "/v1/completions", json={"model": f"bogus-model-{i}", "prompt": "hi"}
                    )

            await asyncio.gather(*(one(i) for i in range(1000)))

    asyncio.run(flood())
    fams = families(server)
    series = [s for fam in fams.values() for s in fam.samples]
    values: dict[str, set[str]] = {}
    for s in series:
        for key, val in s.labels.items():
            values.setdefault(key, set()).add(val)
    assert not any("bogus" in v for vals in values.values() for v in vals)
    assert values["model_name"] == {MODEL}
    assert m.UNMATCHED_HANDLER in values["handler"]
    assert len(values["handler"]) <= 12 and values["status"] <= {"2xx", "4xx", "5xx"}
    assert len(series) < 400, len(series)
    assert value(fams, "http_requests", handler="none", status="4xx") >= 1000
    assert value(fams, "http_requests", handler="/v1/completions", status="4xx") >= 1000


def test_probes_are_not_counted_and_a_405_names_its_route(server):
    before = families(server)
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200
    assert httpx.get(server.url + "/v1/completions").status_code == 405
    assert httpx.request("PROPFIND", server.url + "/v1/models").status_code == 405
    after = families(server)
    handlers = {s.labels["handler"] for s in after["http_requests"].samples}
    assert not handlers & {"/health", "/ready", "/metrics"}
    assert (
        value(after, "http_requests", handler="/v1/completions", method="GET")
        - value(before, "http_requests", handler="/v1/completions", method="GET")
        == 1
    )
    assert (
        value(after, "http_requests", handler="/v1/models", method="other")
        - value(before, "http_requests", handler="/v1/models", method="other")
        == 1
    )
