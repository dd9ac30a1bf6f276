"""Render a DeploymentConfig as Kubernetes manifests: the objects a model server needs to live.

A PersistentVolumeClaim for the model cache, a Deployment (startup, readiness and liveness
probes sized from the model-load time; GPU, CPU and memory requests; a non-root security
context; a preStop pause and a grace period longer than the drain), a ClusterIP Service, a
HorizontalPodAutoscaler when the config autoscales, and a PodDisruptionBudget. The hub token
is read from a Secret that `kubernetes_commands` tells you to create: no value is rendered.
No Ingress (it depends on your controller) and no Helm chart: nothing here can check one.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from .config import MODEL_DIR, USER_ID, DeploymentConfig
from .docker import _environment, image_command

KUBERNETES_VERSION = "1.33.0"  # the schemas the manifests are validated against (strict)
_LIVENESS_FAILURES = 3
_READINESS_PERIOD_S = 5


def _labels(config: DeploymentConfig) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": config.name,
        "app.kubernetes.io/component": "llm-server",
        "app.kubernetes.io/managed-by": "deploykit",
    }


def _selector(config: DeploymentConfig) -> dict[str, str]:
    return {"app.kubernetes.io/name": config.name}


def _meta(config: DeploymentConfig, name: str) -> dict[str, Any]:
    return {"name": name, "labels": _labels(config)}


def secret_name(config: DeploymentConfig) -> str:
    """Return the name of the Secret holding the hub token (created by hand, never rendered)."""
    return f"{config.name}-hf-token"


def _probe(path: str, period_s: int, failures: int, timeout_s: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
    }


def probes(config: DeploymentConfig) -> dict[str, dict[str, Any]]:
    """Return the startup, readiness and liveness probes, sized from the model-load time.

    The startup probe allows model_load_s before the pod counts as failed; liveness and
    readiness only begin once it has passed, so they can stay short and strict.
    """
    return {
        "startupProbe": _probe(config.health_path, config.probe_period_s, config.startup_threshold),
        "readinessProbe": _probe(config.ready_path, _READINESS_PERIOD_S, 2, timeout_s=3),
        "livenessProbe": _probe(config.health_path, config.probe_period_s, _LIVENESS_FAILURES),
    }


def _resources(config: DeploymentConfig) -> dict[str, Any]:
    memory = f"{config.memory_gib}Gi"
    requests: dict[str, Any] = {"cpu": f"{int(config.cpu_cores * 1000)}m", "memory": memory}
    # memory limit = request: a pod that outgrows it is OOM-killed on its own, not its neighbours;
    # no CPU limit: throttling a server adds latency to every token
    limits: dict[str, Any] = {"memory": memory}
    if config.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = config.gpus
    return {"requests": requests, "limits": limits}


def container_env(config: DeploymentConfig) -> list[dict[str, Any]]:
    """Return a server container's env: the image's settings and the hub token from its Secret."""
    env: list[dict[str, Any]] = [
        {"name": k, "value": v} for k, v in _environment(config).items() if k != "HOME"
    ]
    env.append(
        {
            "name": config.hf_token_env,
            "valueFrom": {
                "secretKeyRef": {
                    "name": secret_name(config),
                    "key": config.hf_token_env,
                    "optional": True,
                }
            },
        }
    )
    return env


def deployment(config: DeploymentConfig) -> dict[str, Any]:
    """Return the Deployment manifest."""
    env = container_env(config)
    container: dict[str, Any] = {
        "name": "server",
        "image": config.image_ref,
        "imagePullPolicy": "IfNotPresent",
        "args": image_command(config),  # as the image's CMD: visible and editable here
        "ports": [{"name": "http", "containerPort": config.port, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(config),
        **probes(config),
        # the Service stops routing to a terminating pod asynchronously; the pause lets that
        # happen before SIGTERM, so no new request lands on a server that is draining
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(config.prestop_sleep_s)]}}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_DIR}],
    }
    volumes: list[dict[str, Any]] = [
        {
            "name": "model-cache",
            "persistentVolumeClaim": {
                "claimName": f"{config.name}-model-cache",
                "readOnly": config.cache_access_mode == "ReadOnlyMany",
            },
        }
    ]
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": config.grace_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,  # makes the volume writable by that user
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if config.gpus:
        # tensor-parallel workers share memory through /dev/shm; the container default is 64 MiB
        container["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}})
        # GPU node pools are usually tainted so that only GPU workloads land there
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": _selector(config)},
        # a new pod must be ready before an old one goes: capacity never drops during a rollout
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        # the model load is slow: wait for it before declaring a rollout stuck
        "progressDeadlineSeconds": max(600, 2 * config.model_load_s),
        "template": {"metadata": {"labels": _labels(config)}, "spec": pod},
    }
    if not config.autoscaled:  # with an HPA, replicas in the manifest would fight it on apply
        spec = {"replicas": config.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(config, config.name),
        "spec": spec,
    }


def persistent_volume_claim(config: DeploymentConfig) -> dict[str, Any]:
    """Return the PVC that holds the model cache (hub downloads, or weights you copy there)."""
    spec: dict[str, Any] = {
        "accessModes": [config.cache_access_mode],
        "resources": {"requests": {"storage": f"{config.cache_size_gib}Gi"}},
    }
    if config.storage_class:
        spec["storageClassName"] = config.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(config, f"{config.name}-model-cache"),
        "spec": spec,
    }


def service(config: DeploymentConfig) -> dict[str, Any]:
    """Return a ClusterIP Service on port 80 (expose it through your Ingress or gateway)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(config, config.name),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(config),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def horizontal_pod_autoscaler(config: DeploymentConfig) -> dict[str, Any]:
    """Return the HPA (autoscaling/v2): CPU utilization, or waiting requests per pod for GPUs."""
    if config.queue_metric:
        metric = {
            "type": "Pods",
            "pods": {
                "metric": {"name": config.queue_metric},
                "target": {"type": "AverageValue", "averageValue": str(config.queue_target)},
            },
        }
    else:
        metric = {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(config, config.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": config.name},
            "minReplicas": config.replicas,
            "maxReplicas": config.max_replicas,
            "metrics": [metric],
            # a new replica costs a model load: add one at a time, remove slowly
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [
                        {"type": "Pods", "value": 1, "periodSeconds": max(60, config.model_load_s)}
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 600,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
                },
            },
        },
    }


