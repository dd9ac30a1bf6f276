"""The toy models: Llama-architecture causal LMs with a sentencepiece tokenizer, trained here.

Each is trained briefly on the corpus `_build` reads (the installed standard library's
docstrings), offline, in about a minute (toy-tiny) or ten (toy-small).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UnknownModelError
from ._build import (
    building,
    cache_key,
    cached_build,
    corpus,
    corpus_key,
    perplexity,
    set_tokenizer_class,
    token_stream,
)
from .catalog import unknown_message

# bump when the build recipe changes: old caches are ignored. 2: tokenizer.json splits text
# exactly as sentencepiece and llama.cpp do (see train_tokenizer)
BUILD_VERSION = 2

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


@dataclass(frozen=True)
class ToySpec:
    """Architecture and training budget of one toy model."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    tie_word_embeddings: bool
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    max_position_embeddings: int = 2048
    seed: int = 0


TOY_MODELS: dict[str, ToySpec] = {
    spec.name: spec
    for spec in (
        ToySpec(
            "toy-tiny",
            vocab_size=4096,
            hidden_size=128,
            intermediate_size=256,
            num_layers=4,
            num_heads=4,
            num_kv_heads=2,
            tie_word_embeddings=True,
            steps=400,
            batch_size=16,
            seq_len=128,
            lr=3e-3,
        ),
        ToySpec(
            "toy-small",
            vocab_size=4096,
            hidden_size=512,
            intermediate_size=1536,
            num_layers=10,
            num_heads=8,
            num_kv_heads=4,
            tie_word_embeddings=False,
            steps=300,
            batch_size=8,
            seq_len=128,
            lr=1e-3,
        ),
    )
}


def toy_spec(name: str) -> ToySpec:
    """Return the spec of toy model `name`; an unknown name says which models exist."""
    try:
        return TOY_MODELS[name]
    except KeyError:
        raise UnknownModelError(unknown_message(name)) from None


def toy_key(name: str) -> str:
    """Return the cache key of toy model `name`: its spec, the build code, the corpus."""
    return cache_key(BUILD_VERSION, asdict(toy_spec(name)), corpus_key())


def toy_path(name: str, progress: bool = True) -> Path:
    """Return the cached folder of toy model `name`, building it on first use."""
    spec = toy_spec(name)
    return cached_build(name, toy_key(name), lambda dest: build(spec, dest, progress=progress))


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
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        num_threads=1,  # one thread keeps the merges deterministic
        minloglevel=2,
    )
    (out / "tokenizer.vocab").unlink(missing_ok=True)
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
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
    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
    )
    backend.pre_tokenizer = None
    backend.save(str(out / "tokenizer.json"))
    set_tokenizer_class(out)


def build(spec: ToySpec, dest: Path, progress: bool = True) -> dict:
    """Build `spec` into `dest` (written atomically) and return its build report."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from .._progress import progress_bar

    started = time.perf_counter()
    with building(dest) as tmp:
        train_docs, held_docs = corpus()
        train_tokenizer(train_docs, tmp, spec.vocab_size)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        tokenizer.chat_template = CHAT_TEMPLATE
        train_ids = token_stream(tokenizer, train_docs)
        held_ids = token_stream(tokenizer, held_docs)

        torch.manual_seed(spec.seed)
        config = LlamaConfig(
            vocab_size=spec.vocab_size,
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            max_position_embeddings=spec.max_position_embeddings,
            tie_word_embeddings=spec.tie_word_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
        )
        model = LlamaForCausalLM(config).float()
        untrained_ppl = perplexity(model, held_ids, spec.seq_len)

        generator = torch.Generator().manual_seed(spec.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=spec.lr, total_steps=spec.steps, pct_start=0.1
        )
        model.train()
        n_windows = len(train_ids) - spec.seq_len - 1
        bar = progress_bar(range(spec.steps), desc=f"training {spec.name}", disable=not progress)
        for _ in bar:
            starts = torch.randint(0, n_windows, (spec.batch_size,), generator=generator)
            batch = torch.stack(
                [train_ids[s : s + spec.seq_len] for s in starts.tolist()]
            )  # [B, S]
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
