"""One typed deployment config, checked once, from which every container file is rendered.

`DeploymentConfig` says what runs (engine, model, image), on what (GPUs, memory, CPU) and how
it starts and stops (model-load time, drain timeout, grace period, replicas). `docker.py` and
`kubernetes.py` render it; nothing here writes a file or starts a process. Combinations that
would deploy but then fail (a CUDA image with no GPU, probes that give up before the model
has loaded, a grace period that kills a drain) are rejected here, each with what to change.
"""

from __future__ import annotations

import dataclasses
import math
import re
import textwrap
from dataclasses import dataclass
from typing import Any, ClassVar

from ..engines.tgi import IMAGE as TGI_IMAGE
from ..engines.tgi import TGIArgs
from ..engines.vllm import VLLMArgs
from ..errors import EngineArgumentError, InvalidArgumentError
from ..models import BUILTIN_MODELS
from ..models.devices import dtype_names

DEPLOY_ENGINES = ("deploykit", "vllm", "tgi")
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany")
MODEL_DIR = "/models"  # where the model-cache volume is mounted in every container
USER_ID = 10001  # the non-root user every image runs as (and the pod's fsGroup)

# Base images: official, pinned. vLLM's tag follows the vLLM release deploykit tests (Makefile);
# TGI's is engines/tgi.py's (3.3.7, its last release).
PYTHON_IMAGE = "python:3.11-slim-bookworm"
CUDA_IMAGE = "nvidia/cuda:12.9.1-runtime-ubuntu24.04"
VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
TORCH_VERSION = "2.13.0"  # as the Makefile pins it

_TGI_DTYPES = ("auto", "float16", "bfloat16")  # text-generation-launcher --dtype, plus its default
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")


