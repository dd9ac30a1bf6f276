"""One server, three dialects: the official openai, huggingface_hub and ollama clients.

A real `deploykit serve` process answers each client over the same engine; each dialect
also gets its own error shape (OpenAI 400, TGI 422, Ollama 404) and a mid-stream failure.
"""

from __future__ import annotations

import json
import os
import signal

import httpx
import ollama
import openai
import pytest
from _servers import MODEL, start_server
from huggingface_hub.errors import ValidationError as HFValidationError

import deploykit as dk

PROMPT = "The cat sat on the"
MAX_INPUT, MAX_TOTAL = 64, 512  # the TGI routes' budget; toy-tiny's context is 2048


@pytest.fixture(scope="module")
def server():
    # TGI's budget as a TGI launch would set it: the TGI routes enforce it and /info reports it
    flags = ("--max-batch-size", "4", "--max-concurrent-requests", "12")
    flags += ("--max-input-tokens", str(MAX_INPUT), "--max-total-tokens", str(MAX_TOTAL))
    with start_server(*flags, name="serve-dialects") as srv:
        yield srv


@pytest.fixture(scope="module")
def hf(server):
    return dk.tgi_client(server.url, timeout_s=60)


@pytest.fixture(scope="module")
def ol(server):
    return ollama.Client(host=server.url, timeout=60)


def openai_text(server, prompt: str = PROMPT, max_tokens: int = 8) -> str:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    out = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0
    )
    return out.choices[0].text


# ---- OpenAI --------------------------------------------------------------------------------


def test_openai_chat_and_its_400(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    out = client.chat.completions.create(
        model=MODEL, max_tokens=6, temperature=0, messages=[{"role": "user", "content": "Hello"}]
    )
    assert out.choices[0].message.content and out.usage.completion_tokens <= 6
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=5)
    assert "temperature" in str(err.value)


def test_repetition_penalty_changes_greedy_text(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    plain, penalized = (
        client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=24,
            temperature=0,
            extra_body={"ignore_eos": True, **({"repetition_penalty": rp} if rp else {})},
        )
        .choices[0]
        .text
        for rp in (None, 2.0)
    )
    assert plain.startswith(openai_text(server))
    assert penalized != plain


# ---- TGI through huggingface_hub's InferenceClient ----------------------------------------


def test_tgi_text_generation_matches_openai(server, hf):
    text = hf.text_generation(PROMPT, max_new_tokens=8)  # greedy: do_sample defaults to off
    assert text == openai_text(server)


def test_tgi_details(hf):
    out = hf.text_generation(PROMPT, max_new_tokens=8, details=True, return_full_text=True)
    assert out.generated_text.startswith(PROMPT)
    d = out.details
    assert d.finish_reason in ("length", "eos_token") and d.generated_tokens == len(d.tokens)
    assert all(t.logprob <= 0 for t in d.tokens)
    assert out.generated_text[len(PROMPT) :] == "".join(t.text for t in d.tokens)
    assert d.seed is None  # greedy


def test_tgi_sampling_reports_its_seed(hf):
    a = hf.text_generation(PROMPT, max_new_tokens=8, temperature=0.9, details=True)
    assert a.details.seed is not None  # temperature alone turns sampling on, as in TGI
    b = hf.text_generation(
        PROMPT, max_new_tokens=8, temperature=0.9, seed=a.details.seed, details=True
    )
    assert b.generated_text == a.generated_text


def test_tgi_stream_with_and_without_details(hf):
    whole = hf.text_generation(PROMPT, max_new_tokens=8)
    pieces = list(hf.text_generation(PROMPT, max_new_tokens=8, stream=True))
    assert "".join(pieces) == whole
    events = list(hf.text_generation(PROMPT, max_new_tokens=8, stream=True, details=True))
    assert [e.index for e in events] == list(range(1, len(events) + 1))
    # only the last event carries the text and the details
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.generated_text == whole and last.details.generated_tokens == len(events)
    assert last.details.input_length > 0


def test_tgi_stop_sequence(hf):
    whole = hf.text_generation(PROMPT, max_new_tokens=16)
    stop = whole.strip().split()[1]
    out = hf.text_generation(PROMPT, max_new_tokens=16, stop=[stop], details=True)
    assert out.details.finish_reason == "stop_sequence" and stop not in out.generated_text


def test_tgi_chat_completion(hf):
    out = hf.chat_completion(
        [{"role": "user", "content": "Hello"}], model=MODEL, max_tokens=6, temperature=0
    )
    assert out.choices[0].message.content


