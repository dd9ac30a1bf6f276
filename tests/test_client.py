"""The resilient client against a real toy-tiny server behind the real fault proxy."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from _servers import MODEL, start_server

import deploykit as dk
from deploykit.client.policy import parse_retry_after

PROMPT = "The answer is"
FAST = dk.RetryPolicy(max_attempts=3, backoff_initial_s=0.05, backoff_max_s=0.2, budget_s=10.0)
LONG_STREAM = {"max_tokens": 400, "ignore_eos": True}  # enough events to cut in the middle
SHORT = {"max_tokens": 8, "ignore_eos": True}  # sampled text that cannot stop at once and be empty


@pytest.fixture(scope="module")
def upstream():
    server = start_server(name="client-upstream")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(upstream):
    with dk.start_fault_proxy(upstream.url) as fault_proxy:
        yield fault_proxy


@pytest.fixture()
def faults(proxy):
    proxy.clear(stats=True)
    yield proxy
    proxy.clear(stats=True)


@pytest.fixture()
def client(faults):
    with dk.ResilientClient(faults.url + "/v1", model=MODEL, retry=FAST) as resilient:
        yield resilient


@pytest.fixture()
def blackhole():
    """A loopback port whose accept queue is full: connecting to it times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname(), timeout=1.0)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    filler.close()
    listener.close()


def _seen(proxy) -> list[dict]:
    return [r for r in proxy.stats()["requests"] if r["path"].startswith("/v1/")]


def test_answers_with_one_attempt(client, faults):
    answer = client.chat([{"role": "user", "content": "hi"}], **SHORT)
    assert answer.text and answer.attempts == 1 and answer.retries == 0
    assert answer.base_url == faults.url + "/v1" and not answer.cached
    streamed = "".join(client.stream_completions(PROMPT, max_tokens=16, temperature=0))
    assert streamed == client.completions(PROMPT, max_tokens=16, temperature=0).text
    assert _seen(faults)[0]["idempotency_key"] == answer.idempotency_key


def test_503_burst_is_retried_after_retry_after(client, faults):
    faults.inject(status=503, count=2, retry_after_s=0.5)
    answer = client.completions(PROMPT, **SHORT)
    assert answer.attempts == 3 and answer.text
    seen = _seen(faults)
    assert [r["fault"] for r in seen] == ["status 503", "status 503", None]
    gaps = [b["t_s"] - a["t_s"] for a, b in zip(seen, seen[1:])]
    assert min(gaps) >= 0.5, f"a retry came before Retry-After: gaps {gaps}"
    assert len({r["idempotency_key"] for r in seen}) == 1  # one logical request
    assert client.stats.retries == 2 and client.stats.failures["status_503"] == 2


@pytest.mark.parametrize("case", ["400", "404", "422"])
def test_client_errors_are_not_retried(client, faults, case):
    with pytest.raises(dk.RequestRejectedError) as caught:
        if case == "400":
            client.completions(PROMPT, max_tokens=-1)
        elif case == "404":
            client.completions(PROMPT, model="no-such-model")
        else:
            faults.inject(status=422, count=1)
            client.completions(PROMPT, max_tokens=4)
    assert caught.value.status == int(case) and "not retried" in str(caught.value)
    assert len(_seen(faults)) == 1
    assert client.stats.rejected == 1


def test_gives_up_after_max_attempts_with_the_last_cause(client, faults):
    faults.inject(status=503)  # until cleared
    with pytest.raises(dk.RetryBudgetExhaustedError) as caught:
        client.completions(PROMPT, max_tokens=4)
    assert caught.value.attempts == 3 and caught.value.status == 503
    assert "max_attempts=3" in str(caught.value) and "HTTP 503" in str(caught.value)
    assert len(_seen(faults)) == 3 and client.stats.giveups == 1


def test_never_retries_earlier_than_retry_after_it_gives_up_instead(faults):
    faults.inject(status=429, retry_after_s=3)
    policy = dk.RetryPolicy(max_attempts=5, budget_s=1.0)
    with dk.ResilientClient(faults.url + "/v1", model=MODEL, retry=policy) as client:
        with pytest.raises(dk.RetryBudgetExhaustedError, match="budget_s=1"):
            client.completions(PROMPT, max_tokens=4)
    strict = dk.RetryPolicy(max_attempts=5, retry_after_max_s=2.0)
    with dk.ResilientClient(faults.url + "/v1", model=MODEL, retry=strict) as client:
        with pytest.raises(dk.RetryBudgetExhaustedError, match="retry_after_max_s=2"):
            client.completions(PROMPT, max_tokens=4)
    assert len(_seen(faults)) == 2  # one attempt each: no early retry


