"""Load-time causes, from a planned configuration and a server's log: OOM, and the dtype.

The seed's fix for "OOM on load" was "use quantization". That holds only when the weights are
what does not fit; the KV cache a context length asks for often is (a 2,048-token context for
64 sequences can outweigh a small model many times), and then quantizing weights saves too
little. Here the planner's arithmetic splits the need into weights and KV cache and says what
fits: the context length, the sequences at once, the KV space, or the weight format.

The dtype check: an engine computing in bf16 or fp16 on hardware without native support
for it runs emulated arithmetic, with no warning (vLLM-CPU logs only "Downcasting
torch.float32 to torch.bfloat16" at INFO). The evidence is the engine's dtype (its log or the
planned arguments), the CPU's flags, and a timed matrix product in both dtypes on this CPU.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .diagnosis import Diagnosis

GIB = 1 << 30
# what servers print when memory runs out while loading (vLLM, torch, llama.cpp, the kernel)
OOM_PATTERNS = (
    r"CUDA out of memory",
    r"OutOfMemoryError",
    r"Cannot allocate memory",
    r"failed to allocate",
    r"std::bad_alloc",
    r"unable to allocate",
    r"insufficient memory",
    r"No available memory for the cache blocks",
    r"larger than the available KV cache memory",
    r"KV cache is needed, which is larger than",
    r"failed to initialize the context",
    r"out of memory",
)
_DTYPE_LINES = (
    (r"Downcasting torch\.float32 to torch\.(bfloat16|float16)", "the log"),
    (r"dtype=torch\.(bfloat16|float16|float32)", "the engine's configuration in the log"),
    (r"dtype (?:torch\.)?(bfloat16|float16|float32)\)", "the log"),
)


def read_log(path: str | Path | BaseException | None, max_bytes: int = 2_000_000) -> str:
    """Return the end of a log file ('' when there is none); an error such as ServerStartError
    stands for the log tail its message carries."""
    if path is None:
        return ""
    if isinstance(path, BaseException):
        return str(path)
    p = Path(path)
    if not p.is_file():
        return ""
    with p.open("rb") as f:
        f.seek(max(0, p.stat().st_size - max_bytes))
        return f.read().decode("utf-8", "replace")


def oom_lines(log: str) -> list[str]:
    """Return the log lines that say memory ran out."""
    pattern = re.compile("|".join(OOM_PATTERNS), re.I)
    return [line.strip()[:200] for line in log.splitlines() if pattern.search(line)]


@dataclass(frozen=True)
class Planned:
    """A configuration's memory, as the planner sees it (bytes and tokens)."""

    engine: str
    model: str
    device: str  # "cpu" or a GPU's name
    memory_bytes: int  # what the process may use
    weights: str
    weight_bytes: int
    kv_bytes_per_token: int
    context_tokens: int  # tokens the KV cache must hold for one full sequence
    seqs: int  # sequences held at once (llama.cpp: the slots share context_tokens)
    kv_budget_bytes: int | None = None  # an explicit KV space (vLLM-CPU), else what is left
    dtype: str | None = None
    shares_context: bool = False  # llama.cpp: ctx_size is split over the slots
    trained_tokens: int | None = None  # the model's max_position_embeddings
    weight_options: tuple[tuple[str, int], ...] = ()  # (format, bytes) it could be stored in

    @property
    def kv_bytes(self) -> int:
        seqs = 1 if self.shares_context else self.seqs
        return self.kv_bytes_per_token * self.context_tokens * seqs

    @property
    def overhead_bytes(self) -> int:
        return GIB // 4 if self.device == "cpu" else GIB // 2


