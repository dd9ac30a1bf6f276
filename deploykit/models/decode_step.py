"""deploykit's own decode step for Llama-architecture models: the same math, fewer operations.

A one-token decode step through transformers' forward pays for machinery a server's decode
does not use: the output-capturing decorators, the mask builder, the attention dispatch,
keyword plumbing through every layer, and a `torch.cat` per `rotate_half`. On a small model
on a CPU that overhead is a large part of the step (docs/benchmarks.md, `deploykit bench
kernels`, the A/B of DTYPE:KERNELS:transformers against :deploykit). `LlamaDecodeStep` runs
the step with the model's own modules and weights (its linear layers' kernels included) on
the model's own cache (transformers' `DynamicCache`, whose layers keep their keys and values
as views of the cache, so prefill, joining and dropping rows are unchanged):

- the cache grows in place: `SPARE_COLUMNS` columns ahead, not a `torch.cat` per step;
- fused projections (`kernels.SharedProjection`) run as one product, without their parts'
  Python;
- RMSNorm is `torch.rms_norm` in float32 (one kernel instead of six), then cast and scaled
  as transformers does;
- rotary embedding: the model's own `rotary_emb` module, applied without `torch.cat`;
- attention: the G query heads of a KV head stacked into one matrix (as `decode_attention`),
  scores and softmax in float32 with an additive mask built once per step, not per layer.
  Below `FLOAT32_ATTENTION_ELEMENTS` cached values per layer, bfloat16 and float16 caches are
  multiplied in float32 too: PyTorch's bfloat16 batched matmul on a CPU is several times
  slower than float32's at a decode step's tiny sizes, and converting a small cache is cheap.

It is not a general Llama: models with attention biases are fine (the modules carry them),
but RoPE types other than transformers' own `rotary_emb`, QK-norm, soft-capping, sliding
windows and non-SiLU MLPs are refused by `unsupported`, and the engine then uses the model's
forward.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .kernels import SharedProjection

# cached values per layer (rows x KV heads x tokens x head dim) up to which a bfloat16 or
# float16 cache is multiplied in float32 (see the module docstring)
FLOAT32_ATTENTION_ELEMENTS = 1 << 16
DECODE_STEPS = ("auto", "deploykit", "transformers")
SPARE_COLUMNS = 16  # cache columns allocated ahead, so most steps append in place
_LAYER_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP_PARTS = ("gate_proj", "up_proj", "down_proj")


def unsupported(model: nn.Module) -> str | None:
    """Return why LlamaDecodeStep cannot run model's decode, or None if it can."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) != "llama":
        return f"{type(model).__name__} is not a Llama-architecture model"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"its MLP uses {config.hidden_act}, not silu"
    if getattr(config, "sliding_window", None):
        return "it uses sliding-window attention"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(model, "lm_head"):
        return "it lacks the modules of transformers' LlamaForCausalLM"
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if not all(hasattr(attn, p) for p in _LAYER_PARTS):
            return "a layer's attention lacks q/k/v/o projections"
        if not all(hasattr(mlp, p) for p in _MLP_PARTS):
            return "a layer's MLP lacks gate/up/down projections"
        if any(hasattr(attn, n) for n in ("q_norm", "k_norm")):
            return "its attention normalises queries and keys (QK-norm)"
    return None


def decode_step_for(model: nn.Module, kernels: str, choice: str = "auto") -> LlamaDecodeStep | None:
    """Return the decode step an engine runs: deploykit's, or None for the model's forward.

    "auto" is deploykit's where it applies and the kernels are not eager (eager stays the
    plain transformers baseline); "deploykit" where it does not apply is an error saying why.
    """
    if choice not in DECODE_STEPS:
        raise InvalidArgumentError(
            f"unknown decode step {choice!r}; use one of {', '.join(DECODE_STEPS)}"
        )
    if choice == "transformers" or (choice == "auto" and kernels == "eager"):
        return None
    why = unsupported(model)
    if why and choice == "deploykit":
        raise InvalidArgumentError(
            f"deploykit's decode step does not apply: {why}; use 'transformers' or 'auto'."
        )
    return None if why else LlamaDecodeStep(model)


def step_name(step: LlamaDecodeStep | None) -> str:
    """Return whose decode step runs: "deploykit", or "transformers" (the model's forward)."""
    return "transformers" if step is None else "deploykit"


def _projections(x: torch.Tensor, *layers: nn.Module) -> tuple[torch.Tensor, ...]:
    """Return each layer's output for x: one fused product when they are its parts."""
    shared = getattr(layers[0], "shared", None)
    parts = [(getattr(p, "shared", None), getattr(p, "index", None)) for p in layers]
    if isinstance(shared, SharedProjection) and parts == [
        (shared, i) for i in range(len(shared.sizes))
    ]:
        return shared.fused(x).split(shared.sizes, -1)
    return tuple(layer(x) for layer in layers)


