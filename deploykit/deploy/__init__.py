"""Dockerfile, Compose, Kubernetes and nginx files rendered from one config, and checked."""

from .config import ENGINES, DeploymentConfig
from .docker import (HostCommand, Substitution, compose_file, compose_yaml, container_command,
                     docker_commands, dockerfile, exec_form, healthcheck_command, host_command,
                     image_command, run_healthcheck, write_docker_files)
from .drain import DrainResult, sigterm_drain
from .kubernetes import (KUBERNETES_VERSION, deployment, kubernetes_commands, manifests,
                         manifests_yaml, plot_pod_timeline, probe_timeline, probes, write_manifests)
from .nginx import (check_nginx_config, nginx_config, nginx_path, nginx_worker_user, start_nginx,
                    write_nginx_config)
from .seed import SEED_DOCKERFILE, docker_differences, kubernetes_differences
from .validate import (COMPOSE_SCHEMA_SOURCE, Check, hadolint_version, lint_dockerfile,
                       validate_compose, validate_manifests)

__all__ = [
    "ENGINES", "DeploymentConfig",
    "HostCommand", "Substitution", "compose_file", "compose_yaml", "container_command",
    "docker_commands", "dockerfile", "exec_form", "healthcheck_command", "host_command",
    "image_command", "run_healthcheck", "write_docker_files", "DrainResult", "sigterm_drain",
    "KUBERNETES_VERSION", "deployment", "kubernetes_commands", "manifests", "manifests_yaml",
    "plot_pod_timeline", "probe_timeline", "probes", "write_manifests",
    "check_nginx_config", "nginx_config", "nginx_path", "nginx_worker_user", "start_nginx",
    "write_nginx_config",
    "SEED_DOCKERFILE", "docker_differences", "kubernetes_differences",
    "COMPOSE_SCHEMA_SOURCE", "Check", "hadolint_version", "lint_dockerfile", "validate_compose",
    "validate_manifests",
]
