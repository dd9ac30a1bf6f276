"""Reference tables for the memory planner: real model configs and GPUs.

Model numbers are copied from each model's public `config.json` on the Hugging Face
hub; GPU memory is the total that `nvidia-smi` reports (a little below the marketing
figure, because that is what a process can actually allocate against).
"""

from __future__ import annotations

_MIB = 1 << 20

# name: (layers, hidden, heads, kv_heads, head_dim, intermediate, vocab, tie, attention_bias,
#        max_position_embeddings, hub ids that share the architecture)
MODEL_TABLE: dict[str, tuple] = {
    "Llama-2-7B": (
        32,
        4096,
        32,
        32,
        128,
        11008,
        32000,
        False,
        False,
        4096,
        ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf"),
    ),
    "Llama-2-13B": (
        40,
        5120,
        40,
        40,
        128,
        13824,
        32000,
        False,
        False,
        4096,
        ("meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-13b-chat-hf"),
    ),
    "Llama-2-70B": (
        80,
        8192,
        64,
        8,
        128,
        28672,
        32000,
        False,
        False,
        4096,
        ("meta-llama/Llama-2-70b-hf", "meta-llama/Llama-2-70b-chat-hf"),
    ),
    "Llama-3.1-8B": (
        32,
        4096,
        32,
        8,
        128,
        14336,
        128256,
        False,
        False,
        131072,
        (
            "meta-llama/Llama-3.1-8B",
            "meta-llama/Llama-3.1-8B-Instruct",
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
        ),
    ),
    "Llama-3.1-70B": (
        80,
        8192,
        64,
        8,
        128,
        28672,
        128256,
        False,
        False,
        131072,
        (
            "meta-llama/Llama-3.1-70B",
            "meta-llama/Llama-3.1-70B-Instruct",
            "meta-llama/Meta-Llama-3.1-70B-Instruct",
        ),
    ),
    "Mistral-7B": (
        32,
        4096,
        32,
        8,
        128,
        14336,
        32000,
        False,
        False,
        32768,
        ("mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.2"),
    ),
    # Qwen2 puts biases on q/k/v projections (attention_bias=True).
    "Qwen2.5-7B": (
        28,
        3584,
        28,
        4,
        128,
        18944,
        152064,
        False,
        True,
        131072,
        ("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-7B-Instruct"),
    ),
}

# name: (memory MiB as nvidia-smi reports it, bf16 support)
GPU_TABLE: dict[str, tuple[int, bool]] = {
    "T4": (15360, False),  # Turing: fp16 only, so planners and vLLM use fp16 there
    "L4": (23034, True),
    "A10G": (23028, True),
    "A100-40GB": (40960, True),
    "A100-80GB": (81920, True),
    "H100-80GB": (81559, True),
    "H200": (143771, True),
}

MIB = _MIB
