"""Which kernels a loaded model's linear layers run: PyTorch's eager ones or oneDNN's, prepacked.

On CPU, `nn.Linear` calls a GEMM that reads its weight in the row-major layout it is stored
in, every call. oneDNN can reorder a weight once, at load, into the blocked layout its kernels
read fastest; inductor does the same when it freezes a compiled model. For the decode step of
a small model, a chain of skinny matrix products, that made the whole float32 step 1.5x to 2x
faster on the CPU measured in docs/benchmarks.md (`deploykit bench kernels`). The reorder costs a copy of each weight at load
time (the original is then dropped; a tied embedding keeps its own).

`kernels="int8"` stores each linear weight as int8 with one scale per output row (weight-only:
activations stay in the model's dtype) and multiplies with PyTorch's `_weight_int8pack_mm`:
a quarter of float32's bytes read per step. The lm_head is quantized too (a fifth of
smollm2-135m's linear weights).

With onednn and int8, linear layers that read the same input (a Llama layer's q/k/v
projections, and its gate/up projections) become parts of one fused product
(`SharedProjection`): one weight read and one call where there were three or two, the same
weight bytes in all. The decode step measured 1.04x to 1.06x faster with it at batch 1 to 32
in bfloat16 (docs/benchmarks.md); the int8 kernel gained nothing from it.

`kernels="int4"` stores each linear weight in 4 bits, groups of 32 input columns with a scale
and a zero point each (the layout of llama.cpp's Q4_1 blocks), and multiplies with PyTorch's
`_weight_int4pack_mm_for_cpu`: 0.625 bytes a weight with the scales, against 2 for bfloat16. A layer whose input width
is not a multiple of 32 gets int8 instead.

`kernels="w8a8"` computes each linear layer but the LM head in int8 (weights and activations,
as vLLM's and torchao's "W8A8" int8 dynamic modes): int8 weights with one scale per output row,
and each input row quantized as it comes, with its own scale, to 8 bits. oneDNN multiplies the
two with its int8 kernels (u8 x s8, the VNNI instructions), twice as many products per
instruction as bfloat16's; the error is the activations' 8-bit rounding on top of int8
weights' (perplexity in docs/benchmarks.md). The inputs go in as unsigned bytes with zero
point 128: oneDNN's s8 x s8 path ran a 32 x 576 x 3072 product in 1.3 s here, its u8 x s8 one
in 0.35 ms. The LM head stays in the model's dtype, as in W8A8 checkpoints (the compiled step
prepacks it; the eager one runs PyTorch's product).

`kernels="auto"` picks "onednn" where it applies (CPU, float32 or bfloat16, a PyTorch built
with oneDNN) and "eager" elsewhere; asking for "onednn", "int8", "int4" or "w8a8" where they do
not apply is an error that says why. Engines using them run one-token decode steps with
`decode_attention` (`DecodeAttention`).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..errors import InvalidArgumentError

KERNELS = ("auto", "eager", "onednn", "int8", "int4", "w8a8")
INT4_GROUP_SIZE = 32  # input columns per scale and zero point, as llama.cpp's Q4_1 blocks
# linear layers that read the same input, fused into one product by onednn, int8, int4, w8a8
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


class OneDNNLinear(nn.Module):
    """A frozen `nn.Linear` whose weight oneDNN reordered once; inference only."""

    def __init__(self, linear: nn.Linear, batch_hint: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        # an opaque oneDNN tensor: not a Parameter, so .to()/state_dict() do not see it
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.dtype = weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x @ W.T + b, for inputs of any leading shape."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        """Return the shape, as nn.Linear shows it."""
        return f"in_features={self.in_features}, out_features={self.out_features}, onednn"


def _int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return weight in int8 with one symmetric float32 scale per output row, and the scales."""
    scales = weight.float().abs().amax(dim=1).clamp(min=1e-12) / 127.0
    return (weight.float() / scales[:, None]).round().clamp(-127, 127).to(torch.int8), scales


class Int8WeightLinear(nn.Module):
    """A frozen `nn.Linear` with int8 weights, one symmetric scale per output row."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.qweight, scales = _int8_rows(weight)
        self.scales = scales.to(weight.dtype)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x @ dequant(W).T + b, for inputs of any leading shape."""
        flat = x.reshape(-1, self.in_features)
        out = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.qweight, self.scales)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        """Return the shape, as nn.Linear shows it."""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