def _append(layer, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append k, v [B, KV, 1, D] to a DynamicLayer; return its whole buffers [B, KV, C, D].

    The layer's keys/values stay views of its first T+1 columns (what the running batch
    reads and rewrites when rows join or leave). The buffers have SPARE_COLUMNS more, zeros,
    so a step writes one column in place instead of copying the cache (`torch.cat`), and
    attention reads the buffers whole and contiguous, spare columns masked.
    """
    keys = layer.keys
    n = keys.shape[2]
    buffers: tuple[torch.Tensor, torch.Tensor] | None = getattr(layer, "_dk_buffers", None)
    if buffers is None or keys is not getattr(layer, "_dk_view", None) or n == buffers[0].shape[2]:
        shape = (keys.shape[0], keys.shape[1], n + SPARE_COLUMNS, keys.shape[3])
        buffers = keys.new_zeros(shape), keys.new_zeros(shape)
        buffers[0][:, :, :n], buffers[1][:, :, :n] = keys, layer.values
        layer._dk_buffers = buffers
    buf_k, buf_v = buffers
    buf_k[:, :, n : n + 1] = k
    buf_v[:, :, n : n + 1] = v
    layer.keys, layer.values = buf_k[:, :, : n + 1], buf_v[:, :, : n + 1]
    layer._dk_view = layer.keys
    return buf_k, buf_v


def _rms_norm(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """transformers' LlamaRMSNorm: float32 normalisation, cast back, then scaled."""
    normed = torch.rms_norm(x.float(), (x.shape[-1],), eps=norm.variance_epsilon)
    return norm.weight * normed.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply rotary embedding (transformers' rotate_half convention) without a concatenation."""
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half] -= x[..., half:] * sin[..., :half]
    out[..., half:] += x[..., :half] * sin[..., half:]
    return out


class LlamaDecodeStep:
    """Run one decode step of a Llama-architecture model over a transformers DynamicCache."""

    def __init__(self, model: nn.Module) -> None:
        why = unsupported(model)
        if why:
            raise InvalidArgumentError(f"LlamaDecodeStep cannot run this model: {why}")
        self.model = model
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads

    @torch.inference_mode()
    def __call__(
        self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache
    ) -> torch.Tensor:
        """Feed input_ids [B, 1] at positions [B, 1]; mask [B, T+1] marks real cache columns.

        Appends each layer's new key and value to cache (as the model's forward would) and
        returns the logits [B, V].
        """
        inner = self.model.model
        b = input_ids.shape[0]
        h, kv, d = self.heads, self.kv_heads, self.head_dim
        g = h // kv
        hidden = inner.embed_tokens(input_ids)  # [B, 1, E]
        cos, sin = inner.rotary_emb(hidden, positions)  # [B, 1, D] each
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, 1, D]: broadcast over heads
        masks: dict[int, torch.Tensor] = {}  # additive [B, 1, 1, columns] per buffer width
        for i, layer in enumerate(inner.layers):
            attn = layer.self_attn
            x = _rms_norm(hidden, layer.input_layernorm)
            q, k, v = _projections(x, attn.q_proj, attn.k_proj, attn.v_proj)
            q = q.view(b, 1, h, d).transpose(1, 2)  # [B, H, 1, D]
            k = k.view(b, 1, kv, d).transpose(1, 2)  # [B, KV, 1, D]
            v = v.view(b, 1, kv, d).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            keys, values = _append(cache.layers[i], k, v)  # [B, KV, C, D], C >= T+1
            width = keys.shape[2]
            if width not in masks:  # float32, -inf-like where a column is padding or spare
                additive = torch.full((b, width), torch.finfo(torch.float32).min)
                additive[:, : mask.shape[1]].masked_fill_(mask != 0, 0.0)
                masks[width] = additive[:, None, None, :]
            additive = masks[width]
            if keys.dtype != torch.float32 and keys.numel() <= FLOAT32_ATTENTION_ELEMENTS:
                q, keys, values = q.float(), keys.float(), values.float()
            scores = torch.matmul(q.reshape(b, kv, g, d), keys.transpose(2, 3))  # [B, KV, G, T+1]
            scores = scores.float() * attn.scaling + additive
            weights = torch.softmax(scores, dim=-1).to(values.dtype)
            out = torch.matmul(weights, values).reshape(b, 1, h * d).to(hidden.dtype)
            hidden = hidden + attn.o_proj(out)
            mlp = layer.mlp
            x = _rms_norm(hidden, layer.post_attention_layernorm)
            gate, up = _projections(x, mlp.gate_proj, mlp.up_proj)
            hidden = hidden + mlp.down_proj(nn.functional.silu(gate) * up)
        hidden = _rms_norm(hidden, inner.norm)
        return self.model.lm_head(hidden[:, -1])
