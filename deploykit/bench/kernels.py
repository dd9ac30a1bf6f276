"""The decode step alone, per dtype and kernels: time, bytes read, roofline and perplexity.

    HF_HUB_OFFLINE=1 deploykit bench kernels --write-doc docs/benchmarks.md

For each mode DTYPE:KERNELS[:STEP] (`models.kernels`: eager, onednn, int8, int4, w8a8; STEP
as `deploykit serve --decode-step`: auto, deploykit, compiled or transformers, auto when left
out) the model is loaded once and switched as deploykit's engine switches it; then, in interleaved rounds, the
engine's decode step (`server.kvbatch.KVBatch` with deploykit's `models.decode_step`, or the
model's forward with `decode_attention` for non-eager kernels, as the engine runs them) is
timed at each batch size over a cache of `--context` tokens per row.
Each row's roofline column is the weight bytes a step reads (every linear layer, lm_head
included; the KV cache is not counted) over the step's time, against this machine's copy
bandwidth measured in the same run (torch copying a buffer far larger than the caches,
bytes read plus bytes written, as STREAM counts them). Perplexity is over the held-out
windows of notebook 07 (`quantize.measure.held_out_windows`), so quality sits beside speed.
This is the A/B of each lever without HTTP; `deploykit bench engines` measures the servers.
Not a test: it measures, prints, and rewrites only its own section of the doc.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

from .._conditions import cpu_features, machine_conditions
from .._progress import progress_bar
from ..argtypes import positive_int
from ..errors import InvalidArgumentError
from ..models.decode_step import DECODE_STEPS
from ..models.devices import dtype_names
from ..models.kernels import KERNELS
from .harness import Measurement, Run, add_write_doc, command_line, publish

SECTION = "## Engine decode step: dtypes and kernels"
DEFAULT_MODES = (
    "float32:eager",
    "float32:onednn",
    "bfloat16:eager",
    "bfloat16:onednn:transformers",
    "bfloat16:onednn",
    "bfloat16:eager:compiled",
    "bfloat16:int8",
    "bfloat16:int4",
    "bfloat16:int4:compiled",
)


@dataclass
class ModeResult:
    """What one mode measured: step times per batch size, bytes per step, perplexity."""

    mode: str
    decode_step: str  # whose decode step ran: deploykit, compiled or transformers
    weight_bytes: int
    perplexity: float
    step_s: dict[int, list[float]] = field(default_factory=dict)
    first_step_s: dict[int, float] = field(default_factory=dict)  # round 1's untimed step

    def median_ms(self, batch: int) -> float:
        """Return the median step time at this batch size, in ms."""
        return 1000 * statistics.median(self.step_s[batch])


def parse_mode(text: str) -> tuple[str, str, str]:
    """Parse DTYPE:KERNELS[:STEP] into (torch dtype name, kernels, step), or say what is wrong."""
    dtype, _, rest = text.partition(":")
    kernels, _, step = rest.partition(":")
    step = step or "auto"
    if kernels not in KERNELS or kernels == "auto" or step not in DECODE_STEPS:
        raise InvalidArgumentError(
            f"--modes {text!r}: write DTYPE:KERNELS[:STEP], e.g. bfloat16:onednn or "
            "bfloat16:onednn:transformers; KERNELS is one of "
            f"{', '.join(k for k in KERNELS if k != 'auto')}, STEP one of {', '.join(DECODE_STEPS)}."
        )
    return dtype_names(dtype)[0], kernels, step


def copy_bandwidth_gb_s(mib: int = 512, repeats: int = 5) -> float:
    """Return a large tensor copy's bytes moved (read + written, as STREAM counts) per s, GB/s."""
    import torch

    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times[1:]) / 1e9


def _load(model: str, mode: str, batch_hint: int):
    from ..models import load_model
    from ..models.decode_step import decode_step_for, step_name
    from ..models.kernels import DecodeAttention, use_kernels, weight_bytes

    dtype, kernels, step = parse_mode(mode)
    lm = load_model(model, device="cpu", dtype=dtype, progress=False)
    use_kernels(lm.model, kernels, batch_hint=batch_hint)
    decode_step = decode_step_for(lm.model, kernels, step)
    attention = DecodeAttention.for_kernels(lm.model, kernels, decode_step)
    return lm, attention, decode_step, step_name(decode_step), weight_bytes(lm.model)


