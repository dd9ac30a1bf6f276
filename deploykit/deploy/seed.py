"""What the seed's container files did, setting by setting, next to what deploykit renders.

The seed (the design notes this cookbook started from) shipped a Dockerfile, a Compose file
and Kubernetes manifests. Its Dockerfile is quoted below as data, so that notebooks can run
hadolint on it beside the rendered one; everything else is compared in rows of
(file, setting, seed, deploykit, why), with deploykit's column read from a DeploymentConfig.
`differences_markdown` shows the rows as a list a page wide, rather than a five-column table.
"""

from __future__ import annotations

import textwrap

from ..report import Markdown
from .config import MODEL_DIR, USER_ID, DeploymentConfig

# Quoted from the seed's "Docker Deployment" section, unchanged.
SEED_DOCKERFILE = """\
FROM nvidia/cuda:12.1-runtime-ubuntu22.04

WORKDIR /app

# Install Python
RUN apt-get update && apt-get install -y python3 python3-pip

# Install dependencies
COPY requirements.txt .
RUN pip3 install --no-cache-dir -r requirements.txt

# Copy application
COPY . .

# Download model (or mount volume)
RUN python3 -c "from transformers import AutoModelForCausalLM; \\
    AutoModelForCausalLM.from_pretrained('meta-llama/Llama-2-7b-chat-hf')"

EXPOSE 8000

CMD ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000"]
"""


def docker_differences(config: DeploymentConfig) -> list[dict[str, str]]:
    """Return the Dockerfile and Compose settings that differ from the seed's, and why."""
    base = config.base_image or config.default_base_image()
    c = config
    rows = [
        (
            "Dockerfile",
            "model",
            "downloaded at build (`RUN ... from_pretrained`): a 13 GB layer",
            f"none in the image: downloaded at first start into {MODEL_DIR}, or mounted there",
            "a small image, one per engine version; new weights need no rebuild; no hub token "
            "at build time",
        ),
        (
            "Dockerfile",
            "user",
            "root (no USER)",
            f"USER {USER_ID}",
            "a process that escapes the server is not root; Kubernetes can enforce runAsNonRoot",
        ),
        (
            "Dockerfile",
            "base image",
            "nvidia/cuda:12.1-runtime-ubuntu22.04 (not a published tag: "
            "they carry the patch version)",
            base,
            "pinned and official: the CUDA runtime only where a GPU is used",
        ),
        (
            "Dockerfile",
            "what is copied",
            "COPY . . (the whole folder, .env and .git included)",
            "app/ (deploykit's code, last) and wheelhouse/ (into a first stage only); "
            "an allow-list .dockerignore",
            "a secret in the build context would end up in a layer anyone with the image can read",
        ),
        (
            "Dockerfile",
            "network at build",
            "pip install from PyPI while building",
            "none: pip --no-index from wheelhouse/, FROM ${BASE} a build argument",
            "builds where no registry or index is reachable, and installs what was tested",
        ),
        (
            "Dockerfile",
            "health",
            "none",
            f"HEALTHCHECK on {c.health_path}, start period {c.model_load_s} s",
            "Docker and Compose know when the server is up, or stuck",
        ),
        (
            "Dockerfile",
            "stop",
            "uvicorn: open requests cut at SIGTERM",
            f"STOPSIGNAL SIGTERM; the server drains up to {c.drain_timeout_s} s",
            "a restart or deploy no longer fails the requests in flight",
        ),
        (
            "Compose",
            "version: '3.8'",
            "present",
            "removed",
            "obsolete: Compose ignores it and warns",
        ),
        (
            "Compose",
            "model volume",
            "./models:/root/.cache/huggingface (root's home)",
            f"named volume model-cache:{MODEL_DIR}",
            "the cache outlives the container, and the non-root user can write it",
        ),
        (
            "Compose",
            "hub token",
            "not passed (the gated Llama 2 cannot download)",
            f"environment: [{c.hf_token_env}], passed from the shell by name",
            "the token's value is never written into a file",
        ),
        ("Compose", "restart", "none (a crash stays down)", "unless-stopped", "a crash restarts"),
        (
            "Compose",
            "stop grace",
            "10 s, Docker's default, then SIGKILL",
            f"stop_grace_period {c.drain_timeout_s + 10}s",
            "longer than the drain",
        ),
        (
            "Compose",
            "PID 1",
            "the server, with no SIGTERM handler while the model loads",
            "init: true (tini forwards the signal)",
            "a stop during the load ends at once instead of waiting for SIGKILL",
        ),
        (
            "Compose",
            "healthcheck",
            "curl, no start period: unhealthy while the model loads",
            f"start_period {c.model_load_s}s",
            "loading is not a failure",
        ),
        (
            "Compose",
            "CUDA_VISIBLE_DEVICES=0",
            "set by hand",
            "not set",
            "the device reservation already picks the GPU; a fixed index can point at another one",
        ),
    ]
    return [dict(zip(("file", "setting", "seed", "deploykit", "why"), row)) for row in rows]


