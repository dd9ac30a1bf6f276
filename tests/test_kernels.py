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
    Int4WeightLinear,
    Int8DynamicLinear,
    OneDNNLinear,
    ProjectionPart,
    SharedProjection,
    fuse_plain_projections,
    int8_activations_unavailable,
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
    modes = [
        ("eager", "auto"),
        ("onednn", "transformers"),
        ("onednn", "auto"),
        ("auto", "compiled"),
    ]
    for kernels, step in modes:
        lm = load()
        config = EngineConfig(max_batch_size=4, kernels=kernels, decode_step=step)
        engine = Engine(lm, config).start()
        try:
            # the compiled step runs on plain linears: auto kernels are eager with it
            assert engine.kernels == ("eager" if step == "compiled" else kernels)
            # auto: deploykit's own decode step, except with eager kernels (the baseline)
            want = {("onednn", "auto"): "deploykit", ("auto", "compiled"): "compiled"}
            assert engine.decode_step == want.get((kernels, step), "transformers")
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


@pytest.mark.parametrize("kernels", ["onednn", "int8", "int4", "w8a8"])
def test_fused_projections_read_the_same_weight_bytes(kernels):
    eager, packed = load("bfloat16"), load("bfloat16")
    use_kernels(packed.model, kernels)
    # int8: a byte per weight, plus scales; int4: half a byte, plus a bfloat16 scale and
    # zero point per 32 weights (0.625 bytes against bfloat16's 2); w8a8: a byte per weight,
    # plus a float32 scale per row (rows of 128 weights here: 3% more), the LM head left in
    # bfloat16 (toy-tiny's is 128 x 4,096, a large part of its small weights)
    weight = eager.model.lm_head.weight
    head = weight.numel() * weight.element_size() if kernels == "w8a8" else 0
    per_byte = {"onednn": 1.0, "int8": 0.5, "int4": 0.3125, "w8a8": 0.5}[kernels]
    slack = 1.04 if kernels == "w8a8" else 1.02
    quantized = weight_bytes(eager.model) - head
    assert weight_bytes(packed.model) - head >= per_byte * quantized
    assert weight_bytes(packed.model) - head <= per_byte * quantized * slack


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_int4_weights_multiply_as_their_groups_dequantized(dtype):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=True).to(getattr(torch, dtype))
    int4 = Int4WeightLinear(linear)
    # dequantize by hand: per 32 input columns, 16 levels from the group's min to its max
    w = linear.weight.detach().float().reshape(48, 2, 32)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    step = (high - low) / 15
    dequant = (((w - low) / step).round() * step + low).reshape(48, 64)
    x = torch.randn(3, 5, 64).to(linear.weight.dtype)
    want = x.float() @ dequant.T + linear.bias.float()
    got = int4(x).float()
    assert got.shape == (3, 5, 48)
    tol = 1e-3 if dtype == "float32" else 0.1  # bfloat16 scales and zero points round
    assert torch.allclose(got, want, atol=tol, rtol=tol), (got - want).abs().max()
    # 4 bits is coarse: the error against the unquantized layer is large but bounded
    assert (got - linear(x).float()).abs().max() < 0.2 * want.abs().max()


def test_int4_gives_a_layer_its_groups_do_not_divide_int8():
    model = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 32))
    assert use_kernels(model, "int4") == "int4"
    assert [type(m).__name__ for m in model] == ["Int4WeightLinear", "Int8WeightLinear"]


needs_int8_activations = pytest.mark.skipif(
    int8_activations_unavailable() is not None,
    reason=f"w8a8 kernels cannot run here: {int8_activations_unavailable()}",
)


@needs_int8_activations
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_w8a8_multiplies_each_input_row_rounded_to_8_bits(dtype):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=True).to(getattr(torch, dtype))
    layer = Int8DynamicLinear(linear)
    x = torch.randn(3, 5, 64).to(linear.weight.dtype)
    x[0, 0] *= 50  # one row far larger than the others: its scale is its own
    # by hand: weights to int8 per output row, inputs to int8 per row, exact integer products
    w = linear.weight.detach().float()
    w_scale = w.abs().amax(1, keepdim=True) / 127
    flat = x.reshape(15, 64).float()
    x_scale = flat.abs().amax(1, keepdim=True) / 127
    products = (flat / x_scale).round() @ (w / w_scale).round().T
    want = (products * x_scale * w_scale.T).to(x.dtype).float() + linear.bias.float()
    got = layer(x).float().reshape(15, 48)
    assert torch.allclose(got, want, atol=1e-2, rtol=1e-2), (got - want).abs().max()
    # the rounding of both costs little against the unquantized layer, row by row
    exact = linear(x).float().reshape(15, 48)
    assert ((got - exact).abs().amax(1) < 0.05 * exact.abs().amax(1)).all()


@pytest.mark.parametrize(
    "kernels, layer",
    [
        ("int4", Int4WeightLinear),
        pytest.param("w8a8", Int8DynamicLinear, marks=needs_int8_activations),
    ],
)
def test_quantized_engine_generates_greedy_tokens(kernels, layer):
    lm = load("bfloat16")
    engine = Engine(lm, EngineConfig(max_batch_size=4, kernels=kernels)).start()
    try:
        assert engine.kernels == kernels and engine.decode_step == "deploykit"
        tokens = asyncio.run(_greedy(engine, lm, 8))
        assert all(len(t) == 8 for t in tokens)
    finally:
        engine.stop()
    assert any(type(m) is layer for m in lm.model.modules())
    plain = [m for m in lm.model.modules() if type(m) is nn.Linear]
    # w8a8 leaves the LM head in bfloat16, as W8A8 checkpoints do
    assert plain == ([lm.model.lm_head] if kernels == "w8a8" else [])


def test_w8a8_where_it_does_not_apply_says_why():
    half = load("float16")
    with pytest.raises(InvalidArgumentError, match="kernels 'w8a8' do not apply: .*float16"):
        use_kernels(half.model, "w8a8")
    why = int8_activations_unavailable()
    if why is not None:  # a CPU whose int8 kernels saturate: refused, with the reason
        with pytest.raises(InvalidArgumentError, match="kernels 'w8a8' do not apply"):
            use_kernels(load().model, "w8a8")


def test_plain_projections_fused_for_inductor_keep_the_logits():
    plain, fused = load(), load()
    model = fused.model
    fuse_plain_projections(model)
    layers = len(model.model.layers)
    shared = {id(m.shared): m.shared for m in model.modules() if type(m) is ProjectionPart}
    assert len(shared) == 2 * layers  # q/k/v and gate/up per layer ...
    assert all(type(s.fused) is nn.Linear for s in shared.values())  # ... plain, for inductor
    ids = fused.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        want, got = plain.model(**ids).logits, model(**ids).logits
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
