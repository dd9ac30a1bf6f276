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

`CompiledDecodeStep` runs the same math through `torch.compile` (inductor, weights frozen in):
`deploykit serve --decode-step compiled`. Given its q/k/v and gate/up products fused
(`kernels.fuse_plain_projections`), it is deploykit's fastest bfloat16 server mode at 8 and 32
concurrent requests in docs/benchmarks.md (smollm2-135m: 275 and 459 output tokens/s against
207 and 401 for this step on oneDNN kernels), w8a8 kernels with it the fastest of all there
(328 and 576, at 4.8% more perplexity), and int4 with it at 1 (88 against 55).
It compiles at every server start, about three minutes on that 2-core CPU, so it is not the
default: notebooks and tests start servers often.

It is not a general Llama: models with attention biases are fine (the modules carry them),
but RoPE types other than transformers' own `rotary_emb`, QK-norm, soft-capping, sliding
windows and non-SiLU MLPs are refused by `unsupported`, and the engine then uses the model's
forward.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidArgumentError
from .kernels import SharedProjection, fuse_plain_projections

# cached values per layer (rows x KV heads x tokens x head dim) up to which a bfloat16 or
# float16 cache is multiplied in float32 (see the module docstring)
FLOAT32_ATTENTION_ELEMENTS = 1 << 16
DECODE_STEPS = ("auto", "deploykit", "compiled", "transformers")
COMPILED_KERNELS = ("eager", "int4", "w8a8")  # the kernels inductor compiles through
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


def kernels_for(kernels: str, choice: str) -> str:
    """Return the kernels to switch a model to for decode step choice.

    The compiled step needs plain linear layers (inductor prepacks their weights itself), so
    "auto" kernels are "eager" with it; any other choice is kept (and checked later).
    """
    return "eager" if choice == "compiled" and kernels == "auto" else kernels


def decode_step_for(model: nn.Module, kernels: str, choice: str = "auto") -> LlamaDecodeStep | None:
    """Return the decode step an engine runs: deploykit's, or None for the model's forward.

    "auto" is deploykit's where it applies and the kernels are not eager (eager stays the
    plain transformers baseline); "deploykit" or "compiled" where it does not apply is an
    error saying why. "compiled" is deploykit's step through torch.compile, on eager or int4
    kernels.
    """
    if choice not in DECODE_STEPS:
        raise InvalidArgumentError(
            f"unknown decode step {choice!r}; use one of {', '.join(DECODE_STEPS)}"
        )
    if choice == "transformers" or (choice == "auto" and kernels == "eager"):
        return None
    why = unsupported(model)
    if why and choice in ("deploykit", "compiled"):
        raise InvalidArgumentError(
            f"deploykit's decode step does not apply: {why}; use 'transformers' or 'auto'."
        )
    if choice == "compiled":
        if kernels not in COMPILED_KERNELS:
            raise InvalidArgumentError(
                f"the compiled decode step runs on plain linear layers (inductor prepacks them "
                f"itself), int4 or w8a8 ones, not {kernels!r} ones (oneDNN's prepacked weights "
                "are opaque to inductor); use kernels 'eager', 'int4', 'w8a8' or 'auto'."
            )
        return CompiledDecodeStep(model)
    return None if why else LlamaDecodeStep(model)


def step_name(step: LlamaDecodeStep | None) -> str:
    """Return whose decode step runs: "deploykit", "compiled" (deploykit's, compiled) or
    "transformers" (the model's forward)."""
    if step is None:
        return "transformers"
    return "compiled" if step.compiled else "deploykit"


def _projections(x: torch.Tensor, *layers: nn.Module) -> tuple[torch.Tensor, ...]:
    """Return each layer's output for x: one fused product when they are its parts."""
    shared = getattr(layers[0], "shared", None)
    parts = [(getattr(p, "shared", None), getattr(p, "index", None)) for p in layers]
    if isinstance(shared, SharedProjection) and parts == [
        (shared, i) for i in range(len(shared.sizes))
    ]:
        return shared.fused(x).split(shared.sizes, -1)
    return tuple(layer(x) for layer in layers)


