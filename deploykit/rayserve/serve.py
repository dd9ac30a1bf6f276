"""Ray Serve's side: the typed config of one LLM application, deploying it, and watching it.

`RayServeConfig` is rendered once into Serve's own config format (`serve_config`), the
document `serve deploy`, the head's REST API and KubeRay's `serveConfigV2` all take; it is
checked here with the error a user can act on. `ServeApp` is a deployed application:
its replicas and the nodes they run on, and a watcher that
records the replica count over time. Nothing here imports Ray: it speaks to the head's
HTTP API (`_dashboard.py`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import InvalidArgumentError, ServerStartError
from ._dashboard import Dashboard

SERVE_ENGINES = ("deploykit", "vllm")
DEPLOYKIT_IMPORT_PATH = "deploykit.rayserve.app:build"
VLLM_IMPORT_PATH = "ray.serve.llm:build_openai_app"  # Ray Serve LLM (needs ray[llm] and vLLM)
DEPLOYMENT_NAME = "deploykit"  # the deployment deploykit.rayserve.app builds


@dataclass(frozen=True)
class ServeAutoscaling:
    """Serve's autoscaler for one deployment: replicas between min and max, by ongoing requests.

    Defaults are Serve's own (slow, for production: a scale-up waits 30 s, a scale-down
    10 minutes); `fast()` gives the settings a demo on one machine needs.
    """

    min_replicas: int = 1
    max_replicas: int = 3
    target_ongoing_requests: float = 2.0  # in-flight requests per replica it aims for
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0  # averaging window of the ongoing-requests metric
    metrics_interval_s: float = 10.0  # how often each replica reports it
    initial_replicas: int | None = None  # at deploy time (None: min_replicas)

    def __post_init__(self) -> None:
        low, high = self.min_replicas, self.max_replicas
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            raise InvalidArgumentError(
                f"min_replicas={low!r} and max_replicas={high!r} must be whole numbers."
            )
        if not 0 <= low <= high or high < 1:
            raise InvalidArgumentError(
                f"need 0 <= min_replicas <= max_replicas and max_replicas >= 1, got "
                f"{low}..{high}; e.g. min_replicas=1, max_replicas=3."
            )
        if self.initial_replicas is not None and not low <= self.initial_replicas <= high:
            raise InvalidArgumentError(
                f"initial_replicas={self.initial_replicas} is outside {low}..{high}."
            )
        for name in (
            "target_ongoing_requests",
            "upscale_delay_s",
            "downscale_delay_s",
            "look_back_period_s",
            "metrics_interval_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidArgumentError(f"{name}={value!r} must be a number > 0.")

    @classmethod
    def fast(
        cls, min_replicas: int = 1, max_replicas: int = 3, target_ongoing_requests: float = 2.0
    ) -> ServeAutoscaling:
        """Return settings that react within seconds: for a demo or a test, not production."""
        return cls(
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_ongoing_requests=target_ongoing_requests,
            upscale_delay_s=1.0,
            downscale_delay_s=5.0,
            look_back_period_s=2.0,
            metrics_interval_s=0.5,
        )

    def as_serve(self) -> dict[str, Any]:
        """Return Serve's autoscaling_config."""
        config = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        config.setdefault("initial_replicas", self.min_replicas)
        return config


