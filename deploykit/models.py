"""Built-in toy models and `load_model`, the one way recipes get a model.

Toy models are Llama-architecture causal LMs with a sentencepiece tokenizer,
trained briefly on the installed standard library's docstrings and cached as
ordinary Hugging Face folders, so transformers, vLLM and llama.cpp's GGUF
converter all load them by path.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import _env
from .errors import MissingExtraError, UnknownModelError

_BUILD_VERSION = 1  # bump when the build recipe changes: old caches are ignored


@dataclass(frozen=True)
class ToySpec:
    """Architecture and training budget of one toy model."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    tie_word_embeddings: bool
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    max_position_embeddings: int = 2048
    seed: int = 0


TOY_MODELS: dict[str, ToySpec] = {
    spec.name: spec
    for spec in (
        ToySpec("toy-tiny", vocab_size=4096, hidden_size=128, intermediate_size=256,
                num_layers=4, num_heads=4, num_kv_heads=2, tie_word_embeddings=True,
                steps=400, batch_size=16, seq_len=128, lr=3e-3),
        ToySpec("toy-small", vocab_size=4096, hidden_size=512, intermediate_size=1536,
                num_layers=10, num_heads=8, num_kv_heads=4, tie_word_embeddings=False,
                steps=300, batch_size=8, seq_len=128, lr=1e-3),
    )
}


def toy_path(name: str, progress: bool = True) -> Path:
    """Return the cached folder of toy model `name`, building it on first use."""
    from . import _toybuild

    spec = _toy_spec(name)
    key = hashlib.sha256(json.dumps(
        [_BUILD_VERSION, asdict(spec), _corpus_digest()]).encode()).hexdigest()[:10]
    root = _env.cache_dir() / "models"
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"{name}-{key}"
    if (dest / "deploykit_build.json").exists():
        return dest
    # One builder at a time (several notebooks may ask at once); the others wait.
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "deploykit_build.json").exists():
            _toybuild.build(spec, dest, progress=progress)
    return dest


@functools.lru_cache(maxsize=1)
def _corpus_digest() -> str:
    """Hash the training corpus once per process (reading it takes seconds)."""
    from . import _toybuild

    return _toybuild.corpus_digest(*_toybuild.corpus())


def build_report(path: str | Path) -> dict[str, Any]:
    """Return the build report (sizes, perplexities, seconds) saved beside a toy model."""
    return json.loads((Path(path) / "deploykit_build.json").read_text())


def _toy_spec(name: str) -> ToySpec:
    try:
        return TOY_MODELS[name]
    except KeyError:
        raise UnknownModelError(_unknown_message(name)) from None


def _unknown_message(name: str) -> str:
    toys = ", ".join(sorted(TOY_MODELS))
    return (f"unknown model {name!r}. Use a built-in toy model ({toys}), a local folder "
            "holding config.json and weights (e.g. './my-model'), or a Hugging Face hub id "
            "such as 'meta-llama/Llama-2-7b-chat-hf' (needs network, and HF_HUB_OFFLINE unset).")


@dataclass
class LoadedModel:
    """A model and its tokenizer, with where they came from and where they run."""

    model: Any
    tokenizer: Any
    name: str
    path: str
    device: str
    dtype: Any
    quantization: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

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


def resolve_device(device: str = "auto") -> str:
    """Turn 'auto' into 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA GPU; use device='cpu' "
                         "or 'auto', or install a CUDA build of torch.")
    return device


def resolve_dtype(dtype: Any, device: str):
    """Turn 'auto' into bf16/fp16 on GPUs and fp32 on CPUs; accept names or torch dtypes."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16}
    try:
        return names[str(dtype)]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)} or 'auto'") from None


def _quantization_config(quantization: str | None, dtype):
    if quantization is None:
        return None
    if quantization not in ("int8", "nf4", "fp4"):
        raise ValueError(f"unknown quantization {quantization!r}; use None, 'int8', 'nf4' or 'fp4'")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            f"quantization={quantization!r} needs bitsandbytes: pip install 'deploykit[quant]'"
        ) from None
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quantization,
                              bnb_4bit_compute_dtype=dtype)


def model_path(name_or_path: str | Path, progress: bool = True) -> str:
    """Return a local folder for a toy name or folder, or the hub id unchanged."""
    text = str(name_or_path)
    if text in TOY_MODELS:
        return str(toy_path(text, progress=progress))
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UnknownModelError(f"folder {text!r} has no config.json; point to a Hugging Face "
                                    "model folder (config.json, weights, tokenizer files).")
        return str(path)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise UnknownModelError(_unknown_message(text))
    return text


def load_model(name_or_path: str | Path, device: str = "auto", dtype: Any = "auto",
               quantization: str | None = None, progress: bool = True) -> LoadedModel:
    """Load a toy model, a local folder, or a hub id with its tokenizer, ready to generate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)  # check every argument before a possible toy build
    torch_dtype = resolve_dtype(dtype, device)
    qconfig = _quantization_config(quantization, torch_dtype)
    path = model_path(name_or_path, progress=progress)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if qconfig is not None:
        kwargs.update(quantization_config=qconfig, device_map={"": device})
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        if _env.hub_offline() and not Path(path).is_dir():
            raise UnknownModelError(
                f"{path!r} is not a toy model or a local folder, and HF_HUB_OFFLINE=1 forbids "
                f"downloading it. {_unknown_message(path)}") from exc
        raise UnknownModelError(f"could not load {path!r}: {exc}. {_unknown_message(path)}") from exc
    if qconfig is None:
        model = model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    info = build_report(path) if Path(path, "deploykit_build.json").exists() else {}
    return LoadedModel(model=model, tokenizer=tokenizer, name=str(name_or_path), path=path,
                       device=device, dtype=torch_dtype, quantization=quantization, info=info)


def cli_models(args) -> int:
    """`deploykit models NAME...`: build toy models and print their build reports."""
    for name in args.names:
        report = build_report(toy_path(name))
        print(f"{name}: {report['num_parameters']:,} parameters, built in "
              f"{report['build_seconds']} s, held-out perplexity "
              f"{report['perplexity_trained']} (untrained {report['perplexity_untrained']})")
    return 0