def _buffers(cache) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return all layers' key and value buffers [L, B, KV, C, D] and n, the column to write.

    Each layer's keys/values stay views of its buffers' first n columns (what the running
    batch reads and rewrites when rows join or leave); after a step, `_commit` makes them
    n+1. The buffers have SPARE_COLUMNS more columns, zeros, so a step writes one column in
    place instead of copying the cache (`torch.cat`), and attention reads the buffers whole
    and contiguous, spare columns masked. One tensor for all layers keeps a compiled step's
    inputs (and the guards checked on every call) two tensors, not two per layer. Buffers
    are made anew when the batch replaced the keys (rows joined or left) or the spare
    columns ran out.
    """
    layers = cache.layers
    n = layers[0].keys.shape[2]
    stack = getattr(cache, "_dk_stack", None)
    if (
        stack is None
        or n == stack[0].shape[3]
        or any(layer.keys is not getattr(layer, "_dk_view", None) for layer in layers)
    ):
        first = layers[0].keys
        shape = (len(layers), first.shape[0], first.shape[1], n + SPARE_COLUMNS, first.shape[3])
        stack = first.new_empty(shape), first.new_empty(shape)
        for i, layer in enumerate(layers):
            stack[0][i, :, :, :n], stack[1][i, :, :, :n] = layer.keys, layer.values
        for buffer in stack:  # only the spare columns need zeros: the rest was just copied
            buffer[:, :, :, n:].zero_()
        cache._dk_stack = stack
    return stack[0], stack[1], n


def _commit(cache, n: int) -> None:
    """Make each layer's keys/values the first n columns of its buffers (after a step)."""
    keys, values = cache._dk_stack
    for i, layer in enumerate(cache.layers):
        layer.keys, layer.values = keys[i, :, :, :n], values[i, :, :, :n]
        layer._dk_view = layer.keys


def _additive_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    """Return a float32 additive mask [B, 1, 1, width]: 0 on real columns, -inf-like elsewhere."""
    additive = torch.full(
        (mask.shape[0], width), torch.finfo(torch.float32).min, device=mask.device
    )
    additive[:, : mask.shape[1]].masked_fill_(mask != 0, 0.0)
    return additive[:, None, None, :]


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


