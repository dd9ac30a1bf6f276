"""`load_model`, the one way recipes get a model: resolve it, load it, put it on its device."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _env
from ..errors import UnknownModelError
from .catalog import BUILTIN_MODELS, unknown_message
from .devices import resolve_device, resolve_dtype
from .quantization import Quantization
from .resolve import ModelSource, resolve_model


@dataclass
class LoadedModel:
    """A model and its tokenizer, with where they came from and where they run."""

    model: Any
    tokenizer: Any
    name: str
    path: str
    device: str
    dtype: Any
    quantization: Quantization | None = None  # how the weights are stored, when asked for
    info: dict[str, Any] = field(default_factory=dict)
    gguf_file: Path | None = None  # the GGUF file the weights came from, if any

    @property
    def num_parameters(self) -> int:
        """Count parameters (packed quantized weights count as stored)."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def weight_bytes(self) -> int:
        """Bytes the parameters and buffers occupy."""
        return int(self.model.get_memory_footprint())

    @property
    def context_length(self) -> int:
        """Longest sequence (prompt + output) the model accepts."""
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def load_model(
    name_or_path: str | Path | ModelSource,
    device: str = "auto",
    dtype: Any = "auto",
    quantization: str | Quantization | None = None,
    progress: bool = True,
) -> LoadedModel:
    """Load a built-in model, a local folder, or a hub id with its tokenizer, ready to generate.

    quantization is a preset name (fp32, bf16, fp16, int8, nf4, nf4-dq, fp4; see
    `dk.QUANTIZATIONS`) or a `dk.Quantization`; a plain-dtype one sets the dtype, a
    bitsandbytes one computes in dtype.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)  # check every argument before a possible build
    quant = None if quantization is None else Quantization.from_name(quantization)
    torch_dtype = (
        resolve_dtype(dtype, device) if quant is None else quant.torch_dtype(device, dtype)
    )
    qconfig = None if quant is None else quant.bnb_config(torch_dtype)
    source = resolve_model(name_or_path, progress=progress)
    path = source.location
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if qconfig is not None:
        kwargs.update(quantization_config=qconfig, device_map={"": device})
    from transformers.utils import logging as hf_logging

    # transformers draws its own "Loading weights" bar: none unattended, as for deploykit's
    bars_were_on = hf_logging.is_progress_bar_enabled()
    if not (progress and _env.progress_bars()):
        hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        if _env.hub_offline() and source.kind == "hub":
            raise UnknownModelError(
                f"{path!r} is not a built-in model or a local folder, and HF_HUB_OFFLINE=1 "
                f"forbids downloading it. {unknown_message(path)}"
            ) from exc
        raise UnknownModelError(f"could not load {path!r}: {exc}. {unknown_message(path)}") from exc
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    if qconfig is None:
        model = model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=source.name,
        path=path,
        device=device,
        dtype=torch_dtype,
        quantization=quant,
        info=source.info,
        gguf_file=source.gguf_file,
    )


def describe(name: str) -> str:
    """Return one line about a built-in model: parameters, source, held-out perplexity."""
    report = resolve_model(name).info
    source = report.get("source")
    origin = (
        f"from {source['package']} {source['version']} ({source['file']}, "
        f"{source['quantization']}, dequantized to float32)"
        if source
        else f"trained here in {report['build_seconds']} s"
    )
    untrained = (
        f" (untrained {report['perplexity_untrained']})" if "perplexity_untrained" in report else ""
    )
    return (
        f"{name}: {report['num_parameters']:,} parameters, {origin}, held-out perplexity "
        f"{report['perplexity_trained']}{untrained}"
    )


def add_cli(sub) -> None:
    """Add `deploykit models NAME...` to the CLI."""
    p = sub.add_parser("models", help="build the built-in models and print their reports")
    p.add_argument(
        "names",
        nargs="*",
        default=["toy-tiny"],
        help=f"built-in names: {', '.join(BUILTIN_MODELS)} (default: toy-tiny)",
    )
    p.set_defaults(func=_cli_models)


def _cli_models(args) -> int:
    for name in args.names:
        if name not in BUILTIN_MODELS:
            raise UnknownModelError(unknown_message(name))
        print(describe(name))
    return 0
