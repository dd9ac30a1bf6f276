"""Batching strategies on the real toy-tiny model: same answers, different schedules, honest records."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

import deploykit as dk
from deploykit.batching.workload import BATCHING_PROMPTS, BatchingRequest, BatchingWorkload
from deploykit.errors import InvalidArgumentError

BATCH = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # two torch threads on a busy 2-core machine wait for each other at every step
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workload():
    # all at once, mixed prompt and output lengths: static batches must pad and wait
    return dk.batching_workload(
        num_requests=10, rate_per_s=0.0, min_new_tokens=3, max_new_tokens=40, seed=1
    )


@pytest.fixture(scope="module")
def results(tiny, workload):
    return dk.compare_batching(
        tiny, workload, batch_size=BATCH, max_wait_ms=5.0, threads=1, progress=False
    )


def greedy_reference(lm, prompt: str, n: int) -> list[int]:
    """Greedy decoding without a cache or padding: the whole sequence re-run at every step."""
    ids = lm.tokenizer(prompt).input_ids
    with torch.inference_mode():
        for _ in range(n):
            ids.append(int(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-n:]


def sparse(arrivals_s, max_new_tokens=4):
    reqs = tuple(
        BatchingRequest(i, t, BATCHING_PROMPTS[i % len(BATCHING_PROMPTS)], max_new_tokens)
        for i, t in enumerate(arrivals_s)
    )
    return BatchingWorkload(reqs, rate_per_s=1.0)


def test_workload_is_seeded_and_bounded():
    a = dk.batching_workload(20, rate_per_s=50.0, min_new_tokens=8, max_new_tokens=16, seed=3)
    assert a == dk.batching_workload(
        20, rate_per_s=50.0, min_new_tokens=8, max_new_tokens=16, seed=3
    )
    assert a != dk.batching_workload(
        20, rate_per_s=50.0, min_new_tokens=8, max_new_tokens=16, seed=4
    )
    assert all(8 <= r.max_new_tokens <= 16 for r in a.requests)
    arrivals = [r.arrival_s for r in a.requests]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0.0 and arrivals[-1] > 0
    assert all(r.arrival_s == 0.0 for r in dk.batching_workload(5, rate_per_s=0.0).requests)


def test_every_strategy_returns_every_request_with_its_token_count(results, workload):
    assert list(results) == ["none", "static", "dynamic", "continuous"]
    for name, result in results.items():
        assert [o.index for o in result.outcomes] == list(range(len(workload))), name
        assert [len(o.output_ids) for o in result.outcomes] == [
            r.max_new_tokens for r in workload.requests
        ], name
        assert all(0 < o.ttft_s <= o.latency_s for o in result.outcomes), name
        assert result.output_tokens == workload.output_tokens


def test_greedy_answers_match_across_strategies_and_a_cache_free_reference(tiny, results, workload):
    # Padding is masked and positions are per row, so a padded batch row decodes exactly
    # as the same prompt alone (exact equality holds on toy-tiny in float32 on this CPU).
    answers = {name: [o.output_ids for o in r.outcomes] for name, r in results.items()}
    for name in ("static", "dynamic", "continuous"):
        assert answers[name] == answers["none"], name
    assert dk.answer_agreement(results) == {name: 1.0 for name in results}
    truncated = dk.BatchingResult(
        "truncated",
        tuple(
            dataclasses.replace(o, output_ids=o.output_ids[:2]) for o in results["none"].outcomes
        ),
        (),
        1.0,
        1.0,
    )
    mixed = {"none": results["none"], "truncated": truncated}
    assert dk.answer_agreement(mixed, first_tokens=2)["truncated"] == 1.0
    longer = sum(len(o.output_ids) > 2 for o in results["none"].outcomes) / len(workload)
    assert dk.answer_agreement(mixed)["truncated"] == pytest.approx(1.0 - longer)
    for req in workload.requests[:3]:
        expected = greedy_reference(tiny, req.prompt, req.max_new_tokens)
        assert list(answers["none"][req.index]) == expected


def test_forward_records_account_for_every_token(results):
    for name, result in results.items():
        assert sum(f.useful_tokens for f in result.forwards) == result.output_tokens, name
        assert all(f.rows <= BATCH for f in result.forwards), name
        assert result.tokens_per_forward == pytest.approx(
            result.output_tokens / len(result.forwards)
        )


def test_static_pays_for_padding_and_none_wastes_nothing(results, workload):
    none, static = results["none"], results["static"]
    assert none.padded_prompt_tokens == 0 and none.wasted_decode_slots == 0
    assert set(none.batch_sizes) == {1}
    assert static.padded_prompt_tokens > 0 and static.wasted_decode_slots > 0
    assert results["continuous"].wasted_decode_slots == 0
    # a static batch returns every answer when its longest request ends
    prefills = [f.rows for f in static.forwards if f.is_prefill]
    assert prefills == [BATCH, BATCH, len(workload) - 2 * BATCH]
    for start in range(0, len(workload), BATCH):
        ends = {o.arrival_s + o.latency_s for o in static.outcomes[start : start + BATCH]}
        assert len(ends) == 1


def test_every_strategy_runs_the_same_eager_kernels(tiny, results):
    # the engine behind "continuous" would switch the shared model to oneDNN kernels in place,
    # and whichever strategy ran after it would get them: a comparison of kernels, not batching
    from torch import nn

    assert results["continuous"].forwards  # it ran on tiny before these checks
    assert any(type(m) is nn.Linear for m in tiny.model.modules())
    assert not any("OneDNN" in type(m).__name__ for m in tiny.model.modules())


def test_continuous_batch_size_changes_as_requests_leave(results):
    sizes = results["continuous"].batch_sizes
    assert len(set(sizes)) > 1 and max(sizes) == BATCH
    # fewer forwards than one request at a time, more than static's waste-padded batches need
    assert len(results["continuous"].forwards) < len(results["none"].forwards)


def test_dynamic_without_wait_degenerates_to_batch_size_one_on_sparse_arrivals(tiny):
    # requests 250 ms apart, each done in a few ms: nothing else is there when one arrives
    result = dk.run_batching(
        "dynamic",
        tiny,
        sparse([0.0, 0.25, 0.5, 0.75]),
        batch_size=8,
        max_wait_ms=0.0,
        threads=1,
        progress=False,
    )
    assert set(result.batch_sizes) == {1}
    assert [len(o.output_ids) for o in result.outcomes] == [4] * 4


def test_dynamic_waits_for_arrivals_within_its_window(tiny):
    workload = sparse([0.0, 0.01, 0.02, 0.6])
    result = dk.run_batching(
        "dynamic", tiny, workload, batch_size=8, max_wait_ms=300.0, threads=1, progress=False
    )
    assert [f.rows for f in result.forwards if f.is_prefill] == [3, 1]
    assert result.outcomes[0].latency_s >= 0.3  # the window stays open until it is full or over


def test_static_waits_for_a_full_batch(tiny):
    result = dk.run_batching(
        "static", tiny, sparse([0.0, 0.05, 0.1]), batch_size=3, threads=1, progress=False
    )
    assert [f.rows for f in result.forwards if f.is_prefill] == [3]
    assert result.outcomes[0].ttft_s >= 0.1  # the first request waited for the last


def test_table_and_plots(results):
    table = dk.batching_table(results, latency_target_ms=60_000, ttft_target_ms=0.001)
    assert list(table.index) == list(results)
    assert table.loc["none", "x_none"] == 1.0 and table.loc["none", "x_none_cpu"] == 1.0
    assert all(r.cpu_s > 0 for r in results.values())
    assert (table["latency_within_60000_ms_pct"] == 100.0).all()
    assert (table["ttft_within_0.001_ms_pct"] == 0.0).all()  # no forward takes a microsecond
    static = results["static"]
    slowest_ms = max(o.latency_s for o in static.outcomes) * 1e3
    assert static.within(latency_target_ms=slowest_ms) == 1.0
    assert static.within(latency_target_ms=slowest_ms, ttft_target_ms=0.001) == 0.0
    assert table.loc["static", "wasted_decode_slots"] == results["static"].wasted_decode_slots
    assert len(dk.plot_batching(results, latency_target_ms=100).axes) == 3
    assert len(dk.plot_batch_sizes(results).axes) == len(results) + 1  # one per run, one of costs
    by_rows = results["continuous"].decode_ms_by_rows()
    assert set(by_rows) == {f.rows for f in results["continuous"].forwards if not f.is_prefill}
    assert all(ms > 0 for ms in by_rows.values())
    conditions = dk.batching_conditions(results)
    assert conditions["model"] == "toy-tiny" and conditions["torch_threads"] == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strategy": "greedy"}, "unknown batching strategy 'greedy'; use one of none, static"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"max_wait_ms": -1.0}, "max_wait_ms must be >= 0"),
        ({"workload": BatchingWorkload(())}, "the workload is empty"),
        ({"threads": 0}, "threads must be a whole number >= 1"),
        ({"workload": [("Hello", 8)]}, "workload must be a BatchingWorkload, got list"),
        (
            {"workload": dk.batching_workload(2, min_new_tokens=4000, max_new_tokens=4000)},
            "more than toy-tiny's context of 2048; lower max_new_tokens",
        ),
    ],
)
def test_bad_arguments_raise_before_any_work(tiny, kwargs, match):
    args = {
        "strategy": "static",
        "model": tiny,
        "workload": dk.batching_workload(2),
        "progress": False,
        **kwargs,
    }
    calls = []
    handle = tiny.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(InvalidArgumentError, match=match):
            dk.run_batching(**args)
    finally:
        handle.remove()
    assert calls == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_requests": 0}, "num_requests must be a whole number >= 1"),
        ({"rate_per_s": -1.0}, "rate_per_s must be >= 0"),
        ({"min_new_tokens": 9, "max_new_tokens": 8}, "need 1 <= min_new_tokens <= max_new_tokens"),
        ({"prompts": ()}, "prompts must be a non-empty tuple"),
    ],
)
def test_bad_workloads_raise(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        dk.batching_workload(**kwargs)


def test_compare_checks_every_strategy_first(tiny):
    with pytest.raises(InvalidArgumentError, match="unknown batching strategy 'paged'"):
        dk.compare_batching(
            tiny, dk.batching_workload(2), strategies=["none", "paged"], progress=False
        )


def test_findings_state_the_tables_figures_and_who_came_out_ahead(results):
    table = dk.batching_table(results, latency_target_ms=60_000)
    text = str(dk.batching_findings(results, latency_target_ms=60_000, ttft_target_ms=0.001))
    best_wall = table["tokens_per_s"].idxmax()
    assert f"highest: `{best_wall}`" in text
    for name in ("static", "dynamic", "continuous"):
        ratio = results[name].tokens_per_s / results["none"].tokens_per_s
        assert f"`{name}` {ratio:.2f}x" in text
    assert f"lowest `{table['ttft_p50_ms'].idxmin()}`" in text
    assert "**Within the 60000 ms end-to-end latency target:** `none` 100%" in text
    assert "**Within the 0.001 ms time to first token target:** `none` 0%" in text
    assert "(`continuous`'s decode forwards, cpu time, medians)" in text
    # without a `none` run there is nothing to divide by: the rates alone
    alone = str(dk.batching_findings({"static": results["static"]}))
    assert "**Throughput per second of wall time:** `static`" in alone and "multiple" not in alone


def test_plots_keep_one_colour_per_strategy(results):
    from matplotlib.colors import to_rgb

    from deploykit.batching.plots import STRATEGY_COLORS

    fig = dk.plot_batching(results, latency_target_ms=100)
    bars = fig.axes[0].patches[: len(results)]
    assert [to_rgb(b.get_facecolor()[:3]) for b in bars] == [
        to_rgb(STRATEGY_COLORS[n]) for n in results
    ]
    two = dk.plot_batching(results, ttft_target_ms=0.5, panels=("latency", "work"))
    assert [ax.get_title() for ax in two.axes] == [
        "Latency per request",
        "Where the forward passes went",
    ]
    low, high = two.axes[0].get_ylim()
    assert low < 0.5 < high, "the target line inside the frame"
    with pytest.raises(InvalidArgumentError, match="panels"):
        dk.plot_batching(results, panels=("speed",))
    costs = dk.plot_batch_sizes(results).axes[0]  # the cost panel is added first
    assert [to_rgb(c.lines[0].get_color()) for c in costs.containers] == [
        to_rgb(STRATEGY_COLORS[n]) for n in results
    ]