def pod_disruption_budget(config: DeploymentConfig) -> dict[str, Any]:
    """Return the PDB: voluntary evictions (node drains, upgrades) take one pod at a time.

    maxUnavailable 1 rather than minAvailable: with one replica, minAvailable 1 would block
    every node drain forever.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(config, config.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": _selector(config)},
            # a pod that never became ready protects nothing: let drains evict it
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def manifests(config: DeploymentConfig) -> list[dict[str, Any]]:
    """Return every manifest, in the order `kubectl apply` should create them."""
    docs = [persistent_volume_claim(config), deployment(config), service(config)]
    if config.autoscaled:
        docs.append(horizontal_pod_autoscaler(config))
    return docs + [pod_disruption_budget(config)]


FILE_NAMES = {
    "PersistentVolumeClaim": "pvc.yaml",
    "Deployment": "deployment.yaml",
    "Service": "service.yaml",
    "HorizontalPodAutoscaler": "hpa.yaml",
    "PodDisruptionBudget": "pdb.yaml",
}


def kustomization(config: DeploymentConfig) -> dict[str, Any]:
    """Return the kustomization.yaml that lists the manifests: `kubectl apply -k <folder>`."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [FILE_NAMES[doc["kind"]] for doc in manifests(config)],
    }


def write_manifests(config: DeploymentConfig, out_dir: str | Path) -> dict[str, Path]:
    """Write one file per manifest and a kustomization.yaml into out_dir; return their paths.

    Paths are under out_dir as given; the kustomization lists the others by name, so the
    folder works from anywhere (`kubectl apply -k out_dir`) and can be copied elsewhere.
    """
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for doc in manifests(config):
        paths[FILE_NAMES[doc["kind"]]] = out / FILE_NAMES[doc["kind"]]
        paths[FILE_NAMES[doc["kind"]]].write_text(yaml.safe_dump(doc, sort_keys=False))
    for stale in set(FILE_NAMES.values()) - set(paths):  # e.g. an HPA from an earlier run
        (out / stale).unlink(missing_ok=True)
    paths["kustomization.yaml"] = out / "kustomization.yaml"
    paths["kustomization.yaml"].write_text(yaml.safe_dump(kustomization(config), sort_keys=False))
    return paths


