import json
from pathlib import Path

import pytest
import torch

import deploykit as dk
from deploykit.models import _build, toy
from deploykit.models.toy import TOY_MODELS, toy_path


def test_toy_tiny_is_an_ordinary_hf_folder(tiny):
    path = Path(tiny.path)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "deploykit_build.json",
    ):
        assert (path / name).exists(), name
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert 0.8e6 < tiny.num_parameters < 1.5e6


def test_toy_tiny_learned_something(tiny):
    report = tiny.info
    assert report["perplexity_trained"] < report["perplexity_untrained"] / 10


def test_tokenizer_is_sentencepiece_and_matches_transformers(tiny):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(Path(tiny.path) / "tokenizer.model"))
    text = "Return the number of items.  Tabs\tand 12345 digits, é and 😀."
    assert tiny.tokenizer(text).input_ids == [tiny.tokenizer.bos_token_id] + sp.encode(text)
    ids = tiny.tokenizer(text, add_special_tokens=False).input_ids
    assert tiny.tokenizer.decode(ids) == text  # byte fallback: nothing is lost


def test_chat_template_renders_roles(tiny):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tiny.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<s>") and "Be brief." in text and text.rstrip().endswith("[/INST]")


def test_cached_build_is_reused(tiny):
    assert toy_path("toy-tiny", progress=False) == Path(tiny.path)


def test_slow_hashes_are_remembered_on_disk(tmp_path, monkeypatch):
    from deploykit import _memo

    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path))
    calls = []
    compute = lambda: calls.append(1) or f"digest-{len(calls)}"  # noqa: E731
    assert _memo.remembered("memo.json", "k1", compute) == "digest-1"
    assert _memo.remembered("memo.json", "k1", compute) == "digest-1" and len(calls) == 1
    assert _memo.remembered("memo.json", "k2", compute) == "digest-2"  # another fingerprint
    assert json.loads((tmp_path / "memo.json").read_text()) == {"k1": "digest-1", "k2": "digest-2"}
    (tmp_path / "memo.json").write_text("{half a fi")  # a torn or foreign file is recomputed
    assert _memo.remembered("memo.json", "k1", compute) == "digest-3"
    assert [p.name for p in tmp_path.iterdir()] == ["memo.json"]  # no scratch file left
    # the toy models' cache key holds what parsing the corpus gives
    assert _build.corpus_key() == _build.corpus_digest(*_build.corpus())


def test_build_is_deterministic(tmp_path, monkeypatch):
    # A shortened spec, built twice from scratch, gives identical weights.
    spec = toy.ToySpec(
        "toy-test",
        vocab_size=512,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        tie_word_embeddings=True,
        steps=3,
        batch_size=2,
        seq_len=32,
        lr=1e-3,
    )
    reports = [toy.build(spec, tmp_path / f"m{i}", progress=False) for i in range(2)]
    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / f"m{i}" / "model.safetensors") for i in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert reports[0]["perplexity_trained"] == reports[1]["perplexity_trained"]


def test_toy_small_spec_is_in_range():
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = TOY_MODELS["toy-small"]
    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        tie_word_embeddings=spec.tie_word_embeddings,
    )
    with torch.device("meta"):
        n = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    assert 30e6 <= n <= 60e6


def test_unknown_model_name_lists_toys_and_says_how():
    with pytest.raises(dk.UnknownModelError) as err:
        dk.load_model("toy-huge")
    message = str(err.value)
    assert "toy-tiny" in message and "toy-small" in message
    assert "hub id" in message and "folder" in message


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(dk.UnknownModelError, match="config.json"):
        dk.load_model(tmp_path)


def test_hub_id_offline_fails_clearly():
    with pytest.raises(dk.UnknownModelError, match="HF_HUB_OFFLINE"):
        dk.load_model("nobody-here/no-such-model")


def test_local_folder_loads(tiny):
    lm = dk.load_model(tiny.path, device="cpu")
    assert lm.num_parameters == tiny.num_parameters


def test_bad_dtype_and_device():
    with pytest.raises(ValueError, match="unknown dtype"):
        dk.load_model("toy-tiny", dtype="float7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            dk.load_model("toy-tiny", device="cuda")


def test_cli_models_prints_report(capsys):
    from deploykit.cli import main

    assert main(["models", "toy-tiny"]) == 0
    out = capsys.readouterr().out
    assert "toy-tiny" in out and "perplexity" in out


def test_no_weight_loading_bar_in_an_unattended_run(tiny, capfd, monkeypatch):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a notebook a person runs
    monkeypatch.setenv("DEPLOYKIT_RUN_ID", "test")  # what the cookbook runner sets
    dk.load_model(tiny.path)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # switched off for the load only
    monkeypatch.delenv("DEPLOYKIT_RUN_ID")
    dk.load_model(tiny.path)
    assert "Loading weights" in capfd.readouterr().err  # attended: transformers' bar is back
