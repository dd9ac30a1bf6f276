"""A GGUF file on llama.cpp's server, measured like a transformers model: bytes, speed, perplexity.

Perplexity uses llama.cpp's own logits through `/completion`: each window's tokens are
sent as the context and forced as the continuation, and the server reports each forced
token's log-probability before sampling (`n_probs: 1`, `post_sampling_probs: false`).
A GBNF grammar of token ids (`<[id]>`) forces a run of ordinary tokens in one request; an
end-of-generation token cannot sit in such a grammar, so it is forced alone with a logit
bias (the reported log-probability is still the unbiased one). `cache_prompt` on a fixed
slot keeps the context, so each token is computed once. Windows run on parallel slots.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..engines.llamacpp import LlamaCppArgs, start_llamacpp, tokenize
from ..errors import EngineRunError
from ..launch import Server

# linear layers in GGUF tensor names: what bitsandbytes quantizes in transformers
_LINEAR = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
_TIMEOUT_S = 600.0


def gguf_weights(path: Path) -> dict[str, int]:
    """Return the bytes of a GGUF file, of its tensors, of its linear layers, and fp32 sizes."""
    import gguf

    reader = gguf.GGUFReader(path)
    total = fp32 = linear = linear_fp32 = 0
    for t in reader.tensors:
        n_bytes, n_elements = int(t.n_bytes), int(t.n_elements)
        total += n_bytes
        fp32 += 4 * n_elements
        if t.name.startswith("blk.") and t.name.split(".")[-2] in _LINEAR:
            linear += n_bytes
            linear_fp32 += 4 * n_elements
    return {
        "file_bytes": path.stat().st_size,
        "total_bytes": total,
        "fp32_bytes": fp32,
        "linear_bytes": linear,
        "linear_fp32_bytes": linear_fp32,
    }


@dataclass
class LlamaCppRunner:
    """One GGUF file served by llama.cpp, measured on token ids given by the caller."""

    label: str
    path: Path
    threads: int
    n_parallel: int
    ctx_per_slot: int
    eog_ids: frozenset[int]
    engine: str = "llama.cpp"
    load_s: float = math.nan
    server: Server | None = None
    _client: httpx.Client = field(
        default_factory=lambda: httpx.Client(timeout=_TIMEOUT_S, trust_env=False)
    )

    def load(self) -> None:
        """Start the server; load_s is the time until /health answers (process start included)."""
        started = time.perf_counter()
        self.server = start_llamacpp(
            LlamaCppArgs(
                model=str(self.path),
                alias=self.label,
                threads=self.threads,
                n_parallel=self.n_parallel,
                ctx_size=self.n_parallel * self.ctx_per_slot,
            ),
            timeout_s=300.0,
            name=f"quantize-{self.path.stem}",
        )
        self.load_s = time.perf_counter() - started

    def weights(self) -> dict[str, int]:
        """Return gguf_weights of the file."""
        return gguf_weights(self.path)

    def check_tokens(self, text: str, ids: list[int]) -> None:
        """Fail unless llama.cpp splits text into ids, as the tokenizer the windows came from."""
        assert self.server is not None  # load() comes first
        got = tokenize(self.server.url, text, add_special=False)
        if got != list(ids):
            raise EngineRunError(
                f"{self.path.name} tokenizes {text[:40]!r}... as {got[:12]}, the Hugging Face "
                f"tokenizer as {list(ids)[:12]}: the vocabularies differ, so perplexities "
                "would score different tokens. Export the GGUF from the same model folder "
                "(dk.export_gguf)."
            )

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.server is not None  # load() comes first
        try:
            reply = self._client.post(self.server.url + "/completion", json=body)
        except httpx.HTTPError as exc:
            raise EngineRunError(
                f"POST /completion to llama.cpp ({self.label}) failed: "
                f"{type(exc).__name__}: {exc}.\n{self.server.log_tail(20)}"
            ) from exc
        if reply.status_code != 200:
            raise EngineRunError(
                f"llama.cpp ({self.label}) answered HTTP {reply.status_code}: {reply.text[:300]}"
            )
        return reply.json()

    def _window_logprobs(self, window: list[int], slot: int) -> list[float]:
        """Return log p(token | the tokens before it) for window[1:], from llama.cpp's logits."""
        out: list[float] = []
        pos = 1
        while pos < len(window):
            if window[pos] in self.eog_ids:
                targets = window[pos : pos + 1]
                force: dict[str, Any] = {"logit_bias": [[window[pos], 100.0]]}
            else:
                end = pos
                while end < len(window) and window[end] not in self.eog_ids:
                    end += 1
                targets = window[pos:end]
                force = {"grammar": "root ::= " + " ".join(f"<[{t}]>" for t in targets)}
            reply = self._post(
                {
                    "prompt": window[:pos],
                    "n_predict": len(targets),
                    **force,
                    "n_probs": 1,
                    "post_sampling_probs": False,
                    "temperature": 0,
                    "cache_prompt": True,
                    "id_slot": slot,
                    "stream": False,
                }
            )
            probs = reply.get("completion_probabilities") or []
            got = [p["id"] for p in probs]
            if got != targets:
                raise EngineRunError(
                    f"llama.cpp ({self.label}) did not follow the forced tokens "
                    f"(asked {targets[:8]}..., got {got[:8]}...)."
                )
            out += [float(p["logprob"]) for p in probs]
            pos += len(targets)
        return out

    def perplexity(self, windows: list[list[int]]) -> float:
        """Return exp(mean negative log-likelihood) of every window's tokens after its first."""
        slots = min(self.n_parallel, len(windows))

        def run(slot: int) -> list[float]:
            return [lp for w in windows[slot::slots] for lp in self._window_logprobs(w, slot)]

        with ThreadPoolExecutor(slots) as pool:
            logprobs = [lp for part in pool.map(run, range(slots)) for lp in part]
        return math.exp(-sum(logprobs) / len(logprobs))

    def decode_tokens_per_s(self, prompt: list[int], batch: int, max_tokens: int) -> float:
        """Return generated tokens per second of wall time for `batch` requests sent at once."""
        body = {
            "prompt": prompt,
            "n_predict": max_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "cache_prompt": False,
            "stream": False,
        }
        started = time.perf_counter()
        with ThreadPoolExecutor(batch) as pool:
            replies = list(pool.map(lambda _: self._post(body), range(batch)))
        seconds = time.perf_counter() - started
        return sum(int(r["tokens_predicted"]) for r in replies) / seconds

    def answer(self, prompt: list[int], max_tokens: int) -> str:
        """Return the greedy continuation of the prompt's token ids."""
        reply = self._post(
            {
                "prompt": prompt,
                "n_predict": max_tokens,
                "temperature": 0,
                "cache_prompt": False,
                "stream": False,
            }
        )
        return reply["content"]

    def close(self) -> None:
        """Stop the server."""
        self._client.close()
        if self.server is not None:
            self.server.stop()