def test_stream_cut_after_text_raises_and_is_not_retried(client, faults):
    # role event + 4 token events. A token event may carry no text yet (a character split over
    # two tokens), and greedy decoding makes which ones do the same on every run.
    faults.inject(cut_stream_after_chunks=5, count=1)
    received = []
    with pytest.raises(dk.StreamInterruptedError) as caught:
        for text in client.stream_chat(
            [{"role": "user", "content": "hi"}], temperature=0, **LONG_STREAM
        ):
            received.append(text)
    # the contract: the text the caller got is exactly what the error reports, and the
    # break came after text, so nothing was retried (how many reads it took is not the contract)
    assert received and caught.value.chunks == len(received)
    assert caught.value.text == "".join(received) and "not retried" in str(caught.value)
    assert len(_seen(faults)) == 1  # the proxy saw exactly one request: no silent restart
    assert client.stats.streams_interrupted == 1


def test_stream_cut_before_any_text_is_retried(client, faults):
    faults.inject(cut_stream_after_chunks=1, count=1)  # only the role event gets through
    text = "".join(client.stream_chat([{"role": "user", "content": "hi"}], **SHORT))
    assert text and [r["fault"] for r in _seen(faults)] == ["cut after 1 events", None]


def test_refused_connection_fails_over_to_the_next_url(faults):
    dead = f"http://127.0.0.1:{dk.free_port()}/v1"
    with dk.ResilientClient([dead, faults.url + "/v1"], model=MODEL, retry=FAST) as client:
        text = "".join(client.stream_completions(PROMPT, **SHORT))
        assert text and client.stats.failures == {"connect_error": 1}
        with pytest.raises(dk.RetryBudgetExhaustedError, match="could not connect"):
            dk.ResilientClient(dead, model=MODEL, retry=FAST).completions(PROMPT)


def test_connect_timeout(blackhole):
    timeouts = dk.Timeouts(connect_s=0.2)
    with dk.ResilientClient(blackhole, model=MODEL, timeouts=timeouts, retry=FAST) as client:
        with pytest.raises(dk.RetryBudgetExhaustedError, match="connect_s=0.2"):
            client.completions(PROMPT)
    assert client.stats.failures == {"connect_timeout": 3}


def test_read_timeout_on_a_slow_replica(faults):
    faults.inject(delay_s=2.0, count=2, path_prefix="/v1/")
    timeouts = dk.Timeouts(read_s=0.3)
    policy = dk.RetryPolicy(max_attempts=2, backoff_initial_s=0.01)
    with dk.ResilientClient(
        faults.url + "/v1", model=MODEL, timeouts=timeouts, retry=policy
    ) as client:
        with pytest.raises(dk.RetryBudgetExhaustedError, match="read_s=0.3"):
            client.completions(PROMPT, max_tokens=4)
        assert client.stats.failures == {"read_timeout": 2}
        # stream headers wait under read_s, not stream_idle_s
        faults.inject(delay_s=0.5, count=1, path_prefix="/v1/")
        slow_start = dk.ResilientClient(
            faults.url + "/v1",
            model=MODEL,
            retry=policy,
            timeouts=dk.Timeouts(read_s=5.0, stream_idle_s=0.3),
        )
        assert "".join(slow_start.stream_completions(PROMPT, **SHORT))
        assert slow_start.stats.attempts == 1


def test_stream_idle_timeout_when_the_server_stalls(upstream, faults):
    timeouts = dk.Timeouts(read_s=30.0, stream_idle_s=0.5)
    with dk.ResilientClient(faults.url + "/v1", model=MODEL, timeouts=timeouts) as client:
        stream = client.stream_completions(PROMPT, **LONG_STREAM)
        assert next(stream)
        upstream.pause()  # SIGSTOP: the server stops mid-answer, the connection stays open
        try:
            with pytest.raises(dk.StreamInterruptedError, match="stream_idle_s=0.5"):
                for _ in stream:
                    pass
        finally:
            upstream.resume()
        assert stream.info.attempts == 1 and stream.info.chunks >= 1

    async def stalled() -> None:
        async with dk.AsyncResilientClient(
            faults.url + "/v1", model=MODEL, timeouts=timeouts
        ) as client:
            chunks = client.stream_completions(PROMPT, **LONG_STREAM)
            assert await chunks.__anext__()
            upstream.pause()
            try:
                with pytest.raises(dk.StreamInterruptedError, match="stream_idle_s=0.5"):
                    async for _ in chunks:
                        pass
            finally:
                upstream.resume()

    asyncio.run(stalled())


def test_async_client_retries_and_fails_streams_loudly(faults):
    async def scenario():
        async with dk.AsyncResilientClient(faults.url + "/v1", model=MODEL, retry=FAST) as client:
            faults.inject(status=503, count=1, retry_after_s=0.2)
            answer = await client.completions(PROMPT, **SHORT)
            faults.inject(cut_stream_after_chunks=5, count=1)  # role event + 4 token events
            received = []
            with pytest.raises(dk.StreamInterruptedError) as caught:
                async for text in client.stream_chat(
                    [{"role": "user", "content": "hi"}], temperature=0, **LONG_STREAM
                ):
                    received.append(text)
            whole = [t async for t in client.stream_completions(PROMPT, **SHORT)]
            faults.inject(status=500)
            with pytest.raises(dk.RetryBudgetExhaustedError):
                await client.chat([{"role": "user", "content": "hi"}])
            return answer, caught.value, received, whole, client.stats

    answer, interrupted, received, whole, stats = asyncio.run(scenario())
    assert answer.attempts == 2 and answer.text
    # the contract, not how the bytes were split: the text the caller got is what the error
    # reports (a token event may carry no text yet), and a break after text is not retried
    assert received and interrupted.chunks == len(received) and whole
    assert interrupted.text == "".join(received)
    assert stats.retries == 1 + 2 and stats.giveups == 1 and stats.streams_interrupted == 1
    assert [r["fault"] for r in _seen(faults)].count("cut after 5 events") == 1


