"""Quantization on the real smollm2-135m: every method loads and generates, the weights
shrink as promised (measured from the tensors), quality stays near float32, and a wrong
method or a missing bitsandbytes fails with what to do."""

from __future__ import annotations

import importlib.abc
import math
import sys
import types

import pytest

import deploykit as dk
from deploykit.engines.tgi import QUANTIZE as TGI_QUANTIZE
from deploykit.engines.vllm import QUANTIZATIONS as VLLM_QUANTIZATIONS
from deploykit.models.quantization import require_bitsandbytes
from deploykit.quantize.measure import held_out_windows

# Each method's held-out perplexity stays within this factor of float32's (2 windows of 128
# tokens). Measured: int8 1.05x, nf4 1.33x, fp4 about 1.5x; a broken kernel gives 10x or nan.
PPL_FACTOR = 2.0
WINDOWS = 2


@pytest.fixture(scope="module")
def windows(smollm2):
    return held_out_windows(smollm2.tokenizer, WINDOWS, 128)


@pytest.fixture(scope="module")
def loaded(smollm2):
    """Every preset of smollm2-135m on CPU (fp32: the session's float32 model), and the
    weight bytes of each as loaded, before any forward pass."""
    models = {"fp32": smollm2}
    for name in dk.QUANTIZATIONS:
        if name != "fp32":
            models[name] = dk.load_model(
                "smollm2-135m", device="cpu", quantization=name, progress=False
            )
    at_load = {name: dk.weight_bytes(lm) for name, lm in models.items()}
    return models, at_load


def _perplexity(lm, windows) -> float:
    import torch

    with torch.inference_mode():
        ids = torch.tensor(windows)
        return math.exp(float(lm.model(input_ids=ids, labels=ids).loss))


def test_every_method_loads_and_generates(loaded):
    import torch

    models, _ = loaded
    expected = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for name, lm in models.items():
        out = dk.generate(lm, "The capital of France is", max_tokens=6, ignore_eos=True)
        assert out.completion_tokens == 6 and out.text.strip(), name
        assert lm.dtype == expected.get(name, torch.float32), name  # bnb computes in fp32 on CPU
    kinds = {name: {type(m).__name__ for m in lm.model.modules()} for name, lm in models.items()}
    assert "Linear8bitLt" in kinds["int8"]
    assert all("Linear4bit" in kinds[n] for n in ("nf4", "nf4-dq", "fp4"))
    assert models["nf4-dq"].quantization == dk.Quantization("nf4", double_quant=True)


def test_quantized_linear_layers_shrink_as_promised(loaded):
    models, at_load = loaded
    for lm in models.values():  # a forward pass first: what a running model holds
        dk.generate(lm, "Hello", max_tokens=1)
    running = {name: dk.weight_bytes(lm) for name, lm in models.items()}
    fp32 = at_load["fp32"]
    assert fp32.total_bytes == fp32.fp32_bytes == 4 * models["fp32"].num_parameters
    for sizes in (at_load, running):
        for name, size in sizes.items():  # the same parameters, whatever their storage
            assert (size.fp32_bytes, size.linear_fp32_bytes) == (
                fp32.fp32_bytes,
                fp32.linear_fp32_bytes,
            ), name
        assert sizes["int8"].linear_bytes < 0.40 * fp32.linear_bytes
        assert sizes["nf4"].linear_bytes < 0.25 * fp32.linear_bytes
        assert sizes["bf16"].total_bytes == fp32.total_bytes // 2
    # the 4-bit scales are real tensors and count: one fp32 absmax per 64 weights, as loaded
    assert at_load["nf4"].linear_ratio == pytest.approx((0.5 + 4 / 64) / 4, rel=0.01)
    assert at_load["nf4-dq"].linear_bytes < at_load["nf4"].linear_bytes
    # get_memory_footprint misses the 4-bit scales; weight_bytes does not
    assert at_load["nf4"].total_bytes > models["nf4"].model.get_memory_footprint()
    layer = next(m for m in models["nf4"].model.modules() if type(m).__name__ == "Linear4bit")
    if layer.support_avx512bf16_for_cpu:
        # on CPUs with AVX512-BF16, bitsandbytes repacks 4-bit layers at their first forward:
        # bf16 scales, and the double quantization undone (so nf4-dq saves nothing there)
        assert running["nf4"].linear_ratio == pytest.approx((0.5 + 2 / 64) / 4, rel=0.01)
        assert running["nf4-dq"].linear_bytes == pytest.approx(
            running["nf4"].linear_bytes, rel=1e-4
        )  # a stale offset each