def planned(plan: Any) -> Planned:
    """Return the memory view of a planned configuration.

    plan: `VLLMArgs` or `LlamaCppArgs` (served on this machine's CPU), or a dict with
    model, and gpu (a catalog name) or memory_bytes, and optionally weights, context_tokens,
    seqs, engine.
    """
    from ..engines.llamacpp import LlamaCppArgs
    from ..engines.vllm import VLLMArgs
    from ..plan.memory import model_config

    available = psutil.virtual_memory().available
    if isinstance(plan, LlamaCppArgs):
        config = model_config(plan.model)
        gguf = plan.gguf_path()
        return Planned(
            "llama.cpp",
            plan.model,
            "cpu",
            available,
            f"GGUF ({gguf.name})",
            gguf.stat().st_size,
            config.kv_bytes_per_token("fp16"),  # llama.cpp's default cache type: f16
            plan.ctx_size,
            plan.n_parallel,
            shares_context=True,
            trained_tokens=config.max_position_embeddings,
        )
    if isinstance(plan, VLLMArgs):
        config = model_config(plan.model)
        kv_dtype = "fp32" if plan.dtype in ("float32", "float") else "bf16"
        budget = plan.kv_cache_memory_bytes or (
            plan.cpu_kvcache_space_gib * GIB if plan.cpu_kvcache_space_gib else 4 * GIB
        )  # vLLM-CPU's default KV space: 4 GiB
        return Planned(
            "vLLM",
            plan.model,
            "cpu",
            available,
            kv_dtype,
            config.weight_bytes(kv_dtype),
            config.kv_bytes_per_token(kv_dtype),
            plan.max_model_len or config.max_position_embeddings,
            1,
            kv_budget_bytes=budget,
            dtype=plan.dtype,
            trained_tokens=config.max_position_embeddings,
        )
    if isinstance(plan, dict):
        from ..plan.memory import gpu

        config = model_config(plan["model"])
        weights = plan.get("weights", "bf16")
        if "gpu" in plan:
            card = gpu(plan["gpu"])
            memory = int(card.memory_bytes * plan.get("gpu_memory_utilization", 0.9))
            device = card.name
        else:
            memory, device = int(plan.get("memory_bytes", available)), "cpu"
        return Planned(
            plan.get("engine", "vLLM"),
            str(plan["model"]),
            device,
            memory,
            weights,
            config.weight_bytes(weights),
            config.kv_bytes_per_token(
                plan.get("kv_dtype", "bf16" if weights != "fp32" else "fp32")
            ),
            int(plan.get("context_tokens", config.max_position_embeddings)),
            int(plan.get("seqs", 1)),
            trained_tokens=config.max_position_embeddings,
            weight_options=tuple((w, config.weight_bytes(w)) for w in ("int8", "nf4")),
        )
    raise TypeError(
        f"plan must be VLLMArgs, LlamaCppArgs or a dict (model, gpu or memory_bytes, ...), "
        f"not {type(plan).__name__}"
    )


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def diagnose_oom(plan: Any | None, log: str) -> Diagnosis | None:
    """Return the OOM diagnosis when the log says memory ran out or the plan cannot fit."""
    lines = oom_lines(log)
    p = planned(plan) if plan is not None else None
    if p is None:
        if not lines:
            return None
        return Diagnosis(
            "oom_on_load",
            "The server ran out of memory while loading",
            tuple(f"log: {line}" for line in lines[:3]),
            "Give doctor the planned configuration (`plan=` the engine's arguments, or "
            "`deploykit doctor --plan`) so it can say whether the weights or the KV cache do "
            "not fit; lowering the context length or the sequences at once fixes the second, "
            "quantization only the first.",
        )
    if p.kv_budget_bytes is not None:  # vLLM-CPU: the KV space is fixed, the context must fit
        fits = (
            p.kv_bytes <= p.kv_budget_bytes and p.weight_bytes + p.kv_budget_bytes <= p.memory_bytes
        )
        if fits and not lines:
            return None
        max_ctx = p.kv_budget_bytes // p.kv_bytes_per_token
        evidence = [
            *(f"log: {line}" for line in lines[:2]),
            f"planner: one {p.context_tokens:,}-token sequence needs {_gib(p.kv_bytes)} of KV "
            f"cache ({p.kv_bytes_per_token:,} bytes per token in {p.weights}); the KV space is "
            f"{_gib(p.kv_budget_bytes)}",
            f"planner: weights {_gib(p.weight_bytes)}, memory available {_gib(p.memory_bytes)}",
        ]
        need_gib = math.ceil(p.kv_bytes / GIB)
        return Diagnosis(
            "oom_on_load",
            "The KV cache cannot hold one sequence of the configured context",
            tuple(evidence),
            f"Lower max_model_len to at most {max_ctx:,} tokens, or raise the KV space to "
            f"{need_gib} GiB (VLLM_CPU_KVCACHE_SPACE={need_gib}, or kv_cache_memory_bytes; "
            "on GPUs gpu_memory_utilization). Quantizing the weights would not help: the KV "
            "cache is what does not fit.",
        )
    need = p.weight_bytes + p.kv_bytes + p.overhead_bytes
    if need <= p.memory_bytes and not lines:
        return None
    room = p.memory_bytes - p.overhead_bytes - p.weight_bytes
    per_context = p.kv_bytes_per_token * (1 if p.shares_context else p.seqs)
    max_ctx = max(0, room // per_context) if per_context else 0
    evidence = [
        *(f"log: {line}" for line in lines[:2]),
        f"planner: weights {_gib(p.weight_bytes)} ({p.weights}) + KV cache {_gib(p.kv_bytes)} "
        f"({p.context_tokens:,} tokens x {p.kv_bytes_per_token:,} bytes"
        f"{'' if p.shares_context or p.seqs == 1 else f' x {p.seqs} sequences'}) + runtime "
        f"{_gib(p.overhead_bytes)} = {_gib(need)}; available on {p.device}: {_gib(p.memory_bytes)}",
    ]
    if p.kv_bytes >= p.weight_bytes:
        ctx_name = "ctx_size" if p.engine == "llama.cpp" else "the context length"
        slots = p.seqs if p.shares_context else 1
        useful = p.trained_tokens * slots if p.trained_tokens else None
        advice = (
            f"{useful:,} (the model's trained context, {p.trained_tokens:,} tokens"
            + (f", per slot over {slots} slots" if slots > 1 else "")
            + f"; at most {max_ctx:,} would fit)"
            if useful and useful <= max_ctx
            else f"at most {max_ctx:,} tokens"
        )
        fix = (
            f"The KV cache is what does not fit, not the weights: lower {ctx_name} to {advice}, "
            "or serve fewer sequences at once. Quantizing the weights (the seed's fix) "
            f"would save at most {_gib(p.weight_bytes)}, against {_gib(need - p.memory_bytes)} "
            "too many."
        )
    else:
        rest = p.kv_bytes + p.overhead_bytes
        fitting = [f"{w} ({_gib(b)})" for w, b in p.weight_options if b + rest <= p.memory_bytes]
        sizes = ", ".join(f"{w} {_gib(b)}" for w, b in p.weight_options)
        fix = (
            f"The weights do not fit, not the KV cache ({_gib(p.kv_bytes)} at this context): "
            + (
                f"quantize them to {' or '.join(fitting)}"
                if fitting
                else f"even quantized ({sizes}) they do not fit; split the model over several "
                "GPUs (tensor parallel) or use a device with more memory"
            )
            + "; the planner's table (`deploykit plan MODEL --gpu NAME`) shows every option."
        )
    return Diagnosis(
        "oom_on_load",
        f"{p.engine} cannot fit {p.model} with this configuration in memory",
        tuple(evidence),
        fix,
    )


# ---- the dtype ------------------------------------------------------------------------------


def engine_dtype(plan: Any | None, log: str) -> tuple[str | None, str]:
    """Return the dtype the engine computes in (bfloat16, float16, float32 or None) and where
    that was read."""
    for pattern, where in _DTYPE_LINES:
        found = re.findall(pattern, log)
        if found:
            return found[-1], f"{where} ({_first_match(pattern, log)})"
    if plan is not None:
        from ..engines.vllm import VLLMArgs

        if isinstance(plan, VLLMArgs):
            if plan.dtype in ("auto", "bfloat16"):
                return "bfloat16", f"VLLMArgs(dtype={plan.dtype!r}): vLLM-CPU computes in bf16"
            if plan.dtype in ("half", "float16"):
                return "float16", f"VLLMArgs(dtype={plan.dtype!r})"
            return "float32", f"VLLMArgs(dtype={plan.dtype!r})"
        if isinstance(plan, dict) and plan.get("dtype"):
            return str(plan["dtype"]), "the planned configuration"
    return None, "no log and no planned dtype"


def _first_match(pattern: str, log: str) -> str:
    m = re.search(pattern, log)
    return m.group(0) if m else ""


def cpu_flags() -> set[str]:
    """Return this CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


_NATIVE_FLAGS = {
    "bfloat16": ("avx512_bf16", "amx_bf16"),
    "float16": ("avx512_fp16", "amx_fp16"),
}


def matmul_slowdown(dtype: str, hidden: int = 576, batch: int = 8, reps: int = 40) -> float | None:
    """Return the time of a [batch, hidden] x [hidden, 4*hidden] product in dtype over float32's,
    on one thread of this CPU (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    target = getattr(torch, dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = {}
        for dt in (torch.float32, target):
            a = torch.randn(batch, hidden, dtype=dt)
            w = torch.randn(4 * hidden, hidden, dtype=dt)
            for _ in range(5):
                torch.nn.functional.linear(a, w)
            start = time.perf_counter()
            for _ in range(reps):
                torch.nn.functional.linear(a, w)
            times[dt] = time.perf_counter() - start
        return times[target] / times[torch.float32]
    finally:
        torch.set_num_threads(before)


def diagnose_dtype(
    plan: Any | None, log: str, local: bool, hidden: int = 576
) -> tuple[Diagnosis | None, str]:
    """Return the dtype diagnosis (or None) and a line saying what was checked."""
    dtype, where = engine_dtype(plan, log)
    if dtype in (None, "float32"):
        return None, f"compute dtype: {dtype or 'unknown'} ({where})"
    if not local:
        return None, f"compute dtype {dtype} ({where}); the server's CPU is not this one"
    flags = cpu_flags()
    native = [f for f in _NATIVE_FLAGS[dtype] if f in flags]
    slowdown = matmul_slowdown(dtype, hidden)
    measured = (
        f"a {dtype} matrix product of the model's width took {slowdown:.2f}x the time of "
        "float32 on one core here"
        if slowdown is not None
        else "no torch here to time it"
    )
    seen = f"compute dtype {dtype} ({where}); CPU flags {native or 'none'} of {_NATIVE_FLAGS[dtype]}; {measured}"
    emulated = not native or (slowdown is not None and slowdown > 1.5)
    if not emulated:
        return None, seen
    return (
        Diagnosis(
            "dtype_not_native",
            f"The engine computes in {dtype}, which this CPU does not run natively",
            (
                f"dtype: {where}",
                f"CPU flags: none of {', '.join(_NATIVE_FLAGS[dtype])}"
                if not native
                else f"CPU flags: {', '.join(native)}",
                measured,
                "vLLM says nothing about speed: it logs only 'Downcasting torch.float32 to "
                "torch.bfloat16' at INFO level",
            ),
            "Serve in float32 on this CPU: vLLM `--dtype float32` (dk.VLLMArgs(dtype='float32')), "
            "`deploykit serve --dtype float32`; keep bf16 for CPUs with AVX512-BF16 or AMX and "
            "for GPUs from Ampere on (on T4 or V100 use float16).",
        ),
        seen,
    )
