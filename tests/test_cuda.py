"""The CUDA paths on a real GPU: weights on the device, the engine and the server there.

CI has no GPU, so these are skipped there; run them on a GPU machine with
`pytest tests/test_cuda.py` (docs/benchmarks.md records the last such run).
"""

from __future__ import annotations

import asyncio

import openai
import pytest
import torch
from _servers import MODEL, start_server

import deploykit as dk
from deploykit.bench.loadgen import LoadSpec, run_load
from deploykit.server.engine import Engine, EngineConfig
from deploykit.server.sampling import SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PROMPTS = ["The quick brown fox", "def main():", "Return the", "import os\n"]


@pytest.fixture(scope="module")
def lm():
    return dk.load_model(MODEL, device="cuda", progress=False)


def test_load_model_puts_every_weight_on_the_gpu(lm):
    assert lm.device.startswith("cuda")
    assert {p.device.type for p in lm.model.parameters()} == {"cuda"}
    assert lm.dtype in (torch.bfloat16, torch.float16)  # "auto" picks half precision on GPUs
    out = dk.generate(lm, "def main():", max_tokens=8, temperature=0.0, ignore_eos=True)
    assert out.completion_tokens == 8 and out.text


def _greedy(lm, prompt_ids: list[int], n: int) -> list[int]:
    """The argmax token at each of n steps, end-of-sequence included, as ignore_eos asks.

    Not `generate(min_new_tokens=n)`: that masks the end-of-sequence token, which the engine
    (ignore_eos) may emit and go on after; in bfloat16 toy-tiny's argmax is that token early.
    """
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(n):
            logits = lm.model(torch.tensor([ids], device=lm.model.device)).logits
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt_ids) :]


def test_engine_batches_on_the_gpu_like_generate(lm):
    engine = Engine(lm, EngineConfig(max_batch_size=8)).start()
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    prompts = [lm.tokenizer(p).input_ids for p in PROMPTS]

    async def all_at_once():
        async def one(ids):
            tokens = []
            async for out in engine.generate(ids, params, stream=False):
                tokens += out.token_ids
            return tokens

        return await asyncio.gather(*(one(ids) for ids in prompts))

    try:
        batched = asyncio.run(all_at_once())
    finally:
        engine.stop()
    # half precision rounds differently with padding, so allow a late divergence
    for got, ids in zip(batched, prompts):
        want = _greedy(lm, ids, 16)
        assert len(got) == 16 and got[:8] == want[:8], (got, want)


def test_server_on_the_gpu_answers_the_openai_sdk_and_batches():
    with start_server(name="serve-cuda", device="cuda") as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        out = client.completions.create(
            model=MODEL,
            prompt="def main():",
            max_tokens=12,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        assert out.usage.completion_tokens == 12 and out.choices[0].text
        spec = LoadSpec(model=MODEL, prompt="def main():", max_tokens=32)
        load = run_load(srv.url, spec, num_requests=64, concurrency=32)
        assert load.num_ok == 64 and all(r.output_tokens == 32 for r in load.results)
        print(f"cuda server, 64 x 32 tokens at concurrency 32: {load.summary()}")
        metrics = dk.scrape_metrics(srv.url)
        assert metrics.value("deploykit:generation_tokens_total") == 12 + 64 * 32
        # GPU series through NVML (nvidia-ml-py), one per visible device
        assert metrics.value("deploykit:gpu_memory_used_bytes") > 0
        assert metrics.value("deploykit:gpu_memory_total_bytes") >= metrics.value(
            "deploykit:gpu_memory_used_bytes"
        )
        assert (
            0
            <= metrics.value("deploykit:gpu_utilization_perc")
            <= len([s for s in metrics.samples if s.name == "deploykit:gpu_utilization_perc"])
        )