def test_perplexity_of_every_method_is_near_float32(loaded, windows):
    ppl = {name: _perplexity(lm, windows) for name, lm in loaded[0].items()}
    base = ppl["fp32"]
    for name, value in ppl.items():
        assert math.isfinite(value) and value < PPL_FACTOR * base, (name, value, base)
    assert ppl["int8"] < ppl["nf4"]  # more bits, less loss


def test_held_out_windows_are_the_build_reports_tokens(smollm2):
    from deploykit.models import _build

    stream = _build.token_stream(smollm2.tokenizer, _build.corpus()[1][:100])
    assert held_out_windows(smollm2.tokenizer, 3, 128) == stream[:384].view(3, 128).tolist()


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(dk.InvalidArgumentError, match="nf4-dq.*fp4"):
        dk.load_model("smollm2-135m", device="cpu", quantization="int4")
    with pytest.raises(dk.InvalidArgumentError, match="fp32, bf16, fp16, int8, nf4, fp4"):
        dk.Quantization("q4_k_m")
    with pytest.raises(dk.InvalidArgumentError, match="applies to nf4 and fp4 only"):
        dk.Quantization("int8", double_quant=True)
    with pytest.raises(dk.InvalidArgumentError, match=">= 0"):
        dk.Quantization("int8", int8_threshold=-1.0)
    with pytest.raises(dk.InvalidArgumentError, match="pass one of the two"):
        dk.load_model("smollm2-135m", device="cpu", dtype="float32", quantization="bf16")


def test_int8_threshold_reaches_bitsandbytes(smollm2):
    import torch

    config = dk.Quantization("int8", int8_threshold=0.0).bnb_config(torch.float32)
    assert config.load_in_8bit and config.llm_int8_threshold == 0.0
    config = dk.Quantization("nf4", double_quant=True, compute_dtype="bf16").bnb_config(
        torch.bfloat16
    )
    assert (
        config.bnb_4bit_quant_type,
        config.bnb_4bit_use_double_quant,
        config.bnb_4bit_compute_dtype,
    ) == ("nf4", True, torch.bfloat16)


def test_missing_bitsandbytes_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import raises ImportError
    with pytest.raises(dk.MissingExtraError, match=r"pip install 'bitsandbytes>=0.50'"):
        dk.load_model("smollm2-135m", device="cpu", quantization="nf4")
    with pytest.raises(dk.MissingExtraError, match="pip install"):
        dk.measure_quantization("smollm2-135m", ["int8"], progress=False)


def test_broken_or_old_bitsandbytes_says_what_to_do(monkeypatch):
    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "bitsandbytes":
                raise OSError("libbitsandbytes_cpu.so: cannot open shared object file")
            return None

    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(dk.MissingExtraError, match="fails to import.*force-reinstall"):
        require_bitsandbytes()
    monkeypatch.setattr(sys, "meta_path", sys.meta_path[1:])
    monkeypatch.setitem(sys.modules, "bitsandbytes", types.SimpleNamespace(__version__="0.42.0"))
    with pytest.raises(dk.MissingExtraError, match="0.42.0 is older.*upgrade"):
        require_bitsandbytes()


