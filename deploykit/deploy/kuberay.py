"""Render a DeploymentConfig as a KubeRay RayService, and check it as far as offline tools allow.

The RayService is the Kubernetes form of the Ray Serve recipe: KubeRay's operator starts a
Ray cluster (a head pod, worker pods that its autoscaler adds as Serve asks for replicas)
and deploys `serveConfigV2` on it through the head's REST API, the call
`RayCluster.deploy` makes on a local cluster. Both come from one `RayServeConfig`, which
`ray_serve_config` derives from the same DeploymentConfig as notebook 15's manifests: the
same model, engine, image, per-replica resources, replica bounds and drain time.

Checks, none of which needs a cluster: the manifest against the RayService CRD's own schema
(vendored from KubeRay, below), and against a strict copy that rejects unknown fields (the
API server prunes them without a word); each pod template against Kubernetes' schemas
(kubernetes-validate, strict); serveConfigV2 against Ray Serve's own config model, with the
application built from its import path and args; cross-checks the schemas cannot make.
What stays unchecked: the operator's behaviour, the image's contents, and any rule the API
server enforces in Go (e.g. imagePullPolicy's values).
"""

from __future__ import annotations

import copy
import json
import math
import shlex
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..rayserve.serve import (
    DEPLOYKIT_IMPORT_PATH,
    DEPLOYMENT_NAME,
    VLLM_IMPORT_PATH,
    RayServeConfig,
    ServeAutoscaling,
)
from .config import MODEL_DIR, USER_ID, DeploymentConfig
from .kubernetes import (
    KUBERNETES_VERSION,
    _labels,
    container_env,
    persistent_volume_claim,
    secret_name,
)
from .validate import Check

RAY_VERSION = "2.60.0"  # as pyproject.toml pins ray[serve]: the image must hold the same
KUBERAY_VERSION = "1.7.0"
RAYSERVICE_SCHEMA = Path(__file__).with_name("rayservice.v1.schema.json")
RAYSERVICE_SCHEMA_SOURCE = (
    "https://github.com/ray-project/kuberay/blob/v1.7.0/ray-operator/config/crd/bases/"
    "ray.io_rayservices.yaml, the v1 openAPIV3Schema (commit "
    "59d663aeec13760646da3db9c1cf8cfe883e30b7, Apache-2.0)"
)
# Ray's image with Ray Serve LLM and vLLM, for engine="vllm" (not pulled or checked here)
RAY_LLM_IMAGE = f"rayproject/ray-llm:{RAY_VERSION}-py311-cu128"
AGENT_PORT = 52365  # the dashboard agent's default: KubeRay's probes read it
SERVE_PORT = 8000


def ray_serve_config(
    config: DeploymentConfig,
    autoscaling: ServeAutoscaling | None = None,
    *,
    max_ongoing_requests: int = 32,
    max_batch_size: int = 32,
    threads: int | None = None,
) -> RayServeConfig:
    """Return the Ray Serve application of a deployment: same model, engine, resources, bounds.

    Replicas scale between config.replicas and config.max_replicas (or stay at replicas);
    autoscaling gives the rest of the autoscaler's settings (its min and max are replaced).
    Each replica reserves config.cpu_cores and config.gpus; it may take drain_timeout_s to
    finish its requests when Serve stops it.
    """
    if config.engine not in ("deploykit", "vllm"):
        raise InvalidArgumentError(
            f"engine={config.engine!r}: Ray Serve runs deploykit's engine or vLLM (Ray Serve "
            "LLM); use engine='deploykit' or 'vllm'."
        )
    base = autoscaling or ServeAutoscaling()
    high = config.max_replicas or config.replicas
    scaling = ServeAutoscaling(
        **{
            **{k: getattr(base, k) for k in base.__dataclass_fields__},
            "min_replicas": config.replicas,
            "max_replicas": high,
            "initial_replicas": None,
        }
    )
    return RayServeConfig(
        model=config.model,
        engine=config.engine,
        app_name=config.name,
        device="cuda" if config.gpus else "cpu",
        dtype=config.dtype,
        max_batch_size=max_batch_size,
        threads=threads or max(1, int(config.cpu_cores)),
        max_model_len=config.max_model_len,
        num_cpus=config.cpu_cores,
        num_gpus=float(config.gpus),
        max_ongoing_requests=max_ongoing_requests,
        autoscaling=scaling,
        graceful_shutdown_timeout_s=float(config.drain_timeout_s),
    )


def _env(config: DeploymentConfig) -> list[dict[str, Any]]:
    return [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}, *container_env(config)]