@dataclass(frozen=True)
class RayServeConfig:
    """One LLM application on Ray Serve: what each replica runs, and how many of them.

    engine "deploykit" runs deploykit's continuous-batching engine and its OpenAI-compatible
    routes in-process in each replica (`deploykit.rayserve.app`); "vllm" runs vLLM through
    Ray Serve LLM (`ray.serve.llm`, which needs `ray[llm]` and vLLM in the nodes' Python).
    num_cpus and num_gpus are what one replica reserves on a node (Ray's logical units).
    """

    model: str = "toy-tiny"
    engine: str = "deploykit"
    app_name: str = "llm"
    route_prefix: str = "/"
    served_model_name: str | None = None
    device: str = "cpu"
    dtype: str = "auto"
    max_batch_size: int = 32
    threads: int = 1  # torch threads per replica (deploykit engine)
    max_model_len: int | None = None  # vLLM engine
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_ongoing_requests: int = 32  # Serve queues above this per replica
    autoscaling: ServeAutoscaling = field(default_factory=ServeAutoscaling)
    health_check_period_s: float = 2.0
    health_check_timeout_s: float = 10.0
    graceful_shutdown_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.engine not in SERVE_ENGINES:
            raise InvalidArgumentError(
                f"engine={self.engine!r}; Ray Serve runs one of: {', '.join(SERVE_ENGINES)}."
            )
        if not isinstance(self.autoscaling, ServeAutoscaling):
            raise InvalidArgumentError("autoscaling must be a dk.ServeAutoscaling.")
        if not self.route_prefix.startswith("/"):
            raise InvalidArgumentError(f"route_prefix={self.route_prefix!r} must start with '/'.")
        for name in ("max_batch_size", "threads", "max_ongoing_requests"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name}={value!r} must be a whole number >= 1.")
        if self.num_cpus < 0 or self.num_gpus < 0 or self.num_cpus + self.num_gpus == 0:
            raise InvalidArgumentError(
                f"num_cpus={self.num_cpus} and num_gpus={self.num_gpus}: a replica must reserve "
                "some CPU or GPU, or Ray would pack every replica onto one node."
            )
        if self.engine == "vllm" and self.num_gpus == 0:
            raise InvalidArgumentError(
                "engine='vllm' on Ray Serve LLM needs num_gpus >= 1 per replica (vLLM's GPU "
                "build); on CPUs use engine='deploykit'."
            )

    @property
    def model_name(self) -> str:
        """Return the name clients send as "model"."""
        return self.served_model_name or self.model

    def replace(self, **changes: Any) -> RayServeConfig:
        """Return a copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def application(self) -> dict[str, Any]:
        """Return this application as one entry of a Serve config's `applications`."""
        if self.engine == "vllm":
            llm_config: dict[str, Any] = {
                "model_loading_config": {"model_id": self.model_name, "model_source": self.model},
                "deployment_config": {
                    "autoscaling_config": self.autoscaling.as_serve(),
                    "max_ongoing_requests": self.max_ongoing_requests,
                },
                "engine_kwargs": {"dtype": self.dtype, "tensor_parallel_size": 1}
                | ({"max_model_len": self.max_model_len} if self.max_model_len else {}),
            }
            return {
                "name": self.app_name,
                "route_prefix": self.route_prefix,
                "import_path": VLLM_IMPORT_PATH,
                "args": {"llm_configs": [llm_config]},
            }
        args: dict[str, Any] = {
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "max_batch_size": self.max_batch_size,
            "threads": self.threads,
        }
        if self.served_model_name:
            args["served_model_name"] = self.served_model_name
        actor: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            actor["num_gpus"] = self.num_gpus
        return {
            "name": self.app_name,
            "route_prefix": self.route_prefix,
            "import_path": DEPLOYKIT_IMPORT_PATH,
            "args": args,
            "deployments": [
                {
                    "name": DEPLOYMENT_NAME,
                    "max_ongoing_requests": self.max_ongoing_requests,
                    "autoscaling_config": self.autoscaling.as_serve(),
                    "ray_actor_options": actor,
                    "health_check_period_s": self.health_check_period_s,
                    "health_check_timeout_s": self.health_check_timeout_s,
                    "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
                }
            ],
        }

    def serve_config(
        self, http_host: str | None = None, http_port: int = 8000, proxy_location: str = "HeadOnly"
    ) -> dict[str, Any]:
        """Return the whole Serve config (`serve deploy`'s file, the REST API's body).

        http_host None leaves Serve's default (0.0.0.0, what a Kubernetes Service needs);
        a local cluster passes its loopback address. HeadOnly: one HTTP proxy, on the head,
        so that losing a worker node never takes a proxy (and its connections) with it.
        """
        config: dict[str, Any] = {"proxy_location": proxy_location}
        if http_host is not None:
            config["http_options"] = {"host": http_host, "port": http_port}
        config["applications"] = [self.application()]
        return config


@dataclass(frozen=True)
class Replica:
    """One Serve replica: its state and the node it runs on."""

    replica_id: str
    state: str  # STARTING, RUNNING, STOPPING, ...
    node: str  # the node's name (head, worker1, ...)
    pid: int | None
    start_time_s: float  # Unix time