def test_serving_table_names_real_flags():
    table = dk.serving_table()
    assert list(table.index) == list(dk.QUANTIZATIONS)
    for method, flag in (
        ("int8", "bitsandbytes"),
        ("nf4", "bitsandbytes-nf4"),
        ("fp4", "bitsandbytes-fp4"),
    ):
        assert f"--quantize {flag}" in table.loc[method, "TGI"] and flag in TGI_QUANTIZE
    assert "--quantization fp8" in table.loc["int8", "vLLM"] and "fp8" in VLLM_QUANTIZATIONS
    assert "bitsandbytes" not in VLLM_QUANTIZATIONS  # why the table offers no vLLM bnb flag


def test_measure_quantization_rows_and_llamacpp_logits_agree():
    df = dk.measure_quantization(
        "smollm2-135m",
        ["fp32", "nf4"],
        gguf=["shipped"],
        device="cpu",
        windows=1,
        max_tokens=3,
        repeats=1,
        answer_tokens=8,
        threads=1,
        progress=False,
    )
    assert list(df.index) == ["fp32", "nf4", "gguf Q4_1 (shipped)"]
    assert df.loc["fp32", "weight_ratio"] == 1.0 and df.loc["nf4", "linear_ratio"] < 0.25
    assert (df[["tokens_per_s_batch1", "tokens_per_s_batch8", "load_s"]] > 0).all().all()
    assert df["answer"].str.len().min() > 0
    # the shipped Q4_1 file holds the very weights of the float32 folder (dequantized from
    # it), so llama.cpp's logits must give nearly the same perplexity on the same tokens
    assert df.loc["gguf Q4_1 (shipped)", "perplexity_ratio"] == pytest.approx(1.0, abs=0.03)
    assert (
        df.loc["gguf Q4_1 (shipped)", "file_bytes"] > df.loc["gguf Q4_1 (shipped)", "weight_bytes"]
    )
    assert df.attrs["conditions"]["scored_tokens"] == 127
    assert "| `nf4` |" in dk.quantization_table(df)
    fig = dk.plot_quantization(df)
    assert len(fig.axes) == 2
    from deploykit.bench.quantize import body

    section = body(df, "deploykit bench quantize").splitlines()
    assert section[0] == "## Quantization on smollm2-135m" and section[1] == ""
    table = section.index(next(line for line in section if line.startswith("| method |")))
    assert section[table - 1] == "" and any("Load average" in line for line in section)


def _table(rows: dict[str, tuple]) -> object:
    """A measure_quantization-shaped DataFrame: (engine, MB, x fp32, linear x fp32, ppl,
    tokens/s batch 1, tokens/s batch 8, answer) per method."""
    import pandas as pd

    columns = ["engine", "MB", "weight_ratio", "linear_ratio", "perplexity"]
    columns += ["tokens_per_s_batch1", "tokens_per_s_batch8", "answer"]
    df = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    df["weight_bytes"] = df.pop("MB") * 1e6
    df["linear_bytes"] = df["linear_ratio"] * 424.7e6  # smollm2-135m's projections in float32
    return df


PARIS, FRENCH = "The capital of France is Paris.", "Le Grand Paris is la Capitale de France."
BNB, HF, CPP = "transformers + bitsandbytes", "transformers", "llama.cpp"


