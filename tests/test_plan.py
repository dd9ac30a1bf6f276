"""The memory planner against real footprints: the toy model measured, Llama figures published."""

from __future__ import annotations

import pytest
import torch

from deploykit.errors import UnknownGPUError, UnknownModelError
from deploykit.plan import memory as P

# Parameter counts as published with each model (safetensors metadata on the hub).
PUBLISHED_PARAMETERS = {
    "Llama-2-7B": 6_738_415_616,
    "Llama-2-13B": 13_015_864_320,
    "Llama-2-70B": 68_976_648_192,
    "Llama-3.1-8B": 8_030_261_248,
    "Llama-3.1-70B": 70_553_706_496,
    "Mistral-7B": 7_241_732_096,
    "Qwen2.5-7B": 7_615_616_512,
}


def test_toy_parameters_and_weight_bytes_match_the_loaded_model(tiny):
    config = P.model_config("toy-tiny")
    assert config.num_parameters == tiny.num_parameters
    # get_memory_footprint also counts buffers (RoPE inv_freq: a few dozen floats).
    assert 0 <= tiny.weight_bytes - config.weight_bytes("fp32") <= 1024


def test_toy_kv_cache_matches_a_real_dynamic_cache(tiny):
    config = P.model_config("toy-tiny")
    batch, seq = 3, 37
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    with torch.no_grad():
        cache = tiny.model(input_ids=ids, use_cache=True).past_key_values
    kv_bytes = P.cache_bytes(cache)
    assert len(cache.layers) == config.num_layers
    assert kv_bytes == config.kv_bytes_per_token("fp32") * batch * seq
    assert config.kv_bytes_per_token("fp32") == 2 * 4 * 2 * 32 * 4  # 2 x L x kv_heads x d x 4 B


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_parameter_count_matches_published(name):
    assert P.model_config(name).num_parameters == PUBLISHED_PARAMETERS[name]


def test_llama2_7b_published_memory_figures():
    config = P.model_config("meta-llama/Llama-2-7b-chat-hf")  # hub id of a table entry
    assert config.name == "Llama-2-7B"
    assert config.weight_bytes("bf16") == pytest.approx(13.5e9, rel=0.01)  # "about 13.5 GB"
    assert config.kv_bytes_per_token("fp16") == 512 * 1024  # 0.5 MiB per token
    assert config.kv_bytes_per_token("fp16") * 4096 == 2 * 2**30  # 2 GiB per full 4k context


def test_quantized_weights_shrink_in_order():
    config = P.model_config("Llama-3.1-8B")
    sizes = [config.weight_bytes(w) for w in ("fp32", "bf16", "int8", "nf4")]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == 2 * sizes[1]
    # Embeddings and the LM head stay 16-bit, so 4-bit is well above a quarter of bf16.
    assert 0.25 < sizes[3] / sizes[1] < 0.40
    assert 0.50 < sizes[2] / sizes[1] < 0.60


def test_plan_budget_adds_up():
    p = P.memory_plan("Llama-3.1-8B", "A100-80GB", context_len_tokens=8192)
    assert p.budget_bytes == int(P.gpu("A100-80GB").memory_bytes * 0.9)
    assert (
        p.kv_cache_bytes == p.budget_bytes - p.weight_bytes - p.activation_bytes - p.overhead_bytes
    )
    assert p.kv_capacity_tokens * p.kv_bytes_per_token <= p.kv_cache_bytes
    assert p.max_concurrent_seqs == p.kv_capacity_tokens // 8192
    assert p.fits and "Llama-3.1-8B" in p.summary()


def test_knobs_move_kv_capacity_the_right_way():
    base = P.memory_plan("Llama-3.1-8B", "L4", context_len_tokens=4096)
    more_memory = P.memory_plan(
        "Llama-3.1-8B", "L4", context_len_tokens=4096, gpu_memory_utilization=0.95
    )
    bigger_steps = P.memory_plan(
        "Llama-3.1-8B", "L4", context_len_tokens=4096, max_num_batched_tokens=32768
    )
    fp8_kv = P.memory_plan("Llama-3.1-8B", "L4", context_len_tokens=4096, kv_dtype="fp8")
    assert more_memory.kv_capacity_tokens > base.kv_capacity_tokens
    assert bigger_steps.kv_capacity_tokens < base.kv_capacity_tokens
    assert fp8_kv.kv_capacity_tokens == pytest.approx(2 * base.kv_capacity_tokens, rel=0.01)