def _pod(config: DeploymentConfig, container: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {
                "name": "model-cache",
                "persistentVolumeClaim": {"claimName": f"{config.name}-model-cache"},
            },
            # Ray's object store and session files live in /dev/shm and /tmp
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
        ],
    }
    if config.gpus:
        spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {"metadata": {"labels": _labels(config)}, "spec": spec}


def _container(config: DeploymentConfig, name: str, head: bool) -> dict[str, Any]:
    image = config.image or (RAY_LLM_IMAGE if config.engine == "vllm" else config.image_ref)
    memory = f"{config.memory_gib}Gi" if not head else "4Gi"
    requests: dict[str, Any] = {"cpu": "1" if head else f"{int(config.cpu_cores * 1000)}m"}
    requests["memory"] = memory
    limits: dict[str, Any] = {"memory": memory}
    if config.gpus and not head:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = config.gpus
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": _env(config),
        "resources": {"requests": requests, "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "model-cache", "mountPath": MODEL_DIR},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    if head:
        container["ports"] = [
            {"name": "gcs-server", "containerPort": 6379},
            {"name": "dashboard", "containerPort": 8265},
            {"name": "client", "containerPort": 10001},
            {"name": "serve", "containerPort": SERVE_PORT},
        ]
    else:
        container["ports"] = [{"name": "serve", "containerPort": SERVE_PORT}]
        # KubeRay's own readiness check for a RayService worker runs wget, which python:slim
        # images lack: the same two checks (raylet, Serve's proxy) with the image's Python
        urls = (
            f"http://localhost:{AGENT_PORT}/api/healthz",
            f"http://localhost:{SERVE_PORT}/-/healthz",
        )
        code = f"import urllib.request as u\nfor url in {urls!r}: u.urlopen(url, timeout=2)"
        container["readinessProbe"] = {
            "exec": {"command": ["python", "-c", code]},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 1,
        }
    return container


def serve_config_v2(serve: RayServeConfig) -> str:
    """Return spec.serveConfigV2: the Serve config as a YAML string, without http_options.

    Serve's defaults then hold in the cluster: a proxy on every node on 0.0.0.0:8000, which
    KubeRay's <name>-serve-svc Service sends traffic to.
    """
    import yaml

    document = serve.serve_config(http_host=None, proxy_location="EveryNode")
    return yaml.safe_dump(
        {"applications": document["applications"]}, sort_keys=False, default_flow_style=False
    )


def rayservice(config: DeploymentConfig, serve: RayServeConfig | None = None) -> dict[str, Any]:
    """Return the RayService manifest of config (serve: its Serve application; derived if None)."""
    serve = serve or ray_serve_config(config)
    scaling = serve.autoscaling
    cpus_per_pod = max(1, math.ceil(serve.num_cpus))
    worker_params: dict[str, str] = {"num-cpus": str(cpus_per_pod)}
    if config.gpus:
        worker_params["num-gpus"] = str(config.gpus)
    # one replica per worker pod: Serve asks for a replica, the autoscaler adds a pod for it
    pods_per_replica = max(
        1,
        math.ceil(serve.num_cpus / cpus_per_pod),
        math.ceil(serve.num_gpus / config.gpus) if config.gpus else 1,
    )
    group = "gpu" if config.gpus else "cpu"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": config.name, "labels": _labels(config)},
        "spec": {
            "serveConfigV2": serve_config_v2(serve),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                # Serve's autoscaler asks for replicas; Ray's autoscaler adds pods for them
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"idleTimeoutSeconds": 60},
                "headGroupSpec": {
                    # no replicas on the head: losing a worker pod never takes the GCS with it
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": _pod(config, _container(config, "ray-head", head=True)),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": group,
                        "replicas": scaling.min_replicas * pods_per_replica,
                        "minReplicas": scaling.min_replicas * pods_per_replica,
                        "maxReplicas": scaling.max_replicas * pods_per_replica,
                        "rayStartParams": worker_params,
                        "template": _pod(config, _container(config, "ray-worker", head=False)),
                    }
                ],
            },
        },
    }


def rayservice_manifests(
    config: DeploymentConfig, serve: RayServeConfig | None = None
) -> list[dict[str, Any]]:
    """Return what `kubectl apply` needs: the model-cache PVC (as notebook 15's), the RayService."""
    return [persistent_volume_claim(config), rayservice(config, serve)]


