"""Benchmark every quantization method side by side and write the table to docs/benchmarks.md.

    HF_HUB_OFFLINE=1 deploykit bench quantize --write-doc docs/benchmarks.md

Loads smollm2-135m once per method (fp32, bf16, fp16 and bitsandbytes int8, nf4, nf4-dq,
fp4 in transformers) and serves its f16, q8_0 and shipped Q4_1 GGUF files on llama.cpp,
all at once; then measures them in interleaved rounds (`measure_quantization`). Not a
test: it prints the section and rewrites only its own section of the doc.
"""

from __future__ import annotations

import argparse

from ..argtypes import positive_int
from ..models.quantization import QUANTIZATIONS
from ..quantize.measure import GGUF_TYPES, measure_quantization, quantization_table
from .harness import add_write_doc, command_line, publish


def configure(ap: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to its `deploykit bench quantize` parser."""
    ap.add_argument("--model", default="smollm2-135m", help="built-in name or local folder")
    ap.add_argument(
        "--methods",
        nargs="*",
        default=list(QUANTIZATIONS),
        help=f"presets to load in transformers (default: {' '.join(QUANTIZATIONS)})",
    )
    ap.add_argument(
        "--gguf",
        nargs="*",
        default=list(GGUF_TYPES),
        help="GGUF types to serve on llama.cpp: f16, q8_0, f32, bf16, shipped "
        "(default: f16 q8_0 shipped; none: --gguf with no value)",
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument(
        "--windows", type=positive_int, default=16, help="held-out windows scored for perplexity"
    )
    ap.add_argument("--seq-len", type=positive_int, default=128, help="tokens per window")
    ap.add_argument(
        "--max-tokens",
        type=positive_int,
        default=32,
        help="tokens generated per request when timing",
    )
    ap.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[1, 8])
    ap.add_argument(
        "--repeats",
        type=positive_int,
        default=5,
        help="interleaved timed rounds; the median is reported",
    )
    ap.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="torch threads and llama.cpp threads (default 1: on a busy machine "
        "more threads than free cores make every figure noisier)",
    )
    ap.add_argument(
        "--no-interleave",
        action="store_true",
        help="load one method at a time (a GPU that cannot hold them all)",
    )
    add_write_doc(ap)


def _speed_line(df) -> str | None:
    """Return the doc line with each method's decode speed relative to fp32, per batch size."""
    if "fp32" not in df.index:
        return None
    speed = [c for c in df.columns if c.startswith("tokens_per_s_batch")]
    parts = []
    for method, r in df.iterrows():
        if method == "fp32":
            continue
        ratios = ", ".join(
            f"{r[c] / df.loc['fp32', c]:.2f}x at batch {c.rsplit('batch', 1)[1]}" for c in speed
        )
        parts.append(f"`{method}` {ratios}")
    return "- Decode speed relative to fp32 (same rounds): " + "; ".join(parts) + "."


def _repack_line(df, device: str) -> str | None:
    """Return the doc line on bitsandbytes' CPU repacking, where it applies."""
    if device != "cpu" or not {"nf4", "nf4-dq"} <= set(df.index):
        return None
    same = abs(df.loc["nf4", "weight_bytes"] - df.loc["nf4-dq", "weight_bytes"]) < 1e4
    return (
        "- 4-bit bytes are measured after the first forward pass: on CPUs with AVX512-BF16, "
        "bitsandbytes repacks each 4-bit layer there for its fused kernel, with bf16 "
        "scales (0.25 bit per weight instead of 0.5 as loaded) and the double quantization "
        "undone" + (", which is why `nf4-dq` saves nothing over `nf4` here." if same else ".")
    )


def body(df, command: str) -> str:
    """Return the doc section for a measurement."""
    c = df.attrs["conditions"]
    before, after = c["before"], c["after"]
    gguf = df[df["engine"] == "llama.cpp"]
    files = "; ".join(f"`{m}` {r['file_bytes'] / 1e6:,.1f} MB" for m, r in gguf.iterrows())
    lines = [
        f"## Quantization on {c['model']}",
        "",
        f"Every method loaded at once on {c['device']} and timed in {c['repeats']} interleaved "
        "rounds (every method once per round, rotated order, after a warm-up); the table gives "
        "the median round. Perplexity scores the same "
        f"{c['scored_tokens']:,} held-out tokens ({c['windows']} windows of {c['seq_len']}, the "
        "stdlib docstrings the built-in models never trained on) for every row. Decode speed: "
        f"{c['max_tokens']} greedy tokens per request without early stop, batch = identical "
        f"requests at once, prompt {c['prompt']!r}, wall time including the short prefill. "
        f"Greedy answer: the first {c['answer_tokens']} tokens for the chat message "
        f"{c['question']!r}.",
        "",
        quantization_table(df),
        "",
        "- Weights: bytes of the real tensors, each storage once (packed 4-bit weights, "
        "per-block and per-row scales and codebooks included); `x fp32` is that over the same "
        "parameters in float32, and `linear layers x fp32` the same for the attention and MLP "
        "projections alone (what bitsandbytes quantizes; embeddings, norms and the tied LM head "
        "stay in the compute dtype, float32 on this CPU). GGUF rows count the file's tensors"
        + (f"; whole files: {files}." if files else "."),
        "- smollm2-135m's float32 weights are its shipped Q4_1 GGUF dequantized exactly, so "
        "`fp32` is already a 4-bit model, and `gguf Q4_1 (shipped)` holds the same weights: "
        "the other rows re-quantize it. The perplexity ratios are the extra loss of each "
        "format on top of that, not the loss from the original bf16 release.",
        "- llama.cpp rows: llama.cpp's own server (xllamacpp) with its own kernels; its "
        "perplexity comes from its own logits, each window's tokens forced through "
        "`/completion` (a token-id grammar, `n_probs: 1`, `post_sampling_probs: false`), "
        "so it scores exactly the tokens the transformers rows score. Load time there is "
        "the server's start until /health answers (a new process included).",
        _speed_line(df),
        _repack_line(df, c["device"]),
        None
        if c["device"].startswith("cuda")
        else (
            "- On a GPU: not measured yet (no GPU was lent for this run). The code is "
            "CUDA-ready: `--device cuda --gguf` measures the same methods there (no GGUF "
            "rows: the xllamacpp wheel runs llama.cpp on the CPU)."
        ),
        f"- Machine: {before['cpu']}; device {c['device']}"
        + (f" ({before['gpu']})" if "gpu" in before else "")
        + f"; {c['threads']} thread(s) for torch and for llama.cpp.",
        f"- Software: torch {before['torch']}, transformers {before['transformers']}, "
        f"bitsandbytes {before.get('bitsandbytes', '-')}, Python {before['python']}.",
        f"- Load average (1/5/15 min) before: {before.get('load_average', '-')}; after: "
        f"{after.get('load_average', '-')}. Compare rows within this run, not across runs.",
        f"- Run {c['started']} to {c['finished']}.",
        f"- Command: `{command}`",
        "",
    ]
    return "\n".join(line for line in lines if line is not None)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed arguments; print the section (and write it if asked)."""
    df = measure_quantization(
        args.model,
        args.methods,
        gguf=args.gguf,
        device=args.device,
        windows=args.windows,
        seq_len=args.seq_len,
        max_tokens=args.max_tokens,
        batch_sizes=args.batch_sizes,
        repeats=args.repeats,
        threads=args.threads,
        interleave=not args.no_interleave,
    )
    text = body(df, command_line("quantize", args))
    publish(text, args.write_doc, text.splitlines()[0])
    return 0
