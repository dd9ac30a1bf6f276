"""The engine's kernel modes (`models.kernels`): prepacked oneDNN linears and decode attention."""

from __future__ import annotations

import asyncio

import pytest
import torch
from torch import nn

import deploykit as dk
from deploykit.errors import InvalidArgumentError
from deploykit.models.kernels import (
    DecodeAttention,
    OneDNNLinear,
    ProjectionPart,
    SharedProjection,
    resolve_kernels,
    use_kernels,
    weight_bytes,
)
from deploykit.server.engine import Engine, EngineConfig
from deploykit.server.sampling import SamplingParams

PROMPTS = ["The quick brown fox", "def main():", "import os\n"]


def load(dtype: str = "float32"):
    return dk.load_model("toy-tiny", device="cpu", dtype=dtype, progress=False)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_onednn_linears_give_the_eager_logits(dtype):
    eager, packed = load(dtype), load(dtype)
    layers = len(packed.model.model.layers)
    linears = sum(type(m) is nn.Linear for m in packed.model.modules())
    assert use_kernels(packed.model, "onednn") == "onednn"
    # per layer q/k/v become parts of one product, gate/up of another: 7 linears, 4 products
    parts = [m for m in packed.model.modules() if type(m) is ProjectionPart]
    assert len(parts) == 5 * layers and len({id(p.shared) for p in parts}) == 2 * layers
    packs = sum(type(m) is OneDNNLinear for m in packed.model.modules())
    assert packs == linears - 3 * layers > 0  # o_proj, down_proj, the fused two; lm_head
    assert not any(type(m) is nn.Linear for m in packed.model.modules())
    ids = packed.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        want = eager.model(**ids).logits.float()
        got = packed.model(**ids).logits.float()
    tol = 1e-4 if dtype == "float32" else 5e-2
    assert torch.allclose(got, want, atol=tol, rtol=tol), (got - want).abs().max()


def test_auto_picks_onednn_on_cpu_and_eager_where_it_does_not_apply():
    assert resolve_kernels("auto", load().model) == "onednn"
    half = load("float16")
    assert resolve_kernels("auto", half.model) == "eager"
    with pytest.raises(InvalidArgumentError, match="float16.*use 'eager' or 'auto'"):
        use_kernels(half.model, "onednn")
    with pytest.raises(InvalidArgumentError, match="unknown kernels 'fast'; use one of"):
        resolve_kernels("fast", half.model)
    assert use_kernels(half.model, "eager") == "eager"
    assert not any(type(m) is OneDNNLinear for m in half.model.modules())


def test_engine_config_names_the_kernel_choices():
    with pytest.raises(InvalidArgumentError, match="kernels='onednn2'; use one of auto, eager"):
        EngineConfig(kernels="onednn2")


def test_decode_attention_switches_only_when_the_phase_changes():
    lm = load()
    own = lm.model.config._attn_implementation
    switch = DecodeAttention(lm.model, "eager")
    switch.use("decode")
    assert lm.model.config._attn_implementation == "eager"
    switch.use("prefill")
    assert lm.model.config._attn_implementation == own
    same = DecodeAttention(lm.model, None)
    same.use("decode")
    assert lm.model.config._attn_implementation == own


async def _greedy(engine, lm, n: int) -> list[list[int]]:
    params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)

    async def one(prompt):
        tokens = []
        async for out in engine.generate(lm.tokenizer(prompt).input_ids, params, stream=False):
            tokens += out.token_ids
        return tokens

    return await asyncio.gather(*(one(p) for p in PROMPTS))


def test_engine_in_each_mode_decodes_the_same_greedy_tokens():
    outputs = {}
    modes = [("eager", "auto"), ("onednn", "transformers"), ("onednn", "auto")]
    for kernels, step in modes:
        lm = load()
        config = EngineConfig(max_batch_size=4, kernels=kernels, decode_step=step)
        engine = Engine(lm, config).start()
        try:
            assert engine.kernels == kernels
            # auto: deploykit's own decode step, except with eager kernels (the baseline)
            want = "deploykit" if (kernels, step) == ("onednn", "auto") else "transformers"
            assert engine.decode_step == want
            outputs[kernels, step] = asyncio.run(_greedy(engine, lm, 24))
        finally:
            engine.stop()
    baseline = outputs["eager", "auto"]
    assert all(len(t) == 24 for t in baseline)
    assert all(tokens == baseline for tokens in outputs.values())


@pytest.mark.parametrize("length", [1, 5])
def test_decode_attention_equals_eager_attention_with_grouped_kv_heads(length):
    from transformers.models.llama.modeling_llama import eager_attention_forward

    from deploykit.models.kernels import decode_attention

    gen = torch.Generator().manual_seed(0)
    b, h, kv, t, d = 3, 6, 2, 9, 8
    q = torch.randn(b, h, length, d, generator=gen)
    k, v = (torch.randn(b, kv, t, d, generator=gen) for _ in range(2))
    mask = torch.zeros(b, 1, length, t)
    mask[0, :, :, :4] = torch.finfo(torch.float32).min  # row 0: four padding columns
    module = nn.Module()
    module.num_key_value_groups, module.training = h // kv, False
    want, _ = eager_attention_forward(module, q, k, v, mask, scaling=d**-0.5)
    got, weights = decode_attention(module, q, k, v, mask, scaling=d**-0.5)
    assert weights is None and got.shape == want.shape == (b, length, h, d)
    assert torch.allclose(got, want, atol=1e-6)


def test_decode_attention_gives_the_models_logits():
    lm = load()
    ids = lm.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        want = lm.model(**ids).logits
        DecodeAttention(lm.model, "deploykit").use("decode")
        got = lm.model(**ids).logits
    assert lm.model.config._attn_implementation == "deploykit_decode"
    assert torch.allclose(got, want, atol=1e-5)


def test_a_shared_projection_runs_once_per_input_and_lets_it_go():
    calls = []
    fused = nn.Linear(4, 6, bias=True)
    shared = SharedProjection(fused, [3, 2, 1])
    fused.register_forward_hook(lambda *_: calls.append(1))
    parts = [ProjectionPart(shared, i, 4) for i in range(3)]
    x = torch.randn(2, 5, 4)
    with torch.inference_mode():
        want = fused(x).split([3, 2, 1], -1)
        calls.clear()
        got = [p(x) for p in parts]
        assert len(calls) == 1  # one product for the three parts
        assert shared._input is None and not shared._outputs  # released after the last part
        assert all(torch.equal(g, w) for g, w in zip(got, want))
        y = torch.randn(2, 5, 4)
        assert torch.equal(parts[1](y), fused(y)[..., 3:5])  # a new input: a new product
        assert torch.equal(parts[1](y), fused(y)[..., 3:5])  # asked twice: computed again


@pytest.mark.parametrize("kernels", ["onednn", "int8"])
def test_fused_projections_read_the_same_weight_bytes(kernels):
    eager, packed = load("bfloat16"), load("bfloat16")
    use_kernels(packed.model, kernels)
    per_byte = {"onednn": 1.0, "int8": 0.5}[kernels]  # int8: a byte per weight, plus scales
    assert weight_bytes(packed.model) >= per_byte * weight_bytes(eager.model)
    assert weight_bytes(packed.model) <= per_byte * weight_bytes(eager.model) * 1.02
