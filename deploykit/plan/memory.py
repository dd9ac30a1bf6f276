"""Memory planner: will this model fit on this GPU, and how many sequences at once?

Arithmetic only, from the architecture in `config.json`: parameter count from the layer
shapes, weight bytes per format, KV-cache bytes per token, and vLLM's way of budgeting a
GPU (`gpu_memory_utilization` x total, minus weights, minus the activation peak of one
`max_num_batched_tokens` step, the rest is KV cache in blocks of 16 tokens).

It does not measure anything (the tests check it against real footprints) and it knows
dense decoder-only Llama-family models (Llama, Mistral, Qwen2), not mixture-of-experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, UnknownGPUError, UnknownModelError
from .catalog import GPU_TABLE, MIB, MODEL_TABLE

GIB = 1 << 30
# Bytes per weight in each format; int8/nf4 are bitsandbytes as transformers loads them.
WEIGHT_BYTES = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "nf4": 0.5}
KV_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
_NF4_BLOCK = 64  # bitsandbytes stores one fp32 absmax per 64 weights (no double quant)


@dataclass(frozen=True)
class ModelConfig:
    """The shapes of a dense decoder-only transformer that decide its memory."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool = False
    o_bias: bool = False
    max_position_embeddings: int = 4096

    @classmethod
    def from_hf(cls, config: dict, name: str = "model") -> ModelConfig:
        """Build from a Hugging Face `config.json` dict (Llama, Mistral, Qwen2 style)."""
        config = config.get("text_config", config)  # multimodal wrappers nest the LM
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        bias = bool(config.get("attention_bias", False))
        qwen = config.get("model_type", "").startswith("qwen2")
        return cls(
            name=name,
            num_layers=int(config["num_hidden_layers"]),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            intermediate_size=int(config["intermediate_size"]),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            # Qwen2 always biases q/k/v (never o); Llama's attention_bias biases all four.
            qkv_bias=qwen or bias,
            o_bias=bias and not qwen,
            max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
        )

    # Parameter counts, by where they live; quantization only touches the linear layers.
    @property
    def linear_parameters(self) -> int:
        """Count the weights of the attention and MLP projections (what int8/nf4 shrink)."""
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attn = self.hidden_size * (q + 2 * kv) + q * self.hidden_size
        mlp = 3 * self.hidden_size * self.intermediate_size  # gate, up, down
        return self.num_layers * (attn + mlp)

    @property
    def linear_rows(self) -> int:
        """Count output rows of the projections (int8 keeps one fp32 scale per row)."""
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return self.num_layers * (
            q + 2 * kv + self.hidden_size + 2 * self.intermediate_size + self.hidden_size
        )

    @property
    def other_parameters(self) -> int:
        """Count embeddings, LM head, norms and biases (kept in 16 bits when quantized)."""
        embed = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embed
        q = self.num_heads * self.head_dim
        bias = q + 2 * self.num_kv_heads * self.head_dim if self.qkv_bias else 0
        bias += self.hidden_size if self.o_bias else 0
        norms = self.num_layers * 2 * self.hidden_size + self.hidden_size
        return embed + head + norms + self.num_layers * bias

    @property
    def num_parameters(self) -> int:
        """Count all parameters (tied embeddings once)."""
        return self.linear_parameters + self.other_parameters

    def weight_bytes(self, weights: str = "bf16") -> int:
        """Return the bytes of all weights stored as `weights` (fp32, fp16, bf16, int8, nf4)."""
        per = _weight_format(weights)
        if weights in ("fp32", "fp16", "bf16"):
            return int(self.num_parameters * per)
        linear = self.linear_parameters * per
        if weights == "int8":
            linear += 4 * self.linear_rows
        else:
            linear += 4 * math.ceil(self.linear_parameters / _NF4_BLOCK)
        return int(linear + 2 * self.other_parameters)

    def kv_bytes_per_token(self, kv_dtype: str = "bf16") -> int:
        """Return K and V bytes one token occupies across all layers: 2 x L x kv_heads x d x b."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * _kv_format(kv_dtype)


@dataclass(frozen=True)
class GPU:
    """One accelerator model: memory a process can use, and whether it does bf16."""

    name: str
    memory_bytes: int
    bf16: bool = True


GPUS: dict[str, GPU] = {name: GPU(name, mib * MIB, bf16) for name, (mib, bf16) in GPU_TABLE.items()}


@dataclass(frozen=True)
class MemoryPlan:
    """How one model in one format splits one GPU under vLLM-style budgeting (per GPU)."""

    model: str
    gpu: str
    weights: str
    kv_dtype: str
    tensor_parallel_size: int
    gpu_memory_bytes: int
    gpu_memory_utilization: float
    budget_bytes: int
    weight_bytes: int
    activation_bytes: int
    overhead_bytes: int
    kv_cache_bytes: int
    kv_bytes_per_token: int
    kv_capacity_tokens: int
    context_len_tokens: int
    max_concurrent_seqs: int

    @property
    def fits(self) -> bool:
        """True when the weights fit and at least one full-context sequence has KV room."""
        return self.max_concurrent_seqs >= 1

    def summary(self) -> str:
        """Return the plan as an aligned plain-text table."""
        g = lambda b: f"{b / GIB:8.2f} GiB"  # noqa: E731
        rows = [
            ("model / format", f"{self.model} / weights {self.weights}, KV {self.kv_dtype}"),
            (
                "GPU",
                f"{self.tensor_parallel_size} x {self.gpu} ({self.gpu_memory_bytes / GIB:.1f} GiB)",
            ),
            (f"budget (x{self.gpu_memory_utilization:g})", g(self.budget_bytes)),
            ("weights", g(self.weight_bytes)),
            ("activations (est.)", g(self.activation_bytes)),
            ("runtime overhead", g(self.overhead_bytes)),
            ("KV cache", g(self.kv_cache_bytes)),
            ("KV per token", f"{self.kv_bytes_per_token / 1024:8.1f} KiB"),
            ("KV capacity", f"{self.kv_capacity_tokens:,} tokens"),
            (f"sequences of {self.context_len_tokens:,} tokens", f"{self.max_concurrent_seqs:,}"),
            ("fits", "yes" if self.fits else "NO"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cache_bytes(past_key_values) -> int:
    """Return the bytes a transformers cache (DynamicCache) holds in its key/value tensors."""
    return sum(
        t.numel() * t.element_size()
        for layer in past_key_values.layers
        for t in (layer.keys, layer.values)
        if t is not None
    )


def model_config(name_or_path: str | Path | ModelConfig) -> ModelConfig:
    """Return the config of a catalog name (Llama-2-7B...), a built-in model, a folder, or a hub id."""
    if isinstance(name_or_path, ModelConfig):
        return name_or_path
    from ..models import resolve_model
    from ..models.catalog import unknown_message

    text = str(name_or_path)
    known = _table_lookup(text)
    if known is not None:
        return known
    try:
        source = resolve_model(text, progress=False)
    except UnknownModelError:
        raise UnknownModelError(
            f"{unknown_message(text)} The planner also knows these configs "
            f"without network: {', '.join(MODEL_TABLE)}."
        ) from None
    name = text if source.kind != "hub" else text.split("/")[-1]
    return ModelConfig.from_hf(source.config(), name=name)


def gpu(name: str | GPU) -> GPU:
    """Return a catalog GPU by name, case-insensitively ('h100', 'A100-80GB')."""
    if isinstance(name, GPU):
        return name
    for key, value in GPUS.items():
        if key.lower() in (name.lower(), name.lower() + "-80gb"):
            return value
    raise UnknownGPUError(
        f"unknown GPU {name!r}; use one of {', '.join(GPUS)}, or build "
        "your own: dk.plan.GPU('MyGPU', memory_bytes=48 * 2**30)."
    )


def activation_bytes(
    config: ModelConfig,
    max_num_batched_tokens: int = 8192,
    max_num_seqs: int = 256,
    dtype_bytes: int = 2,
    tensor_parallel_size: int = 1,
) -> int:
    """Estimate the activation peak of one engine step (vLLM profiles it at startup).

    One step holds at most `max_num_batched_tokens` tokens; the largest live tensors are
    the MLP's gate/up outputs plus the residual stream, and fp32 logits for every
    running sequence at sampling time.
    """
    per_token = 3 * config.intermediate_size // tensor_parallel_size + 4 * config.hidden_size
    return max_num_batched_tokens * per_token * dtype_bytes + max_num_seqs * config.vocab_size * 4


def memory_plan(
    model: str | Path | ModelConfig,
    gpu_name: str | GPU,
    *,
    weights: str = "bf16",
    kv_dtype: str | None = None,
    gpu_memory_utilization: float = 0.9,
    context_len_tokens: int | None = None,
    max_num_batched_tokens: int = 8192,
    max_num_seqs: int = 256,
    tensor_parallel_size: int = 1,
    overhead_bytes: int = GIB // 2,
    block_size_tokens: int = 16,
) -> MemoryPlan:
    """Split one GPU the way vLLM does and return what is left for KV cache.

    `overhead_bytes` stands for the CUDA context, CUDA graphs and allocator slack
    (about half a GiB on recent vLLM). On GPUs without bf16 (T4) bf16 becomes fp16.
    """
    config, card = model_config(model), gpu(gpu_name)
    _weight_format(weights)
    if not 0 < gpu_memory_utilization <= 1:
        raise InvalidArgumentError(
            f"gpu_memory_utilization={gpu_memory_utilization} must be in "
            "(0, 1]: the share of the GPU's memory vLLM may use, e.g. 0.9"
        )
    if tensor_parallel_size < 1:
        raise InvalidArgumentError(
            f"tensor_parallel_size={tensor_parallel_size} must be an "
            "integer >= 1 (the number of GPUs to split over)"
        )
    if not card.bf16 and weights == "bf16":
        weights = "fp16"
    # vLLM's kv_cache_dtype="auto" stores K/V in the model dtype (16 bits when quantized).
    kv_dtype = kv_dtype or (weights if weights in KV_BYTES else "bf16")
    if not card.bf16 and kv_dtype == "bf16":
        kv_dtype = "fp16"
    context = context_len_tokens or config.max_position_embeddings
    tp = tensor_parallel_size
    weight = config.weight_bytes(weights) // tp
    act = activation_bytes(config, max_num_batched_tokens, max_num_seqs, tensor_parallel_size=tp)
    budget = int(card.memory_bytes * gpu_memory_utilization)
    kv_cache = max(0, budget - weight - act - overhead_bytes)
    # Each GPU holds its share of KV heads; heads are replicated when tp > kv_heads.
    kv_heads_per_gpu = max(1, config.num_kv_heads // tp)
    per_token = config.kv_bytes_per_token(kv_dtype) * kv_heads_per_gpu // config.num_kv_heads
    blocks = kv_cache // (per_token * block_size_tokens)
    seqs = blocks // math.ceil(context / block_size_tokens)
    return MemoryPlan(
        model=config.name,
        gpu=card.name,
        weights=weights,
        kv_dtype=kv_dtype,
        tensor_parallel_size=tp,
        gpu_memory_bytes=card.memory_bytes,
        gpu_memory_utilization=gpu_memory_utilization,
        budget_bytes=budget,
        weight_bytes=weight,
        activation_bytes=act,
        overhead_bytes=overhead_bytes,
        kv_cache_bytes=kv_cache,
        kv_bytes_per_token=per_token,
        kv_capacity_tokens=blocks * block_size_tokens,
        context_len_tokens=context,
        max_concurrent_seqs=int(seqs),
    )


def memory_plans(
    model: str | Path | ModelConfig,
    gpus: tuple[str, ...] | None = None,
    weights: tuple[str, ...] = ("bf16", "int8", "nf4"),
    **kwargs,
) -> list[MemoryPlan]:
    """Return a plan for every GPU (smallest memory first) and every weight format."""
    cards = sorted((gpu(g) for g in (gpus or GPUS)), key=lambda c: c.memory_bytes)
    return [memory_plan(model, card, weights=w, **kwargs) for card in cards for w in weights]


def smallest_fit(
    model: str | Path | ModelConfig,
    *,
    concurrent_seqs: int = 1,
    gpus: tuple[str, ...] | None = None,
    weights: tuple[str, ...] = ("bf16", "int8", "nf4"),
    **kwargs,
) -> MemoryPlan | None:
    """Return the plan on the smallest GPU that serves `concurrent_seqs` full contexts.

    Among formats on that GPU the most precise one wins; None when nothing fits.
    """
    for candidate in memory_plans(model, gpus, weights, **kwargs):
        if candidate.max_concurrent_seqs >= concurrent_seqs:
            return candidate
    return None


def attendees_that_fit(
    gpu_memory_gib: float,
    model: str | Path | ModelConfig,
    *,
    weights: str = "bf16",
    context_len_tokens: int = 4096,
    concurrent_seqs: int = 1,
    gpu_memory_utilization: float = 0.9,
    **kwargs,
) -> int:
    """Return how many attendees can each run their own vLLM server of model on one GPU.

    Each server needs the model's weights, one step's activation peak and the runtime
    overhead (as `memory_plan` counts them, same keyword arguments), plus KV cache for
    `concurrent_seqs` sequences of `context_len_tokens` (vLLM refuses to start without room
    for one). Together they may use `gpu_memory_utilization` of the GPU, split evenly: each
    attendee's share is gpu_memory_utilization / attendees (`DEPLOYKIT_GPU_SHARE`).
    """
    if gpu_memory_gib <= 0 or concurrent_seqs < 1:
        raise InvalidArgumentError(
            f"gpu_memory_gib={gpu_memory_gib} must be > 0 and concurrent_seqs={concurrent_seqs} "
            "an integer >= 1 (full-context sequences each attendee's server must hold)"
        )
    card = GPU(f"{gpu_memory_gib:g} GiB", int(gpu_memory_gib * GIB))
    # the whole GPU as budget: only the fixed costs and the per-token KV size are used below
    plan = memory_plan(
        model,
        card,
        weights=weights,
        gpu_memory_utilization=1.0,
        context_len_tokens=context_len_tokens,
        **kwargs,
    )
    block = kwargs.get("block_size_tokens", 16)
    kv = concurrent_seqs * math.ceil(context_len_tokens / block) * block * plan.kv_bytes_per_token
    need = plan.weight_bytes + plan.activation_bytes + plan.overhead_bytes + kv
    return int(card.memory_bytes * gpu_memory_utilization // need)


def plan_table(rows: list[MemoryPlan]) -> str:
    """Return several plans as one plain-text table, one plan per line."""
    head = (
        f"{'model':<14}{'GPU':<11}{'weights':>8}{'weights GiB':>13}{'KV GiB':>9}"
        f"{'KV tokens':>12}{'ctx':>8}{'seqs':>7}  fits"
    )
    lines = [head, "-" * len(head)]
    for p in rows:
        gpu_label = p.gpu if p.tensor_parallel_size == 1 else f"{p.tensor_parallel_size}x{p.gpu}"
        lines.append(
            f"{p.model[:13]:<14}{gpu_label:<11}{p.weights:>8}{p.weight_bytes / GIB:>13.2f}"
            f"{p.kv_cache_bytes / GIB:>9.2f}{p.kv_capacity_tokens:>12,}"
            f"{p.context_len_tokens:>8,}{p.max_concurrent_seqs:>7,}  "
            f"{'yes' if p.fits else 'no'}"
        )
    return "\n".join(lines)


def _weight_format(weights: str) -> float:
    try:
        return WEIGHT_BYTES[weights]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown weight format {weights!r}; use one of {', '.join(WEIGHT_BYTES)}"
        ) from None


def _kv_format(kv_dtype: Any) -> int:
    """Return bytes per element of a KV-cache dtype: 'bf16', 'fp8', or a torch/vLLM name."""
    if kv_dtype in KV_BYTES:
        return KV_BYTES[kv_dtype]
    from ..models.devices import dtype_names

    try:
        return KV_BYTES[dtype_names(kv_dtype)[1]]
    except InvalidArgumentError:
        raise InvalidArgumentError(
            f"unknown KV-cache dtype {kv_dtype!r}; use one of "
            f"{', '.join(KV_BYTES)} (or a torch dtype name)"
        ) from None


def _table_lookup(text: str) -> ModelConfig | None:
    for name, row in MODEL_TABLE.items():
        *shape, max_pos, aliases = row
        if text.lower() == name.lower() or text in aliases:
            layers, hidden, heads, kv, hd, inter, vocab, tie, qkv_bias = shape
            return ModelConfig(
                name,
                layers,
                hidden,
                heads,
                kv,
                hd,
                inter,
                vocab,
                tie,
                qkv_bias=qkv_bias,
                max_position_embeddings=max_pos,
            )
    return None


def add_cli(sub) -> None:
    """Add `deploykit plan MODEL [--gpu NAME]` to the CLI."""
    from ..argtypes import fraction, positive_int

    p = sub.add_parser("plan", help="memory plan: weights, KV cache, sequences per GPU")
    p.add_argument(
        "model", help=f"built-in name, folder, hub id, or one of: {', '.join(MODEL_TABLE)}"
    )
    p.add_argument("--gpu", default=None, help=f"one of {', '.join(GPUS)} (default: all)")
    p.add_argument("--context", type=positive_int, default=4096, help="tokens per sequence")
    p.add_argument(
        "--gpu-memory-utilization",
        type=fraction,
        default=0.9,
        help="share of GPU memory vLLM may use, in (0, 1] (default 0.9)",
    )
    p.set_defaults(func=_cli_plan)


def _cli_plan(args) -> int:
    kwargs = {
        "context_len_tokens": args.context,
        "gpu_memory_utilization": args.gpu_memory_utilization,
    }
    if args.gpu:
        print(memory_plan(args.model, args.gpu, **kwargs).summary())
        return 0
    print(plan_table(memory_plans(args.model, **kwargs)))
    best = smallest_fit(args.model, **kwargs)
    print(f"\nsmallest fit: {best.gpu} with {best.weights} weights" if best else "\nnothing fits")
    return 0
