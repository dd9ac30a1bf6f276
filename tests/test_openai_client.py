"""`dk.openai_client` against a real `deploykit serve`: chat, streaming, a 400, and its keys."""

from __future__ import annotations

import openai
import pytest
from _servers import MODEL, start_server

import deploykit as dk
from deploykit.client.openai_compat import PROVIDER_ENDPOINTS, ProviderEndpoint, provider_endpoints

SECRET = "sk-test-not-a-real-key-4242"


@pytest.fixture(scope="module")
def server():
    with start_server(name="serve-openai-client") as srv:
        yield srv


@pytest.fixture()
def client(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs none
    return dk.openai_client(server.url + "/v1", require_key=False, max_retries=0)


def test_chat(client):
    assert isinstance(client, openai.OpenAI)
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert out.choices[0].message.role == "assistant" and out.choices[0].message.content
    assert out.usage.completion_tokens == 8 and out.choices[0].finish_reason == "length"


def test_streaming_matches_the_whole_answer(client):
    ask = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=12,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    chunks = list(
        client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **ask)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2 and chunks[-1].usage.completion_tokens == 12
    assert text == client.chat.completions.create(**ask).choices[0].message.content


def test_a_bad_request_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL,
            temperature=5,
            max_tokens=4,
            messages=[{"role": "user", "content": "Hello"}],
        )
    assert err.value.status_code == 400 and "temperature" in str(err.value)


def test_loopback_needs_no_key_even_when_required(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = dk.openai_client(server.url + "/v1", max_retries=0)  # require_key=True by default
    assert client.models.list().data[0].id == MODEL


def test_key_from_the_named_variable_reaches_a_guarded_server(monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_TEST_KEY", SECRET)
    with start_server("--api-key", SECRET, name="serve-openai-client-guarded") as srv:
        good = dk.openai_client(srv.url + "/v1", api_key_env="DEPLOYKIT_TEST_KEY", max_retries=0)
        assert good.chat.completions.create(
            model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Hi"}]
        ).choices
        assert SECRET not in repr(good)
        monkeypatch.delenv("DEPLOYKIT_TEST_KEY")
        keyless = dk.openai_client(srv.url + "/v1", api_key_env="DEPLOYKIT_TEST_KEY", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            keyless.models.list()


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(dk.MissingCredentialError, match="OPENAI_API_KEY") as err:
        dk.openai_client("https://api.openai.com/v1")
    assert "export OPENAI_API_KEY=..." in str(err.value)
    monkeypatch.setenv("GROQ_API_KEY", "")  # set but empty counts as missing
    with pytest.raises(dk.MissingCredentialError, match="GROQ_API_KEY"):
        dk.openai_client("https://api.groq.com/openai/v1", api_key_env="GROQ_API_KEY")


def test_the_key_never_shows(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    client = dk.openai_client("https://api.openai.com/v1")
    assert client.api_key == SECRET  # it is used ...
    assert SECRET not in repr(client) and SECRET not in str(client)  # ... and not shown
    status = dk.hosted_key_status()
    assert status["OPENAI_API_KEY"] is True and SECRET not in repr(status)
    assert set(status.values()) <= {True, False}
    table = provider_endpoints()
    assert SECRET not in table.to_string()
    assert table.set_index("name").loc["openai", "key_set"] == True  # noqa: E712 (numpy bool)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(dk.MissingCredentialError) as err:
        dk.openai_client("https://api.openai.com/v1")
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)


def test_provider_endpoints_are_known_and_openai_is_listed():
    rows = {p.name: p for p in PROVIDER_ENDPOINTS}
    assert rows["openai"].base_url == "https://api.openai.com/v1"
    assert rows["openai"].key_env == "OPENAI_API_KEY"
    assert all(p.base_url.endswith("/v1") for p in PROVIDER_ENDPOINTS)
    with pytest.raises(dk.InvalidArgumentError, match="base_url"):
        ProviderEndpoint("x", "api.example.test/v1", None, "docs")


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(base_url="localhost:8000/v1"), "base_url"),
        (dict(base_url="http://127.0.0.1:8000/v1", timeout_s=0), "timeout_s"),
        (dict(base_url="http://127.0.0.1:8000/v1", max_retries=-1), "max_retries"),
    ],
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(dk.InvalidArgumentError, match=word):
        dk.openai_client(**kwargs)
