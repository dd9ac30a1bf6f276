"""Ollama's API on deploykit's engine: /api/generate, /api/chat, /api/tags, /api/show, /api/ps.

The wire models follow Ollama's API reference (docs/api.md) and the `ollama` Python
client's types; this module is the one place where Ollama's `options` become
`SamplingParams` and deploykit's errors become Ollama's `{"error": ...}` bodies. Replies
stream as NDJSON unless the request says `"stream": false`; the last object has `done`,
`done_reason` and the durations in nanoseconds, from which Ollama users compute tokens/s
(eval_count / eval_duration * 1e9).

What differs from Ollama itself:
- The model is loaded once at start and never unloaded: load_duration is 0 and keep_alive
  is accepted and ignored.
- A prompt longer than the context is a 400 saying so; Ollama silently drops its start.
- prompt_eval_duration is the time to the first token (queueing included); eval_duration
  runs from the first token to the last.
- Options this engine does not implement (mirostat, tfs_z, typical_p, presence_penalty,
  frequency_penalty, penalize_newline) and request fields it does not (format, images,
  tools, template, suffix, think) are a 400 that names them. Runner knobs (num_thread,
  num_gpu, num_batch, use_mmap, …) change nothing here and are ignored, as unknown keys are.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._version import __version__
from ..errors import DeployKitError
from ..models.templates import go_template
from .sampling import SamplingParams
from .serving import APIError, BaseServing, chat_ids, to_api_error

# Ollama's documented defaults, used when neither the request nor a Modelfile sets them
DEFAULTS = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    "num_ctx": 4096,
    "num_predict": -1,
}
_NOT_IMPLEMENTED = {
    "mirostat": (0,),
    "tfs_z": (1.0,),
    "typical_p": (1.0,),
    "presence_penalty": (0.0,),
    "frequency_penalty": (0.0,),
    "penalize_newline": (False,),
}
NS_PER_S = 1_000_000_000


class Options(BaseModel):
    """The `options` object: sampling and context settings (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    num_predict: int | None = Field(default=None, ge=-2)
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    seed: int | None = None
    stop: list[str] | None = None
    num_ctx: int | None = Field(default=None, ge=1)
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    repeat_last_n: int | None = Field(default=None, ge=-1)
    mirostat: int | None = None
    tfs_z: float | None = None
    typical_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    penalize_newline: bool | None = None


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    stream: bool | None = True
    options: Options = Field(default_factory=Options)
    keep_alive: float | str | None = None  # accepted; the model is never unloaded here
    format: Any = None
    think: bool | str | None = None


class GenerateRequest(_Request):
    """Body of POST /api/generate."""

    prompt: str | None = None
    system: str | None = None
    raw: bool = False
    context: list[int] | None = None
    images: list[str] | None = None
    template: str | None = None
    suffix: str | None = None


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None


class ChatRequest(_Request):
    """Body of POST /api/chat."""

    messages: list[Message] = Field(default_factory=list)
    tools: list[dict] | None = None


class ShowRequest(BaseModel):
    """Body of POST /api/show (older clients send `name`)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    name: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str) -> APIError:
    return APIError(status, message, "ollama")


def error_body(exc: Exception, retry_after_s: int = 1) -> tuple[int, dict, Mapping[str, str]]:
    """Return (status, Ollama error body, headers) for any exception of an Ollama route."""
    err = to_api_error(exc, retry_after_s)
    return err.status, {"error": err.message}, err.headers


def sampling_params(options: Options, prompt_len: int, context_length: int) -> SamplingParams:
    """Translate Ollama's options into engine parameters (the only place that does)."""
    refused = [
        name
        for name, fine in _NOT_IMPLEMENTED.items()
        if getattr(options, name) not in (None, *fine)
    ]
    if refused:
        raise _error(
            400,
            f"deploykit's Ollama routes do not implement the option(s) "
            f"{', '.join(refused)}; remove them from options.",
        )
    o: dict[str, Any] = {
        k: (v if (v := getattr(options, k)) is not None else d) for k, d in DEFAULTS.items()
    }
    window = min(o["num_ctx"], context_length)
    if prompt_len >= window:
        raise _error(
            400,
            f"the prompt has {prompt_len} tokens but the context window is "
            f"{window} (num_ctx {o['num_ctx']}, model {context_length}); shorten the "
            "prompt or raise options.num_ctx (Ollama would silently drop the prompt's "
            "start).",
        )
    if o["num_predict"] == 0:
        raise _error(
            400,
            "options.num_predict must be >= 1, or -1 to generate until a stop "
            "(or the context is full).",
        )
    room = window - prompt_len
    max_tokens = room if o["num_predict"] < 0 else min(o["num_predict"], room)
    last_n = {-1: 0, 0: 1}.get(o["repeat_last_n"], o["repeat_last_n"])  # -1: num_ctx, 0: off
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=o["temperature"],
            top_p=o["top_p"] or 1.0,
            top_k=o["top_k"],
            seed=options.seed,
            stop=tuple(s for s in options.stop or () if s),
            repetition_penalty=o["repeat_penalty"] if o["repeat_last_n"] != 0 else 1.0,
            repetition_last_n=last_n,
        )
    except Exception as exc:
        raise _error(400, str(exc)) from exc