def test_quantization_findings_follow_the_table_whichever_way_it_falls():
    df = _table(
        {
            "fp32": (HF, 538.1, 1.0, 1.0, 38.78, 15.4, 70.9, PARIS),
            "bf16": (HF, 269.0, 0.5, 0.5, 38.85, 17.6, 106.0, PARIS),
            "int8": (BNB, 219.6, 0.408, 0.25, 39.98, 12.6, 67.7, PARIS),
            "nf4": (BNB, 169.8, 0.316, 0.133, 47.45, 24.4, 114.8, FRENCH),
            "fp4": (BNB, 169.8, 0.316, 0.133, 52.00, 24.4, 112.1, PARIS),
            "gguf q8_0": (CPP, 143.0, 0.266, 0.266, 38.87, 82.8, 157.7, PARIS),
            "gguf f16": (CPP, 269.1, 0.5, 0.5, 38.7799, 69.2, 94.1, PARIS),
        }
    )
    text = str(dk.quantization_findings(df, nf4_bytes_at_load=173_100_000))
    assert "relative to `fp32`" in text
    assert "(holds among the transformers rows)" in text and "`nf4` and `fp4` take 0.133" in text
    assert "`int8`'s 0.250" in text and "are 21% of this model's float32 bytes" in text
    assert (
        "173.1 MB as loaded (Step 2) and 169.8 MB after a forward pass (the table): smaller" in text
    )
    assert (
        "**8-bit keeps quality close** (holds" in text
        and "`int8` changes perplexity by +3.1%" in text
    )
    assert (
        "`nf4` +22.4%, `fp4` +34.1%" in text
        and f'`nf4` answer differently from `fp32`: "{FRENCH}"' in text
    )
    assert "`int8` 0.82x (slower) and 0.95x (slower) at batch 1 and 8" in text
    assert "`nf4` 1.58x (faster) and 1.62x (faster)" in text
    assert (
        "`gguf q8_0`:** 0.266 of float32, perplexity +0.2%, decode 5.38x (faster) and 2.22x (faster) at batch 1 and 8"
        in text
    )

    # the same promises, the other way round: the sentences turn with the figures
    df.loc["int8", ["perplexity", "answer"]] = [45.0, FRENCH]
    df.loc["nf4", ["tokens_per_s_batch1", "perplexity", "answer"]] = [6.5, 38.9, PARIS]
    df.loc["fp4", ["weight_ratio", "weight_bytes", "answer"]] = [0.45, 250e6, PARIS]
    text = str(dk.quantization_findings(df, nf4_bytes_at_load=169_800_000))
    assert "**8-bit keeps quality close** (does not hold" in text and "its answer is not" in text
    assert (
        "`nf4` 0.42x (slower) and 1.62x (faster)" in text
        and "every 4-bit answer is `fp32`'s" in text
    )
    assert "after a forward pass (the table): no smaller" in text
    assert dk.quantization_ratio(df, "nf4", "tokens_per_s_batch1") == pytest.approx(6.5 / 15.4)
    assert math.isnan(dk.quantization_ratio(df, "fp16", "perplexity"))


def test_quantization_findings_without_fp32_compare_with_the_first_row():
    df = _table(
        {
            "bf16": (HF, 14_000, 0.5, 0.5, 6.0, 30.0, 200.0, PARIS),
            "nf4": (BNB, 5_000, 0.18, 0.14, 6.3, 20.0, 150.0, PARIS),
        }
    )
    text = str(dk.quantization_findings(df))
    assert "relative to `bf16`" in text and "`nf4` +5.0%" in text
    assert (
        "`nf4` 0.67x (slower) and 0.75x (slower)" in text
        and "8-bit" not in text
        and "(holds): perplexity" in text
    )


def test_serving_text_fits_a_page_and_keeps_the_flags():
    text = dk.serving_text(["int8", "nf4"], width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "  TGI   --quantize bitsandbytes-nf4" in text and "--quantization fp8" in text
    assert text.splitlines()[0] == "int8:"


def test_quantization_findings_group_4bit_rows_that_differ_in_the_last_bytes():
    df = _table(
        {
            "fp32": (HF, 538.1, 1.0, 1.0, 38.78, 15.4, 70.9, PARIS),
            "nf4": (BNB, 169.8, 0.316, 0.132844, 47.45, 24.4, 114.8, PARIS),
            "nf4-dq": (BNB, 169.8, 0.316, 0.132846, 47.54, 25.2, 113.9, PARIS),
            "gguf f16": (CPP, 269.1, 0.5, 0.5, 38.7799, 69.2, 94.1, PARIS),
        }
    )
    text = str(dk.quantization_findings(df))
    assert "the linear layers of `nf4` and `nf4-dq` take 0.133" in text
    assert "`nf4-dq`'s" not in text and "-0.0%" not in text