class ServeApp:
    """An application deployed on a Ray cluster: its URL, replicas and their placement."""

    def __init__(self, dashboard: Dashboard, url: str, config: RayServeConfig) -> None:
        self.dashboard = dashboard
        self.url = url.rstrip("/")  # the OpenAI-compatible root: url + "/v1"
        self.config = config
        self._node_names: dict[str, str] = {}

    @property
    def name(self) -> str:
        return self.config.app_name

    def details(self) -> dict[str, Any]:
        """Return Serve's details of this application (status, deployments, replicas)."""
        apps = self.dashboard.get("/api/serve/applications/").get("applications") or {}
        return apps.get(self.name) or {}

    def _deployment(self, details: dict[str, Any]) -> dict[str, Any]:
        deployments = details.get("deployments") or {}
        return next(iter(deployments.values()), {})

    def status(self) -> str:
        """Return the application's status (RUNNING, DEPLOYING, DEPLOY_FAILED, ...)."""
        return str(self.details().get("status", "NOT_STARTED"))

    def _node_name(self, node_id: str) -> str:
        if node_id not in self._node_names:
            self._node_names = {n.node_id: n.name for n in self.dashboard.nodes()}
        return self._node_names.get(node_id, node_id[:8])

    def replicas(self, details: dict[str, Any] | None = None) -> list[Replica]:
        """Return the replicas Serve has now, with the node each runs on."""
        rows = self._deployment(details if details is not None else self.details()).get(
            "replicas", []
        )
        return [
            Replica(
                replica_id=r["replica_id"],
                state=r["state"],
                node=self._node_name(r.get("node_id") or ""),
                pid=r.get("pid"),
                start_time_s=float(r.get("start_time_s") or 0.0),
            )
            for r in rows
        ]

    def placement(self) -> dict[str, int]:
        """Return how many RUNNING replicas each node holds."""
        return dict(Counter(r.node for r in self.replicas() if r.state == "RUNNING"))

    def wait_running(self, replicas: int | None = None, timeout_s: float = 300.0) -> float:
        """Wait until the app is RUNNING with at least `replicas` RUNNING; return seconds waited."""
        want = self.config.autoscaling.min_replicas if replicas is None else replicas
        start = time.monotonic()
        seen = "nothing yet"
        while (waited := time.monotonic() - start) < timeout_s:
            details = self.details()
            status = str(details.get("status", "NOT_STARTED"))
            running = sum(r.state == "RUNNING" for r in self.replicas(details))
            if status == "DEPLOY_FAILED":
                raise ServerStartError(
                    f"Serve could not deploy {self.name!r}: {details.get('message', '')[-2000:]}\n"
                    "Read the replica's log (session_latest/logs/serve/ on the node named above)."
                )
            if status == "RUNNING" and running >= want:
                return waited
            seen = f"{status}, {running} replica(s) RUNNING"
            time.sleep(0.25)
        raise ServerStartError(
            f"{self.name!r} did not reach {want} RUNNING replica(s) within {timeout_s:g} s "
            f"(last: {seen}). A replica that stays PENDING_ALLOCATION asks for more CPUs or GPUs "
            "than a node has free (num_cpus, num_gpus); one that stays STARTING is still "
            "loading its model."
        )

    def wait_http(self, timeout_s: float = 60.0) -> float:
        """Wait until GET url/health answers 200 through Serve's proxy; return seconds waited."""
        start = time.monotonic()
        last = "nothing yet"
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            while (waited := time.monotonic() - start) < timeout_s:
                try:
                    status = client.get(self.url + "/health").status_code
                    if status == 200:
                        return waited
                    last = f"HTTP {status}"
                except httpx.TransportError as exc:
                    last = type(exc).__name__
                time.sleep(0.2)
        raise ServerStartError(
            f"{self.url}/health did not answer 200 within {timeout_s:g} s (last: {last})."
        )

    def watch(self, interval_s: float = 0.5) -> ReplicaWatch:
        """Start recording the replica count by state every interval_s (stop() it when done)."""
        return ReplicaWatch(self, interval_s).start_watching()

    def __repr__(self) -> str:
        return f"<ServeApp {self.name!r} {self.url} model={self.config.model_name!r}>"


# Serve's replica states, in the order a replica goes through them
_STATE_ORDER = {
    s: i
    for i, s in enumerate(
        (
            "PENDING_ALLOCATION",
            "PENDING_MIGRATION",
            "STARTING",
            "UPDATING",
            "RECOVERING",
            "RUNNING",
            "STOPPING",
        )
    )
}


class ReplicaWatch:
    """Replica counts by state over time, polled from Serve in a thread of its own."""

    def __init__(self, app: ServeApp, interval_s: float = 0.5) -> None:
        self.app, self.interval_s = app, interval_s
        self.started = time.perf_counter()  # samples are seconds after this
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-watch", daemon=True)

    def start_watching(self) -> ReplicaWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                counts = dict(Counter(r.state for r in self.app.replicas()))
            except Exception as exc:  # a poll may fail while a node dies; keep watching
                counts = {f"poll failed: {type(exc).__name__}": 1}
            self.samples.append((time.perf_counter() - self.started, counts))
            self._stop.wait(self.interval_s)

    def running(self) -> int:
        """Return the RUNNING replicas at the last poll."""
        return self.samples[-1][1].get("RUNNING", 0) if self.samples else 0

    def first(self, predicate, after_s: float = 0.0) -> float | None:
        """Return the first sample time (>= after_s) whose counts satisfy predicate, or None."""
        return next((t for t, c in self.samples if t >= after_s and predicate(c)), None)

    def wait_for(self, predicate, timeout_s: float, after_s: float = 0.0) -> float | None:
        """Wait until a sample satisfies predicate; return its time, or None at the deadline."""
        deadline = time.monotonic() + timeout_s
        while (found := self.first(predicate, after_s)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return found

    def table(self, since_s: float = 0.0) -> list[dict[str, Any]]:
        """Return one row per change of the counts (from since_s): time and replicas by state."""
        states = sorted(
            {s for _, c in self.samples for s in c}, key=lambda s: (_STATE_ORDER.get(s, 99), s)
        )
        return [
            {"seconds": round(t, 1), **{s: c.get(s, 0) for s in states}}
            for t, c in self.changes()
            if t >= since_s
        ]

    def changes(self) -> list[tuple[float, dict[str, int]]]:
        """Return the samples where the counts changed (the first one included)."""
        out: list[tuple[float, dict[str, int]]] = []
        for t, counts in self.samples:
            if not out or out[-1][1] != counts:
                out.append((t, counts))
        return out

    def stop(self) -> ReplicaWatch:
        self._stop.set()
        self._thread.join(timeout=10)
        return self