class OllamaServing(BaseServing):
    """Ollama's generate, chat, tags, show, ps and version over one engine."""

    def names(self) -> tuple[str, ...]:
        """Return the names a client may send: the served name and name:latest."""
        if ":" in self.model_name:
            return (self.model_name,)
        return (self.model_name, f"{self.model_name}:latest")

    def _check_model(self, name: str) -> None:
        if name not in self.names():
            raise _error(
                404,
                f"model '{name}' not found; this server serves "
                f"'{self.names()[-1]}' (see GET /api/tags).",
            )

    # ---- model information --------------------------------------------------------------

    def _details(self) -> dict:
        lm = self.engine.lm
        n = lm.num_parameters
        size = f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"
        family = getattr(lm.model.config, "model_type", "unknown")
        dtype = str(lm.dtype).removeprefix("torch.").replace("float", "F").replace("bF", "BF")
        return {
            "parent_model": "",
            "format": "safetensors",
            "family": family,
            "families": [family],
            "parameter_size": size,
            "quantization_level": dtype.upper(),
        }

    def tags(self) -> dict:
        """Return GET /api/tags: the one model this server has."""
        lm = self.engine.lm
        return {
            "models": [
                {
                    "name": self.names()[-1],
                    "model": self.names()[-1],
                    "modified_at": _now(),
                    "size": lm.weight_bytes,
                    "digest": "",
                    "details": self._details(),
                }
            ]
        }

    def ps(self) -> dict:
        """Return GET /api/ps: the model is always loaded."""
        lm = self.engine.lm
        on_gpu = str(lm.device).startswith("cuda")
        return {
            "models": [
                {
                    "name": self.names()[-1],
                    "model": self.names()[-1],
                    "size": lm.weight_bytes,
                    "digest": "",
                    "details": self._details(),
                    "expires_at": "2318-01-01T00:00:00Z",  # never unloaded
                    "size_vram": lm.weight_bytes if on_gpu else 0,
                    "context_length": self.engine.context_length,
                }
            ]
        }

    def show(self, req: ShowRequest) -> dict:
        """Return POST /api/show: template, parameters, details and architecture numbers."""
        name = req.model or req.name
        if not name:
            raise _error(400, 'send the model\'s name as {"model": "..."}.')
        self._check_model(name)
        lm = self.engine.lm
        cfg = lm.model.config
        arch = getattr(cfg, "model_type", "unknown")
        params = "\n".join(f"{k:<16}{v}" for k, v in DEFAULTS.items() if k != "num_predict")
        info = {
            "general.architecture": arch,
            "general.parameter_count": lm.num_parameters,
            f"{arch}.context_length": self.engine.context_length,
            f"{arch}.embedding_length": getattr(cfg, "hidden_size", None),
            f"{arch}.block_count": getattr(cfg, "num_hidden_layers", None),
            f"{arch}.attention.head_count": getattr(cfg, "num_attention_heads", None),
            f"{arch}.attention.head_count_kv": getattr(cfg, "num_key_value_heads", None),
            f"{arch}.vocab_size": len(self.tokenizer),
        }
        template = self._go_template()
        return {
            "modelfile": f"# served by deploykit\nFROM {self.model_name}\n",
            "parameters": params,
            "template": template,
            "details": self._details(),
            "model_info": info,
            "capabilities": ["completion"],
            "modified_at": _now(),
        }

    def _go_template(self) -> str:
        """Return the chat template in Ollama's Go syntax, or as Jinja if no family matches."""
        tok = self.tokenizer
        jinja = tok.chat_template or ""
        try:  # this server's template holds BOS itself, so the Go one writes it too
            return go_template(
                jinja,
                bos_token=tok.bos_token or "",
                eos_token=tok.eos_token or "",
                add_bos_token=False,
            ).text
        except DeployKitError:
            return jinja

    def version(self) -> dict:
        """Return GET /api/version."""
        return {"version": __version__, "server": "deploykit"}

    # ---- generation ---------------------------------------------------------------------

    @staticmethod
    def _refuse(req: _Request, **fields: Any) -> None:
        asked = [name for name, value in fields.items() if value]
        if req.format:
            asked.append("format")
        if req.think:
            asked.append("think")
        if asked:
            raise _error(
                400,
                f"deploykit's Ollama routes do not implement {', '.join(asked)}; "
                "remove them from the request.",
            )

    async def generate(self, req: GenerateRequest):
        """Return one JSON object (stream false) or NDJSON lines, as Ollama does."""
        self._check_model(req.model)
        self._refuse(req, images=req.images, template=req.template, suffix=req.suffix)
        if not req.prompt and not req.context:
            # Ollama's way to load a model: an empty prompt answers at once
            return {
                "model": req.model,
                "created_at": _now(),
                "response": "",
                "done": True,
                "done_reason": "load",
            }
        prompt = req.prompt or ""
        if req.raw:
            ids = self.tokenizer(prompt, add_special_tokens=not req.context).input_ids
        else:  # Ollama applies the model's template: system, then the prompt as the user
            messages = ([Message(role="system", content=req.system)] if req.system else []) + [
                Message(role="user", content=prompt)
            ]
            ids = chat_ids(self.tokenizer, messages)
        ids = list(req.context or []) + ids
        return await self._run(req, ids, lambda text: {"response": text}, with_context=True)

    async def chat(self, req: ChatRequest):
        """Return one JSON object (stream false) or NDJSON lines, as Ollama does."""
        self._check_model(req.model)
        self._refuse(req, tools=req.tools, images=any(m.images for m in req.messages))
        if not req.messages:
            return {
                "model": req.model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "load",
            }
        ids = chat_ids(self.tokenizer, req.messages)
        return await self._run(
            req, ids, lambda text: {"message": {"role": "assistant", "content": text}}
        )

    async def _run(self, req: _Request, ids: list[int], body, with_context=False):
        vocab = len(self.tokenizer)
        if any(not 0 <= t < vocab for t in ids):
            raise _error(400, f"context must hold token ids in [0, {vocab}).")
        params = sampling_params(req.options, len(ids), self.engine.context_length)
        start = time.perf_counter()
        gen = self._start(ids, params, stream=bool(req.stream))

        def final(out, text: str, end: float) -> dict:
            ttft = out.time_to_first_token_s or (end - start)
            done = {
                "model": req.model,
                "created_at": _now(),
                **body(text),
                "done": True,
                "done_reason": "length" if out.finish_reason == "length" else "stop",
            }
            if with_context:
                done["context"] = ids + out_ids
            done.update(
                total_duration=int((end - start) * NS_PER_S),
                load_duration=0,
                prompt_eval_count=out.prompt_tokens,
                prompt_eval_duration=int(ttft * NS_PER_S),
                eval_count=out.completion_tokens,
                eval_duration=max(int((end - start - ttft) * NS_PER_S), 1),
            )
            return done

        out_ids: list[int] = []
        if not req.stream:
            text, last = "", None
            async with gen:
                async for last in gen:
                    text += last.text
                    out_ids += last.token_ids
            return final(last, text, time.perf_counter())

        async def lines() -> AsyncIterator[str]:
            try:
                async with gen:
                    async for out in gen:
                        out_ids.extend(out.token_ids)
                        if out.text:
                            yield (
                                json.dumps(
                                    {
                                        "model": req.model,
                                        "created_at": _now(),
                                        **body(out.text),
                                        "done": False,
                                    }
                                )
                                + "\n"
                            )
                        if out.finish_reason is not None:
                            yield json.dumps(final(out, "", time.perf_counter())) + "\n"
            except Exception as exc:
                _, err, _ = error_body(exc, self.retry_after_s)
                yield json.dumps(err) + "\n"

        return lines()