def kubernetes_differences(config: DeploymentConfig) -> list[dict[str, str]]:
    """Return the Kubernetes settings that differ from the seed's manifests, and why."""
    c = config
    scaling = (
        f"HPA {c.replicas}..{c.max_replicas} on {c.queue_metric or 'CPU utilization'}"
        if c.autoscaled
        else f"{c.replicas} (set max_replicas to autoscale)"
    )
    rows = [
        (
            "Deployment",
            "image",
            "llm-inference:latest",
            c.image_ref,
            "latest changes under a running Deployment; a pinned tag rolls out on purpose",
        ),
        (
            "Deployment",
            "startup probe",
            "none",
            f"{c.health_path} every {c.probe_period_s} s, "
            f"{c.startup_threshold} tries = {c.probe_period_s * c.startup_threshold} s",
            f"covers the model load ({c.model_load_s} s) before liveness starts",
        ),
        (
            "Deployment",
            "liveness probe",
            "/health after 120 s, every 30 s: a slower load is killed, again and again",
            f"{c.health_path}, only after the startup probe passed",
            "restarts a hung server, never a loading one",
        ),
        (
            "Deployment",
            "readiness probe",
            "none: traffic reaches loading and draining pods",
            c.ready_path,
            "the Service routes only to pods that can answer",
        ),
        (
            "Deployment",
            "grace period",
            "30 s default, no drain",
            f"{c.grace_s} s = preStop {c.prestop_sleep_s} s + drain {c.drain_timeout_s} s + margin",
            "SIGKILL comes only after the in-flight requests have finished",
        ),
        (
            "Deployment",
            "preStop",
            "none",
            f"sleep {c.prestop_sleep_s}",
            "lets the Service stop routing to the pod before it stops accepting",
        ),
        (
            "Deployment",
            "resources",
            "memory request 24Gi below limit 32Gi; no CPU request",
            f"memory {c.memory_gib}Gi request = limit; cpu {c.cpu_cores}; GPUs {c.gpus}",
            "the scheduler reserves what the pod can use; the HPA needs a CPU request",
        ),
        (
            "Deployment",
            "security",
            "none (root)",
            "runAsNonRoot, drop ALL capabilities, no privilege escalation, seccomp RuntimeDefault",
            "least privilege",
        ),
        (
            "Deployment",
            "rollout",
            "default: 25% of pods may be down",
            "maxSurge 1, maxUnavailable 0",
            "capacity never drops during an update",
        ),
        (
            "PVC",
            "model cache",
            "model-pvc: referenced, never defined",
            f"{c.name}-model-cache, {c.cache_size_gib}Gi, {c.cache_access_mode}",
            "the pod would wait forever for a claim that does not exist",
        ),
        (
            "Service",
            "type",
            "LoadBalancer: a public, unauthenticated endpoint",
            "ClusterIP",
            "expose it through your ingress, with authentication",
        ),
        ("HPA", "replicas", "2, fixed", scaling, "capacity follows load"),
        (
            "PDB",
            "disruptions",
            "none: a node drain may evict every replica at once",
            "maxUnavailable 1",
            "voluntary evictions take one pod at a time",
        ),
    ]
    return [dict(zip(("object", "setting", "seed", "deploykit", "why"), row)) for row in rows]


def differences_markdown(rows: list[dict[str, str]], width: int = 100) -> Markdown:
    """Return difference rows as a Markdown list, one item per setting, wrapped to width.

    Each item reads: the file or object and the setting, then the seed's value, deploykit's
    value and why, so the seed-versus-now comparison fits a page.
    """
    items = []
    for row in rows:
        where = row.get("file") or row.get("object") or ""
        text = (
            f"**{where}, {row['setting']}.** *Seed:* {row['seed']}. "
            f"*deploykit:* {row['deploykit']}. *Why:* {row['why']}."
        )
        items.append(
            textwrap.fill(
                text, width, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False
            )
        )
    return Markdown("\n".join(items))