def test_tgi_chat_completion_without_a_model_name(hf, server):
    """huggingface_hub sends a placeholder model name; TGI accepts it, and so does deploykit."""
    out = hf.chat_completion([{"role": "user", "content": "Hello"}], max_tokens=6, temperature=0)
    assert out.choices[0].message.content and out.model == MODEL
    chunks = list(
        hf.chat_completion([{"role": "user", "content": "Hi"}], max_tokens=4, stream=True)
    )
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    # "tgi", TGI's documented placeholder, which OpenAI clients pointed at TGI send
    body = {"model": "tgi", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    assert httpx.post(server.url + "/v1/chat/completions", json=body).status_code == 200
    body = {"model": "tgi", "prompt": PROMPT, "max_tokens": 4}
    assert httpx.post(server.url + "/v1/completions", json=body).status_code == 200
    # any other unknown name is still a 404, as in OpenAI's API and vLLM
    body["model"] = "gpt-4o"
    assert httpx.post(server.url + "/v1/completions", json=body).status_code == 404


def test_tgi_info_reports_the_configured_limits(hf, server):
    info = hf.get_endpoint_info()
    assert info["model_id"] == MODEL
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (MAX_INPUT, MAX_TOTAL)
    assert info["max_concurrent_requests"] == 12  # batch 4 + 8 waiting


def test_tgi_limits_are_enforced_as_tgi_does(hf, server):
    with pytest.raises(HFValidationError, match=f"must be <= {MAX_TOTAL}"):
        hf.text_generation(PROMPT, max_new_tokens=MAX_TOTAL)
    long_prompt = " ".join(["cat"] * (2 * MAX_INPUT))
    with pytest.raises(HFValidationError, match=f"less than {MAX_INPUT} tokens"):
        hf.text_generation(long_prompt, max_new_tokens=4)
    assert hf.text_generation(long_prompt, max_new_tokens=4, truncate=MAX_INPUT // 2)
    # the OpenAI routes keep the model's own context
    assert openai_text(server, prompt=long_prompt, max_tokens=4) is not None


def test_tgi_422_validation(hf, server):
    with pytest.raises(HFValidationError, match="temperature"):
        hf.text_generation(PROMPT, max_new_tokens=4, temperature=-1.0)
    with pytest.raises(HFValidationError, match="max_new_tokens"):
        hf.text_generation(PROMPT, max_new_tokens=5000)
    r = httpx.post(
        server.url + "/generate",
        json={"inputs": PROMPT, "parameters": {"grammar": {"type": "json"}}},
    )
    assert r.status_code == 422 and r.json()["error_type"] == "validation"
    assert "grammar" in r.json()["error"]
    r = httpx.post(
        server.url + "/generate", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and set(r.json()) == {"error", "error_type"}


def test_tgi_truncate_keeps_the_end(hf):
    long_prompt = "one two three four five six seven eight nine ten " * 30
    events = list(
        hf.text_generation(long_prompt, max_new_tokens=4, truncate=8, stream=True, details=True)
    )
    assert events[-1].details.input_length == 8


# ---- Ollama through the ollama client -----------------------------------------------------


def test_ollama_generate_matches_openai_when_raw(server, ol):
    out = ol.generate(
        model=MODEL,
        prompt=PROMPT,
        raw=True,
        stream=False,
        options={"temperature": 0, "num_predict": 8, "repeat_penalty": 1.0},
    )
    assert out.response == openai_text(server)
    assert out.done and out.done_reason in ("length", "stop")
    assert out.eval_count == 8 or out.done_reason == "stop"
    assert out.prompt_eval_count > 0 and out.eval_duration > 0 and out.total_duration > 0
    assert out.load_duration == 0 and out.context[-out.eval_count :]


def test_ollama_generate_stream_and_context(ol):
    parts = list(
        ol.generate(
            model=f"{MODEL}:latest",
            prompt="Tell me a story.",
            stream=True,
            options={"temperature": 0, "num_predict": 12},
        )
    )
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    text = "".join(p.response for p in parts)
    assert text and parts[-1].eval_count <= 12
    # the returned context continues the conversation
    more = ol.generate(
        model=MODEL,
        prompt="And then?",
        context=parts[-1].context,
        stream=False,
        options={"temperature": 0, "num_predict": 4},
    )
    assert more.prompt_eval_count > parts[-1].prompt_eval_count


def test_ollama_chat_stream_and_not(ol):
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    opts = {"temperature": 0, "num_predict": 8, "seed": 1}
    whole = ol.chat(model=MODEL, messages=msgs, options=opts)
    assert whole.message.role == "assistant" and whole.done
    parts = list(ol.chat(model=MODEL, messages=msgs, options=opts, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].done_reason == whole.done_reason


def test_ollama_list_show_ps_version(ol, server):
    names = [m.model for m in ol.list().models]
    assert names == [f"{MODEL}:latest"]
    shown = ol.show(MODEL)
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 2048 and shown.template
    assert ol.ps().models[0].context_length == 2048
    assert httpx.get(server.url + "/api/version").json()["version"]


def test_ollama_404_and_400(ol):
    with pytest.raises(ollama.ResponseError) as err:
        ol.generate(model="llama3", prompt="hi")
    assert err.value.status_code == 404 and "llama3" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        ol.chat(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            options={"mirostat": 2},
            stream=False,
        )
    assert err.value.status_code == 400 and "mirostat" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        ol.generate(model=MODEL, prompt="word " * 3000, stream=False)
    assert err.value.status_code == 400 and "num_ctx" in err.value.error


def test_ollama_empty_prompt_loads(ol):
    out = ol.generate(model=MODEL, prompt="", stream=False)
    assert out.done and out.done_reason == "load"


# ---- the same engine behind all three -----------------------------------------------------


def test_three_dialects_one_engine(server, hf, ol):
    metrics = dk.scrape_metrics(server.url)
    routes = {
        dict(s.labels)["handler"]
        for s in metrics.samples
        if s.name == "http_requests_total" and ("status", "2xx") in s.labels
    }
    # huggingface_hub's InferenceClient(base_url) posts to TGI's root route, "/"
    assert {"/v1/completions", "/", "/api/generate", "/api/chat"} <= routes
    # the engine measures every dialect's requests under one served model name
    assert metrics.value("deploykit:e2e_request_latency_seconds_count", model_name=MODEL) >= 4
    assert {
        dict(s.labels)["model_name"] for s in metrics.samples if s.name.startswith("deploykit:")
    } == {MODEL}


def test_midstream_errors_in_each_dialect_shape():
    # Batch size 1: an OpenAI request with ignore_eos runs 2,000 tokens (seconds on toy-tiny),
    # far past the 0.01 s drain, while a TGI and an Ollama stream wait behind it (their 200
    # and headers already sent). When the engine stops, each dialect reports the failure in
    # its own shape.
    with (
        start_server(
            "--drain-timeout-s", "0.01", "--max-batch-size", "1", name="serve-dialects-drain"
        ) as srv,
        httpx.Client(timeout=60) as client,
    ):
        with (
            client.stream(
                "POST",
                srv.url + "/v1/completions",
                json={
                    "model": MODEL,
                    "prompt": PROMPT,
                    "max_tokens": 2000,
                    "ignore_eos": True,
                    "stream": True,
                },
            ) as blocker,
            client.stream(
                "POST",
                srv.url + "/generate_stream",
                json={"inputs": PROMPT, "parameters": {"max_new_tokens": 8}},
            ) as tgi_stream,
            client.stream(
                "POST",
                srv.url + "/api/generate",
                json={"model": MODEL, "prompt": PROMPT, "options": {"num_predict": 8}},
            ) as ollama_stream,
        ):
            blocker_lines = blocker.iter_lines()  # kept: dropping it would close the stream
            assert next(blocker_lines)  # running; the other two wait
            os.kill(srv.pid, signal.SIGTERM)  # drain 0.01 s, then the engine stops
            tgi_lines = [line for line in tgi_stream.iter_lines() if line]
            ollama_lines = [line for line in ollama_stream.iter_lines() if line]
    assert tgi_stream.status_code == ollama_stream.status_code == 200
    [tgi_error] = [json.loads(line.removeprefix("data:")) for line in tgi_lines]
    assert set(tgi_error) == {"error", "error_type"} and "engine stopped" in tgi_error["error"]
    [ollama_error] = [json.loads(line) for line in ollama_lines]
    assert set(ollama_error) == {"error"} and "engine stopped" in ollama_error["error"]


def test_tgi_client_keeps_the_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    client = dk.tgi_client("http://127.0.0.1:9")  # loopback: allowed through (nothing listens)
    with pytest.raises(Exception) as err:
        client.text_generation("hi", max_new_tokens=1)
    assert not isinstance(err.value, OfflineModeIsEnabled)
    remote = dk.tgi_client("https://example.invalid")  # anything else: still refused
    with pytest.raises(OfflineModeIsEnabled):
        remote.text_generation("hi", max_new_tokens=1)
    with pytest.raises(dk.InvalidArgumentError, match="http://"):
        dk.tgi_client("127.0.0.1:8080")


BAD_BODIES = [b"{not json", b"[1, 2]", b'"text"', b"{}", b'{"\\ud800": 1}']
TGI_BAD = [
    {"inputs": 5},
    {"inputs": ""},
    {"inputs": "hi", "parameters": "x"},
    {"inputs": "hi", "parameters": {"max_new_tokens": 0}},
    {"inputs": "hi", "parameters": {"temperature": "hot"}},
    {"inputs": "hi", "parameters": {"top_p": 1.0}},
    {"inputs": "hi", "parameters": {"stop": ["a", "b", "c", "d", "e"]}},
    {"inputs": "hi", "parameters": {"stop": [""]}},
    {"inputs": "hi", "parameters": {"seed": -1}},
    {"inputs": "hi", "parameters": {"repetition_penalty": 1e-300}},
    {"inputs": "hi", "parameters": {"temperature": 50.0}},
    {"inputs": "hi", "parameters": {"truncate": 0}},
]
# each is sent with a valid prompt (generate) or messages (chat) unless it sets its own
OLLAMA_BAD = [
    {"model": None},
    {"model": ""},
    {"options": []},
    {"options": {"num_ctx": 0}},
    {"options": {"num_predict": 0}},
    {"options": {"temperature": 9.0}},
    {"options": {"repeat_penalty": 1e-300}},
    {"options": {"mirostat": 1}},
    {"options": {"num_ctx": 4}},
    {"format": "json"},
    {"think": True},
    {"prompt": 5},
    {"context": [10**9]},
    {"images": ["aGk="]},
    {"messages": "hi"},
    {"messages": [{"role": "wizard", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]},
    {"tools": [{"type": "function"}]},
]


@pytest.mark.parametrize("path", ["/generate", "/generate_stream", "/"])
@pytest.mark.parametrize("body", BAD_BODIES + TGI_BAD, ids=repr)
def test_tgi_bad_input_is_a_422_in_tgis_shape(server, path, body):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(
        server.url + path, headers={"Content-Type": "application/json"}, timeout=60, **kwargs
    )
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"error", "error_type"} and r.json()["error_type"] == "validation"
    assert r.json()["error"].startswith("Input validation error: ")


_ROUTE_FIELDS = {
    "/api/generate": {"prompt", "context", "images"},
    "/api/chat": {"messages", "tools"},
}
# a field of the other route is ignored, as Ollama ignores unknown fields: not sent there
OLLAMA_CASES = [
    (path, body)
    for path in _ROUTE_FIELDS
    for body in BAD_BODIES + OLLAMA_BAD
    if isinstance(body, bytes)
    or not (set(body) & (set().union(*_ROUTE_FIELDS.values()) - _ROUTE_FIELDS[path]))
]


@pytest.mark.parametrize("path, body", OLLAMA_CASES, ids=repr)
def test_ollama_bad_input_is_a_400_in_ollamas_shape(server, path, body):
    if isinstance(body, bytes):
        kwargs = {"content": body}
    else:
        base = {
            "model": MODEL,
            **(
                {"prompt": "hi"}
                if path == "/api/generate"
                else {"messages": [{"role": "user", "content": "hi"}]}
            ),
        }
        kwargs = {"json": {**base, **body}}
    r = httpx.post(
        server.url + path, headers={"Content-Type": "application/json"}, timeout=60, **kwargs
    )
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]


def test_tgi_limits_default_to_the_model_context_and_refuse_the_impossible():
    from deploykit.server.tgi import TGILimits

    assert TGILimits().resolve(2048) == (2047, 2048)
    assert TGILimits(max_total_tokens=1024).resolve(2048) == (1023, 1024)
    assert TGILimits(100, 1024).resolve(2048) == (100, 1024)
    with pytest.raises(dk.InvalidArgumentError, match="context length"):
        TGILimits(max_total_tokens=4096).resolve(2048)
    with pytest.raises(dk.InvalidArgumentError, match="must be larger"):
        TGILimits(1024, 1024)
    with pytest.raises(dk.InvalidArgumentError, match="lower max_input_tokens"):
        TGILimits(max_input_tokens=4096).resolve(2048)
