"""A Ray cluster: a local one of a head and N worker nodes, or a real one reached by address.

The local cluster starts each node the way a real cluster's nodes start, with `ray start`
(the head first, then the workers, which join it), one session folder and one set of ports
per node. What differs is only where: every node on this one machine, each in a process
group of its own, and, where root allows it, all of them inside a loopback-only network
namespace (`netns.py`) so that no Ray port is reachable from any network.

Two network modes:

- "netns": nodes in a namespace of their own on 127.0.0.1; a bridge process relays the
  dashboard's and Serve's ports to the host's 127.0.0.1. Needs root.
- "host": nodes on the host's network stack with node address 127.0.0.2 (Ray rewrites
  127.0.0.1 to the machine's routable address, but keeps other loopback addresses), so
  all traffic stays on loopback, but Ray's GCS, raylets, object managers, agents and
  workers listen on every interface while the cluster runs. No root needed.

Stopping never uses `ray stop`, which kills every Ray process on the machine by name,
other users' and other namespaces' too: each node's processes are found by its process
group and the workers under its raylet (Ray gives each worker a process group of its own),
then anything still carrying this cluster's marker variable. A cluster is stopped at
interpreter exit at the latest; nothing here survives a SIGKILL of the Python process.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

from .. import runs
from ..errors import InvalidArgumentError, ServerStartError
from ..launch import Server, free_port, log_tail
from ._dashboard import NODE_RESOURCE, Dashboard, RayNode
from .netns import create_netns, delete_netns, netns_command, netns_unavailable, start_bridge
from .serve import RayServeConfig, ServeApp

NETWORKS = ("auto", "netns", "host")
MARKER = "DEPLOYKIT_RAY_CLUSTER"  # in every process of a local cluster: what stop() finds
GCS_PORT = 6379  # Ray's default; inside a namespace nothing else can hold it
DASHBOARD_PORT = 8265
SERVE_PORT = 8000
HOST_MODE_ADDRESS = "127.0.0.2"
# Processes a Ray node runs (by name, or by a word of their command line for Python ones)
RAY_PROCESS_NAMES = ("raylet", "gcs_server")
RAY_COMMAND_WORDS = (
    "ray::",
    "ray/dashboard/",
    "ray/_private/",
    "ray/autoscaler/",
    "ray.util.client.server",
    "default_worker.py",
    "ray.scripts.scripts",
)

_ids = itertools.count(1)
_running: set[LocalRayCluster] = set()


@dataclass(frozen=True)
class NodePorts:
    """The ports of one node; distinct per node, since the nodes of one machine share it."""

    node_manager: int
    object_manager: int
    agent_listen: int
    agent_grpc: int
    metrics_export: int
    runtime_env_agent: int
    min_worker: int
    max_worker: int

    def flags(self) -> list[str]:
        return [
            "--node-manager-port", str(self.node_manager),
            "--object-manager-port", str(self.object_manager),
            "--dashboard-agent-listen-port", str(self.agent_listen),
            "--dashboard-agent-grpc-port", str(self.agent_grpc),
            "--metrics-export-port", str(self.metrics_export),
            "--runtime-env-agent-port", str(self.runtime_env_agent),
            "--min-worker-port", str(self.min_worker),
            "--max-worker-port", str(self.max_worker),
        ]  # fmt: skip


def ray_start_command(
    node: str,
    *,
    head: bool,
    node_ip: str,
    gcs_address: str | None = None,
    gcs_port: int = GCS_PORT,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard_host: str | None = None,
    dashboard_port: int = DASHBOARD_PORT,
    ports: NodePorts | None = None,
    temp_dir: str | None = None,
    object_store_bytes: int | None = None,
    ray: Sequence[str] = ("ray",),
) -> list[str]:
    """Return the `ray start` command of one node: the head (head=True) or a worker.

    A worker joins gcs_address (head's address:port). The node gets the custom resource
    `deploykit_node_<node>`, which names it in `RayCluster.nodes()` and replica placement.
    The same command starts a node of a real cluster (see `ray_start_commands`).
    """
    command = [*ray, "start", "--node-ip-address", node_ip]
    if head:
        command += ["--head", "--port", str(gcs_port), "--include-dashboard", "true"]
        command += ["--dashboard-host", dashboard_host or node_ip]
        command += ["--dashboard-port", str(dashboard_port)]
    else:
        if not gcs_address:
            raise InvalidArgumentError(f"worker node {node!r} needs gcs_address (head:port).")
        command += ["--address", gcs_address]
    if num_cpus is not None:
        command += ["--num-cpus", str(int(num_cpus))]  # the CLI rejects "2.0"
    if num_gpus is not None:
        command += ["--num-gpus", str(int(num_gpus))]
    command += ["--resources", json.dumps({NODE_RESOURCE + node: 1})]
    if ports is not None:
        command += ports.flags()
    if object_store_bytes is not None:
        command += ["--object-store-memory", str(object_store_bytes)]
    if temp_dir is not None:
        command += ["--temp-dir", temp_dir]
    command += ["--disable-usage-stats"]
    return command


def ray_start_commands(
    head_address: str,
    workers: Mapping[str, str],
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    gcs_port: int = GCS_PORT,
    dashboard_port: int = DASHBOARD_PORT,
) -> dict[str, str]:
    """Return the shell command to run on each machine of a real cluster, head first.

    head_address is the head machine's address on the network the nodes share; workers
    maps each worker's name to its own address. Ray has no authentication: keep these
    ports on a private network. Then `dk.connect_ray_cluster(f"http://{head}:8265")`.
    """
    prefix = "RAY_USAGE_STATS_ENABLED=0 "
    commands = {
        "head": prefix
        + shlex.join(
            ray_start_command(
                "head",
                head=True,
                node_ip=head_address,
                gcs_port=gcs_port,
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                dashboard_port=dashboard_port,
            )
        )
    }
    for name, address in workers.items():
        commands[name] = prefix + shlex.join(
            ray_start_command(
                name,
                head=False,
                node_ip=address,
                gcs_address=f"{head_address}:{gcs_port}",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
            )
        )
    return commands


class RayCluster:
    """A Ray cluster reached through its head's HTTP API: nodes, and Serve applications on it."""

    def __init__(
        self, dashboard_url: str, serve_url: str, *, serve_host: str | None = "0.0.0.0"
    ) -> None:
        self.dashboard = Dashboard(dashboard_url)
        self.serve_url = serve_url.rstrip("/")  # where Serve's HTTP proxy answers
        self.serve_host = serve_host  # what Serve's proxy binds (http_options.host)
        # the port Serve's proxy binds, in the cluster's own network (a bridge may relay it)
        self.serve_port = int(serve_url.rsplit(":", 1)[1].split("/")[0])

    @property
    def dashboard_url(self) -> str:
        return self.dashboard.url

    def nodes(self) -> list[RayNode]:
        """Return every node the head knows, dead ones included, head first."""
        return self.dashboard.nodes()

    def deploy(
        self,
        config: RayServeConfig,
        *,
        timeout_s: float = 300.0,
        serve_port: int | None = None,
    ) -> ServeApp:
        """Deploy config as Serve's only application; return once min_replicas are RUNNING.

        It is the REST call KubeRay makes (`PUT /api/serve/applications/`), with Serve's
        HTTP proxy on the head only (HeadOnly). Deploying again replaces the application.
        """
        body = config.serve_config(
            http_host=self.serve_host, http_port=serve_port or self.serve_port
        )
        response = self.dashboard.request("PUT", "/api/serve/applications/", body)
        if response.status_code != 200:
            raise ServerStartError(
                f"Serve refused the config (HTTP {response.status_code}): {response.text[:2000]}"
            )
        app = ServeApp(self.dashboard, self.serve_url + config.route_prefix.rstrip("/"), config)
        app.wait_running(timeout_s=timeout_s)
        app.wait_http(timeout_s=60.0)
        return app

    def delete_apps(self) -> None:
        """Shut Serve down on the cluster (its controller, proxies and every replica)."""
        self.dashboard.request("DELETE", "/api/serve/applications/")

    def __repr__(self) -> str:
        return f"<RayCluster dashboard={self.dashboard_url} serve={self.serve_url}>"


def connect_ray_cluster(
    dashboard_url: str, serve_url: str | None = None, *, serve_host: str | None = "0.0.0.0"
) -> RayCluster:
    """Return a handle on a running Ray cluster (its head's dashboard URL, e.g. http://head:8265).

    serve_url is where Serve's proxy will answer (default: the head's port 8000). Nothing is
    started or stopped: the cluster is yours. Checks that the dashboard answers.
    """
    if serve_url is None:
        host = dashboard_url.split("://", 1)[-1].rsplit(":", 1)[0]
        serve_url = f"http://{host}:{SERVE_PORT}"
    cluster = RayCluster(dashboard_url, serve_url, serve_host=serve_host)
    cluster.dashboard.wait_up(timeout_s=10.0)
    return cluster


@dataclass
class _Node:
    name: str
    pgid: int  # the `ray start` process's: every daemon of the node inherits it
    num_cpus: int
    temp_dir: Path
    start_s: float = 0.0
    killed: bool = False


@dataclass(frozen=True)
class NodeKill:
    """What kill_node did: which processes got SIGKILL, and when (time.perf_counter())."""

    node: str
    pids: tuple[int, ...]
    process_names: tuple[str, ...]
    killed_at: float
    replicas_killed: int = 0


class LocalRayCluster(RayCluster):
    """A head and worker nodes on this machine, started with `ray start`; stop() ends them all."""

    def __init__(
        self,
        *,
        cluster_id: str,
        network: str,
        node_ip: str,
        netns: str | None,
        root: Path,
        env: dict[str, str],
        ports: dict[str, int],
        dashboard_url: str,
        serve_url: str,
        serve_host: str,
    ) -> None:
        super().__init__(dashboard_url, serve_url, serve_host=serve_host)
        self.cluster_id = cluster_id
        self.network = network  # "netns" or "host"
        self.node_ip = node_ip
        self.netns = netns
        self.root = root  # per-node session folders and start logs
        self.env = env  # every node's environment (Ray workers inherit it)
        self.ports = ports  # gcs, dashboard, serve, client: inside the cluster's network
        self.nodes_started: dict[str, _Node] = {}
        self.bridge: Server | None = None
        self.start_s = 0.0
        self._stopped = False
        self._owner_pid = os.getpid()
        _running.add(self)

    @property
    def gcs_address(self) -> str:
        return f"{self.node_ip}:{self.ports['gcs']}"

    # ---- starting nodes ---------------------------------------------------------------------

    def _node_ports(self, index: int) -> NodePorts:
        if self.network == "netns":  # a namespace of our own: fixed ports cannot collide
            base = 6400 + 10 * index
            fixed = [base + i for i in range(6)]
        else:  # the host's ports are shared with everything else running here
            fixed = [free_port("0.0.0.0") for _ in range(6)]
        low = 20000 + 1000 * index  # worker ranges below Linux's ephemeral ports
        manager, objects, listen, grpc, metrics, runtime_env = fixed
        return NodePorts(manager, objects, listen, grpc, metrics, runtime_env, low, low + 999)

    def _command(self, node: _Node, index: int, head: bool, object_store_bytes: int) -> list[str]:
        command = ray_start_command(
            node.name,
            head=head,
            node_ip=self.node_ip,
            gcs_address=self.gcs_address,
            gcs_port=self.ports["gcs"],
            num_cpus=node.num_cpus,
            dashboard_port=self.ports["dashboard"],
            ports=self._node_ports(index),
            # a session folder per node: nodes of one folder race for one raylet socket name
            temp_dir=str(node.temp_dir),
            object_store_bytes=object_store_bytes,
            ray=(sys.executable, "-m", "ray.scripts.scripts"),
        )
        command += ["--include-log-monitor", "false", "--log-style", "record"]
        if head:
            command += ["--ray-client-server-port", str(self.ports["client"])]
        return netns_command(self.netns, command) if self.netns else command

    def _start_node(
        self, name: str, index: int, num_cpus: int, head: bool, object_store_bytes: int
    ) -> _Node:
        temp_dir = self.root / name
        node = _Node(name, 0, num_cpus, temp_dir)
        log = self.root / f"{name}.start.log"
        command = self._command(node, index, head, object_store_bytes)
        started = time.monotonic()
        with open(log, "wb") as out:
            # its own session: the node's daemons inherit this process group
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        node.pgid = process.pid
        self.nodes_started[name] = node  # recorded at once: stop() finds a half-started node
        try:
            code = process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            code = None
        node.start_s = time.monotonic() - started
        if code != 0:
            _kill_all(_node_processes(node))
            raise ServerStartError(
                f"`ray start` for node {name!r} "
                f"{'timed out' if code is None else f'exited {code}'}.\n  command: "
                f"{shlex.join(command)}\n  log: {log}\n{log_tail(log, 30)}\nRay's own logs: "
                f"{temp_dir}/session_latest/logs/ (raylet.err, gcs_server.err)."
            )
        # `ray start` has exited; its daemons keep its process group, which `deploykit ps` shows
        runs.register(
            node.pgid,
            name=f"ray-{name}",
            host=self.node_ip,
            port=self.ports["gcs"] if head else 0,
            command=command,
            log_path=str(log),
        )
        return node

    def _start_node_retrying(self, *args, retries: int = 1) -> _Node:
        # Under CPU starvation a raylet can abort waiting for its agent's port file
        # (ray-project/ray#65983) and `ray start` only says the node timed out: try again.
        for attempt in range(retries + 1):
            try:
                return self._start_node(*args)
            except ServerStartError:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    # ---- the running cluster ----------------------------------------------------------------

    def node_processes(self, name: str) -> list[psutil.Process]:
        """Return a node's processes: its daemons and every Ray worker under its raylet."""
        return _node_processes(self.nodes_started[name])

    def processes(self) -> list[psutil.Process]:
        """Return every live process of this cluster (the marker in its environment)."""
        return runs.marked_processes(MARKER, self.cluster_id)

    def kill_node(self, name: str) -> NodeKill:
        """SIGKILL every process of one node at once (as when a machine dies); the others stay.

        Serve notices a few seconds later and replaces the node's replicas on the nodes left.
        """
        if name not in self.nodes_started or name == "head":
            workers = [n for n in self.nodes_started if n != "head"]
            raise InvalidArgumentError(
                f"kill_node({name!r}): name a worker node of this cluster: {', '.join(workers)}."
            )
        node = self.nodes_started[name]
        procs = _node_processes(node)  # collected first, so the signals go out together
        names = tuple(sorted(_name(p) for p in procs))
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        killed_at = time.perf_counter()
        psutil.wait_procs(procs, timeout=10)
        node.killed = True
        replicas = sum(n.startswith("ray::ServeReplica") for n in names)
        return NodeKill(name, tuple(p.pid for p in procs), names, killed_at, replicas)

    def stop(self, timeout_s: float = 5.0, keep_logs: bool = False) -> None:
        """Stop every node at once (SIGTERM, SIGKILL after timeout_s), the bridge and namespace.

        The nodes' session folders (Ray's logs) are deleted unless keep_logs.
        """
        if self._stopped:
            return
        procs = {p.pid: p for node in self.nodes_started.values() for p in _node_processes(node)}
        for proc in procs.values():  # a teardown, not a drain: every node at once
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(list(procs.values()), timeout=timeout_s)
        _kill_all(alive)
        # what escaped the groups (a worker whose raylet died first), by marker, never by name
        _kill_all(self.processes())
        for node in self.nodes_started.values():
            runs.unregister(node.pgid)
        if self.bridge is not None:
            self.bridge.stop(timeout_s=max(0.5, timeout_s))
        if self.netns:
            delete_netns(self.netns)
        if not keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)
        self._stopped = True
        _running.discard(self)

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        nodes = ", ".join(
            f"{n.name}({n.num_cpus} CPU{', killed' if n.killed else ''})"
            for n in self.nodes_started.values()
        )
        state = "stopped" if self._stopped else f"network={self.network}"
        return f"<LocalRayCluster {self.cluster_id} {state} [{nodes}] serve={self.serve_url}>"