def _perplexity(lm, windows: list[list[int]]) -> float:
    import math

    import torch

    tokens = torch.tensor(windows)
    with torch.inference_mode():
        loss = lm.model(input_ids=tokens, labels=tokens).loss.float().item()
    return math.exp(loss)


def _time_steps(lm, attention, step, batch: int, context: int, steps: int) -> tuple[float, float]:
    """Return the first step's seconds (compiling, if compiled) and seconds per step after it,
    of batch rows over a cache of context tokens."""
    import torch

    from ..server.kvbatch import KVBatch

    with torch.inference_mode():
        kv = KVBatch("cpu")
        attention.use("prefill")
        kv.prefill(lm.model, [[lm.tokenizer.eos_token_id or 0] * context] * batch, 0)
        kv.set_last_tokens([1] * batch)
        attention.use("decode")
        start = time.perf_counter()
        kv.decode(lm.model, step)  # first step: allocations, or compiling
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            kv.decode(lm.model, step)
        return first, (time.perf_counter() - start) / steps


def measure_modes(args: argparse.Namespace) -> tuple[list[ModeResult], float]:
    """Load every mode, then time them in interleaved rounds; return results and copy GB/s."""
    import torch

    from ..quantize.measure import held_out_windows

    torch.set_num_threads(args.threads)
    loaded, results = {}, []
    for mode in progress_bar(args.modes, desc="loading modes", leave=False):
        lm, attention, step, who, nbytes = _load(args.model, mode, max(args.batch_sizes))
        windows = held_out_windows(lm.tokenizer, args.windows, args.seq_len)
        loaded[mode] = (lm, attention, step)
        results.append(ModeResult(mode, who, nbytes, _perplexity(lm, windows)))
    bandwidth = copy_bandwidth_gb_s()
    bar = progress_bar(total=args.rounds * len(args.modes), desc="decode steps", leave=False)
    for r in range(args.rounds):
        order = results[r % len(results) :] + results[: r % len(results)]
        for res in order:
            lm, attention, step = loaded[res.mode]
            for batch in args.batch_sizes:
                first, seconds = _time_steps(lm, attention, step, batch, args.context, args.steps)
                res.step_s.setdefault(batch, []).append(seconds)
                res.first_step_s.setdefault(batch, first)
            bar.update(1)
    bar.close()
    return results, bandwidth