class _Step(nn.Module):
    """The step's math over preallocated buffers: plain tensors in, logits out (compilable)."""

    def __init__(self, model: nn.Module, float32_attention: bool = True) -> None:
        super().__init__()
        self.model = model
        dtype = next(model.parameters()).dtype
        self.float32_attention = float32_attention and dtype != torch.float32
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        additive: torch.Tensor,
        column: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        """Feed input_ids [B, 1] at positions [B, 1]; write layer i's new key and value into
        keys[i], values[i] (of [L, B, KV, C, D]) at column [1]; attend over all C columns with
        the additive mask [B, 1, 1, C]; return the logits [B, V] (`_FunctionalStep`: with the
        new keys and values)."""
        new: list[tuple[torch.Tensor, torch.Tensor]] = []
        logits = self._layers(input_ids, positions, additive, column, keys, values, new)
        return self._outputs(logits, new)

    def _outputs(self, logits: torch.Tensor, new: list):
        return logits

    def _layers(self, input_ids, positions, additive, column, keys, values, new: list):
        inner = self.model.model
        b = input_ids.shape[0]
        h, kv, d = self.heads, self.kv_heads, self.head_dim
        hidden = inner.embed_tokens(input_ids)  # [B, 1, E]
        cos, sin = inner.rotary_emb(hidden, positions)  # [B, 1, D] each
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, 1, D]: broadcast over heads
        for i, layer in enumerate(inner.layers):
            attn = layer.self_attn
            x = _rms_norm(hidden, layer.input_layernorm)
            q, k, v = _projections(x, attn.q_proj, attn.k_proj, attn.v_proj)
            q = q.view(b, 1, h, d).transpose(1, 2)  # [B, H, 1, D]
            k = k.view(b, 1, kv, d).transpose(1, 2)  # [B, KV, 1, D]
            v = v.view(b, 1, kv, d).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            q = q.reshape(b, kv, h // kv, d)  # [B, KV, G, D]: a KV head's queries together
            out = self._attend(q, k, v, keys[i], values[i], column, additive, attn.scaling, new)
            hidden = hidden + attn.o_proj(out.reshape(b, 1, h * d).to(hidden.dtype))
            mlp = layer.mlp
            x = _rms_norm(hidden, layer.post_attention_layernorm)
            gate, up = _projections(x, mlp.gate_proj, mlp.up_proj)
            hidden = hidden + mlp.down_proj(nn.functional.silu(gate) * up)
        hidden = _rms_norm(hidden, inner.norm)
        return self.model.lm_head(hidden[:, -1])

    def _attend(self, q, k, v, key, value, column, additive, scaling, new: list) -> torch.Tensor:
        """Write k, v into the layer's buffers at column, then attend over all of them."""
        key.index_copy_(2, column, k)
        value.index_copy_(2, column, v)
        if self.float32_attention and key.numel() <= FLOAT32_ATTENTION_ELEMENTS:
            q, key, value = q.float(), key.float(), value.float()
        scores = torch.matmul(q, key.transpose(2, 3))  # [B, KV, G, C]
        weights = torch.softmax(scores.float() * scaling + additive, dim=-1).to(value.dtype)
        return torch.matmul(weights, value)  # [B, KV, G, D]


class _FunctionalStep(_Step):
    """The step without writes to its inputs: a compiled graph that writes into a view of an
    input copies the whole input (functionalization), once per layer. Each layer attends
    over the buffers as they are (the column being written masked) plus its new key and value
    as one more column; the new keys and values come out, stacked, for the caller to write."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, float32_attention=False)

    def _outputs(self, logits: torch.Tensor, new: list):
        """Return logits and the new keys and values [L, B, KV, 1, D], for the caller to write."""
        return logits, torch.stack([k for k, _ in new]), torch.stack([v for _, v in new])

    def _attend(self, q, k, v, key, value, column, additive, scaling, new: list) -> torch.Tensor:
        new.append((k, v))
        # products and sums, not batched matmuls: inductor fuses each into one loop of its
        # own (float32 inside), where PyTorch's bfloat16 bmm at these sizes cost about 47 us
        # a call, 60 calls a step (smollm2-135m, one thread: 10.9 ms a step against 11.5 at
        # batch 1, 14.5 against 15.0 at 8, 30.4 against 31.2 at 32)
        scores = (q[:, :, :, None, :] * key[:, :, None, :, :]).sum(-1)  # [B, KV, G, C]
        own = (q * k).sum(-1, keepdim=True)  # [B, KV, G, 1]: the new key
        scores = torch.cat([scores.float() * scaling + additive, own.float() * scaling], -1)
        weights = torch.softmax(scores, dim=-1)
        out = (weights[..., :-1, None] * value[:, :, None, :, :]).sum(-2)  # [B, KV, G, D]
        return (out + weights[..., -1:] * v).to(v.dtype)


class LlamaDecodeStep:
    """Run one decode step of a Llama-architecture model over a transformers DynamicCache."""

    compiled = False
    _step_class: type[_Step] = _Step

    def __init__(self, model: nn.Module) -> None:
        why = unsupported(model)
        if why:
            raise InvalidArgumentError(f"LlamaDecodeStep cannot run this model: {why}")
        self.model = model
        self._step = self._step_class(model)

    @torch.inference_mode()
    def __call__(
        self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache
    ) -> torch.Tensor:
        """Feed input_ids [B, 1] at positions [B, 1]; mask [B, T+1] marks real cache columns.

        Appends each layer's new key and value to cache (as the model's forward would) and
        returns the logits [B, V].
        """
        keys, values, n = _buffers(cache)
        additive = _additive_mask(mask, keys.shape[3])
        column = torch.tensor([n], device=input_ids.device)
        logits = self._step(input_ids, positions, additive, column, keys, values)
        _commit(cache, n + 1)
        return logits


_IDENTITY_GUARD = "_modules['embed_tokens']._parameters['weight']"


def _model_identity_guards(entries) -> list[bool]:
    """torch.compile guard filter: keep the guards on inputs and globals, and of those on the
    model's modules only one, that the embedding weight is the same object.

    Dynamo guards every module attribute the step reads, a few hundred checks on each call:
    0.85 ms at batch 8 on smollm2-135m's 30 layers (about 5% of the step). The engine owns its
    model and changes no weight after the step is built, so what those guards would catch
    cannot happen. What can is a second model of the same shape (its own step, the same code
    object): without any module guard it ran the first model's frozen weights (toy-tiny's
    logits off by 17); the embedding weight's identity tells two models apart, and the second
    is compiled for its own weights (`tests/test_decode_step.py`). Where no such guard is
    found (another transformers or PyTorch version), every guard is kept.
    """
    identity = [e.guard_type == "ID_MATCH" and e.name.endswith(_IDENTITY_GUARD) for e in entries]
    if not any(identity):  # nothing tells models apart: keep every guard
        return [True] * len(entries)
    return [
        keep or not entry.orig_guard.source.is_unspecialized_nn_module()
        for keep, entry in zip(identity, entries)
    ]


class CompiledDecodeStep(LlamaDecodeStep):
    """deploykit's decode step compiled by torch.compile (inductor), its weights frozen in.

    dynamic=True: one graph serves every cache width, and one every batch size above one (batch
    1 is its own graph). Inductor's freezing folds the weights into the compiled code as
    constants and prepacks plain `nn.Linear` weights for oneDNN itself (kernels "eager"); int4
    layers (`kernels.Int4WeightLinear`) are compiled as they are, their kernel called from the
    compiled code. The graph writes nothing (`_FunctionalStep`): the new keys and values come
    out and are written here, in one call each. Attention is written as products and sums,
    which inductor fuses into loops that compute in float32 whatever the cache's dtype (no
    float32 branch as in the eager step: a second shape condition would double the graphs to
    compile). The compiled code runs outside inference mode (inductor does not mutate inference
    tensors), on buffers made there. Compiling takes minutes on a small CPU: the engine's
    `start` compiles both graphs before it serves, and inductor's on-disk cache
    (TORCHINDUCTOR_CACHE_DIR, by default under the system's temporary directory) makes the next
    start on the same machine shorter (dynamo still traces the step at every start; the
    compile times are in docs/benchmarks.md, `deploykit bench kernels`).
    """

    compiled = True
    _step_class = _FunctionalStep

    def __init__(self, model: nn.Module) -> None:
        import torch._inductor.config as inductor_config

        fuse_plain_projections(model)  # eager kernels: one product per projection group
        super().__init__(model)
        self._compiled = torch.compile(
            self._step, dynamic=True, options={"guard_filter_fn": _model_identity_guards}
        )
        self._inductor_config = inductor_config  # imported once, patched around each call

    def __call__(
        self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache
    ) -> torch.Tensor:
        """As LlamaDecodeStep, through the compiled code."""
        # cpp_wrapper: the compiled code is driven from C++, which lets go of the GIL for the
        # whole step; from Python, each of its kernel calls needs the GIL that the server's
        # event loop holds while it streams tokens (smollm2-135m, two servers side by side:
        # 1.05x at concurrency 1, 1.04x at 8, 1.03x at 32)
        options = self._inductor_config.patch(freezing=True, cpp_wrapper=True)
        with torch.inference_mode(False), torch.no_grad(), options:
            keys, values, n = _buffers(cache)
            additive = _additive_mask(mask[:, :-1], keys.shape[3])  # column n: the new one
            column = torch.tensor([n], device=input_ids.device)
            logits, new_keys, new_values = self._compiled(
                input_ids, positions, additive, column, keys, values
            )
            keys.index_copy_(3, column, new_keys)
            values.index_copy_(3, column, new_values)
            _commit(cache, n + 1)
        return logits
