"""deploykit's own decode step (`models.decode_step`) against the model's forward."""

from __future__ import annotations

import pytest
import torch

import deploykit as dk
from deploykit.errors import InvalidArgumentError
from deploykit.models.decode_step import (
    CompiledDecodeStep,
    LlamaDecodeStep,
    decode_step_for,
    unsupported,
)
from deploykit.models.kernels import int8_activations_unavailable, use_kernels
from deploykit.server.engine import EngineConfig
from deploykit.server.kvbatch import KVBatch

# rows of different lengths, so that the cache is left-padded and the mask matters
PROMPTS = [[5, 9, 14, 3, 7, 21, 8], [11, 2], [4, 4, 17, 30]]


def load(dtype: str = "float32"):
    return dk.load_model("toy-tiny", device="cpu", dtype=dtype, progress=False)


def decode_both_ways(lm, steps: int = 6, step=None, prompts=PROMPTS):
    """Prefill the same rows twice; decode one with the model's forward, one with the step."""
    step = step or LlamaDecodeStep(lm.model)
    theirs, ours = KVBatch("cpu"), KVBatch("cpu")
    pairs = []
    with torch.inference_mode():
        for kv in (theirs, ours):
            logits = kv.prefill(lm.model, prompts, 0)
            kv.set_last_tokens(logits.argmax(-1).tolist())
        for _ in range(steps):
            want, got = theirs.decode(lm.model), ours.decode(lm.model, step)
            pairs.append((want.float(), got.float()))
            tokens = want.argmax(-1).tolist()  # both rows go on with the same tokens
            theirs.set_last_tokens(tokens)
            ours.set_last_tokens(tokens)
    assert ours.columns == theirs.columns == max(map(len, prompts)) + steps  # grew alike
    return pairs


@pytest.mark.parametrize("kernels", ["eager", "onednn"])
def test_the_step_gives_the_models_logits_in_float32(kernels):
    lm = load()
    use_kernels(lm.model, kernels)
    for want, got in decode_both_ways(lm):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


def test_the_step_gives_the_models_greedy_tokens_in_bfloat16():
    lm = load("bfloat16")
    use_kernels(lm.model, "onednn")
    for want, got in decode_both_ways(lm):
        # float32 attention over these small caches rounds differently from bfloat16's
        assert (got - want).abs().max() < 0.25 * want.abs().max()
        assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_the_compiled_step_gives_the_models_logits_in_float32():
    lm = load()
    step = decode_step_for(lm.model, "eager", "compiled")
    assert isinstance(step, CompiledDecodeStep)
    # 20 steps pass SPARE_COLUMNS: the buffers are made anew under the compiled code too;
    # one row, then three: batch 1 is a graph of its own
    for prompts in (PROMPTS[:1], PROMPTS):
        for want, got in decode_both_ways(lm, 20, step, prompts):
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    with pytest.raises(InvalidArgumentError, match="int4 or w8a8 ones, not 'onednn' ones"):
        decode_step_for(lm.model, "onednn", "compiled")


W8A8 = pytest.param(
    "w8a8",
    marks=pytest.mark.skipif(
        int8_activations_unavailable() is not None, reason="w8a8 kernels cannot run on this CPU"
    ),
)


@pytest.mark.parametrize("kernels", ["int4", W8A8])
def test_the_compiled_step_runs_quantized_layers_as_the_eager_step_does(kernels):
    compiled, eager = load("bfloat16"), load("bfloat16")
    use_kernels(compiled.model, kernels)
    use_kernels(eager.model, kernels)
    step = decode_step_for(compiled.model, kernels, "compiled")
    assert isinstance(step, CompiledDecodeStep)
    got = decode_both_ways(compiled, 4, step)
    want = decode_both_ways(eager, 4)
    for (_, ours), (_, theirs) in zip(got, want):  # the eager step's logits, bfloat16 rounding
        assert (ours - theirs).abs().max() < 0.05 * theirs.abs().max()
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_auto_runs_the_step_unless_kernels_are_eager():
    lm = load()
    assert isinstance(decode_step_for(lm.model, "onednn"), LlamaDecodeStep)
    assert decode_step_for(lm.model, "eager") is None  # the plain transformers baseline
    assert isinstance(decode_step_for(lm.model, "eager", "deploykit"), LlamaDecodeStep)
    assert decode_step_for(lm.model, "onednn", "transformers") is None
    with pytest.raises(InvalidArgumentError, match="unknown decode step 'fast'; use one of auto"):
        decode_step_for(lm.model, "onednn", "fast")
    with pytest.raises(InvalidArgumentError, match="decode_step='fast'; use one of auto"):
        EngineConfig(decode_step="fast")


def test_models_it_does_not_handle_are_named_with_the_reason():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    assert unsupported(gpt2) == "GPT2LMHeadModel is not a Llama-architecture model"
    assert decode_step_for(gpt2, "onednn") is None  # auto falls back to the model's forward
    with pytest.raises(InvalidArgumentError, match="not a Llama.*use 'transformers' or 'auto'"):
        decode_step_for(gpt2, "onednn", "deploykit")
    lm = load()
    lm.model.config.hidden_act = "gelu"
    assert unsupported(lm.model) == "its MLP uses gelu, not silu"


def test_a_second_model_of_the_same_shape_gets_its_own_compiled_weights():
    # the compiled step drops most module guards; the two steps share one code object
    first, second = load(), load()
    with torch.no_grad():
        for p in second.model.parameters():
            p.mul_(1.5)
    steps = [decode_step_for(lm.model, "eager", "compiled") for lm in (first, second)]
    for lm, step in zip((first, second), steps):
        for want, got in decode_both_ways(lm, 2, step):
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