def kubernetes_commands(config: DeploymentConfig, out_dir: str | Path) -> list[str]:
    """Return the commands that deploy out_dir's manifests where a cluster exists.

    Paths are out_dir as given: run the commands from the folder it is relative to.
    """
    rollout_s = config.model_load_s + 120
    return [
        f"docker push {config.image_ref}  # after `docker build` (notebook 14), tagged for your registry",
        # the token travels from the shell variable into the Secret; it is never in a file
        f"kubectl create secret generic {secret_name(config)} "
        f'--from-literal={config.hf_token_env}="${config.hf_token_env}"',
        shlex.join(["kubectl", "apply", "-k", Path(out_dir).as_posix()]),
        f"kubectl rollout status deployment/{config.name} --timeout={rollout_s}s",
        f"kubectl port-forward service/{config.name} {config.port}:80",
        f"curl -s localhost:{config.port}{config.ready_path}",
    ]


def probe_timeline(config: DeploymentConfig) -> dict[str, float]:
    """Return the seconds each probe allows: start-up budget, readiness and liveness reaction."""
    return {
        "startup_budget_s": config.probe_period_s * config.startup_threshold,
        "model_load_s": config.model_load_s,
        "liveness_restart_after_s": config.probe_period_s * _LIVENESS_FAILURES,
        "readiness_eject_after_s": _READINESS_PERIOD_S * 2,
        "grace_period_s": config.grace_s,
        "prestop_plus_drain_s": config.prestop_sleep_s + config.drain_timeout_s,
    }


def probe_table(config: DeploymentConfig) -> list[dict[str, Any]]:
    """Return one row per probe: what it calls, how often, and what it does after how long."""
    action = {
        "startupProbe": "restart the container",
        "readinessProbe": "stop routing to the pod",
        "livenessProbe": "restart the container",
    }
    rows = []
    for kind, probe in probes(config).items():
        period, failures = probe["periodSeconds"], probe["failureThreshold"]
        rows.append(
            {
                "probe": kind,
                "path": probe["httpGet"]["path"],
                "every_s": period,
                "timeout_s": probe["timeoutSeconds"],
                "failures": failures,
                "acts_after_s": period * failures,
                "action": action[kind],
            }
        )
    return rows


def plot_pod_timeline(config: DeploymentConfig):
    """Plot a pod's start (model load vs startup-probe budget) and stop (preStop, drain, grace)."""
    import matplotlib.pyplot as plt

    t = probe_timeline(config)
    fig, (start, stop) = plt.subplots(2, 1, figsize=(8, 3.8))
    # one colour per quantity, none shared between the panels
    start_bars = [
        ("model load, worst case", 0, t["model_load_s"], "tab:blue"),
        ("startup probe budget", 0, t["startup_budget_s"], "tab:green"),
    ]
    stop_bars = [
        ("preStop sleep", 0, config.prestop_sleep_s, "tab:gray"),
        ("drain after SIGTERM", config.prestop_sleep_s, config.drain_timeout_s, "tab:orange"),
        ("grace period (then SIGKILL)", 0, t["grace_period_s"], "tab:red"),
    ]
    for ax, bars in ((start, start_bars), (stop, stop_bars)):
        labels = [b[0] for b in bars]
        ax.barh(labels, [b[2] for b in bars], left=[b[1] for b in bars], color=[b[3] for b in bars])
        ax.invert_yaxis()  # first bar on top, in the order the events happen
        end = max(b[1] + b[2] for b in bars)
        for label, left, width, _ in bars:
            ax.annotate(
                f"ends at {left + width:g} s",
                (left + width, label),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        ax.set_xlim(0, end * 1.22)
    start.set_title("start: the startup probe must outlast the model load", fontsize=10)
    start.set_xlabel("seconds after the container starts")
    stop.set_title("stop: in-flight requests must finish before the grace period ends", fontsize=10)
    stop.set_xlabel("seconds after the pod is told to terminate")
    fig.tight_layout()
    return fig