def _name(proc: psutil.Process) -> str:
    try:
        cmdline = proc.cmdline()
        return cmdline[0] if cmdline and cmdline[0].startswith("ray::") else proc.name()
    except psutil.Error:
        return "?"


def _group(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) == pgid:
                found.append(proc)
    return found


def _node_processes(node: _Node) -> list[psutil.Process]:
    procs = {p.pid: p for p in _group(node.pgid)}
    for proc in list(procs.values()):
        with contextlib.suppress(psutil.Error):
            if proc.name() == "raylet":
                procs.update({c.pid: c for c in proc.children(recursive=True)})
    return list(procs.values())


def _kill_all(procs: Sequence[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(list(procs), timeout=5)


def ray_processes(since: float | None = None) -> list[psutil.Process]:
    """Return the live Ray processes on this machine (raylet, GCS, dashboard, workers, Serve).

    since (a Unix time) keeps those started at or after it: a run's own leftovers.
    """
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "create_time", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or (since and info["create_time"] < since):
            continue
        command = " ".join(info["cmdline"] or ())
        if info["name"] in RAY_PROCESS_NAMES or any(w in command for w in RAY_COMMAND_WORDS):
            found.append(proc)
    return found


def start_ray_cluster(
    workers: int = 2,
    *,
    head_cpus: int = 2,
    worker_cpus: int = 1,
    network: str = "auto",
    object_store_mb: int = 128,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300.0,
) -> LocalRayCluster:
    """Start a head and `workers` worker nodes on this machine with `ray start`; return the cluster.

    network "auto" takes "netns" (a loopback-only network namespace, needs root) where it
    can, else "host" (node address 127.0.0.2; Ray then listens on all interfaces while it
    runs). head_cpus and worker_cpus are each node's logical CPUs: a replica reserving one
    CPU fits that many times. The head starts first, then the workers together. The
    dashboard (the head's HTTP API, which deploy() and nodes() use) and Serve's port are
    reachable at `dashboard_url` and `serve_url`. Stopped at interpreter exit at the latest.
    """
    if network not in NETWORKS:
        raise InvalidArgumentError(f"network={network!r}; use one of: {', '.join(NETWORKS)}.")
    for name, value, low in (
        ("workers", workers, 0),
        ("head_cpus", head_cpus, 0),
        ("worker_cpus", worker_cpus, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidArgumentError(f"{name}={value!r} must be a whole number >= {low}.")
    why_not = netns_unavailable()
    if network == "netns" and why_not:
        raise InvalidArgumentError(
            f"network='netns' is not possible here: {why_not}. Use network='host' (Ray's "
            "ports then listen on all interfaces while the cluster runs)."
        )
    chosen = "netns" if network == "netns" or (network == "auto" and not why_not) else "host"
    cluster_id = f"dk{os.getpid()}-{next(_ids)}"
    # short: Ray's unix socket paths under it must stay below 108 characters
    root = Path(tempfile.mkdtemp(prefix=f"dkray-{cluster_id}-"))
    node_ip = "127.0.0.1" if chosen == "netns" else HOST_MODE_ADDRESS
    if chosen == "netns":
        ports = {"gcs": GCS_PORT, "dashboard": DASHBOARD_PORT, "serve": SERVE_PORT, "client": 10001}
    else:
        ports = {k: free_port("0.0.0.0") for k in ("gcs", "dashboard", "serve", "client")}
    package_root = str(Path(__file__).resolve().parents[2])
    node_env = {
        **os.environ,
        **(env or {}),
        "RAY_USAGE_STATS_ENABLED": "0",
        MARKER: cluster_id,
        # Serve's proxy would send every request to the replica on its own node until that
        # one is full: spread them over the nodes instead
        "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
        # replicas import the deploykit this process runs (Ray workers inherit the node's env)
        "PYTHONPATH": os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    netns = f"deploykit-{cluster_id}" if chosen == "netns" else None
    dashboard_host, serve_host = (node_ip, "127.0.0.1") if chosen == "netns" else (node_ip, node_ip)
    cluster = LocalRayCluster(
        dashboard_url=f"http://{dashboard_host}:{ports['dashboard']}",
        serve_url=f"http://{serve_host}:{ports['serve']}",
        serve_host=serve_host,
        cluster_id=cluster_id,
        network=chosen,
        node_ip=node_ip,
        netns=netns,
        root=root,
        env=node_env,
        ports=ports,
    )
    started = time.monotonic()
    try:
        if netns:
            create_netns(netns)
        object_store_bytes = object_store_mb * 2**20
        cluster._start_node_retrying("head", 0, head_cpus, True, object_store_bytes)
        names = [f"worker{i + 1}" for i in range(workers)]
        # the leaving `with` waits for every worker, also when the bridge or the dashboard fails
        with ThreadPoolExecutor(max(1, workers)) as pool:
            futures = [
                pool.submit(
                    cluster._start_node_retrying, n, i + 1, worker_cpus, False, object_store_bytes
                )
                for i, n in enumerate(names)
            ]
            # while the workers start (the head is up): the bridge, then the head's HTTP API
            if netns:
                cluster.bridge, mapped = start_bridge(netns, [ports["dashboard"], ports["serve"]])
                cluster.dashboard = Dashboard(f"http://127.0.0.1:{mapped[ports['dashboard']]}")
                cluster.serve_url = f"http://127.0.0.1:{mapped[ports['serve']]}"
            cluster.dashboard.wait_up(timeout_s=max(10.0, timeout_s - (time.monotonic() - started)))
            for future in futures:
                future.result()
        _wait_nodes(cluster, 1 + workers, timeout_s=60.0)
    except BaseException:
        cluster.stop(keep_logs=True)  # the logs say why: the error names them
        raise
    cluster.start_s = time.monotonic() - started
    return cluster


def _wait_nodes(cluster: RayCluster, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [n for n in cluster.nodes() if n.alive]
        if len(alive) >= count:
            return
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"only {len(alive)} of {count} Ray nodes joined within {timeout_s:g} s: "
                f"{[n.name for n in alive]}."
            )
        time.sleep(0.25)


def stop_all_clusters() -> None:
    """Stop every local cluster this process started (registered at exit).

    Quickly: a Jupyter kernel that is shut down gets about 5 s before it is killed, and a
    killed kernel would leave the nodes and the namespace behind.
    """
    for cluster in [c for c in _running if c._owner_pid == os.getpid()]:
        with contextlib.suppress(Exception):
            cluster.stop(timeout_s=1.0)


atexit.register(stop_all_clusters)