class Int4WeightLinear(nn.Module):
    """A frozen `nn.Linear` with 4-bit weights: groups of INT4_GROUP_SIZE input columns, each
    with a scale and a zero point (asymmetric, as llama.cpp's Q4_1 blocks of 32), multiplied
    with PyTorch's `_weight_int4pack_mm_for_cpu` (the kernel torchao's int4 CPU layout
    calls). An eighth of float32's weight bytes, plus the scales and zero points."""

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP_SIZE) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.group_size = group_size
        weight = linear.weight.detach()
        n, k = weight.shape
        groups = weight.float().reshape(n, k // group_size, group_size)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scales = (high - low).clamp(min=1e-6) / 15
        zeros = low + 8 * scales  # the kernel computes (q - 8) * scale + zero
        q = ((groups - low) / scales).round().clamp(0, 15).to(torch.int32).reshape(n, k)
        self.qweight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        # [K / group, N, 2]: what the kernel reads
        self.scales_zeros = torch.cat([scales, zeros], -1).to(weight.dtype).transpose(0, 1)
        self.scales_zeros = self.scales_zeros.contiguous()
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x @ dequant(W).T + b, for inputs of any leading shape."""
        flat = x.reshape(-1, self.in_features).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(
            flat, self.qweight, self.group_size, self.scales_zeros
        )
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        """Return the shape, as nn.Linear shows it."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, int4 weights "
            f"(groups of {self.group_size})"
        )


_W8A8_ZERO_POINT = 128  # int8 activations shifted to unsigned bytes: oneDNN's fast u8 x s8 path


@functools.cache
def _allow_qlinear_prepack_in_graphs() -> None:
    """Give `onednn::qlinear_prepack` a shape-only (fake) implementation, which PyTorch lacks,
    so torch.compile traces it. Inductor's freezing then runs it once on the frozen int8
    weight and keeps the packed weight as a constant, as it does for the packs it inserts
    itself; without it dynamo breaks the graph there and the packed weight is an input."""
    try:
        torch.library.register_fake("onednn::qlinear_prepack")(
            lambda weight, x_shape: weight.new_empty((weight.shape[1], weight.shape[0]))
        )
    except RuntimeError:  # registered already (a later PyTorch's own)
        pass


