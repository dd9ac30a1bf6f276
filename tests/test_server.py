"""`deploykit serve` as clients see it: the openai SDK, bad input, auth, health and metrics."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from _servers import MODEL, assert_openai_error, start_server


@pytest.fixture(scope="module")
def server():
    with start_server(name="serve-plain") as srv:
        yield srv


@pytest.fixture(scope="module")
def guarded():
    with start_server(
        "--api-key", "s3cret", "--max-body-bytes", "4000", name="serve-guarded"
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def post(server, path: str, body, **kwargs) -> httpx.Response:
    if isinstance(body, (dict, list)):
        kwargs["json"] = body
    else:
        kwargs["content"] = body
        kwargs.setdefault("headers", {"Content-Type": "application/json"})
    return httpx.post(server.url + path, timeout=60, **kwargs)


# ---- the official SDK -----------------------------------------------------------------


def test_sdk_completion(client):
    out = client.completions.create(
        model=MODEL, prompt="The quick brown fox", max_tokens=12, temperature=0
    )
    choice = out.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.text
    assert not choice.text.startswith("The quick brown fox")  # the prompt is not echoed
    assert out.usage.completion_tokens <= 12 and out.usage.prompt_tokens > 0


def test_sdk_chat(client):
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=10,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert out.choices[0].message.role == "assistant"
    assert out.usage.completion_tokens == 10 and out.choices[0].finish_reason == "length"


def test_sdk_streaming_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Count"}],
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == 16 and not chunks[-1].choices
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    greedy = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=16,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert text == greedy.choices[0].message.content


def test_sdk_completion_stream(client):
    events = list(
        client.completions.create(
            model=MODEL,
            prompt="def main():",
            max_tokens=8,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
    )
    assert len(events) >= 2 and events[-1].choices[0].finish_reason == "length"


def test_sdk_async_concurrent(server):
    async def main():
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused")
        outs = await asyncio.gather(
            *(
                client.completions.create(
                    model=MODEL, prompt=f"Line {i}:", max_tokens=8, temperature=0
                )
                for i in range(8)
            )
        )
        await client.close()
        return outs

    outs = asyncio.run(main())
    assert len(outs) == 8 and all(o.choices[0].finish_reason for o in outs)


def test_models_list(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_unknown_model_is_404(client, server):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="hi", max_tokens=4)
    assert_openai_error(post(server, "/v1/completions", {"model": "gpt-9", "prompt": "hi"}), 404)


# ---- bad input: 400 in OpenAI's shape, never 422 or 500 --------------------------------


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": MODEL, "prompt": "hi", "temperature": 2.5}, "temperature"),
        ({"model": MODEL, "prompt": "hi", "temperature": -0.1}, "temperature"),
        ({"model": MODEL, "prompt": "hi", "top_p": 0}, "top_p"),
        ({"model": MODEL, "prompt": "hi", "top_p": 1.5}, "top_p"),
        ({"model": MODEL, "prompt": ""}, "prompt"),
        ({"model": MODEL, "prompt": "hi", "max_tokens": "16"}, "max_tokens"),
        ({"model": MODEL, "prompt": 42}, "prompt"),
        ({"model": MODEL, "prompt": "hi", "stream": "yes"}, "stream"),
        ({"prompt": "hi"}, "model"),
    ],
)
def test_bad_fields_are_400(server, body, param):
    err = assert_openai_error(post(server, "/v1/completions", body), 400)
    assert err["param"].split(".")[0] == param
    assert err["type"] == "invalid_request_error"


def test_chat_wrong_types_are_400(server):
    assert_openai_error(
        post(server, "/v1/chat/completions", {"model": MODEL, "messages": "hi"}), 400
    )
    assert_openai_error(post(server, "/v1/chat/completions", {"model": MODEL, "messages": []}), 400)


def test_context_length_400_names_both_numbers(server):
    err = assert_openai_error(
        post(
            server, "/v1/completions", {"model": MODEL, "prompt": "word " * 300, "max_tokens": 2000}
        ),
        400,
    )
    assert "2048" in err["message"] and "2000" in err["message"]


def test_chat_max_tokens_beside_max_completion_tokens_keeps_its_bound(server):
    # the OpenAPI schema bounds both fields; the one not used must not pass unchecked
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    err = assert_openai_error(
        post(
            server, "/v1/chat/completions", {**body, "max_completion_tokens": 2, "max_tokens": 5000}
        ),
        400,
    )
    assert err["param"] == "max_tokens" and "2047" in err["message"]
    ok = post(server, "/v1/chat/completions", {**body, "max_completion_tokens": 2, "max_tokens": 8})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 2


def test_malformed_json_and_non_object_are_400(server):
    assert_openai_error(post(server, "/v1/completions", b'{"model": "toy-tiny", "prompt": '), 400)
    assert_openai_error(post(server, "/v1/completions", b"[1, 2, 3]"), 400)
    assert_openai_error(post(server, "/v1/completions", b'"just a string"'), 400)


def test_body_over_limit_is_413(guarded):
    body = {"model": MODEL, "prompt": "x" * 10_000}
    headers = {"Authorization": "Bearer s3cret"}
    assert_openai_error(post(guarded, "/v1/completions", body, headers=headers), 413)


def test_api_key_required_and_compared(guarded):
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 4}
    assert_openai_error(post(guarded, "/v1/completions", body), 401)
    assert_openai_error(
        post(guarded, "/v1/completions", body, headers={"Authorization": "Bearer wrong"}), 401
    )
    ok = post(guarded, "/v1/completions", body, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    sdk = openai.OpenAI(base_url=guarded.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
    assert httpx.get(guarded.url + "/health").status_code == 200  # probes need no key


def test_openapi_declares_the_api_key(guarded):
    doc = httpx.get(
        guarded.url + "/openapi.json", headers={"Authorization": "Bearer s3cret"}
    ).json()
    assert doc["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    completions = doc["paths"]["/v1/completions"]["post"]
    assert completions["security"] == [{"apiKey": []}] and "401" in completions["responses"]
    assert "security" not in doc["paths"]["/health"]["get"]  # probes need no key


def test_unknown_route_is_openai_shaped_404(server):
    assert_openai_error(httpx.get(server.url + "/v1/nothing"), 404)


# ---- probes, metrics, tokenize ----------------------------------------------------------


def test_health_ready_metrics(server, client):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").status_code == 200
    client.completions.create(model=MODEL, prompt="hi", max_tokens=4)
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "http_requests_total{",
        "deploykit:time_to_first_token_seconds_bucket",
        "deploykit:e2e_request_latency_seconds_bucket",
        "deploykit:generation_tokens_total",
        "deploykit:num_requests_running",
        "deploykit:num_requests_waiting",
    ):
        assert name in text
    assert 'handler="/v1/completions"' in text and 'status="2xx"' in text


def test_tokenize(server):
    out = post(server, "/tokenize", {"model": MODEL, "prompt": "Hello world"}).json()
    assert out["count"] == len(out["tokens"]) > 0 and out["max_model_len"] == 2048
    chat = post(server, "/tokenize", {"messages": [{"role": "user", "content": "Hi"}]}).json()
    assert chat["count"] > out["count"] - 3
    assert_openai_error(post(server, "/tokenize", {"prompt": 5}), 400)


def test_sse_ends_with_done(server):
    with httpx.stream(
        "POST",
        server.url + "/v1/completions",
        timeout=60,
        json={"model": MODEL, "prompt": "hi", "max_tokens": 5, "stream": True},
    ) as resp:
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert "choices" in json.loads(lines[0][6:])


# ---- the one-at-a-time baseline keeps the same contract -------------------------------


def test_naive_server_errors_and_no_prompt_echo():
    with start_server("--naive", "--max-body-bytes", "4000", name="serve-naive-test") as srv:
        err = assert_openai_error(
            post(srv, "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 5000}), 400
        )
        assert (
            err["param"] == "max_tokens" and "2048" in err["message"] and "5000" in err["message"]
        )
        assert_openai_error(
            post(srv, "/v1/completions", {"model": MODEL, "prompt": "x" * 5000}), 413
        )
        assert_openai_error(post(srv, "/v1/completions", {"model": "other", "prompt": "hi"}), 404)
        assert_openai_error(post(srv, "/v1/completions", b"{not json"), 400)
        ok = post(
            srv,
            "/v1/completions",
            {"model": MODEL, "prompt": "def main():", "max_tokens": 8, "temperature": 0},
        )
        assert ok.status_code == 200
        assert not ok.json()["choices"][0]["text"].startswith("def main():")
        assert ok.json()["usage"]["completion_tokens"] <= 8
