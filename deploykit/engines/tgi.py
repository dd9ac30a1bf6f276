"""Hugging Face TGI (text-generation-inference) in Docker: typed arguments, `docker run`, Compose.

TGI ships as a CUDA container image, so deploykit never installs it: `TGIArgs` renders the
`docker run` command and the Compose service the TGI docs describe, `start_tgi` runs that
command through `launch_server` where Docker and an NVIDIA GPU are present, and
`openai_equivalent` turns a TGI client's `parameters` into the same request to vLLM.

Flags, values and rules are those of text-generation-launcher 3.3 (launcher/src/main.rs and
docs/source/reference/launcher.md). The Hugging Face token reaches the container by name
(`-e HF_TOKEN`, Compose `${HF_TOKEN}`): its value is never written into a command or file.
Not here: AMD/Intel/Gaudi images, LoRA adapters, speculative decoding.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .. import _env
from ..errors import EngineArgumentError, InvalidArgumentError, ServerStartError
from ..launch import Server, launch_server
from .base import EngineArgs, check_choice, check_positive_ints, optional_flags

# text-generation-launcher --quantize, possible values (TGI 3.3, enum Quantization).
QUANTIZE = (
    "awq",
    "compressed-tensors",
    "eetq",
    "exl2",
    "gptq",
    "marlin",
    "bitsandbytes",
    "bitsandbytes-nf4",
    "bitsandbytes-fp4",
    "fp8",
)
# TGI is in maintenance mode (README, Dec 2025); 3.3.7 is its last release.
IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.7"
CONTAINER_PORT = 80  # the image sets PORT=80 and HF_HOME=/data
# docker's size syntax (go-units RAMInBytes): 1g, 512m, 2GiB, 1.5gb
_SIZE = re.compile(r"^\d+(\.\d+)? ?[kKmMgGtTpP]?[iI]?[bB]?$")


@dataclass(frozen=True)
class TGIArgs(EngineArgs):
    """Arguments of one TGI container; None keeps text-generation-launcher's default.

    `model` is a hub id (the container downloads it into `volume`), or a folder inside the
    container such as "/data/my-model" for weights copied under `volume`. `volume` is the
    host folder mounted at /data (the hub cache, kept between runs); `port` is the host port
    mapped to the container's port 80. `image` must be pinned (a version tag or a digest).
    """

    quantize: str | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_batch_prefill_tokens: int | None = None
    max_concurrent_requests: int | None = None
    num_shard: int | None = None
    volume: str | Path = "data"
    port: int = 8080
    image: str = IMAGE
    shm_size: str = "1g"

    engine: ClassVar[str] = "tgi"

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..models import BUILTIN_MODELS

        if self.model in BUILTIN_MODELS or any(c.isspace() for c in self.model):
            raise EngineArgumentError(
                f"TGIArgs(model={self.model!r}): TGI runs in Docker and loads a hub id such as "
                "'HuggingFaceTB/SmolLM2-135M-Instruct', or a folder under the mounted volume "
                "given as '/data/<folder>'; deploykit's built-in names exist only on this host."
            )
        if self.quantize is not None:
            check_choice("TGI", "quantize", self.quantize, QUANTIZE)
        check_positive_ints(
            self,
            "max_input_tokens",
            "max_total_tokens",
            "max_batch_prefill_tokens",
            "max_concurrent_requests",
            "num_shard",
            default_owner="text-generation-launcher",
        )
        inp, total = self.max_input_tokens, self.max_total_tokens
        prefill = self.max_batch_prefill_tokens
        if inp is not None and total is not None and inp >= total:
            raise EngineArgumentError(
                f"max_input_tokens={inp} >= max_total_tokens={total} is an impossible token "
                "budget: max_total_tokens counts the prompt plus the generated tokens, so it must "
                f"be larger; e.g. max_total_tokens={inp + 512} leaves 512 tokens to generate."
            )
        if inp is not None and prefill is not None and prefill < inp:
            raise EngineArgumentError(
                f"max_batch_prefill_tokens={prefill} < max_input_tokens={inp}: a prompt of "
                "max_input_tokens could never be prefilled; raise max_batch_prefill_tokens to at "
                f"least {inp} (TGI's default is max_input_tokens + 50) or lower max_input_tokens."
            )
        if self.quantize == "exl2" and (self.num_shard or 1) > 1:
            raise EngineArgumentError(
                "quantize='exl2' does not support tensor parallelism; use "
                "num_shard=1 (or None) with exl2, or another quantization."
            )
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise EngineArgumentError(
                f"port={port!r} must be a host TCP port in 1..65535, e.g. 8080."
            )
        if not str(self.volume).strip():
            raise EngineArgumentError(
                "volume is empty; pass the host folder that holds /data, "
                "e.g. volume='data' (created beside where you run)."
            )
        if not isinstance(self.shm_size, str) or not _SIZE.match(self.shm_size):
            raise EngineArgumentError(
                f"shm_size={self.shm_size!r} is not a Docker size; use "
                "e.g. '1g' (TGI's documented value) or '2g'."
            )
        image = self.image
        pinned = "@sha256:" in image or (
            ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
        )
        if not pinned:
            raise EngineArgumentError(
                f"image={image!r} is not pinned to a version; use a tag or digest, e.g. {IMAGE!r}."
            )

    def model_location(self) -> str:
        """Return the model id the container loads (nothing is resolved on this host)."""
        return self.model

    def launcher_args(self) -> list[str]:
        """Return the arguments after the image: text-generation-launcher's flags."""
        return [
            "--model-id",
            self.model,
            *optional_flags(
                {
                    "--quantize": self.quantize,
                    "--num-shard": self.num_shard,
                    "--max-input-tokens": self.max_input_tokens,
                    "--max-total-tokens": self.max_total_tokens,
                    "--max-batch-prefill-tokens": self.max_batch_prefill_tokens,
                    "--max-concurrent-requests": self.max_concurrent_requests,
                }
            ),
        ]

    def host_volume(self) -> Path:
        """Return the volume as an absolute host path (`docker run -v` needs one)."""
        return Path(self.volume).expanduser().absolute()

    def to_command(
        self,
        launcher: Sequence[str] = ("docker",),
        host: str = "{host}",
        port: str | int = "{port}",
    ) -> list[str]:
        """Return the `docker run` command; port is the host port (host is not used)."""
        return [
            *launcher,
            "run",
            "--gpus",
            "all",
            "--shm-size",
            self.shm_size,
            "-p",
            f"{port}:{CONTAINER_PORT}",
            "-v",
            f"{self.host_volume()}:/data",
            "-e",
            "HF_TOKEN",
            self.image,
            *self.launcher_args(),
        ]

    def docker_command(self) -> list[str]:
        """Return `docker run --gpus all ... IMAGE --model-id ...` for this host port."""
        return self.to_command(("docker",), port=self.port)

    def shell_command(self) -> str:
        """Return the `docker run` command as a line to copy into a shell.

        A relative volume is written as "$PWD/<volume>", as TGI's README does (docker needs an
        absolute host path), so the line holds no path of the machine that rendered it.
        """
        volume = str(self.volume)
        words = [shlex.quote(word) for word in self.docker_command()]
        if not os.path.isabs(os.path.expanduser(volume)):
            words[words.index("-v") + 1] = f'"$PWD/{Path(volume).as_posix()}":/data'
        return " ".join(words)

    def serve_args(self) -> list[str]:
        """Return the `deploykit serve` flags that give its TGI routes these same limits.

        deploykit's server stands in for TGI where no GPU or Docker is: with these flags its
        /info reports, and its routes enforce, the token budget and admission limit set here.
        """
        return optional_flags(
            {
                "--max-input-tokens": self.max_input_tokens,
                "--max-total-tokens": self.max_total_tokens,
                "--max-concurrent-requests": self.max_concurrent_requests,
            }
        )

    def compose_service(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """Return the Compose service (a dict) that runs the same container.

        relative_to is the folder the compose file goes in: a relative volume is written
        relative to it, since Compose resolves paths from the file's own folder.
        """
        volume = str(self.volume)
        if relative_to is not None and not os.path.isabs(os.path.expanduser(volume)):
            volume = os.path.relpath(volume, relative_to)
        if not volume.startswith(("/", ".", "~")):
            volume = "./" + volume  # a bare name would be a named volume, not a folder
        gpus: int | str = self.num_shard if self.num_shard else "all"
        return {
            "image": self.image,
            "command": self.launcher_args(),
            "ports": [f"{self.port}:{CONTAINER_PORT}"],
            "volumes": [f"{volume}:/data"],
            "environment": {"HF_TOKEN": "${HF_TOKEN}"},
            "shm_size": self.shm_size,
            "deploy": {
                "resources": {
                    "reservations": {
                        "devices": [{"driver": "nvidia", "count": gpus, "capabilities": ["gpu"]}]
                    }
                }
            },
            # curl is in the image; start_period covers the weights download and warm-up
            "healthcheck": {
                "test": ["CMD", "curl", "-f", f"http://localhost:{CONTAINER_PORT}/health"],
                "interval": "30s",
                "timeout": "5s",
                "retries": 3,
                "start_period": "600s",
            },
            "restart": "unless-stopped",
        }

    def compose_yaml(self, service: str = "tgi", relative_to: str | Path | None = None) -> str:
        """Return a compose.yaml with this one service (volume relative to relative_to)."""
        import yaml

        doc = {"services": {service: self.compose_service(relative_to)}}
        return yaml.safe_dump(doc, sort_keys=False)

    def write_compose(self, folder: str | Path, service: str = "tgi") -> Path:
        """Write folder/compose.yaml (`docker compose -f folder/compose.yaml up` runs it)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "compose.yaml"
        path.write_text(self.compose_yaml(service, relative_to=folder))
        return path


def tgi_runnable(timeout_s: float = 20.0) -> tuple[bool, str]:
    """Return (True, what was found) when Docker answers and a GPU is visible, else (False, why).

    Under HF_HUB_OFFLINE=1 it is (False, why) too: TGI downloads its model itself.
    """
    docker = shutil.which("docker")
    if docker is None:
        return False, (
            "no `docker` on PATH: TGI runs as a container; install Docker and the "
            "NVIDIA Container Toolkit"
        )
    ok, out = _run([docker, "info", "--format", "{{.ServerVersion}}"], timeout_s)
    if not ok:
        return False, (
            f"`docker info` failed ({out or 'no output'}): start the Docker engine, "
            "or check that this user may use it"
        )
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no `nvidia-smi` on PATH: TGI's CUDA image needs an NVIDIA GPU and driver"
    ok, gpus = _run([smi, "-L"], timeout_s)
    lines = [line for line in gpus.splitlines() if line.startswith("GPU ")]
    if not ok or not lines:
        return False, f"`nvidia-smi -L` lists no GPU ({gpus or 'no output'})"
    if _env.hub_offline():  # the container would fetch its image and weights all the same
        return False, (
            "HF_HUB_OFFLINE=1: TGI's container downloads its model from the hub; "
            "unset HF_HUB_OFFLINE to run TGI"
        )
    return True, f"Docker {out.strip()} and {len(lines)} GPU(s): {lines[0]}"


def _run(command: list[str], timeout_s: float) -> tuple[bool, str]:
    """Run a short command; return (whether it exited 0, its output or the tail of its error)."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    text = (done.stdout if done.returncode == 0 else done.stderr or done.stdout).strip()
    return done.returncode == 0, text if done.returncode == 0 else text[-300:]


def start_tgi(
    args: TGIArgs,
    *,
    timeout_s: float = 1800.0,
    log_path: str | Path | None = None,
    name: str | None = None,
) -> Server:
    """Run the TGI container on args.port and return the Server once /health answers.

    The first start pulls the image (several GB) and downloads the weights into `volume`, hence the
    long default timeout. Stopping the Server stops `docker run`, which forwards the signal to
    the container; `--rm` removes it.
    """
    ok, reason = tgi_runnable()
    if not ok:
        raise ServerStartError(
            f"TGI cannot run on this machine: {reason}. Render the command "
            "with TGIArgs(...).docker_command() or compose_yaml() and run it "
            "on a GPU host instead."
        )
    args.host_volume().mkdir(parents=True, exist_ok=True)  # else Docker creates it as root
    command = args.to_command(("docker",))
    command.insert(command.index("run") + 1, "--rm")
    return launch_server(
        command,
        port=args.port,
        health_path=args.health_path,
        timeout_s=timeout_s,
        env=args.to_env(),
        name=name or "tgi-" + args.served_name.replace("/", "--"),
        log_path=log_path,
    )  # the name starts the log file's name: no "/"


# TGI `parameters` keys (router GenerateParameters) -> how they reach vLLM's completions call.
_DIRECT = {"max_new_tokens": "max_tokens", "seed": "seed", "frequency_penalty": "frequency_penalty"}
_EXTRA = {"top_k": "top_k", "repetition_penalty": "repetition_penalty"}
_IGNORED = ("details",)  # response shape only: OpenAI replies always carry finish_reason, usage
_REFUSED = {  # key: (values that ask for nothing, what to do instead)
    "typical_p": (
        (None, 1.0),
        "vLLM has no typical sampling; drop it, or try extra_body {'min_p': ...}",
    ),
    "watermark": ((None, False), "vLLM does not watermark; drop it"),
    "best_of": ((None, 1), "vLLM's v1 engine has no best_of; ask for n=... and pick one"),
    "decoder_input_details": ((None, False), "ask vLLM for extra_body={'prompt_logprobs': 1}"),
    "adapter_id": (
        (None,),
        "serve the LoRA with `vllm serve --lora-modules NAME=PATH` and send model=NAME",
    ),
}
_KNOWN = (
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "do_sample",
    "stop",
    "seed",
    "repetition_penalty",
    "frequency_penalty",
    "return_full_text",
    "truncate",
    "top_n_tokens",
    "grammar",
    *_IGNORED,
    *_REFUSED,
)


def openai_equivalent(parameters: dict[str, Any]) -> dict[str, Any]:
    """Return the `client.completions.create(...)` kwargs for vLLM that match TGI `parameters`.

    As TGI decides (server/text_generation_server/utils/tokens.py): it samples when
    do_sample is true or any of temperature != 1, top_k, top_p < 1 or typical_p < 1 is set;
    otherwise it decodes greedily, which vLLM does at temperature 0. Without max_new_tokens
    TGI generates up to max_total_tokens, so max_tokens is None (vLLM: up to the context
    length), never the OpenAI default of 16. Add model= and prompt= to the result.
    """
    if not isinstance(parameters, dict):
        raise InvalidArgumentError(
            f"parameters must be TGI's `parameters` dict, not {type(parameters).__name__}."
        )
    unknown = sorted(set(parameters) - set(_KNOWN))
    if unknown:
        raise InvalidArgumentError(
            f"unknown TGI parameter(s) {', '.join(unknown)}; TGI's are: {', '.join(_KNOWN)}."
        )
    p = {key: value for key, value in parameters.items() if value is not None}
    for key, (fine, advice) in _REFUSED.items():
        if key in p and p[key] not in fine:
            raise InvalidArgumentError(f"{key}={p[key]!r} has no vLLM equivalent: {advice}.")
    _check_tgi_ranges(p)

    temperature = p.get("temperature", 1.0)
    sampled = bool(p.get("do_sample", False)) or temperature != 1.0 or "top_k" in p or "top_p" in p
    kwargs: dict[str, Any] = {"max_tokens": None, "temperature": temperature if sampled else 0.0}
    if "top_p" in p:
        kwargs["top_p"] = p["top_p"]
    for key, name in _DIRECT.items():
        if key in p:
            kwargs[name] = p[key]
    if p.get("stop"):
        kwargs["stop"] = list(p["stop"])
    if p.get("top_n_tokens"):  # 0 asks for none; OpenAI's logprobs=0 would still return some
        kwargs["logprobs"] = p["top_n_tokens"]
    if p.get("return_full_text"):
        kwargs["echo"] = True  # the prompt, then the completion, as TGI returns it
    extra = {name: p[key] for key, name in _EXTRA.items() if key in p}
    if "truncate" in p:  # TGI keeps the last `truncate` prompt tokens
        extra.update(truncate_prompt_tokens=p["truncate"], truncation_side="left")
    if "grammar" in p:
        extra["structured_outputs"] = _structured_outputs(p["grammar"])
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def _check_tgi_ranges(p: dict[str, Any]) -> None:
    """Refuse what TGI's router refuses (router/src/validation.rs), with its rule."""

    def number(key: str) -> float | None:
        value = p.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise InvalidArgumentError(f"{key}={value!r} must be a finite number.")
        return value

    def whole(value: float) -> bool:
        return isinstance(value, int)

    rules = [
        (
            "temperature",
            lambda v: v > 0,
            "must be > 0 (for greedy decoding leave do_sample false and drop temperature)",
        ),
        ("top_p", lambda v: 0 < v < 1, "must be in (0, 1) exclusive"),
        ("top_k", lambda v: v > 0 and whole(v), "must be an integer > 0"),
        ("repetition_penalty", lambda v: v > 0, "must be > 0 (1.0 means no penalty)"),
        ("frequency_penalty", lambda v: -2 <= v <= 2, "must be in [-2, 2]"),
        ("max_new_tokens", lambda v: v >= 1 and whole(v), "must be an integer >= 1"),
        ("truncate", lambda v: v >= 1 and whole(v), "must be an integer >= 1"),
        ("top_n_tokens", lambda v: v >= 0 and whole(v), "must be an integer >= 0"),
        ("seed", lambda v: v >= 0 and whole(v), "must be an integer >= 0"),
    ]
    for key, ok, rule in rules:
        value = number(key)
        if value is not None and not ok(value):
            raise InvalidArgumentError(f"{key}={value!r} {rule}, as TGI checks it.")
    if not isinstance(p.get("do_sample", False), bool):
        raise InvalidArgumentError(f"do_sample={p['do_sample']!r} must be true or false.")
    stop = p.get("stop")
    if stop is not None and (
        isinstance(stop, str)
        or not isinstance(stop, (list, tuple))
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise InvalidArgumentError(
            f"stop={stop!r} must be a list of non-empty strings, e.g. ['\\n\\n']."
        )


def _structured_outputs(grammar: Any) -> dict[str, Any]:
    """Turn TGI's grammar {"type": json|json_schema|regex, "value": ...} into vLLM's."""
    kind = grammar.get("type") if isinstance(grammar, dict) else None
    value = grammar.get("value") if isinstance(grammar, dict) else None
    if kind in ("json", "json_object"):
        return {"json": value}
    if kind == "json_schema" and isinstance(value, dict) and "schema" in value:
        return {"json": value["schema"]}
    if kind == "regex" and isinstance(value, str):
        return {"regex": value}
    raise InvalidArgumentError(
        f"grammar={grammar!r} is not TGI's grammar; use "
        "{'type': 'json', 'value': <JSON schema>} or "
        "{'type': 'regex', 'value': <pattern>}."
    )
