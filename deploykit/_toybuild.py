"""Build the toy models offline: corpus, sentencepiece tokenizer, brief training.

The corpus is the docstrings of the Python standard library that is installed,
read at build time; no text is shipped with deploykit or fetched from anywhere.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import ToySpec

_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3",
              "turtledemo", "__pycache__", "ensurepip", "tkinter", "pydoc_data"}

# Llama-2 style chat template; BOS comes from the template, so callers tokenize
# its output with add_special_tokens=False (as transformers and vLLM do).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>> {{ message['content'] }} <</SYS>>\n"
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% elif message['role'] == 'assistant' %} {{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}"
    "{% endfor %}"
)


@contextlib.contextmanager
def building(dest: Path) -> Iterator[Path]:
    """Yield a fresh folder beside dest; it becomes dest if the block succeeds, else is removed.

    The one way built-in models are written: a reader never sees a half-built folder, and
    when another process finished the same build first, its folder is kept.
    """
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        config = tmp / "config.json"
        mode = config.stat().st_mode & 0o777 if config.exists() else 0o644
        for path in tmp.iterdir():  # transformers writes the weights 0600 (via a temp file)
            if path.is_file():
                path.chmod(mode)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():  # another process finished first; keep theirs
        shutil.rmtree(tmp)
    else:
        tmp.rename(dest)


def _corpus_files() -> Iterator[Path]:
    """Yield the standard library's .py files that the corpus reads, in a stable order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        yield from (Path(root, name) for name in sorted(files) if name.endswith(".py"))


def corpus_fingerprint() -> str:
    """Return a hash of the corpus files' paths, sizes and times: cheap, unlike parsing them."""
    h = hashlib.sha256(sys.version.encode())
    for path in _corpus_files():
        stat = path.stat()
        h.update(f"{path}\x00{stat.st_size}\x00{stat.st_mtime_ns}\x00".encode())
    return h.hexdigest()[:16]


def corpus() -> tuple[list[str], list[str]]:
    """Return (train, held_out) docstrings of the installed standard library."""
    docs: list[str] = []
    for path in _corpus_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 40:
                    docs.append(doc)
    # Held-out split by content hash: stable whatever the walk order.
    train, held_out = [], []
    for doc in docs:
        bucket = hashlib.sha1(doc.encode()).digest()[0] % 20
        (held_out if bucket == 0 else train).append(doc)
    return train, held_out


def corpus_digest(train: list[str], held_out: list[str]) -> str:
    """Return a short hash of the corpus, part of the cache key."""
    h = hashlib.sha256()
    for doc in train + ["\x00held-out\x00"] + held_out:
        h.update(doc.encode())
    return h.hexdigest()[:12]


def train_tokenizer(train: list[str], out: Path, vocab_size: int) -> None:
    """Train a byte-fallback BPE sentencepiece model, as Llama's tokenizer is."""
    import sentencepiece as spm

    lines = [line for doc in train for line in doc.splitlines() if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(out / "tokenizer"),
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        num_threads=1,  # one thread keeps the merges deterministic
        minloglevel=2,
    )
    (out / "tokenizer.vocab").unlink(missing_ok=True)
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False,
        "model_max_length": 1 << 30,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    _write_sentencepiece_exact_json(out)


def _write_sentencepiece_exact_json(out: Path) -> None:
    """Write tokenizer.json splitting text exactly as tokenizer.model does, as Llama-2's does.

    transformers 5's LlamaTokenizer builds its own pipeline, Metaspace(prepend_scheme="first"),
    which adds no "▁" to text that starts with a space or follows a special token, whereas
    sentencepiece (add_dummy_prefix) and llama.cpp always add one: " x" and the chat prompt
    "<s>[INST]" got other ids. Llama-2's own tokenizer.json normalizes instead (prepend "▁",
    spaces to "▁"), and the generic class loads the file as written, in transformers 4 and 5.
    """
    from tokenizers import normalizers
    from transformers import AutoTokenizer

    converted = AutoTokenizer.from_pretrained(out)  # vocab, merges, byte fallback, BOS, decoder
    backend = converted.backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                               normalizers.Replace(" ", "\u2581")])
    backend.pre_tokenizer = None
    backend.save(str(out / "tokenizer.json"))
    set_tokenizer_class(out)


def set_tokenizer_class(out: Path, name: str = "PreTrainedTokenizerFast") -> None:
    """Name a class in tokenizer_config.json that loads tokenizer.json as is.

    ("TokenizersBackend", which transformers 5 writes, is unknown to transformers 4.)
    """
    path = out / "tokenizer_config.json"
    settings = json.loads(path.read_text())
    settings["tokenizer_class"] = name
    for junk in ("is_local", "local_files_only"):
        settings.pop(junk, None)
    path.write_text(json.dumps(settings, indent=2))


def _token_stream(tokenizer, docs: list[str]):
    import torch

    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(doc).input_ids)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def perplexity(model, tokens, seq_len: int, max_windows: int = 64) -> float:
    """Return exp(mean next-token loss) over non-overlapping windows of `tokens`."""
    import torch

    n = min(max_windows, (len(tokens) - 1) // seq_len)
    windows = tokens[: n * seq_len].view(n, seq_len)  # [N, S]
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, n, 16):
            batch = windows[start:start + 16]
            out = model(input_ids=batch, labels=batch)
            total += out.loss.item() * batch.numel()
            count += batch.numel()
    return math.exp(total / count)


def build(spec: "ToySpec", dest: Path, progress: bool = True) -> dict:
    """Build `spec` into `dest` (written atomically) and return its build report."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    started = time.perf_counter()
    with building(dest) as tmp:
        train_docs, held_docs = corpus()
        train_tokenizer(train_docs, tmp, spec.vocab_size)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        tokenizer.chat_template = CHAT_TEMPLATE
        train_ids = _token_stream(tokenizer, train_docs)
        held_ids = _token_stream(tokenizer, held_docs)

        torch.manual_seed(spec.seed)
        config = LlamaConfig(
            vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
            max_position_embeddings=spec.max_position_embeddings,
            tie_word_embeddings=spec.tie_word_embeddings,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            rms_norm_eps=1e-5, rope_theta=10000.0,
        )
        model = LlamaForCausalLM(config).float()
        untrained_ppl = perplexity(model, held_ids, spec.seq_len)

        generator = torch.Generator().manual_seed(spec.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.steps,
                                                    pct_start=0.1)
        model.train()
        n_windows = len(train_ids) - spec.seq_len - 1
        bar = tqdm(range(spec.steps), desc=f"training {spec.name}", disable=not progress)
        for _ in bar:
            starts = torch.randint(0, n_windows, (spec.batch_size,), generator=generator)
            batch = torch.stack([train_ids[s:s + spec.seq_len] for s in starts.tolist()])  # [B, S]
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.2f}")
        trained_ppl = perplexity(model, held_ids, spec.seq_len)

        model.generation_config.pad_token_id = tokenizer.eos_token_id
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        set_tokenizer_class(tmp)
        report = {
            "spec": asdict(spec),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "train_tokens": int(len(train_ids)),
            "held_out_tokens": int(len(held_ids)),
            "tokens_seen": spec.steps * spec.batch_size * spec.seq_len,
            "perplexity_untrained": round(untrained_ppl, 2),
            "perplexity_trained": round(trained_ppl, 2),
            "build_seconds": round(time.perf_counter() - started, 1),
            "torch_threads": torch.get_num_threads(),
        }
        (tmp / "deploykit_build.json").write_text(json.dumps(report, indent=2))
    return report
