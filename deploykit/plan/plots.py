"""The memory planner's plots: KV-cache growth per model, and what the serving knobs buy."""

from __future__ import annotations

from collections.abc import Sequence

from .memory import ModelConfig, memory_plan

_GIB = 1 << 30


def plot_kv_growth(
    configs: Sequence[ModelConfig],
    gpu: str,
    context_len_tokens: int = 4096,
    reference_model: str = "Llama-3.1-8B",
    kv_dtype: str = "bf16",
):
    """Plot KV-cache bytes of one sequence vs context, and of a batch vs its size, per model.

    The dashed line is the KV room left on `gpu` next to `reference_model`'s weights. Models
    with the same KV bytes per token would draw the same line, so they share one, named for
    all of them; each line keeps its colour in both panels, and the legend sits below them.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    contexts = [2**k for k in range(10, 18)]
    batches = [1, 2, 4, 8, 16, 32, 64, 128]
    room = memory_plan(reference_model, gpu, context_len_tokens=context_len_tokens).kv_cache_bytes
    lines: dict[int, list[str]] = {}  # KV bytes per token -> models (in the order given)
    for c in configs:
        lines.setdefault(c.kv_bytes_per_token(kv_dtype), []).append(c.name)
    fig, (ax_ctx, ax_batch) = plt.subplots(1, 2, figsize=(10, 3.9), dpi=90)
    for per_token, names in lines.items():
        label = " = ".join(names) + (" (same KV per token)" if len(names) > 1 else "")
        (line,) = ax_ctx.plot(
            contexts, [per_token * n / _GIB for n in contexts], marker="o", label=label
        )
        ax_batch.plot(
            batches,
            [per_token * context_len_tokens * b / _GIB for b in batches],
            marker="o",
            color=line.get_color(),
        )
    for ax in (ax_ctx, ax_batch):
        ax.axhline(
            room / _GIB,
            color="gray",
            ls="--",
            label=f"KV room on {gpu} next to {reference_model}" if ax is ax_ctx else None,
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_count))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylabel(f"KV cache (GiB, {kv_dtype})")
        ax.grid(True, alpha=0.3)
    ax_ctx.set_title("one sequence")
    ax_ctx.set_xlabel("context length of one sequence (tokens)")
    ax_batch.set_title(f"a batch of {context_len_tokens}-token sequences")
    ax_batch.set_xlabel(f"sequences of {context_len_tokens} tokens")
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def plot_plan_knobs(
    model: str,
    gpu: str,
    context_len_tokens: int = 4096,
    utilizations: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95),
    step_sizes: Sequence[int] = (2048, 4096, 8192, 16384, 32768),
):
    """Plot what gpu_memory_utilization (bf16 vs fp8 KV) and max_num_batched_tokens buy."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (ax_u, ax_s) = plt.subplots(1, 2, figsize=(10, 3.1), dpi=90)
    for kv_dtype in ("bf16", "fp8"):
        seqs = [
            memory_plan(
                model,
                gpu,
                gpu_memory_utilization=u,
                kv_dtype=kv_dtype,
                context_len_tokens=context_len_tokens,
            ).max_concurrent_seqs
            for u in utilizations
        ]
        ax_u.plot(utilizations, seqs, marker="o", label=f"{kv_dtype} KV")
    ax_u.set_xlabel("gpu_memory_utilization")
    ax_u.set_ylabel(f"sequences of {context_len_tokens} tokens")
    ax_u.legend()
    capacity = [
        memory_plan(
            model, gpu, max_num_batched_tokens=s, context_len_tokens=context_len_tokens
        ).kv_capacity_tokens
        / 1e3
        for s in step_sizes
    ]
    ax_s.plot(step_sizes, capacity, marker="o")
    ax_s.set_xscale("log", base=2)
    ax_s.xaxis.set_major_formatter(FuncFormatter(_count))
    ax_s.set_xlabel("max_num_batched_tokens")
    ax_s.set_ylabel("KV capacity (thousand tokens)")
    for ax in (ax_u, ax_s):
        ax.set_title(f"{model} on {gpu}")
        ax.set_ylim(bottom=0)  # from zero: the changes are read as shares of the whole
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def _count(value: float, _pos=None) -> str:
    """Return a power-of-two tick as 1, 2, ..., 512, 1k, 2k, ... (k = 1,024)."""
    return f"{value / 1024:g}k" if value >= 1024 else f"{value:g}"
