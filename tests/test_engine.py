"""The continuous-batching engine on the real toy-tiny model: sampling, stopping, joining."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import pytest
import torch

import deploykit as dk
from deploykit.errors import EngineOverloadedError, InvalidArgumentError, InvalidRequestError
from deploykit.server import engine as engine_module
from deploykit.server.engine import Engine, EngineConfig
from deploykit.server.sampling import SamplingParams

PROMPTS = ["The quick brown fox", "def main():", "Return the", "import os\n"]


@pytest.fixture(scope="module")
def lm():
    return dk.load_model("toy-tiny", device="cpu", progress=False)


@pytest.fixture(scope="module")
def engine(lm):
    eng = Engine(lm, EngineConfig(max_batch_size=8, max_waiting=64)).start()
    yield eng
    eng.stop()


def ids(lm, prompt: str) -> list[int]:
    return lm.tokenizer(prompt).input_ids


async def collect(engine, prompt_ids, params, stream=False):
    text, tokens, finish = "", [], None
    async for out in engine.generate(prompt_ids, params, stream=stream):
        text += out.text
        tokens += out.token_ids
        finish = out.finish_reason
    return text, tokens, finish


def run(coro):
    return asyncio.run(coro)


def hf_greedy(lm, prompt_ids, max_new_tokens, **kwargs) -> list[int]:
    inputs = torch.tensor([prompt_ids])
    out = lm.model.generate(
        inputs,
        attention_mask=torch.ones_like(inputs),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=lm.tokenizer.pad_token_id,
        **kwargs,
    )
    return out[0, len(prompt_ids) :].tolist()


def test_greedy_matches_transformers_generate_alone_and_batched(lm, engine):
    params = SamplingParams(max_tokens=24, temperature=0.0)
    expected = [hf_greedy(lm, ids(lm, p), 24) for p in PROMPTS]
    alone = [run(collect(engine, ids(lm, p), params))[1] for p in PROMPTS]
    assert alone == expected

    async def together():
        return await asyncio.gather(*(collect(engine, ids(lm, p), params) for p in PROMPTS))

    assert [r[1] for r in run(together())] == expected


def test_requests_join_a_running_batch(lm, engine):
    long = SamplingParams(max_tokens=80, temperature=0.0, ignore_eos=True)
    short = SamplingParams(max_tokens=10, temperature=0.0)

    async def scenario():
        first = asyncio.ensure_future(collect(engine, ids(lm, PROMPTS[0]), long))
        while engine.num_running == 0:  # wait until the long request is decoding
            await asyncio.sleep(0.001)
        steps_before = engine.steps
        late = await collect(engine, ids(lm, PROMPTS[1]), short)
        joined_while_running = engine.num_running > 0 or not first.done()
        return await first, late, steps_before, joined_while_running

    first, late, steps_before, joined = run(scenario())
    assert joined and steps_before > 0
    assert len(first[1]) == 80 and first[2] == "length"
    # the late request's output does not depend on joining a batch mid-flight
    assert late[1] == hf_greedy(lm, ids(lm, PROMPTS[1]), 10)[: len(late[1])]


def test_seeded_sampling_is_deterministic_and_seeds_differ(lm, engine):
    p = ids(lm, PROMPTS[0])
    a = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, top_k=50, seed=7)
    b = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, top_k=50, seed=8)
    first, again, other = (run(collect(engine, p, s))[1] for s in (a, a, b))
    assert first == again
    assert first != other

    async def beside_others():  # a seeded row gives the same tokens inside a batch
        noise = SamplingParams(max_tokens=20, temperature=1.5)
        results = await asyncio.gather(
            collect(engine, p, a), *(collect(engine, ids(lm, q), noise) for q in PROMPTS)
        )
        return results[0][1]

    assert run(beside_others()) == first


def test_top_k_one_is_greedy(lm, engine):
    p = ids(lm, PROMPTS[1])
    sampled = run(collect(engine, p, SamplingParams(max_tokens=16, temperature=1.3, top_k=1)))
    assert sampled[1] == hf_greedy(lm, p, 16)


def test_max_tokens_and_ignore_eos(lm, engine):
    text, tokens, finish = run(
        collect(
            engine,
            ids(lm, PROMPTS[2]),
            SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True),
        )
    )
    assert len(tokens) == 50 and finish == "length"


def test_min_tokens_bans_eos_like_transformers(lm, engine):
    p = ids(lm, "def main():")
    eos = lm.tokenizer.eos_token_id
    params = SamplingParams(max_tokens=40, temperature=0.0, min_tokens=30)
    tokens = run(collect(engine, p, params))[1]
    assert len(tokens) >= 30 and eos not in tokens[:30]
    assert tokens == hf_greedy(lm, p, 40, min_new_tokens=30)[: len(tokens)]


def test_stop_token_ids_end_the_request(lm, engine):
    p = ids(lm, PROMPTS[0])
    greedy = hf_greedy(lm, p, 20)
    stop_id = greedy[5]
    tokens = run(
        collect(
            engine, p, SamplingParams(max_tokens=20, temperature=0.0, stop_token_ids=(stop_id,))
        )
    )[1]
    assert tokens == greedy[: greedy.index(stop_id) + 1]


def test_stop_strings_cut_the_text_streamed_or_not(lm, engine):
    p = ids(lm, PROMPTS[0])
    full, _, _ = run(collect(engine, p, SamplingParams(max_tokens=30, temperature=0.0)))
    stop = full.strip()[6:10]
    assert stop and stop in full
    expected = full[: full.index(stop)]
    for stream in (False, True):
        params = SamplingParams(max_tokens=30, temperature=0.0, stop=(stop,))
        text, _, finish = run(collect(engine, p, params, stream=stream))
        assert (text, finish) == (expected, "stop")


def test_streaming_yields_token_by_token(lm, engine):
    outs = []

    async def gather():
        params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
        async for out in engine.generate(ids(lm, PROMPTS[0]), params, stream=True):
            outs.append(out)

    run(gather())
    assert len(outs) >= 6 and sum(len(o.token_ids) for o in outs) == 12
    assert outs[-1].finish_reason == "length" and outs[-1].time_to_first_token_s > 0


def test_bad_parameters_and_context_length(lm, engine):
    with pytest.raises(InvalidRequestError, match="temperature"):
        SamplingParams(temperature=2.5)
    with pytest.raises(InvalidRequestError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(InvalidRequestError) as info:
        engine.check_request([1] * 2000, SamplingParams(max_tokens=100))
    assert "2048" in str(info.value) and "2100" in str(info.value)


def test_closing_a_stream_frees_its_row_and_a_full_queue_refuses(lm):
    eng = Engine(lm, EngineConfig(max_batch_size=2, max_waiting=2)).start()
    try:

        async def scenario():
            long = SamplingParams(max_tokens=1500, temperature=0.0, ignore_eos=True)
            streams = [eng.generate(ids(lm, PROMPTS[0]), long) for _ in range(2)]
            while eng.num_running < 2:  # both rows are decoding; the queue is empty
                await asyncio.sleep(0.001)
            streams += [eng.generate(ids(lm, PROMPTS[0]), long) for _ in range(2)]
            assert eng.num_waiting == 2
            with pytest.raises(EngineOverloadedError):
                eng.generate(ids(lm, PROMPTS[0]), long)
            await streams[0].__anext__()
            for s in streams:
                await s.aclose()
            return await eng.wait_idle(timeout_s=5.0)

        assert run(scenario())
        assert eng.num_running == 0 and eng.num_waiting == 0
    finally:
        eng.stop()


def _waiting_request(i: int, arrival_step: int):
    from deploykit.server.request import RequestState

    loop = asyncio.new_event_loop()
    loop.close()  # never woken: _admit only reads the queue
    return RequestState(
        f"r{i}", [1, 2, 3], SamplingParams(max_tokens=4), loop, False, arrival_step=arrival_step
    )


@pytest.mark.parametrize(
    "running, waiting, waited_steps, admitted",
    [
        (1, 3, 1, 3),  # 3 rows x 1 step lost >= 1 running row: prefill now
        (6, 1, 1, 0),  # one arrival beside six running rows: gather more first
        (6, 2, 3, 2),  # 2 x 3 = 6 row-steps lost: as much as the prefill costs the six
        (30, 1, 7, 0),  # a big batch with room: wait ...
        (30, 1, 8, 1),  # ... until max_admit_delay_steps at most
    ],
)
def test_admission_waits_only_while_waiting_costs_less_than_a_prefill(
    lm, running, waiting, waited_steps, admitted
):
    eng = Engine(lm, EngineConfig(max_batch_size=32, kernels="eager"))  # not started
    eng.steps = 100
    eng._running = [_waiting_request(i, 0) for i in range(running)]
    eng._waiting.extend(_waiting_request(i, 100 - waited_steps) for i in range(waiting))
    assert len(eng._admit()) == admitted


def test_a_first_token_goes_out_before_the_next_decode_step(lm):
    """Time to first token is the prefill's: the step's decode does not hold the first token."""
    eng = Engine(lm, EngineConfig(max_batch_size=4))
    published: list[int] = []  # tokens each wake-up hands the request, in order
    real = eng._publish
    eng._publish = lambda touched: (published.extend(len(r.output_ids) for r in touched),
                                    real(touched))  # fmt: skip
    eng.start()
    try:
        params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
        _, tokens, finish = run(collect(eng, ids(lm, "def main():"), params, stream=True))
    finally:
        eng.stop()
    assert len(tokens) == 3 and finish == "length"
    assert published == [1, 2, 3]  # the prefill's token alone, then one per decode step


LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 6


def test_a_long_prompt_prefilled_in_chunks_decodes_as_transformers_does(lm):
    """Chunks of 8 tokens, alone and beside short prompts: the same greedy tokens."""
    eng = Engine(lm, EngineConfig(max_batch_size=8, prefill_chunk_tokens=8)).start()
    try:
        params = SamplingParams(max_tokens=12, temperature=0.0)
        prompts = [LONG_PROMPT, *PROMPTS]
        assert len(ids(lm, LONG_PROMPT)) > 4 * 8  # five chunks or more
        expected = [hf_greedy(lm, ids(lm, p), 12) for p in prompts]
        assert run(collect(eng, ids(lm, LONG_PROMPT), params))[1] == expected[0]

        async def together():
            return await asyncio.gather(*(collect(eng, ids(lm, p), params) for p in prompts))

        assert [r[1] for r in run(together())] == expected
    finally:
        eng.stop()


@pytest.mark.parametrize("chunk, at_least, at_most", [(4, 8, None), (0, 0, 2)])
def test_running_rows_decode_between_the_chunks_of_a_long_prompt(lm, chunk, at_least, at_most):
    """The running request gets a token after each chunk: with chunks of 4, a prompt of 33
    tokens (9 chunks) lets it decode 8 or more tokens before the long prompt's first token;
    prefilled whole, at most the step under way and the one with the prefill. Counted in
    the engine (its tokens when the long prompt was sent, and when that one's first token
    was sampled), not by when the streams read them."""
    eng = Engine(lm, EngineConfig(max_batch_size=4, prefill_chunk_tokens=chunk))
    prompt = ids(lm, LONG_PROMPT)[:33]
    at_first: list[int] = []  # the running request's tokens when the long one's first came
    real = eng._record

    def record(reqs, tokens, touched):
        if any(r.prompt_ids == prompt and not r.output_ids for r in reqs):
            at_first.extend(len(r.output_ids) for r in eng._running if r.prompt_ids != prompt)
        real(reqs, tokens, touched)

    eng._record = record
    eng.start()
    try:

        async def scenario():
            params = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
            running = eng.generate(ids(lm, PROMPTS[1]), params)
            await running.__anext__()  # it is decoding
            sent_at = len(running._req.output_ids)
            long = eng.generate(prompt, SamplingParams(max_tokens=2, temperature=0.0))
            await long.__anext__()
            await running.aclose()
            await long.aclose()
            return sent_at

        sent_at = run(scenario())
    finally:
        eng.stop()
    between = at_first[0] - sent_at
    assert between >= at_least
    if at_most is not None:
        assert between <= at_most


def test_a_long_prompt_dropped_while_it_prefills_frees_its_place(lm):
    eng = Engine(lm, EngineConfig(max_batch_size=2, prefill_chunk_tokens=1)).start()
    try:

        async def scenario():
            params = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
            running = eng.generate(ids(lm, PROMPTS[1]), params)
            await running.__anext__()
            long = eng.generate(ids(lm, LONG_PROMPT), SamplingParams(max_tokens=2))
            for _ in range(3):  # a few of its 60-odd one-token chunks have run
                await running.__anext__()
            assert eng.num_running == 2
            await long.aclose()
            for _ in range(200):
                await running.__anext__()
                if eng.num_running == 1:
                    break
            still = len((await running.__anext__()).token_ids)
            await running.aclose()
            return still, await eng.wait_idle(timeout_s=5.0)

        still, idle = run(scenario())
        assert still >= 1 and idle and eng.num_running == 0
    finally:
        eng.stop()


def test_an_idle_engine_admits_requests_arriving_together_in_one_prefill(lm):
    """Arrivals closer than admit_gap_s to the one before join the same prefill."""
    eng = Engine(lm, EngineConfig(admit_gap_s=0.5, admit_window_s=5.0, kernels="eager"))
    eng._waiting.append(_waiting_request(0, 0))

    def arrive():
        for i in (1, 2):
            time.sleep(0.05)
            with eng._cond:
                eng._waiting.append(_waiting_request(i, 0))
                eng._cond.notify()

    helper = threading.Thread(target=arrive)
    helper.start()
    admitted = eng._admit()
    helper.join()
    assert [r.id for r in admitted] == ["r0", "r1", "r2"]
    at_once = Engine(lm, EngineConfig(admit_gap_s=0.0, kernels="eager"))
    at_once._waiting.append(_waiting_request(0, 0))
    assert len(at_once._admit()) == 1


def test_an_idle_engine_waits_for_as_many_arrivals_as_its_last_batch_had_rows(lm, monkeypatch):
    """admit_gap_s None: after a batch of 3 rows, the next 3 arrivals share one prefill (a
    4th is left for later); after a batch of one row (one request at a time), the next is
    admitted without a wait. Gaps made long (0.5 s) so that a slow machine keeps the order."""
    monkeypatch.setattr(engine_module, "_AUTO_GAP_MAX_S", 0.5)
    eng = Engine(lm, EngineConfig(kernels="eager", admit_window_s=5.0))

    def batch_ran(rows: int) -> None:
        eng._running = [_waiting_request(100 + i, 0) for i in range(rows)]
        eng._after_step(True, 2.0)  # a step from idle of 2 s: gaps of 0.5 s allowed
        eng._running = []
        eng._after_step(False, 0.01)

    def arrive(ids, pause_s):
        def run():
            for i in ids:
                time.sleep(pause_s)
                with eng._cond:
                    eng._waiting.append(_waiting_request(i, 0))
                    eng._cond.notify()

        helper = threading.Thread(target=run)
        helper.start()
        return helper

    batch_ran(3)
    eng._waiting.append(_waiting_request(0, 0))
    helper = arrive((1, 2, 3), 0.05)
    admitted = eng._admit()
    helper.join()
    assert [r.id for r in admitted] == ["r0", "r1", "r2"]
    assert [r.id for r in eng._waiting] == ["r3"]

    eng._waiting.clear()
    batch_ran(1)
    eng._waiting.append(_waiting_request(4, 0))
    helper = arrive((5,), 0.05)
    admitted = eng._admit()
    helper.join()
    assert [r.id for r in admitted] == ["r4"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"admit_gap_s": 0.01, "admit_window_s": 0.001}, "admit_gap_s <= admit_window_s"),
        ({"admit_gap_s": -1.0}, "0 <= admit_gap_s"),
        ({"prefill_chunk_tokens": -1}, "prefill_chunk_tokens=-1"),
    ],
)
def test_engine_config_refuses_bad_admission_and_chunk_settings(options, message):
    with pytest.raises(InvalidArgumentError, match=message):
        EngineConfig(**options)


def test_a_long_prompt_done_at_its_first_token_never_joins_the_batch(lm, monkeypatch):
    """max_tokens=1 (a prompt scored, a classification): the answer, and no row to pad and
    drop again."""
    from deploykit.server.kvbatch import KVBatch

    joined: list[int] = []
    real = KVBatch.join
    monkeypatch.setattr(KVBatch, "join", lambda self, p: (joined.append(p.done), real(self, p)))
    eng = Engine(lm, EngineConfig(max_batch_size=2, prefill_chunk_tokens=8)).start()
    try:
        prompt = ids(lm, LONG_PROMPT)
        one = SamplingParams(max_tokens=1, temperature=0.0)
        assert run(collect(eng, prompt, one))[1] == hf_greedy(lm, prompt, 1)
        assert joined == []
        assert run(collect(eng, prompt, replace(one, max_tokens=3)))[1] == hf_greedy(lm, prompt, 3)
        assert joined == [len(prompt)]
    finally:
        eng.stop()


@pytest.mark.parametrize("running, chunk, admitted", [(1, 6, 2), (1, 0, 4), (0, 6, 4)])
def test_prompts_prefilled_beside_running_rows_are_held_to_a_chunk(lm, running, chunk, admitted):
    """Four 3-token prompts: beside a running row, 6 tokens a step admit two of them; without
    chunks, or into an idle engine, all four go in one forward."""
    config = EngineConfig(prefill_chunk_tokens=chunk, admit_gap_s=0.0, kernels="eager")
    eng = Engine(lm, config)  # not started
    eng.steps = 100
    eng._running = [_waiting_request(i, 0) for i in range(running)]
    eng._waiting.extend(_waiting_request(i, 90) for i in range(4))
    assert len(eng._admit()) == admitted