def test_threads_share_one_client(client, faults):
    faults.inject(status=503, count=4, retry_after_s=0.1)
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(client.completions(PROMPT)))
        for _ in range(4)
    ]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert len(answers) == 4 and client.stats.requests == 4 and client.stats.retries == 4


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.chat([{"role": "user", "content": "hi"}], stream=True),
        lambda c: c.chat([]),
        lambda c: c.completions(""),
        lambda c: c.stream_chat([{"role": "user", "content": "hi"}], n=2),
        lambda c: dk.ResilientClient("localhost:8000"),
        lambda c: dk.ResilientClient("http://127.0.0.1:1/v1").completions("hi"),  # no model
        lambda c: dk.ResilientClient("http://127.0.0.1:1/v1", cache=dk.MemoryCache()),
        lambda c: dk.Timeouts(connect_s=0),
        lambda c: dk.RetryPolicy(max_attempts=0),
        lambda c: dk.RetryPolicy(retry_statuses={200}),
    ],
)
def test_bad_arguments_fail_before_any_request(call):
    client = dk.ResilientClient("http://127.0.0.1:1/v1", model=MODEL)
    with pytest.raises(dk.InvalidArgumentError):
        call(client)
    assert client.stats.attempts == 0


def test_a_hosted_url_needs_its_key(monkeypatch):
    monkeypatch.delenv("EXAMPLE_API_KEY", raising=False)
    with pytest.raises(dk.MissingCredentialError, match="EXAMPLE_API_KEY"):
        dk.ResilientClient("https://api.example.com/v1", api_key_env="EXAMPLE_API_KEY")


def test_parse_retry_after():
    assert parse_retry_after("2") == 2.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# ---- the notebook's scenario helpers: the seed's client against ours ------------------------

BODY = {"model": MODEL, "prompt": PROMPT, "max_tokens": 8}


def test_scenario_503_burst_seed_loses_silently_ours_retries(client, faults):
    burst = dk.Fault(status=503, count=2, retry_after_s=0.2)
    seed, ours = dk.run_scenario(
        "503 burst",
        {
            "seed": dk.seed_requester(faults.url + "/v1/completions"),
            "ours": dk.resilient_requester(client),
        },
        BODY,
        requests=3,
        concurrency=1,
        proxy=faults,
        fault=burst,
    )
    assert (seed.lost, seed.silent, seed.retries) == (2, 2, 0)
    assert (ours.lost, ours.silent, ours.retries) == (0, 0, 2)
    gaps = dk.retry_gaps_s(ours.proxy_stats)
    assert len(gaps) == 2 and min(gaps) >= 0.2
    table = dk.results_table([seed, ours])
    assert list(table["silently"]) == [2, 0] and max(len(str(v)) for v in table["why lost"]) < 40
    fig = dk.plot_fault_results([seed, ours])
    assert [round(p.get_height()) for p in fig.axes[1].patches] == [0, 2]  # retries per client


def test_scenario_seed_stream_repeats_text_ours_does_not(client, faults):
    body = {**BODY, "max_tokens": 64, "ignore_eos": True, "temperature": 0}
    faults.inject(cut_stream_after_chunks=3, count=1)
    shown = []
    dk.seed_stream(faults.url + "/v1/completions", body, shown.append)
    assert "".join(shown).count(shown[0]) >= 2  # the restart showed the first words again
    faults.inject(cut_stream_after_chunks=3, count=1)
    ours = dk.consume_stream(client.stream_completions(**body))
    assert ours.error.startswith("StreamInterruptedError") and ours.text in "".join(shown)


def test_scenario_replica_killed_during_load(upstream, faults):
    victim = dk.start_fault_proxy(upstream.url, name="victim")  # a replica's front, killed
    urls = [victim.url + "/v1", faults.url + "/v1"]
    with (
        dk.ResilientClient(urls, model=MODEL, retry=FAST) as failover,
        dk.ResilientClient(urls, model=MODEL, retry=FAST) as streaming,
    ):
        ours, streams = dk.run_scenario(
            "replica killed",
            {
                "ours": dk.resilient_requester(failover),
                "streams": dk.resilient_requester(streaming, stream=True, max_tokens=64),
            },
            BODY,
            requests=8,
            concurrency=2,
            together=True,
            kill_during=victim.server,
        )
    assert not victim.server.is_running()
    assert ours.lost == 0 and ours.retries >= 1  # requests sent to the dead replica went to B
    assert streams.silent == 0 and streams.requests == 8
