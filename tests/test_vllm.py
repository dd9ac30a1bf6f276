"""deploykit.engines.vllm against a real vLLM engine (the separate vLLM environment, toy model).

The command-line tests need nothing but deploykit. The server and offline tests need the
vLLM environment; without it they fail, saying to run `deploykit vllm env`.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from deploykit.engines.vllm import VLLMArgs, offline_generate, start_vllm
from deploykit.engines.vllm_env import find_vllm_env
from deploykit.errors import (
    EngineArgumentError,
    InvalidArgumentError,
    UnknownModelError,
    VLLMEnvError,
)
from deploykit.monitor.scrape import parse_metrics, scrape_metrics
from deploykit.plan import memory as plan

API_KEY = "deploykit-test-key"


def _flags(args: VLLMArgs) -> list[str]:
    return args.to_command(("vllm",), host="127.0.0.1", port=8000)


# -- command line, one argument at a time ----------------------------------------------


def test_toy_name_resolves_to_local_folder_and_keeps_its_name():
    cmd = _flags(VLLMArgs(model="toy-tiny"))
    assert cmd[:2] == ["vllm", "serve"]
    assert (Path(cmd[2]) / "config.json").exists() and Path(cmd[2]).name.startswith("toy-tiny")
    assert cmd[3:] == ["--host", "127.0.0.1", "--port", "8000", "--served-model-name", "toy-tiny"]


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("served_model_name", "tiny", ["--served-model-name", "tiny"]),
        ("dtype", "bfloat16", ["--dtype", "bfloat16"]),
        ("max_model_len", 512, ["--max-model-len", "512"]),
        ("tensor_parallel_size", 2, ["--tensor-parallel-size", "2"]),
        ("gpu_memory_utilization", 0.85, ["--gpu-memory-utilization", "0.85"]),
        ("max_num_seqs", 16, ["--max-num-seqs", "16"]),
        ("max_num_batched_tokens", 2048, ["--max-num-batched-tokens", "2048"]),
        ("enable_prefix_caching", True, ["--enable-prefix-caching"]),
        ("enable_prefix_caching", False, ["--no-enable-prefix-caching"]),
        ("quantization", "awq", ["--quantization", "awq"]),
        ("seed", 7, ["--seed", "7"]),
        ("kv_cache_memory_bytes", 8 << 20, ["--kv-cache-memory-bytes", str(8 << 20)]),
        (
            "extra_args",
            ("--enforce-eager", "--block-size", "32"),
            ["--enforce-eager", "--block-size", "32"],
        ),
    ],
)
def test_each_argument_becomes_its_flag(field, value, expected):
    cmd = _flags(VLLMArgs(model="toy-tiny", **{field: value}))
    start = next(i for i in range(len(cmd)) if cmd[i : i + len(expected)] == expected)
    assert start > 2
    default = _flags(VLLMArgs(model="toy-tiny"))
    assert len(cmd) - len(default) == len(expected) - (2 if field == "served_model_name" else 0)


def test_defaults_add_no_flags_and_env_carries_cpu_kv_and_api_key():
    args = VLLMArgs(model="toy-tiny", cpu_kvcache_space_gib=2, api_key="secret")
    assert args.to_env() == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_API_KEY": "secret"}
    assert "secret" not in " ".join(_flags(args))  # never visible in `ps`
    assert VLLMArgs(model="toy-tiny").to_env() == {}


def test_hub_id_passes_through():
    cmd = _flags(VLLMArgs(model="meta-llama/Llama-3.1-8B-Instruct"))
    assert cmd[2] == "meta-llama/Llama-3.1-8B-Instruct"
    assert cmd[cmd.index("--served-model-name") + 1] == "meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_num_seqs": -1}, "max_num_seqs"),
        ({"max_model_len": 0}, "max_model_len"),
        ({"max_num_batched_tokens": 1.5}, "max_num_batched_tokens"),
        ({"cpu_kvcache_space_gib": -2}, "cpu_kvcache_space_gib"),
        ({"kv_cache_memory_bytes": 0}, "kv_cache_memory_bytes"),
        ({"gpu_memory_utilization": 0.0}, r"\(0, 1\]"),
        ({"gpu_memory_utilization": 1.2}, r"\(0, 1\]"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"dtype": "fp33"}, "bfloat16"),
        ({"quantization": "int3"}, "awq"),
        ({"extra_args": "--enforce-eager"}, "tuple"),
        ({"model": ""}, "built-in name"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(kwargs, match):
    with pytest.raises(EngineArgumentError, match=match):
        VLLMArgs(**{"model": "toy-tiny", **kwargs})


@pytest.mark.parametrize("model", ["/no/such/model-folder", "./missing-model", "not-a-toy"])
def test_missing_model_is_rejected_before_anything_starts(model):
    with pytest.raises(UnknownModelError, match="built-in name"):
        start_vllm(VLLMArgs(model=model), timeout_s=5)
    children = psutil.Process().children(recursive=True)
    assert not any("dk_vllm_cli" in " ".join(p.cmdline()) for p in children)


def test_tensor_parallel_on_cpu_is_rejected():
    with pytest.raises(EngineArgumentError, match="CPU"):
        VLLMArgs(model="toy-tiny", tensor_parallel_size=2).check("cpu")
    VLLMArgs(model="toy-tiny", tensor_parallel_size=2).check("gpu")


def test_workshop_gpu_share_caps_gpu_memory_utilization_on_the_gpu_build(monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_GPU_SHARE", "0.3")
    shared = VLLMArgs(model="toy-tiny").for_flavor("gpu")
    assert _flags(shared)[-2:] == ["--gpu-memory-utilization", "0.3"]
    assert VLLMArgs(model="toy-tiny", gpu_memory_utilization=0.9).for_flavor("gpu") == shared
    assert VLLMArgs(model="toy-tiny", gpu_memory_utilization=0.2).for_flavor(
        "gpu"
    ).gpu_memory_utilization == pytest.approx(0.2)
    # an exact KV-cache size claims no share; the CPU build has no GPU to share
    exact = VLLMArgs(model="toy-tiny", kv_cache_memory_bytes=1 << 20).for_flavor("gpu")
    assert exact.gpu_memory_utilization is None
    assert VLLMArgs(model="toy-tiny").for_flavor("cpu").gpu_memory_utilization is None
    monkeypatch.setenv("DEPLOYKIT_GPU_SHARE", "1.5")
    with pytest.raises(InvalidArgumentError, match="DEPLOYKIT_GPU_SHARE"):
        VLLMArgs(model="toy-tiny").for_flavor("gpu")


def test_prometheus_parser():
    text = (
        "# HELP vllm:prefix_cache_hits Prefix cache hits.\n# TYPE vllm:prefix_cache_hits counter\n"
        'vllm:prefix_cache_hits_total{engine="0",model_name="a"} 3.0\n'
        'vllm:prefix_cache_hits_total{engine="1",model_name="a"} 4.0\n'
        '# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0"} 0.25\n'
    )
    m = parse_metrics(text)
    assert m.value("vllm:prefix_cache_hits") == 7.0  # counter named without _total, summed
    assert m.value("vllm:prefix_cache_hits_total", engine="1") == 4.0
    assert m.value("vllm:kv_cache_usage_perc") == 0.25
    assert m.get("vllm:nope") is None
    with pytest.raises(KeyError, match="names"):
        m.value("vllm:nope")


# -- a real vLLM server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_env():
    try:
        return find_vllm_env()
    except VLLMEnvError as exc:
        problem = str(exc)
    pytest.fail(f"the vLLM environment is missing: {problem}", pytrace=False)


@pytest.fixture(scope="module")
def server(vllm_env):
    args = VLLMArgs(
        model="toy-tiny",
        dtype="float32",
        max_model_len=512,
        max_num_seqs=16,
        cpu_kvcache_space_gib=1,
        api_key=API_KEY,
    )
    with start_vllm(args, timeout_s=600) as srv:
        yield srv


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, timeout=60, max_retries=0)


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == ["toy-tiny"]


def test_completion_through_openai_sdk(client):
    out = client.completions.create(
        model="toy-tiny",
        prompt="Return the",
        max_tokens=12,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert out.usage.completion_tokens == 12
    assert isinstance(out.choices[0].text, str) and out.choices[0].text.strip()


def test_chat_and_streaming_through_openai_sdk(client):
    chat = client.chat.completions.create(
        model="toy-tiny",
        max_tokens=8,
        temperature=0,
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert chat.choices[0].message.role == "assistant"
    assert 1 <= chat.usage.completion_tokens <= 8
    stream = client.completions.create(
        model="toy-tiny",
        prompt="The module",
        max_tokens=10,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    pieces = [c.choices[0].text for c in stream if c.choices]
    assert len(pieces) >= 5 and "".join(pieces).strip()


def test_api_key_is_enforced(server):
    r = httpx.post(
        server.url + "/v1/completions",
        trust_env=False,
        timeout=30,
        json={"model": "toy-tiny", "prompt": "x", "max_tokens": 1},
    )
    assert r.status_code == 401
    assert httpx.get(server.url + "/health", trust_env=False).status_code == 200  # unguarded


def test_metrics_count_requests_and_prefix_cache(client, server):
    before = scrape_metrics(server.url)
    block = int(before.labels("vllm:cache_config_info")["block_size"])  # 128 on CPU, 16 on GPU
    # Only full blocks are cached: ~14 tokens per sentence, so this spans two blocks or more.
    prompt = "Return the list of all the names in the module, sorted. " * (2 * block // 12 + 1)
    for _ in range(2):  # the second identical prompt hits the prefix cache
        client.completions.create(
            model="toy-tiny",
            prompt=prompt,
            max_tokens=4,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
    after = scrape_metrics(server.url)
    assert 0.0 <= after.value("vllm:kv_cache_usage_perc") <= 1.0
    assert after.value("vllm:prefix_cache_queries") > before.value("vllm:prefix_cache_queries")
    assert after.value("vllm:prefix_cache_hits") - before.value("vllm:prefix_cache_hits") >= block
    assert after.value("vllm:generation_tokens") >= before.value("vllm:generation_tokens") + 8


def test_vllm_kv_cache_size_matches_the_planner(server):
    log = server.log_path.read_text(errors="replace")
    tokens = int(re.search(r"KV cache size: ([\d,]+) tokens", log).group(1).replace(",", ""))
    per_token = plan.model_config("toy-tiny").kv_bytes_per_token("fp32")
    assert tokens == 2**30 // per_token  # VLLM_CPU_KVCACHE_SPACE=1 GiB


def test_offline_generate_with_vllm_llm(vllm_env):
    args = VLLMArgs(model="toy-tiny", dtype="float32", max_model_len=256, cpu_kvcache_space_gib=1)
    prompts = ["Return the", "The module", "Raise an error if"] * 2
    result = offline_generate(args, prompts, max_tokens=16, ignore_eos=True)
    assert len(result.texts) == len(prompts)
    assert result.output_tokens == (16,) * len(prompts)
    assert result.texts[0] == result.texts[3]  # greedy: same prompt, same text
    assert all(n >= 2 for n in result.prompt_tokens) and result.output_tokens_per_s > 0


def test_histogram_helpers():
    text = (
        '# TYPE t histogram\nt_bucket{le="1.0"} 1.0\nt_bucket{le="8.0"} 3.0\n'
        't_bucket{le="16.0"} 4.0\nt_bucket{le="+Inf"} 4.0\nt_count 4.0\nt_sum 30.0\n'
    )
    m = parse_metrics(text)
    assert m.histogram_mean("t") == 7.5
    assert m.histogram_upper_bound("t") == 16.0


def test_smollm2_served_by_vllm_answers_the_sky_question(vllm_env):
    # enforce_eager: torch.compile of this 30-layer model takes minutes on 2 cores
    args = VLLMArgs(
        model="smollm2-135m",
        dtype="float32",
        max_model_len=1024,
        cpu_kvcache_space_gib=1,
        enforce_eager=True,
    )
    assert "--enforce-eager" in args.to_command()
    with start_vllm(args, timeout_s=600) as srv:
        client = openai.OpenAI(
            base_url=srv.url + "/v1", api_key="unused", timeout=120, max_retries=0
        )
        assert [m.id for m in client.models.list().data] == ["smollm2-135m"]
        chat = client.chat.completions.create(
            model="smollm2-135m",
            max_tokens=24,
            temperature=0,
            messages=[{"role": "user", "content": "Why is the sky blue? Answer in two sentences."}],
        )
    # the same greedy sentence as transformers gives on these weights (tests/test_smollm2.py)
    assert chat.choices[0].message.content.startswith(
        "The sky blue is a result of the Earth's atmosphere scattering sunlight"
    ), chat
    assert srv.log_path.exists() and not srv.is_running()


def test_offline_chat_uses_the_chat_template(vllm_env):
    args = VLLMArgs(model="toy-tiny", dtype="float32", max_model_len=256, cpu_kvcache_space_gib=1)
    result = offline_generate(args, ["Hello", "Hello"], max_tokens=8, chat=True)
    assert result.texts[0] == result.texts[1] and len(result.texts) == 2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_location())
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], add_generation_prompt=True, tokenize=True
    )["input_ids"]
    assert result.prompt_tokens == (len(ids), len(ids))  # vLLM rendered the same template