def table(results: list[ModeResult], batch_sizes: list[int], bandwidth: float) -> str:
    """Return the markdown table: a row per mode and batch size."""
    base = results[0]
    lines = [
        "| mode (dtype:kernels[:step]) | decode step | batch | ms per step (median) | tokens/s | "
        f"vs {base.mode} | weight MB read per step | GB/s read (% of copy) | perplexity |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for res in results:
        for batch in batch_sizes:
            ms = res.median_ms(batch)
            ratio = statistics.median(b / m for b, m in zip(base.step_s[batch], res.step_s[batch]))
            gb_s = res.weight_bytes / (ms / 1000) / 1e9
            lines.append(
                f"| {res.mode} | {res.decode_step} | {batch} | {ms:.1f} | {batch / ms * 1000:,.0f} | {ratio:.2f}x | "
                f"{res.weight_bytes / 1e6:.0f} | {gb_s:.1f} ({100 * gb_s / bandwidth:.0f}%) | "
                f"{res.perplexity:.2f} |"
            )
    return "\n".join(lines)


def fastest_line(results: list[ModeResult], batch_sizes: list[int]) -> str:
    """Return the doc line naming the fastest mode at each batch size, with its perplexity."""
    base = results[0]
    parts = []
    for batch in batch_sizes:
        best = min(results, key=lambda r: r.median_ms(batch))
        parts.append(
            f"batch {batch}: {best.mode} ({base.median_ms(batch) / best.median_ms(batch):.2f}x "
            f"{base.mode}'s median step, perplexity {best.perplexity:.2f} against "
            f"{base.perplexity:.2f})"
        )
    return "- Fastest mode in this run: " + "; ".join(parts) + "."


def first_steps_line(results: list[ModeResult], batch_sizes: list[int]) -> str:
    """Return the doc line with each compiled mode's first steps (compiling), in seconds."""
    parts = [
        f"{res.mode}: "
        + ", ".join(f"{res.first_step_s[b]:.1f} s at batch {b}" for b in batch_sizes)
        for res in results
        if res.decode_step == "compiled"
    ]
    if not parts:
        return "- No compiled decode step in this run."
    return (
        "- First step of a compiled mode, compiling included (inductor's on-disk cache was "
        "as this machine had it): " + "; ".join(parts) + "."
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed arguments; print the section (and write it if asked)."""
    for mode in args.modes:
        parse_mode(mode)  # every mode checked before anything loads
    before = machine_conditions()
    results, bandwidth = measure_modes(args)
    done = Measurement(Run(), before, machine_conditions(), command_line("kernels", args))
    body = "\n".join(
        [
            SECTION,
            "",
            f"deploykit's decode step on {args.model}, without HTTP: {args.steps} steps per "
            f"batch size and round after one untimed step, each row over a cache of "
            f"{args.context} prompt tokens, {args.rounds} rounds with the modes interleaved; "
            f"the table gives the median step, the speed-up over {args.modes[0]} as the median "
            "of per-round ratios, and the weight bytes a step reads (linear layers and lm_head; "
            "not the KV cache) over its time against this machine's copy bandwidth, "
            f"{bandwidth:.1f} GB/s (a 512 MiB float32 copy in the same run, bytes read plus "
            "bytes written as STREAM counts them). "
            f"Perplexity: {args.windows} held-out windows of {args.seq_len} "
            "tokens (notebook 07's text).",
            "",
            table(results, args.batch_sizes, bandwidth),
            "",
            fastest_line(results, args.batch_sizes),
            first_steps_line(results, args.batch_sizes),
            f"- Machine: {before['cpu']}; {cpu_features()}; torch threads {args.threads}.",
            "- Kernels: eager is PyTorch's `nn.Linear` and SDPA attention; onednn prepacks "
            "every linear weight once for oneDNN; int8 is weight-only int8 (one scale per "
            "output row) through PyTorch's `_weight_int8pack_mm`; int4 is weight-only 4-bit "
            "(groups of 32 input columns, a scale and a zero point each, as llama.cpp's Q4_1) "
            "through `_weight_int4pack_mm_for_cpu`; w8a8 is int8 weights and activations "
            "(each input row rounded to 8 bits with its own scale as it comes, oneDNN's int8 "
            "kernel; the LM head left in the model's dtype) (`deploykit/models/kernels.py`).",
            "- Decode step: transformers is the model's forward (with deploykit's "
            "`decode_attention`, grouped KV heads without copies, unless eager); deploykit is "
            "`models/decode_step.py`, the same math in fewer operations (fused RMSNorm, rotary "
            "embedding without concatenation, one mask per step, float32 attention over small "
            "caches); compiled is deploykit's step through `torch.compile` (inductor, weights "
            "frozen in, dynamic shapes), on eager kernels (prepacked by inductor), int4 or "
            "w8a8 ones. A mode without :STEP runs what `deploykit serve` runs by default: "
            "deploykit's step unless the kernels are eager.",
            done.software_line(),
            done.load_line(),
            *done.closing_lines(),
        ]
    )
    publish(body, args.write_doc, SECTION)
    return 0


def configure(ap: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to its `deploykit bench kernels` parser."""
    ap.add_argument("--model", default="smollm2-135m", help="built-in name or local folder")
    ap.add_argument(
        "--modes",
        nargs="+",
        default=list(DEFAULT_MODES),
        help="DTYPE:KERNELS to compare, the first is the baseline (default: %(default)s)",
    )
    ap.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[1, 8, 32])
    ap.add_argument("--context", type=positive_int, default=64, help="prompt tokens per row")
    ap.add_argument("--steps", type=positive_int, default=16, help="timed steps per round")
    ap.add_argument("--rounds", type=positive_int, default=3)
    ap.add_argument("--windows", type=positive_int, default=8, help="held-out windows")
    ap.add_argument("--seq-len", type=positive_int, default=128, help="tokens per window")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    add_write_doc(ap)
