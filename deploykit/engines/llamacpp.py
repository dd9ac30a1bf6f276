"""Run llama.cpp from deploykit: typed engine arguments and llama.cpp's own HTTP server.

The server is llama.cpp's C++ server (OpenAI-compatible routes, continuous batching over
`n_parallel` slots) from the PyPI wheel `xllamacpp`, run as a child process
(`_llamacpp_child`) through `engines.base.start_engine`. Nothing here imports xllamacpp.
llama.cpp loads GGUF files only: this module does not convert models (see `export_gguf`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import httpx

from ..errors import EngineArgumentError, EngineRunError, UnknownModelError
from ..launch import Server
from .base import EngineArgs, check_positive_ints, optional_flags, start_engine

CHILD_MODULE = "deploykit.engines._llamacpp_child"
LAUNCHER = (sys.executable, "-m", CHILD_MODULE)


@dataclass(frozen=True)
class LlamaCppArgs(EngineArgs):
    """Engine arguments deploykit passes to llama.cpp's server; None means llama.cpp's default.

    `model` is a built-in name that has a GGUF (smollm2-135m) or the path of a .gguf file
    (a str or a Path, kept as a str).
    `ctx_size` is the KV cache in tokens, split evenly over the `n_parallel` slots: each
    request (prompt + output) gets ctx_size // n_parallel tokens. `threads` sets the CPU
    threads for generation and prompt batches. `n_gpu_layers` is how many layers go to the
    GPU (0 on a CPU-only wheel; None lets llama.cpp fit them). `batch_size` and
    `ubatch_size` are llama.cpp's logical and physical batch sizes (prompt tokens per
    step). `metrics` turns on Prometheus metrics at /metrics. `chat_template` replaces the
    chat template the GGUF carries (Jinja text, or a name llama.cpp knows, e.g. "llama2"):
    for a model that has none; the wrong one makes a good model answer nonsense.
    """

    alias: str | None = None
    ctx_size: int = 2048
    n_parallel: int = 4
    threads: int | None = None
    n_gpu_layers: int | None = None
    batch_size: int | None = None
    ubatch_size: int | None = None
    metrics: bool = False
    chat_template: str | None = None

    engine: ClassVar[str] = "llama.cpp"
    health_path: ClassVar[str] = "/health"

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):
            object.__setattr__(self, "model", os.fspath(self.model))  # frozen: set once, here
        if not isinstance(self.model, str):
            raise EngineArgumentError(
                f"model={self.model!r} must be a built-in name or the path of a .gguf file."
            )
        super().__post_init__()
        for name in ("ctx_size", "n_parallel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EngineArgumentError(
                    f"{name}={value!r} must be an integer >= 1 (ctx_size: KV-cache tokens, e.g. "
                    "2048; n_parallel: requests served at once, e.g. 4)."
                )
        if self.ctx_size < self.n_parallel:
            raise EngineArgumentError(
                f"ctx_size={self.ctx_size} is split over n_parallel={self.n_parallel} slots, "
                "which leaves none a token; raise ctx_size (each slot gets ctx_size // n_parallel)."
            )
        check_positive_ints(self, "threads", "batch_size", "ubatch_size", default_owner="llama.cpp")
        ngl = self.n_gpu_layers
        if ngl is not None and (isinstance(ngl, bool) or not isinstance(ngl, int) or ngl < 0):
            raise EngineArgumentError(
                f"n_gpu_layers={ngl!r} must be an integer >= 0 (0: all on "
                "the CPU; more than the model has: all on the GPU) or None."
            )
        if self.alias is not None and (not isinstance(self.alias, str) or not self.alias):
            raise EngineArgumentError(
                f"alias={self.alias!r} must be a non-empty string or None "
                "(None: clients send the model string)."
            )
        if not isinstance(self.metrics, bool):
            raise EngineArgumentError(f"metrics={self.metrics!r} must be True or False.")
        if self.chat_template is not None and (
            not isinstance(self.chat_template, str) or not self.chat_template
        ):
            raise EngineArgumentError(
                f"chat_template={self.chat_template!r} must be a non-empty string (Jinja, or a "
                "name llama.cpp knows such as 'chatml') or None (the GGUF's own template)."
            )

    @property
    def served_name(self) -> str:
        """Return the model name clients send: alias, else the model string as given."""
        return self.alias or self.model

    def gguf_path(self) -> Path:
        """Return the .gguf file llama.cpp loads (a built-in is built on first use)."""
        from ..models import BUILTIN_MODELS, resolve_model
        from ..models.catalog import unknown_message

        text = self.model
        if text in BUILTIN_MODELS:
            source = resolve_model(text, progress=False)
            if source.gguf_file is None:
                raise EngineArgumentError(
                    f"the built-in model {text!r} has no GGUF file, and llama.cpp loads only GGUF. "
                    f"Convert it first with `dk.export_gguf({text!r})` and pass the .gguf file "
                    "it writes as model=."
                )
            return source.gguf_file
        path = Path(text).expanduser()
        if path.is_dir():
            found = ", ".join(p.name for p in sorted(path.glob("*.gguf"))) or "none"
            raise EngineArgumentError(
                f"model={text!r} is a folder; llama.cpp needs the .gguf file "
                f"itself (.gguf files there: {found})."
            )
        if path.suffix.lower() != ".gguf":
            if path.exists():
                raise EngineArgumentError(
                    f"model={text!r} is not a .gguf file; llama.cpp loads GGUF only. Convert the "
                    "model first (dk.export_gguf for a built-in, or llama.cpp's "
                    "convert_hf_to_gguf.py), then pass the .gguf path."
                )
            raise UnknownModelError(
                f"{unknown_message(text)} llama.cpp also takes the path of a "
                ".gguf file (a hub id must be downloaded first)."
            )
        if not path.is_file():
            raise UnknownModelError(
                f"no GGUF file at {str(path)!r}; check the path, or use the "
                "built-in 'smollm2-135m'."
            )
        return path.resolve()

    def model_location(self) -> str:
        """Return the path of the .gguf file (so start_engine's early check finds a bad model)."""
        return str(self.gguf_path())

    def to_command(
        self, launcher: Sequence[str] = LAUNCHER, host: str = "{host}", port: str | int = "{port}"
    ) -> list[str]:
        """Return the child server's command line ({host}/{port} are filled in by launch_server)."""
        cmd = [
            *launcher,
            "--model",
            self.model_location(),
            "--alias",
            self.served_name,
            "--ctx-size",
            str(self.ctx_size),
            "--parallel",
            str(self.n_parallel),
        ]
        cmd += optional_flags(
            {
                "--threads": self.threads,
                "--n-gpu-layers": self.n_gpu_layers,
                "--batch-size": self.batch_size,
                "--ubatch-size": self.ubatch_size,
            }
        )
        if self.metrics:
            cmd.append("--metrics")
        if self.chat_template is not None:
            cmd += ["--chat-template", self.chat_template]
        return cmd + ["--host", str(host), "--port", str(port)]


def start_llamacpp(
    args: LlamaCppArgs,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    timeout_s: float = 120.0,
    log_path: str | Path | None = None,
    name: str | None = None,
) -> Server:
    """Check `args`, start llama.cpp's server and return the running Server once /health answers.

    The server needs the `xllamacpp` package in this Python environment. A GGUF that does
    not load ends the process at once; the ServerStartError carries llama.cpp's log.
    """
    if not isinstance(args, LlamaCppArgs):
        raise EngineArgumentError(
            f"start_llamacpp takes LlamaCppArgs, not {type(args).__name__}; "
            "e.g. dk.LlamaCppArgs(model='smollm2-135m')."
        )
    # a path alias would put slashes in the log file's name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(args.served_name).name)
    return start_engine(
        args,
        LAUNCHER,
        port=port,
        host=host,
        timeout_s=timeout_s,
        log_path=log_path,
        name=name or f"{args.engine}-{safe}",
    )


def tokenize(url: str, text: str, add_special: bool = True, timeout_s: float = 30.0) -> list[int]:
    """Return the token ids llama.cpp's server at url gives text (POST /tokenize).

    add_special inserts the model's special tokens (BOS) as a prompt would get them.
    """
    base = url.rstrip("/").removesuffix("/v1")
    try:
        response = httpx.post(
            base + "/tokenize",
            json={"content": text, "add_special": add_special},
            timeout=timeout_s,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        raise EngineRunError(
            f"POST {base}/tokenize failed ({type(exc).__name__}: {exc}); check "
            "that the llama.cpp server is running (server.is_running())."
        ) from exc
    if response.status_code != 200:
        raise EngineRunError(
            f"POST {base}/tokenize answered HTTP {response.status_code}: "
            f"{response.text[:300]}. Pass the URL of a llama.cpp server "
            "(start_llamacpp(...).url)."
        )
    tokens = response.json()["tokens"]
    return [int(t) for t in tokens]
