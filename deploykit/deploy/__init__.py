"""Dockerfile, Compose, Kubernetes and KubeRay files rendered from one config, and checked."""

from .config import DeploymentConfig
from .docker import (
    docker_commands,
    dockerfile,
    exec_form,
    host_command,
    run_healthcheck,
    write_docker_files,
)
from .kuberay import (
    RAYSERVICE_SCHEMA_SOURCE,
    kuberay_commands,
    ray_serve_config,
    rayservice,
    rayservice_manifests,
    rayservice_mistakes,
    validate_rayservice,
    write_rayservice,
)
from .kubernetes import (
    kubernetes_commands,
    manifests,
    plot_pod_timeline,
    probe_table,
    probe_timeline,
    probes,
    write_manifests,
)
from .seed import (
    SEED_DOCKERFILE,
    differences_markdown,
    docker_differences,
    kubernetes_differences,
)
from .validate import (
    COMPOSE_SCHEMA_SOURCE,
    check_build_context,
    check_kustomization,
    hadolint_version,
    lint_dockerfile,
    validate_compose,
    validate_manifests,
)

__all__ = [
    "DeploymentConfig",
    "docker_commands",
    "dockerfile",
    "exec_form",
    "host_command",
    "run_healthcheck",
    "write_docker_files",
    "RAYSERVICE_SCHEMA_SOURCE",
    "kuberay_commands",
    "ray_serve_config",
    "rayservice",
    "rayservice_manifests",
    "rayservice_mistakes",
    "validate_rayservice",
    "write_rayservice",
    "kubernetes_commands",
    "manifests",
    "plot_pod_timeline",
    "probe_table",
    "probe_timeline",
    "probes",
    "write_manifests",
    "SEED_DOCKERFILE",
    "differences_markdown",
    "docker_differences",
    "kubernetes_differences",
    "COMPOSE_SCHEMA_SOURCE",
    "check_build_context",
    "check_kustomization",
    "hadolint_version",
    "lint_dockerfile",
    "validate_compose",
    "validate_manifests",
]