@dataclass(frozen=True)
class DeploymentConfig:
    """How one LLM server is packaged and run; None keeps the default worked out from the rest.

    `model` is a hub id (downloaded into the cache volume at first start), a deploykit
    built-in name (built there at first start; engine "deploykit" only), or a folder under
    /models holding weights you copied onto the volume. `image` is the tag the rendered
    Dockerfile builds and that Compose and Kubernetes run ("" -> "deploykit-<name>:<version>");
    push it to your registry under that name. `base_image` "" picks the engine's official
    image: python slim (CPU) or CUDA runtime for deploykit, vLLM's or TGI's own for those.

    `model_load_s` is the worst case from container start to serving (download, load, warm-up,
    compilation): the startup probe and Docker's start period are sized from it.
    `drain_timeout_s` is how long in-flight requests may take after SIGTERM;
    `grace_period_s` (None: preStop sleep + drain + 10 s) is when Kubernetes sends SIGKILL.
    With `max_replicas` set, a HorizontalPodAutoscaler scales between `replicas` and it, on CPU
    utilization or, for GPU servers, on `queue_metric` (requests waiting per pod).
    """

    name: str = "llm"
    engine: str = "deploykit"
    model: str = "toy-tiny"
    image: str = ""
    base_image: str = ""
    gpus: int = 0
    memory_gib: int = 8
    cpu_cores: float = 2.0
    port: int = 8000
    dtype: str = "auto"
    max_model_len: int | None = None
    replicas: int = 1
    max_replicas: int | None = None
    queue_metric: str | None = None
    queue_target: int = 4
    model_load_s: int = 300
    drain_timeout_s: int = 30
    prestop_sleep_s: int = 5
    grace_period_s: int | None = None
    probe_period_s: int = 10
    startup_failure_threshold: int | None = None
    cache_size_gib: int = 50
    cache_access_mode: str = "ReadWriteOnce"
    storage_class: str | None = None
    hf_token_env: str = "HF_TOKEN"

    presets: ClassVar[tuple[str, ...]] = ("deploykit-cpu", "deploykit-gpu", "vllm-gpu", "tgi-gpu")

    def __post_init__(self) -> None:
        self._check_names()
        self._check_numbers()
        self._check_gpu()
        self._check_timing()
        self._check_scaling()
        self.engine_args()  # the engine's own checks (vLLM's dtype, TGI's model rules, ...)

    # ---- checks ---------------------------------------------------------------------------

    def _check_names(self) -> None:
        if not isinstance(self.name, str) or not _DNS_LABEL.match(self.name):
            raise InvalidArgumentError(
                f"name={self.name!r} must be a DNS label Kubernetes accepts: lowercase letters, "
                "digits and '-', starting with a letter, at most 40 characters, e.g. 'llm'."
            )
        if self.engine not in DEPLOY_ENGINES:
            raise InvalidArgumentError(
                f"engine={self.engine!r} is not one deploykit renders; "
                f"use one of: {', '.join(DEPLOY_ENGINES)}."
            )
        model = self.model
        if not isinstance(model, str) or not model or any(c.isspace() for c in model):
            raise InvalidArgumentError(
                f"model={model!r} must be a hub id, a built-in name or "
                f"a folder under {MODEL_DIR}, without spaces."
            )
        if model.startswith("/") and not model.startswith(MODEL_DIR + "/"):
            raise InvalidArgumentError(
                f"model={model!r} is a path outside the model volume; put the weights under "
                f"{MODEL_DIR}/ (e.g. '{MODEL_DIR}/my-model') so the container can see them."
            )
        for field, value in (("image", self.image), ("base_image", self.base_image)):
            if value and not _pinned(value):
                raise InvalidArgumentError(
                    f"{field}={value!r} is not pinned: use a version tag or a digest, never "
                    f"'latest' (a restart could silently run another build), e.g. "
                    f"{self.default_base_image()!r}."
                )
        if self.cache_access_mode not in ACCESS_MODES:
            raise InvalidArgumentError(
                f"cache_access_mode={self.cache_access_mode!r}; use one "
                f"of: {', '.join(ACCESS_MODES)}."
            )
        if self.engine == "deploykit" and self.dtype != "auto":
            dtype_names(self.dtype)  # an unknown name raises, listing the known ones
        if self.engine == "tgi" and self.dtype not in _TGI_DTYPES:
            raise InvalidArgumentError(
                f"dtype={self.dtype!r} is not one TGI takes; use one of: {', '.join(_TGI_DTYPES)}."
            )
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.hf_token_env or ""):
            raise InvalidArgumentError(
                f"hf_token_env={self.hf_token_env!r} must be an "
                "environment variable name, e.g. 'HF_TOKEN'."
            )

    def _check_numbers(self) -> None:
        for field in (
            "gpus",
            "memory_gib",
            "port",
            "replicas",
            "queue_target",
            "model_load_s",
            "drain_timeout_s",
            "prestop_sleep_s",
            "probe_period_s",
            "cache_size_gib",
        ):
            value = getattr(self, field)
            low = 0 if field in ("gpus", "prestop_sleep_s") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidArgumentError(f"{field}={value!r} must be an integer >= {low}.")
        for field in (
            "max_replicas",
            "grace_period_s",
            "startup_failure_threshold",
            "max_model_len",
        ):
            value = getattr(self, field)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidArgumentError(
                    f"{field}={value!r} must be an integer >= 1, or None for the default."
                )
        cpu = self.cpu_cores
        if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not cpu > 0:
            raise InvalidArgumentError(f"cpu_cores={cpu!r} must be a number > 0, e.g. 2.")
        if not 1024 <= self.port <= 65535:
            raise InvalidArgumentError(
                f"port={self.port} is privileged (< 1024) or not a port: the images run as a "
                "non-root user, which may not bind ports below 1024 under Kubernetes; use "
                "8000 or 8080 (the Service still answers on port 80)."
            )

    def _check_gpu(self) -> None:
        base = self.base_image or self.default_base_image()
        cuda = self.engine in ("vllm", "tgi") or "cuda" in base.lower()
        if cuda and self.gpus == 0:
            what = {"vllm": "vLLM's official image", "tgi": "TGI's image"}.get(
                self.engine, f"base_image={base!r}"
            )
            raise InvalidArgumentError(
                f"{what} is a GPU image but gpus=0: nothing would reserve a GPU for it. Set "
                "gpus=1 (or more), or use engine='deploykit' with gpus=0 for a CPU image."
            )
        if self.gpus > 0 and not cuda:
            raise InvalidArgumentError(
                f"gpus={self.gpus} with base_image={base!r}, which has no CUDA runtime; leave "
                f"base_image='' (deploykit then uses {CUDA_IMAGE!r}) or set gpus=0."
            )
        if self.engine == "deploykit" and self.gpus > 1:
            raise InvalidArgumentError(
                f"gpus={self.gpus}: `deploykit serve` runs on one device; use gpus=1, or "
                "engine='vllm' (or 'tgi') to shard a model over several GPUs."
            )

    def _check_timing(self) -> None:
        threshold = self.startup_failure_threshold
        if threshold is not None and threshold * self.probe_period_s < self.model_load_s:
            need = math.ceil(self.model_load_s / self.probe_period_s)
            raise InvalidArgumentError(
                f"startup probe gives up after {threshold} x {self.probe_period_s} s = "
                f"{threshold * self.probe_period_s} s, shorter than model_load_s="
                f"{self.model_load_s}: Kubernetes would kill the pod while it is still loading "
                f"the model, over and over. Set startup_failure_threshold >= {need} (or None to "
                "size it from model_load_s)."
            )
        grace = self.grace_period_s
        if grace is not None and grace < self.prestop_sleep_s + self.drain_timeout_s:
            raise InvalidArgumentError(
                f"grace_period_s={grace} is shorter than the preStop sleep plus the drain "
                f"({self.prestop_sleep_s} + {self.drain_timeout_s} s): Kubernetes would SIGKILL "
                "the server while in-flight requests are still finishing. Set grace_period_s >= "
                f"{self.prestop_sleep_s + self.drain_timeout_s + 10} (or None for that default), "
                "or lower drain_timeout_s."
            )

    def _check_scaling(self) -> None:
        top = self.max_replicas
        if top is not None and top < self.replicas:
            raise InvalidArgumentError(
                f"max_replicas={top} < replicas={self.replicas}: the "
                "autoscaler's ceiling must be at least its floor."
            )
        if self.autoscaled and self.gpus > 0 and not self.queue_metric:
            raise InvalidArgumentError(
                "autoscaling a GPU server on CPU utilization does not work: the CPU idles while "
                "the GPU is saturated. Set queue_metric to the engine's waiting-requests metric "
                f"as your metrics adapter exposes it (e.g. {_QUEUE_METRICS[self.engine]!r}), or "
                "max_replicas=None."
            )
        if self.cache_access_mode == "ReadWriteOnce" and (top or self.replicas) > 1:
            raise InvalidArgumentError(
                f"up to {top or self.replicas} replicas share one model-cache volume, but "
                "cache_access_mode='ReadWriteOnce' lets only one node mount it: pods scheduled "
                "elsewhere would hang in ContainerCreating. Use cache_access_mode='ReadWriteMany' "
                "(with a storage class that offers it, e.g. NFS or a cloud file store) or one "
                "replica."
            )

    # ---- derived values ---------------------------------------------------------------------

    @property
    def autoscaled(self) -> bool:
        """Return True when a HorizontalPodAutoscaler scales the server."""
        return self.max_replicas is not None and self.max_replicas > self.replicas

    @property
    def image_ref(self) -> str:
        """Return the image Compose and Kubernetes run (the tag the Dockerfile builds)."""
        from .._version import __version__

        return self.image or f"deploykit-{self.name}:{__version__}"

    @property
    def startup_threshold(self) -> int:
        """Return the startup probe's failureThreshold: periods to cover model_load_s, plus one.

        The first probe runs as the container starts, so N failures take (N - 1) periods: the
        spare one keeps Kubernetes' rule of thumb (threshold x period >= start-up time) true.
        """
        if self.startup_failure_threshold:
            return self.startup_failure_threshold
        return math.ceil(self.model_load_s / self.probe_period_s) + 1

    @property
    def grace_s(self) -> int:
        """Return terminationGracePeriodSeconds: preStop sleep + drain + 10 s unless set."""
        return self.grace_period_s or self.prestop_sleep_s + self.drain_timeout_s + 10

    @property
    def health_path(self) -> str:
        """Return the liveness route (every engine's /health)."""
        return "/health"

    @property
    def ready_path(self) -> str:
        """Return the readiness route: deploykit's /ready; vLLM and TGI have only /health."""
        return "/ready" if self.engine == "deploykit" else "/health"

    @property
    def mounted_model(self) -> bool:
        """Return True when the model is a folder on the volume (no hub download at start)."""
        return self.model.startswith(MODEL_DIR + "/")

    def default_base_image(self) -> str:
        """Return the official base image for this engine and GPU count."""
        if self.engine == "vllm":
            return VLLM_IMAGE
        if self.engine == "tgi":
            return TGI_IMAGE
        return CUDA_IMAGE if self.gpus > 0 else PYTHON_IMAGE

    def engine_args(self) -> Any:
        """Return the engine's typed arguments (VLLMArgs / TGIArgs), or None for deploykit."""
        if self.engine in ("vllm", "tgi") and self.model in BUILTIN_MODELS:
            raise EngineArgumentError(
                f"model={self.model!r} is a deploykit built-in, which only deploykit can build; "
                f"{self.engine}'s image needs a hub id (e.g. 'meta-llama/Llama-3.1-8B-Instruct') "
                f"or a folder under {MODEL_DIR}, or use engine='deploykit'."
            )
        if self.engine == "vllm":
            # --shutdown-timeout: vLLM lets in-flight requests finish for that long on SIGTERM
            return ContainerVLLMArgs(
                model=self.model,
                dtype=self.dtype,
                max_model_len=self.max_model_len,
                tensor_parallel_size=max(self.gpus, 1),
                gpu_memory_utilization=0.9,
                extra_args=("--shutdown-timeout", str(self.drain_timeout_s)),
            )
        if self.engine == "tgi":
            return TGIArgs(
                model=self.model,
                num_shard=self.gpus if self.gpus > 1 else None,
                max_total_tokens=self.max_model_len,
            )
        return None

    def __str__(self) -> str:
        """Return the repr wrapped at 100 columns between fields, for printing."""
        return textwrap.fill(
            repr(self),
            100,
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        )

    def replace(self, **changes: Any) -> DeploymentConfig:
        """Return a copy with some fields changed (checked again, like a new one)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_name(cls, name: str, **changes: Any) -> DeploymentConfig:
        """Return a named preset, with `changes` applied (see `DeploymentConfig.presets`)."""
        if name not in _PRESETS:
            raise InvalidArgumentError(
                f"no deployment preset {name!r}; use one of: {', '.join(_PRESETS)}."
            )
        return cls(**{**_PRESETS[name], **changes})


def _pinned(image: str) -> bool:
    """Return True when an image reference names a version tag or a digest (not latest)."""
    if "@sha256:" in image:
        return True
    tag = image.rsplit("/", 1)[-1]
    return ":" in tag and not tag.endswith(":latest")


class ContainerVLLMArgs(VLLMArgs):
    """VLLMArgs for an image: the model is a hub id or a /models path resolved in the container."""

    def model_location(self) -> str:
        return self.model


# the waiting-requests gauge of each engine, as a Prometheus adapter typically exposes it
_QUEUE_METRICS = {
    "deploykit": "deploykit_num_requests_waiting",  # deploykit:num_requests_waiting
    "vllm": "vllm_num_requests_waiting",  # vLLM exports vllm:num_requests_waiting
    "tgi": "tgi_queue_size",
}

_PRESETS: dict[str, dict[str, Any]] = {
    # CI's profile and a laptop's: a real small chat model on CPU, scaled on CPU utilization
    "deploykit-cpu": dict(
        engine="deploykit",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        memory_gib=4,
        cpu_cores=2.0,
        dtype="float32",
        model_load_s=180,
        replicas=1,
        max_replicas=4,
        cache_access_mode="ReadWriteMany",
        cache_size_gib=5,
    ),
    "deploykit-gpu": dict(
        engine="deploykit",
        model="meta-llama/Llama-3.1-8B-Instruct",
        gpus=1,
        memory_gib=32,
        cpu_cores=4.0,
        dtype="bfloat16",
        model_load_s=600,
        drain_timeout_s=60,
    ),
    # vLLM: download + load + torch.compile + CUDA graph capture on the first start
    "vllm-gpu": dict(
        engine="vllm",
        model="meta-llama/Llama-3.1-8B-Instruct",
        gpus=1,
        memory_gib=32,
        cpu_cores=4.0,
        max_model_len=8192,
        model_load_s=900,
        drain_timeout_s=60,
        replicas=1,
        max_replicas=4,
        queue_metric=_QUEUE_METRICS["vllm"],
        cache_access_mode="ReadWriteMany",
    ),
    "tgi-gpu": dict(
        engine="tgi",
        model="meta-llama/Llama-3.1-8B-Instruct",
        gpus=1,
        memory_gib=32,
        cpu_cores=4.0,
        max_model_len=4096,
        port=8080,
        model_load_s=900,
        drain_timeout_s=60,
    ),
}