class Int8DynamicLinear(nn.Module):
    """A frozen `nn.Linear` computed in int8 (W8A8): int8 weights, one symmetric scale per
    output row; each input row quantized to 8 bits with a scale of its own at every call
    (dynamic, per token), multiplied with oneDNN's int8 kernel, then scaled back."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        _allow_qlinear_prepack_in_graphs()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        qweight, scales = _int8_rows(linear.weight.detach())
        # parameters, so that a compiled graph freezes them as constants (and packs them)
        self.qweight = nn.Parameter(qweight, requires_grad=False)
        self.scales = nn.Parameter(scales, requires_grad=False)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.dtype = linear.weight.dtype
        # eager calls read a weight packed once here; an opaque oneDNN tensor (not a
        # Parameter), so .to()/state_dict() do not see it
        self.packed = torch.ops.onednn.qlinear_prepack(qweight, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x @ dequant(W).T + b with x rounded to 8 bits per row."""
        flat = x.reshape(-1, self.in_features).float()
        row_scales = flat.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127.0
        q = ((flat / row_scales).round() + _W8A8_ZERO_POINT).clamp(0, 255).to(torch.uint8)
        compiling = torch.compiler.is_compiling()
        packed = torch.ops.onednn.qlinear_prepack(self.qweight, None) if compiling else self.packed
        out = torch.ops.onednn.qlinear_pointwise(
            q, 1.0, _W8A8_ZERO_POINT, packed, self.scales, None, None, 1.0, 0, torch.float32,
            "none", [], "",
        )  # fmt: skip
        out = (out * row_scales).to(self.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        """Return the shape, as nn.Linear shows it."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, int8 weights "
            "and activations"
        )


@functools.cache  # the CPU does not change: checked once per process
def int8_activations_unavailable() -> str | None:
    """Return why w8a8 kernels cannot run on this machine (None: they can).

    Without VNNI, oneDNN's u8 x s8 kernels add pairs of products in 16 bits, which saturate
    for large inputs: one worst-case product is checked against its exact value.
    """
    if not hasattr(torch.ops.onednn, "qlinear_pointwise"):
        return "this PyTorch build has no oneDNN int8 linear kernel"
    weight = torch.full((8, 64), 127, dtype=torch.int8)
    x = torch.full((2, 64), 255, dtype=torch.uint8)
    packed = torch.ops.onednn.qlinear_prepack(weight, None)
    out = torch.ops.onednn.qlinear_pointwise(
        x, 1.0, 0, packed, torch.ones(8), None, None, 1.0, 0, torch.float32, "none", [], ""
    )
    if not torch.equal(out, torch.full((2, 8), 255.0 * 127 * 64)):
        return "this CPU's int8 kernels saturate (no VNNI instructions)"
    return None


class SharedProjection(nn.Module):
    """Linear layers that read the same input, run as one product: one weight read, one call.

    A model calls its parts (`ProjectionPart`) one after the other on the same tensor, as a
    Llama layer calls q_proj, k_proj and v_proj, or gate_proj and up_proj. The first call runs
    the fused product; the others take their slice of it. Once every part has had its slice
    the output is let go, so no activation outlives its layer.
    """

    def __init__(self, fused: nn.Module, sizes: list[int]) -> None:
        super().__init__()
        self.fused = fused
        self.sizes = sizes
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()
        self._taken: set[int] = set()

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Return part index of the fused product of x, computing it once per input."""
        if x is not self._input or index in self._taken:
            self._input, self._outputs, self._taken = x, self.fused(x).split(self.sizes, -1), set()
        self._taken.add(index)
        out = self._outputs[index]
        if len(self._taken) == len(self.sizes):
            self._input, self._outputs, self._taken = None, (), set()
        return out


class ProjectionPart(nn.Module):
    """One linear layer of a `SharedProjection`: its slice of the fused output."""

    def __init__(self, shared: SharedProjection, index: int, in_features: int) -> None:
        super().__init__()
        self.shared, self.index = shared, index
        self.in_features, self.out_features = in_features, shared.sizes[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return this layer's output for x."""
        return self.shared.part(x, self.index)

    def extra_repr(self) -> str:
        """Return the shape and which fused product it is part of."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, part {self.index}"
        )


def _fuse_projections(model: nn.Module, pack) -> None:
    """Replace each group of `FUSED_GROUPS` linears of one module by parts of one product."""
    for parent in list(model.modules()):
        for names in FUSED_GROUPS:
            found = [getattr(parent, n, None) for n in names]
            layers = [m for m in found if isinstance(m, nn.Linear) and type(m) is nn.Linear]
            if len(layers) != len(names):
                continue
            first = layers[0]
            same = {
                (m.in_features, m.weight.dtype, m.weight.device, m.bias is None) for m in layers
            }
            if len(same) != 1:
                continue
            fused = nn.Linear(first.in_features, sum(m.out_features for m in layers),
                              bias=first.bias is not None, device="meta")  # fmt: skip
            fused.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]), False)
            if first.bias is not None:
                fused.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]), False)
            shared = SharedProjection(pack(fused), [m.out_features for m in layers])
            for i, name in enumerate(names):
                setattr(parent, name, ProjectionPart(shared, i, first.in_features))


def fuse_plain_projections(model: nn.Module) -> None:
    """Fuse each `FUSED_GROUPS` group of plain nn.Linear layers into one plain nn.Linear: what
    the compiled decode step compiles.

    Inductor prepacks each plain linear weight for oneDNN itself when it freezes a graph, but
    only the products it is given: q/k/v stay three products and gate/up two. Fused, the
    compiled step on smollm2-135m ran 17.1 ms a step at batch 8 against 18.9 (bfloat16, one
    thread, same weight bytes).
    """
    with torch.no_grad():
        _fuse_projections(model, lambda linear: linear)


def weight_bytes(model: nn.Module) -> int:
    """Return the bytes of linear-layer weights one forward reads (what a decode step streams)."""
    total = 0
    for m in model.modules():
        if type(m) is nn.Linear:
            total += m.weight.numel() * m.weight.element_size()
        elif isinstance(m, OneDNNLinear):
            total += m.in_features * m.out_features * m.dtype.itemsize
        elif isinstance(m, (Int8WeightLinear, Int8DynamicLinear)):
            total += m.qweight.numel() + m.scales.numel() * m.scales.element_size()
        elif isinstance(m, Int4WeightLinear):
            total += m.in_features * m.out_features // 2
            total += m.scales_zeros.numel() * m.scales_zeros.element_size()
    return total


def onednn_unavailable(model: nn.Module) -> str | None:
    """Return why oneDNN linears do not apply to model (None: they do)."""
    param = next(model.parameters(), None)
    if param is None:
        return "the model has no weights"
    if param.device.type != "cpu":
        return f"the model is on {param.device.type}, and prepacked oneDNN linears are for CPUs"
    if param.dtype not in _ONEDNN_DTYPES:
        return f"the model is in {param.dtype}; oneDNN prepacking takes float32 or bfloat16"
    if not torch.backends.mkldnn.is_available() or not hasattr(
        torch.ops.mkldnn, "_reorder_linear_weight"
    ):
        return "this PyTorch build has no oneDNN (mkldnn) linear kernels"
    return None


def resolve_kernels(kernels: str, model: nn.Module) -> str:
    """Turn 'auto' into 'onednn' where it applies, else 'eager'; check an explicit choice."""
    if kernels not in KERNELS:
        raise InvalidArgumentError(f"unknown kernels {kernels!r}; use one of {', '.join(KERNELS)}")
    why = onednn_unavailable(model)
    if kernels == "auto":
        return "eager" if why else "onednn"
    if kernels == "w8a8" and not why:
        why = int8_activations_unavailable()
    if kernels in ("onednn", "int8", "int4", "w8a8") and why:
        raise InvalidArgumentError(
            f"kernels {kernels!r} do not apply: {why}; use 'eager' or 'auto'."
        )
    return kernels


def use_kernels(model: nn.Module, kernels: str, batch_hint: int = 32) -> str:
    """Switch model's plain nn.Linear layers to the chosen kernels, in place; return the choice.

    batch_hint is the number of rows the layers will usually see (the decode batch); oneDNN
    picks its weight layout for it, and any other row count still works.
    """
    chosen = resolve_kernels(kernels, model)
    if chosen in ("onednn", "int8", "int4", "w8a8"):

        def pack(linear: nn.Linear) -> nn.Module:
            if chosen == "onednn":
                return OneDNNLinear(linear, batch_hint)
            if chosen == "w8a8":
                return Int8DynamicLinear(linear)
            if chosen == "int4" and linear.in_features % INT4_GROUP_SIZE == 0:
                return Int4WeightLinear(linear)
            return Int8WeightLinear(linear)  # int8, or a layer int4's groups do not divide

        # w8a8 leaves the LM head in the model's dtype, as W8A8 checkpoints do (vLLM's,
        # llm-compressor's): on smollm2-135m its 8-bit inputs alone cost 0.7 of perplexity
        get_head = getattr(model, "get_output_embeddings", None)
        head = get_head() if chosen == "w8a8" and callable(get_head) else None
        with torch.no_grad():
            _fuse_projections(model, pack)
            for parent in list(model.modules()):
                for name, child in list(parent.named_children()):
                    # not subclasses (quantized, LoRA) nor ours
                    if type(child) is nn.Linear and child is not head:
                        setattr(parent, name, pack(child))
    return chosen


DECODE_ATTENTION = "deploykit_decode"
_UNHANDLED = ("softcap", "sliding_window", "s_aux")  # attention variants left to SDPA


def decode_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Attention for short query blocks (decode steps): grouped KV heads without copies.

    query [B, H, L, D], key/value [B, KV, T, D], H = KV x G. transformers' eager attention
    first copies each KV head G times (`repeat_kv`); here the G query heads of a KV head are
    stacked into one matrix instead, so each layer runs two small products over the cache
    as it is. Softmax in float32, as eager does. Models with soft-capping, sliding windows
    or attention sinks go to SDPA.
    """
    if dropout or any(kwargs.get(name) is not None for name in _UNHANDLED):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    b, h, length, d = query.shape
    kv, t = key.shape[1], key.shape[2]
    g = h // kv
    scores = torch.matmul(query.reshape(b, kv, g * length, d), key.transpose(2, 3)) * scaling
    if attention_mask is not None:  # [B, 1, L, T] additive
        scores = scores.view(b, kv, g, length, t) + attention_mask[:, :, None, :, :t]
        scores = scores.view(b, kv, g * length, t)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value).view(b, h, length, d)
    return out.transpose(1, 2).contiguous(), None


def _register_decode_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(DECODE_ATTENTION, decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, eager_mask)


class DecodeAttention:
    """Run prefill with the model's own attention and one-token decode steps with another.

    decode: an attention implementation name, or "deploykit" for `decode_attention`. At one
    query row per sequence, PyTorch's CPU SDPA kernel (flash attention, built for long query
    blocks) took twice as long per decode step at 32 rows and 200 cached tokens as
    `decode_attention` (docs/benchmarks.md, `deploykit bench kernels`). Prefill keeps the
    model's own attention, which does not materialise a prompt's full score matrix.
    """

    def __init__(self, model: nn.Module, decode: str | None) -> None:
        if decode == "deploykit":
            _register_decode_attention()
            decode = DECODE_ATTENTION
        self.model = model
        self.prefill_impl = model.config._attn_implementation
        self.decode_impl = decode or self.prefill_impl
        self._current = self.prefill_impl

    @classmethod
    def for_kernels(
        cls, model: nn.Module, kernels: str, decode_step: object | None = None
    ) -> DecodeAttention:
        """Return the switch an engine uses with kernels: `decode_attention` unless eager.

        decode_step: the step that runs decode instead of the model's forward (deploykit's,
        `decode_step.py`); then the model's attention serves prefill only, and never switches.
        """
        eager = kernels == "eager" or decode_step is not None
        return cls(model, None if eager else "deploykit")

    def use(self, phase: str) -> None:
        """Switch the model to the attention of phase ("prefill" or "decode") if it is not on it."""
        want = self.decode_impl if phase == "decode" else self.prefill_impl
        if want != self._current:
            self.model.set_attn_implementation(want)
            self._current = want