def test_tensor_parallel_splits_weights_and_kv_heads():
    one = P.memory_plan("Llama-3.1-70B", "H100", tensor_parallel_size=1, context_len_tokens=8192)
    two = P.memory_plan("Llama-3.1-70B", "H100", tensor_parallel_size=2, context_len_tokens=8192)
    assert not one.fits and two.fits
    assert two.kv_bytes_per_token * 2 == one.kv_bytes_per_token


def test_smallest_fit():
    best = P.smallest_fit("Llama-2-7B", context_len_tokens=4096, weights=("bf16",))
    assert best is not None and best.gpu in ("A10G", "L4")  # the 24 GB class, not the 16 GB T4
    quantized = P.smallest_fit("Llama-2-7B", context_len_tokens=4096)
    assert (quantized.gpu, quantized.weights) == ("T4", "int8")
    assert P.smallest_fit("Llama-3.1-70B", weights=("bf16",), context_len_tokens=8192) is None


def test_attendees_that_fit_split_one_gpu_by_the_planners_need():
    # Llama-3.1-8B in bf16: ~15 GiB of weights, so one attendee per 24 GiB card, four on 80 GiB
    assert [P.attendees_that_fit(g, "Llama-3.1-8B") for g in (16, 24, 80)] == [0, 1, 4]
    assert P.attendees_that_fit(80, "Llama-3.1-8B", weights="nf4") > 4
    # the planner's own terms: n attendees fit, one more would not
    config = P.model_config("Mistral-7B")
    plan = P.memory_plan(config, P.GPU("x", 80 * P.GIB), gpu_memory_utilization=1.0)
    need = plan.weight_bytes + plan.activation_bytes + plan.overhead_bytes
    need += 2 * 4096 * config.kv_bytes_per_token("bf16")
    n = P.attendees_that_fit(80, config, concurrent_seqs=2)
    assert n * need <= 0.9 * 80 * P.GIB < (n + 1) * need
    assert P.attendees_that_fit(80, config, context_len_tokens=32768) < n
    with pytest.raises(ValueError, match="concurrent_seqs"):
        P.attendees_that_fit(80, config, concurrent_seqs=0)


def test_t4_has_no_bf16():
    assert P.memory_plan("Llama-2-7B", "T4", weights="bf16").weights == "fp16"


def test_errors_say_what_to_use():
    with pytest.raises(UnknownGPUError, match="A100-80GB"):
        P.gpu("RTX-9090")
    with pytest.raises(UnknownModelError, match="Llama-3.1-8B"):
        P.model_config("no-such-model")
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        P.memory_plan("Llama-2-7B", "H100", gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="nf4"):
        P.model_config("Llama-2-7B").weight_bytes("int3")


def test_table_lists_every_plan():
    rows = P.memory_plans("Mistral-7B", gpus=("L4", "H100"), context_len_tokens=4096)
    text = P.plan_table(rows)
    assert len(text.splitlines()) == 2 + len(rows) == 8


def test_kv_growth_plot_names_models_that_share_a_line():
    import deploykit as dk

    configs = [P.model_config(n) for n in ("Llama-2-7B", "Llama-3.1-8B", "Mistral-7B")]
    fig = dk.plot_kv_growth(configs, "A100-80GB", 4096)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Llama-3.1-8B = Mistral-7B (same KV per token)" in labels and "Llama-2-7B" in labels
    left, right = fig.axes
    assert len(left.get_lines()) == len(right.get_lines()) == 3  # two models, one room line
    assert [ln.get_color() for ln in left.get_lines()] == [
        ln.get_color() for ln in right.get_lines()
    ]