def write_rayservice(
    config: DeploymentConfig, out_dir: str | Path, serve: RayServeConfig | None = None
) -> Path:
    """Write rayservice.yaml and a kustomization.yaml to out_dir; return the folder.

    `kubectl apply -k out_dir` applies them as they are.
    """
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = rayservice_manifests(config, serve)
    (out / "rayservice.yaml").write_text(
        "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
    )
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["rayservice.yaml"],
    }
    (out / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return out


def kuberay_commands(config: DeploymentConfig, out_dir: str | Path) -> list[str]:
    """Return the commands that run the RayService where a cluster exists (kubectl configured)."""
    return [
        "helm repo add kuberay https://ray-project.github.io/kuberay-helm/",
        f"helm install kuberay-operator kuberay/kuberay-operator --version {KUBERAY_VERSION}",
        f"kubectl create secret generic {secret_name(config)} "
        f'--from-literal={config.hf_token_env}="${config.hf_token_env}"',
        shlex.join(["kubectl", "apply", "-k", str(out_dir)]),
        f"kubectl wait rayservice/{config.name} --for=condition=Ready "
        f"--timeout={config.model_load_s + 300}s",
        f"kubectl port-forward service/{config.name}-serve-svc {SERVE_PORT}:{SERVE_PORT}",
        f"curl -s localhost:{SERVE_PORT}/v1/models",
    ]


# ---- checks -------------------------------------------------------------------------------


@cache
def _schema(strict: bool) -> dict[str, Any]:
    schema = json.loads(RAYSERVICE_SCHEMA.read_text())
    if not strict:
        return schema

    def close(node: Any) -> None:
        # a CRD schema lets unknown fields through (the API server prunes them): close every
        # object that lists its properties, as `kubectl apply --validate=strict` would
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    strict_schema = copy.deepcopy(schema)
    close(strict_schema)
    return strict_schema


def _crd_problems(doc: dict[str, Any], strict: bool) -> tuple[str, ...]:
    import jsonschema

    validator = jsonschema.Draft7Validator(_schema(strict))
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return tuple(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def _pod_template_problems(doc: dict[str, Any], kubernetes_version: str) -> tuple[str, ...]:
    import kubernetes_validate

    cluster = doc.get("spec", {}).get("rayClusterConfig", {})
    groups = [("headGroupSpec", cluster.get("headGroupSpec", {}))]
    groups += [
        (f"workerGroupSpecs[{g.get('groupName')}]", g) for g in cluster.get("workerGroupSpecs", [])
    ]
    problems = []
    for where, group in groups:
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "check"},
            "template": group.get("template", {}),
        }
        try:
            kubernetes_validate.validate(wrapped, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{where}.{path}: {exc.message}")
    return tuple(problems)


def _serve_problems(doc: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    import yaml
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    text = doc.get("spec", {}).get("serveConfigV2")
    if not isinstance(text, str):
        return ("spec.serveConfigV2 is missing (or not a YAML string)",), None
    try:
        config = yaml.safe_load(text)
        schema = ServeDeploySchema.model_validate(config)
    except yaml.YAMLError as exc:
        return (f"serveConfigV2 is not YAML: {exc}",), None
    except ValidationError as exc:
        return tuple(f"serveConfigV2 {e['loc']}: {e['msg']}" for e in exc.errors()), None
    problems = []
    for app in schema.applications:
        where = f"serveConfigV2 application {app.name!r}"
        if app.import_path != VLLM_IMPORT_PATH:  # Ray Serve LLM's builder needs vLLM
            problems += _build_problems(where, app.import_path, app.args or {})
        if app.import_path == DEPLOYKIT_IMPORT_PATH:
            problems += [
                f"{where}: no deployment named {d.name!r} (it has [{DEPLOYMENT_NAME!r}])"
                for d in app.deployments
                if d.name != DEPLOYMENT_NAME
            ]
        for deployment in app.deployments:
            scaling = deployment.autoscaling_config
            if not isinstance(scaling, dict):
                continue
            # Serve keeps it as a plain dict here, and AutoscalingConfig ignores unknown keys
            unknown = sorted(set(scaling) - set(AutoscalingConfig.model_fields))
            problems += [f"{where}: autoscaling_config has no key {k!r}" for k in unknown]
            try:
                AutoscalingConfig(**scaling)
            except ValidationError as exc:
                problems += [f"{where}: autoscaling_config: {e['msg']}" for e in exc.errors()]
    return tuple(problems), config


def _build_problems(where: str, import_path: str, args: dict[str, Any]) -> list[str]:
    """Import the application's builder and call it with args, as Serve's controller would."""
    import importlib

    module, _, attr = (
        import_path.partition(":") if ":" in import_path else import_path.rpartition(".")
    )
    try:
        target = getattr(importlib.import_module(module), attr)
        if callable(target):
            target(args)
    except Exception as exc:  # the builder's own complaint, as Serve would report it
        return [f"{where}: {import_path} with args {args}: {type(exc).__name__}: {exc}"]
    return []


def _cross_problems(doc: dict[str, Any], serve: dict[str, Any] | None) -> tuple[str, ...]:
    import ray

    problems = []
    cluster = doc.get("spec", {}).get("rayClusterConfig", {})
    if cluster.get("rayVersion") != ray.__version__:
        problems.append(
            f"rayVersion {cluster.get('rayVersion')!r} is not the Ray installed here "
            f"({ray.__version__}), which the checks and the image must share"
        )
    pods_cpus = 0.0
    for group in cluster.get("workerGroupSpecs", []):
        low, n, high = (group.get(k) for k in ("minReplicas", "replicas", "maxReplicas"))
        if not all(isinstance(v, int) for v in (low, n, high)) or not low <= n <= high:
            problems.append(
                f"worker group {group.get('groupName')!r}: need minReplicas <= replicas <= "
                f"maxReplicas, got {low}, {n}, {high}"
            )
            continue
        pods_cpus += float(group.get("rayStartParams", {}).get("num-cpus", 0)) * high
    need = 0.0
    for app in (serve or {}).get("applications", []):
        for deployment in app.get("deployments", []):
            scaling = deployment.get("autoscaling_config") or {}
            replicas = scaling.get("max_replicas", deployment.get("num_replicas", 1))
            need += replicas * deployment.get("ray_actor_options", {}).get("num_cpus", 1)
    if need > pods_cpus:
        problems.append(
            f"Serve may ask for {need:g} CPUs of replicas, but the worker groups hold at most "
            f"{pods_cpus:g}: the last replicas would stay pending"
        )
    return tuple(problems)


def validate_rayservice(
    doc: dict[str, Any], *, kubernetes_version: str | None = None, target: str = "rayservice"
) -> list[Check]:
    """Check a RayService offline: CRD schema (as is, and strict), pod templates, Serve, cross.

    Needs Ray installed (Serve's config models, and the deploykit application's builder).
    """
    version = kubernetes_version or KUBERNETES_VERSION
    serve_problems, serve = _serve_problems(doc)
    return [
        Check(f"RayService CRD schema (KubeRay {KUBERAY_VERSION})", target, _crd_problems(doc, False)),
        Check(f"RayService CRD schema, strict (KubeRay {KUBERAY_VERSION})", target, _crd_problems(doc, True)),
        Check(f"pod templates (kubernetes-validate, Kubernetes {version}, strict)", target,
              _pod_template_problems(doc, version)),
        Check(f"serveConfigV2 (Ray Serve {RAY_VERSION}'s ServeDeploySchema, app built)", target,
              serve_problems),
        Check("cross-checks (Ray version, replica bounds, CPUs)", target, _cross_problems(doc, serve)),
    ]  # fmt: skip


def rayservice_mistakes(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return broken copies of a RayService, each a mistake `kubectl apply` would take quietly or late."""
    import yaml

    def changed(edit) -> dict[str, Any]:
        copy_ = copy.deepcopy(doc)
        edit(copy_["spec"])
        return copy_

    def serve_edit(edit):
        def apply(spec: dict[str, Any]) -> None:
            config = yaml.safe_load(spec["serveConfigV2"])
            edit(config["applications"][0])
            spec["serveConfigV2"] = yaml.safe_dump(config, sort_keys=False)

        return apply

    def first_deployment(app: dict[str, Any]) -> dict[str, Any]:
        return app.setdefault("deployments", [{}])[0]

    return {
        "serveConfigv2 (misspelt)": changed(
            lambda s: s.__setitem__("serveConfigv2", s.pop("serveConfigV2"))
        ),
        "replicas as a string": changed(
            lambda s: s["rayClusterConfig"]["workerGroupSpecs"][0].__setitem__("replicas", "2")
        ),
        "rayStartParams value not a string": changed(
            lambda s: s["rayClusterConfig"]["headGroupSpec"]["rayStartParams"].__setitem__(
                "num-cpus", 0
            )
        ),
        "import_path that does not exist": changed(
            serve_edit(lambda a: a.__setitem__("import_path", "deploykit.rayserve.app:nope"))
        ),
        "autoscaling key misspelt": changed(
            serve_edit(
                lambda a: (
                    first_deployment(a)
                    .setdefault("autoscaling_config", {})
                    .__setitem__("target_ongoing_request", 2)
                )
            )
        ),
        "max_replicas 0": changed(
            serve_edit(
                lambda a: (
                    first_deployment(a)
                    .setdefault("autoscaling_config", {})
                    .__setitem__("max_replicas", 0)
                )
            )
        ),
        "rayVersion not the installed Ray": changed(
            lambda s: s["rayClusterConfig"].__setitem__("rayVersion", "2.9.0")
        ),
    }
