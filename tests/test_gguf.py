"""export_gguf: toy-tiny through llama.cpp's own converter, read back, and served by llama.cpp."""

from __future__ import annotations

import json
import re
import shutil

import openai
import pytest
from gguf import GGMLQuantizationType, GGUFReader

import deploykit as dk
from deploykit import _env
from deploykit.cli import main
from deploykit.engines.llamacpp import LlamaCppArgs, start_llamacpp, tokenize
from deploykit.errors import InvalidArgumentError, ModelBuildError, UnknownModelError
from deploykit.models._build import build_report
from deploykit.models.gguf import OUTTYPES, SDIST_SHA256, converter_path

TYPES = {"f16": GGMLQuantizationType.F16, "q8_0": GGMLQuantizationType.Q8_0}


@pytest.fixture(scope="module")
def converted():
    """toy-tiny's GGUF files, f16 and q8_0 (converted once, then cached)."""
    return {outtype: dk.export_gguf("toy-tiny", outtype, progress=False) for outtype in TYPES}


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(dk.resolve_model("toy-tiny", progress=False).folder)


def _value(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


def test_sizes_are_plausible(converted):
    params = dk.resolve_model("toy-tiny", progress=False).info["num_parameters"]
    f16, q8_0 = (converted[outtype].stat().st_size for outtype in ("f16", "q8_0"))
    # 2 bytes a weight, plus the vocabulary and the float32 norms
    assert 2 * params < f16 < 2 * params + 512 * 1024
    # 34 bytes a block of 32 weights: a little over one byte a weight
    assert params < q8_0 < 0.6 * f16


@pytest.mark.parametrize("outtype", list(TYPES))
def test_header_is_llama_with_the_types_asked_and_the_whole_vocab(converted, hf_tokenizer, outtype):
    reader = GGUFReader(converted[outtype])
    assert _value(reader, "general.architecture") == "llama"
    assert _value(reader, "general.name") == "toy-tiny"
    assert _value(reader, "tokenizer.ggml.model") == "llama"  # sentencepiece, as the toy's
    matrices = {t.tensor_type for t in reader.tensors if len(t.shape) == 2}
    vectors = {t.tensor_type for t in reader.tensors if len(t.shape) == 1}
    assert matrices == {TYPES[outtype]} and vectors == {GGMLQuantizationType.F32}
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == len(hf_tokenizer) == 4096
    assert _value(reader, "tokenizer.chat_template") == hf_tokenizer.chat_template


def test_second_call_returns_the_cached_file_without_converting(converted, monkeypatch):
    def no_job(*args, **kwargs):
        raise AssertionError("the converter ran again")

    monkeypatch.setattr("deploykit.models.gguf.run_job", no_job)
    assert dk.export_gguf("toy-tiny", "q8_0", progress=False) == converted["q8_0"]
    report = build_report(converted["q8_0"].parent)
    assert report["outtype"] == "q8_0" and report["converter"]["sha256"] == SDIST_SHA256


def test_unknown_outtype_lists_the_valid_ones():
    with pytest.raises(InvalidArgumentError) as info:
        dk.export_gguf("toy-tiny", "q4_k_m")
    assert all(outtype in str(info.value) for outtype in OUTTYPES)


def test_hub_id_says_to_download_it_first():
    with pytest.raises(InvalidArgumentError, match="Download it first"):
        dk.export_gguf("some-org/some-model")


def test_folder_without_config_is_refused_before_any_conversion(tmp_path):
    folder = shutil.copytree(dk.resolve_model("toy-tiny", progress=False).folder, tmp_path / "m")
    (folder / "config.json").unlink()
    with pytest.raises(UnknownModelError, match="no config.json"):
        dk.export_gguf(folder)


def test_converter_failure_carries_its_log_and_leaves_nothing_in_the_cache(tmp_path):
    folder = shutil.copytree(
        dk.resolve_model("toy-tiny", progress=False).folder, tmp_path / "broken-toy"
    )
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["NoSuchForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelBuildError) as info:
        dk.export_gguf(folder, progress=False)
    message = str(info.value)
    assert "converter exited with status 1" in message
    assert "Model NoSuchForCausalLM is not supported" in message  # the converter's own log
    assert not list((_env.cache_dir() / "gguf").glob("broken-toy*"))  # no file, no .tmp folder


def test_sdist_with_another_sha256_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    fake = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    fake.write_bytes(b"not the sdist")
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(cache))
    monkeypatch.setenv("DEPLOYKIT_LLAMACPP_SDIST", str(fake))
    with pytest.raises(ModelBuildError, match=f"not the pinned {SDIST_SHA256}"):
        converter_path(progress=False)
    assert [p.name for p in (cache / "tools").iterdir()] == [".llama-cpp-converter.lock"]


def test_cli_prints_the_path(converted, capsys):
    assert main(["gguf", "toy-tiny", "--outtype", "q8_0"]) == 0
    assert capsys.readouterr().out.strip() == str(converted["q8_0"])


# -- the GGUF on llama.cpp -------------------------------------------------------------


@pytest.fixture(scope="module")
def server(converted):
    args = LlamaCppArgs(model=converted["f16"], ctx_size=512, n_parallel=1, threads=2)
    with start_llamacpp(args, timeout_s=120) as srv:
        yield srv


TEXTS = [
    "Return the number of items in the list.",
    "café, naïve, Ünïcödé, 数字 and emoji 😀🚀",
    " one leading space",
    "   three leading spaces, two  inside and one after ",
    "tabs\tand\nnew lines\n\nx = 12345 + 0.5",
]


@pytest.mark.parametrize("text", TEXTS)
def test_token_ids_match_transformers(server, hf_tokenizer, text):
    assert tokenize(server.url, text) == hf_tokenizer(text).input_ids


def test_chat_prompt_token_ids_match_transformers(server, hf_tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What does len() return?"},
        {"role": "assistant", "content": "The number of items."},
        {"role": "user", "content": " And  for a café? 😀"},
    ]
    prompt = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert re.match(r"<s><<SYS>> Be brief\. <</SYS>>\n\[INST\]", prompt)
    # the template writes BOS (and EOS after an answer) itself: add none
    expected = hf_tokenizer(prompt, add_special_tokens=False).input_ids
    assert tokenize(server.url, prompt, add_special=False) == expected
    assert expected.count(hf_tokenizer.bos_token_id) == 1
    assert expected.count(hf_tokenizer.eos_token_id) == 1


def test_completion_through_openai_sdk(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=60, max_retries=0)
    done = client.completions.create(
        model="toy-tiny", prompt="Return the number of", max_tokens=16, temperature=0
    )
    assert done.choices[0].text.strip()
    assert 1 <= done.usage.completion_tokens <= 16
