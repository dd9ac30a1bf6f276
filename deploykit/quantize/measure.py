"""Measure what each way of storing the weights costs and buys, side by side on one model.

`measure_quantization` loads the model once per method (and serves its GGUF files on
llama.cpp when asked), then reports per method: the bytes of the real weight tensors and
their ratio to float32, load time, decode tokens/s at each batch size, perplexity on the
same held-out tokens, and the greedy answer to one fixed prompt. Speed is timed in
interleaved rounds (every method once per round, in a rotated order) after a warm-up, so
a change in the machine's speed lands on every method alike; the median round is reported.
Not a benchmark writer: `python -m deploykit.quantize` runs this and writes the doc table.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._conditions import machine_conditions
from .._runtime import torch_threads as _torch_threads
from ..errors import InvalidArgumentError
from ..models import _build
from ..models.devices import resolve_device
from ..models.gguf import OUTTYPES, export_gguf
from ..models.load import load_model
from ..models.quantization import Quantization, available_quantizations, require_bitsandbytes
from ..models.resolve import resolve_model
from .weights import weight_bytes

DEFAULT_PROMPT = "The history of the printing press began"
DEFAULT_QUESTION = "What is the capital of France? Answer in one sentence."
GGUF_TYPES = ("f16", "q8_0", "shipped")  # shipped: the GGUF a built-in model came from


def held_out_windows(tokenizer, windows: int, seq_len: int) -> list[list[int]]:
    """Return the first `windows` windows of `seq_len` tokens of the held-out text.

    The text is the held-out docstrings the built-in models never trained on, each doc's
    ids followed by eos, cut into non-overlapping windows as the build reports'
    perplexity (`models._build.perplexity`): the same tokens for every method.
    """
    if windows < 1 or seq_len < 2:
        raise InvalidArgumentError(f"windows={windows} must be >= 1 and seq_len={seq_len} >= 2")
    _, held_out = _build.corpus()
    need = windows * seq_len
    ids: list[int] = []
    for doc in held_out:
        ids += tokenizer(doc).input_ids + [tokenizer.eos_token_id]
        if len(ids) > need:
            break
    if len(ids) <= need:
        raise InvalidArgumentError(
            f"the held-out text has {len(ids)} tokens, fewer than "
            f"windows x seq_len = {need}; ask for fewer windows."
        )
    return [ids[i * seq_len : (i + 1) * seq_len] for i in range(windows)]


@dataclass
class _TransformersRunner:
    """One quantization method of a model in transformers (bitsandbytes where it applies)."""

    quantization: Quantization
    model: Any  # a ModelSource
    device: str
    dtype: Any
    ppl_batch: int = 8
    engine: str = "transformers"
    load_s: float = math.nan
    lm: Any = None

    @property
    def label(self) -> str:
        return self.quantization.name

    def load(self) -> None:
        from ..generate import _sync

        started = time.perf_counter()
        # dtype is the bitsandbytes methods' compute dtype; fp32/bf16/fp16 set their own
        dtype = self.dtype if self.quantization.is_bitsandbytes else "auto"
        self.lm = load_model(  # progress=False: no bar per load to bury the measurement's own
            self.model,
            device=self.device,
            dtype=dtype,
            quantization=self.quantization,
            progress=False,
        )
        _sync(self.lm)
        self.load_s = time.perf_counter() - started
        if self.quantization.is_bitsandbytes:
            self.engine = "transformers + bitsandbytes"

    def weights(self) -> dict[str, int]:
        w = weight_bytes(self.lm)
        return {
            "total_bytes": w.total_bytes,
            "fp32_bytes": w.fp32_bytes,
            "linear_bytes": w.linear_bytes,
            "linear_fp32_bytes": w.linear_fp32_bytes,
        }

    def perplexity(self, windows: list[list[int]]) -> float:
        import torch

        tokens = torch.tensor(windows, device=self.lm.model.device)  # [N, S]
        total, count = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(tokens), self.ppl_batch):
                batch = tokens[start : start + self.ppl_batch]
                loss = self.lm.model(input_ids=batch, labels=batch).loss  # mean over N x (S-1)
                total += float(loss) * batch.numel()
                count += batch.numel()
        return math.exp(total / count)

    def _generate(self, prompt: list[int], batch: int, max_tokens: int, exact: bool):
        import torch

        from ..generate import _sync

        ids = torch.tensor([prompt] * batch, device=self.lm.model.device)  # [B, P]
        extra = {"min_new_tokens": max_tokens} if exact else {}
        _sync(self.lm)
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.lm.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=self.lm.tokenizer.pad_token_id,
                **extra,
            )
        _sync(self.lm)
        return out[:, len(prompt) :], time.perf_counter() - started

    def decode_tokens_per_s(self, prompt: list[int], batch: int, max_tokens: int) -> float:
        new, seconds = self._generate(prompt, batch, max_tokens, exact=True)
        return new.numel() / seconds

    def answer(self, prompt: list[int], max_tokens: int) -> str:
        new, _ = self._generate(prompt, 1, max_tokens, exact=False)
        return self.lm.tokenizer.decode(new[0], skip_special_tokens=True)

    def close(self) -> None:
        import torch

        self.lm = None
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _gguf_files(model: str, types: Sequence[str], progress: bool) -> dict[str, Path]:
    """Return label -> GGUF path: exported f16/q8_0 files and the shipped one."""
    files: dict[str, Path] = {}
    for kind in types:
        if kind == "shipped":
            source = resolve_model(model, progress=progress)
            if source.gguf_file is None:
                raise InvalidArgumentError(
                    f"{model!r} has no shipped GGUF file; drop 'shipped' "
                    f"from gguf, or use one of {', '.join(OUTTYPES)}."
                )
            quant = source.info.get("source", {}).get("quantization", "shipped")
            files[f"gguf {quant} (shipped)"] = source.gguf_file
        elif kind in OUTTYPES:
            files[f"gguf {kind}"] = export_gguf(model, kind, progress=progress)
        else:
            raise InvalidArgumentError(
                f"unknown GGUF type {kind!r}; use any of {', '.join(OUTTYPES)} or 'shipped'."
            )
    return files


def _prompt_ids(tokenizer, text: str, chat: bool) -> list[int]:
    if chat and tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, return_dict=True
        )
        return list(ids["input_ids"])
    return list(tokenizer(text).input_ids)


def conditions(device: str, threads: int) -> dict[str, str]:
    """Return the machine and software facts that go with the figures."""
    import torch

    facts = {**machine_conditions(), "device": device, "threads": str(threads)}
    with contextlib.suppress(Exception):
        facts["bitsandbytes"] = require_bitsandbytes()
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def measure_quantization(
    model: str = "smollm2-135m",
    methods: Sequence[str | Quantization] | None = None,
    *,
    gguf: Sequence[str] = (),
    device: str = "auto",
    dtype: Any = "auto",
    windows: int = 8,
    seq_len: int = 128,
    max_tokens: int = 32,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 3,
    prompt: str = DEFAULT_PROMPT,
    question: str = DEFAULT_QUESTION,
    answer_tokens: int = 24,
    threads: int | None = None,
    interleave: bool = True,
    progress: bool = True,
):
    """Measure each method (and GGUF type on llama.cpp) on one model; return a DataFrame.

    methods: preset names or Quantizations (default: every preset that runs on device).
    gguf: GGUF types to serve on llama.cpp beside them: f16, q8_0 (exported here), and
    "shipped" (the file a built-in model came from); needs a built-in or local model.
    windows x seq_len held-out tokens score perplexity; decode speed is max_tokens
    generated tokens (greedy, no early stop) per request at each batch size, the median
    of `repeats` interleaved rounds. threads sets torch's threads and llama.cpp's
    (default: torch's current count). dtype is the compute dtype of the bitsandbytes
    methods (auto: bf16/fp16 on GPUs, fp32 on CPUs). interleave=False loads one method at
    a time (for GPUs that cannot hold every method at once); rounds then run method by
    method.
    One row per method; the conditions are in `df.attrs["conditions"]`.
    """
    import pandas as pd
    from transformers import AutoTokenizer

    from .._progress import progress_bar

    names = list(methods) if methods is not None else list(available_quantizations(device))
    quants = [Quantization.from_name(m) for m in names]
    for number, what in (
        (windows, "windows"),
        (max_tokens, "max_tokens"),
        (repeats, "repeats"),
        (answer_tokens, "answer_tokens"),
        *((b, "batch size") for b in batch_sizes),
    ):
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise InvalidArgumentError(f"{what}={number!r} must be a whole number >= 1")
    if not quants and not gguf:
        raise InvalidArgumentError("nothing to measure: give methods, gguf types, or both")
    device = resolve_device(device)
    if any(q.is_bitsandbytes for q in quants):
        require_bitsandbytes()  # before anything loads
    source = resolve_model(model, progress=progress)
    tokenizer = AutoTokenizer.from_pretrained(source.location)
    held = held_out_windows(tokenizer, windows, seq_len)
    if source.folder is not None:  # into the page cache, so the first load reads no more disk
        for path in source.folder.glob("*.safetensors"):
            with open(path, "rb") as f:
                while f.read(1 << 26):
                    pass
    prompt_ids = _prompt_ids(tokenizer, prompt, chat=False)
    question_ids = _prompt_ids(tokenizer, question, chat=True)
    with _torch_threads(threads) as n_threads:
        runners: list[Any] = [_TransformersRunner(q, source, device, dtype) for q in quants]
        if gguf:
            from ._llamacpp import LlamaCppRunner

            eog = frozenset([tokenizer.eos_token_id])  # the only special token in the windows
            slots = max(max(batch_sizes), min(windows, 8))
            room = max(seq_len, len(prompt_ids) + max_tokens, len(question_ids) + answer_tokens)
            runners += [
                LlamaCppRunner(label, path, n_threads, slots, room + 16, eog)
                for label, path in _gguf_files(model, gguf, progress).items()
            ]
        rows = {r.label: {"method": r.label} for r in runners}
        speeds: dict[tuple[str, int], list[float]] = {
            (r.label, b): [] for r in runners for b in batch_sizes
        }
        steps = len(runners) * (4 + repeats * len(batch_sizes))
        bar = progress_bar(
            total=steps, desc=f"quantization on {source.name}", unit="step", disable=not progress
        )
        started = time.strftime("%Y-%m-%d %H:%M")
        before = conditions(device, n_threads)

        def prepare(r) -> None:  # load, bytes, perplexity, answer, warm-up
            bar.set_postfix_str(f"{r.label}: load")
            r.load()
            if hasattr(r, "check_tokens"):  # llama.cpp must see the very ids transformers sees
                r.check_tokens(prompt, tokenizer(prompt, add_special_tokens=False).input_ids)
            bar.update()
            bar.set_postfix_str(f"{r.label}: perplexity")
            rows[r.label]["perplexity"] = r.perplexity(held)
            # bytes after the first forward: bitsandbytes repacks 4-bit layers there on CPUs
            # with AVX512-BF16 (scales to bf16, double quantization undone)
            rows[r.label].update(
                engine=r.engine, weights=_weights_label(r), **r.weights(), load_s=r.load_s
            )
            bar.update()
            bar.set_postfix_str(f"{r.label}: answer")
            rows[r.label]["answer"] = r.answer(question_ids, answer_tokens).strip()
            bar.update()
            for b in batch_sizes:  # warm-up: the first batch of each size meets cold code paths
                r.decode_tokens_per_s(prompt_ids, b, min(max_tokens, 4))
            bar.update()

        def timed_round(group: list, i: int) -> None:
            for r in group[i % len(group) :] + group[: i % len(group)]:
                for b in batch_sizes:
                    bar.set_postfix_str(f"{r.label}: batch {b}")
                    speeds[(r.label, b)].append(r.decode_tokens_per_s(prompt_ids, b, max_tokens))
                    bar.update()

        try:
            if interleave:
                for r in runners:
                    prepare(r)
                for i in range(repeats):
                    timed_round(runners, i)
            else:
                for r in runners:
                    prepare(r)
                    for i in range(repeats):
                        timed_round([r], i)
                    r.close()
        finally:
            for r in runners:
                r.close()
            bar.close()
    after = conditions(device, n_threads)
    for (label, b), values in speeds.items():
        rows[label][f"tokens_per_s_batch{b}"] = statistics.median(values) if values else math.nan
    return _frame(
        pd,
        rows,
        batch_sizes,
        {
            "model": source.name,
            "device": device,
            "threads": n_threads,
            "windows": windows,
            "seq_len": seq_len,
            "scored_tokens": windows * (seq_len - 1),
            "max_tokens": max_tokens,
            "batch_sizes": list(batch_sizes),
            "repeats": repeats,
            "prompt": prompt,
            "question": question,
            "answer_tokens": answer_tokens,
            "interleave": interleave,
            "started": started,
            "finished": time.strftime("%Y-%m-%d %H:%M"),
            "before": before,
            "after": after,
        },
    )


def _weights_label(runner) -> str:
    if hasattr(runner, "quantization"):
        return runner.quantization.description
    return f"GGUF file {runner.path.name}"


def _frame(pd, rows: dict[str, dict], batch_sizes: Sequence[int], conditions: dict):
    """Return the rows as a DataFrame with ratios to the fp32 row (or to float32 sizes)."""
    df = pd.DataFrame(list(rows.values())).set_index("method")
    df["weight_bytes"] = df.pop("total_bytes")
    df["weight_ratio"] = df["weight_bytes"] / df["fp32_bytes"]
    df["linear_ratio"] = df["linear_bytes"] / df["linear_fp32_bytes"]
    base = df["perplexity"].get("fp32", math.nan)
    df["perplexity_ratio"] = df["perplexity"] / base
    speed = [f"tokens_per_s_batch{b}" for b in batch_sizes]
    columns = [
        "engine",
        "weights",
        "weight_bytes",
        "weight_ratio",
        "linear_bytes",
        "linear_ratio",
        *(["file_bytes"] if "file_bytes" in df else []),
        "load_s",
        "perplexity",
        "perplexity_ratio",
        *speed,
        "answer",
    ]
    df = df[columns]
    df.attrs["conditions"] = conditions
    return df


def quantization_table(df, digits: int = 2) -> str:
    """Return the DataFrame as a markdown table (MB, ratios, tokens/s, perplexity, answer)."""
    speed = [c for c in df.columns if c.startswith("tokens_per_s_batch")]
    head = [
        "method",
        "engine",
        "weights MB",
        "x fp32",
        "linear layers x fp32",
        "load s",
        "perplexity",
        "x fp32 ppl",
        *[f"tokens/s batch {c.rsplit('batch', 1)[1]}" for c in speed],
        "greedy answer",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 3) + "---|"]
    for method, r in df.iterrows():
        answer = str(r["answer"]).replace("|", "\\|").replace("\n", " ")
        cells = [
            f"`{method}`",
            r["engine"],
            f"{r['weight_bytes'] / 1e6:,.1f}",
            f"{r['weight_ratio']:.3f}",
            f"{r['linear_ratio']:.3f}",
            f"{r['load_s']:.1f}",
            f"{r['perplexity']:.{digits}f}",
            _ratio(r["perplexity_ratio"]),
            *[f"{r[c]:,.1f}" for c in speed],
            answer[:80],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"
