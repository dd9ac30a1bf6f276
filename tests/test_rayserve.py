"""Ray Serve: configs and rendering (fast), the namespace bridge, and a real 3-node cluster.

The cluster tests start a head and two workers with `ray start` in a loopback-only network
namespace (root), deploy deploykit's engine with toy-tiny, scale it, kill a worker node under
load, and check that nothing of Ray is left afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
import yaml

import deploykit as dk
from deploykit.rayserve.netns import (
    create_netns,
    delete_netns,
    netns_command,
    netns_unavailable,
    start_bridge,
)

NO_NETNS = netns_unavailable()
needs_netns = pytest.mark.skipif(NO_NETNS is not None, reason=f"{NO_NETNS}")


# ---- configs and commands --------------------------------------------------------------------


def test_ray_start_commands_start_the_head_then_workers_that_join_it():
    commands = dk.ray_start_commands("10.0.0.1", {"worker1": "10.0.0.2"}, num_cpus=8)
    assert list(commands) == ["head", "worker1"]
    head, worker = commands["head"], commands["worker1"]
    assert head.startswith("RAY_USAGE_STATS_ENABLED=0 ray start")
    assert "--head" in head and "--dashboard-host 10.0.0.1" in head
    assert "--address 10.0.0.1:6379" in worker and "--node-ip-address 10.0.0.2" in worker
    assert "deploykit_node_worker1" in worker and "--num-cpus 8" in worker


def test_autoscaling_settings_are_checked_and_are_serves_own():
    from ray.serve.config import AutoscalingConfig

    fast = dk.ServeAutoscaling.fast(1, 3)
    AutoscalingConfig(**fast.as_serve())  # Serve accepts every key
    assert set(fast.as_serve()) <= set(AutoscalingConfig.model_fields)
    for bad in ({"min_replicas": 3, "max_replicas": 1}, {"upscale_delay_s": 0}):
        with pytest.raises(dk.InvalidArgumentError):
            dk.ServeAutoscaling(**bad)
    with pytest.raises(dk.InvalidArgumentError, match="num_gpus"):
        dk.RayServeConfig(engine="vllm", model="org/model")
    with pytest.raises(dk.InvalidArgumentError, match="reserve"):
        dk.RayServeConfig(num_cpus=0)


def test_serve_config_is_valid_for_serve_and_builds_the_application():
    from ray.serve.schema import ServeDeploySchema

    from deploykit.rayserve.app import build

    config = dk.RayServeConfig(model="toy-tiny", autoscaling=dk.ServeAutoscaling.fast())
    document = config.serve_config(http_host="127.0.0.1", http_port=8000)
    schema = ServeDeploySchema.model_validate(document)
    assert schema.http_options.host == "127.0.0.1" and schema.proxy_location == "HeadOnly"
    [app] = schema.applications
    assert app.import_path == "deploykit.rayserve.app:build"
    assert app.deployments[0].autoscaling_config["max_replicas"] == 3
    build(app.args)  # what the controller does with import_path and args
    with pytest.raises(ValueError, match="unknown args"):
        build({**app.args, "modle": "x"})


def test_the_deployment_config_drives_serve_and_the_rayservice():
    deployment = dk.DeploymentConfig(
        name="llm", model="smollm2-135m", cpu_cores=1.0, replicas=1, max_replicas=3,
        cache_access_mode="ReadWriteMany", drain_timeout_s=20,
    )  # fmt: skip
    serve = dk.ray_serve_config(deployment, dk.ServeAutoscaling.fast(5, 9))
    assert (serve.autoscaling.min_replicas, serve.autoscaling.max_replicas) == (1, 3)
    assert serve.autoscaling.upscale_delay_s == 1.0  # the rest from the autoscaling given
    assert serve.num_cpus == 1.0 and serve.graceful_shutdown_timeout_s == 20
    doc = dk.rayservice(deployment, serve)
    cluster = doc["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == "2.60.0"
    workers = cluster["workerGroupSpecs"][0]
    assert (workers["minReplicas"], workers["maxReplicas"]) == (1, 3)
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    serve_v2 = yaml.safe_load(doc["spec"]["serveConfigV2"])
    assert "http_options" not in serve_v2  # the cluster's Service needs Serve's 0.0.0.0 default
    assert serve_v2["applications"][0]["args"]["model"] == "smollm2-135m"


@pytest.mark.parametrize("engine", ["deploykit", "vllm"])
def test_rayservice_passes_every_offline_check(engine, tmp_path):
    if engine == "vllm":
        deployment = dk.DeploymentConfig.from_name("vllm-gpu").replace(name="llm-vllm")
    else:
        deployment = dk.DeploymentConfig.from_name("deploykit-cpu")
    checks = dk.validate_rayservice(dk.rayservice(deployment))
    assert all(check.ok for check in checks), [str(c) for c in checks]
    folder = dk.write_rayservice(deployment, tmp_path / "out")
    written = list(yaml.safe_load_all((folder / "rayservice.yaml").read_text()))
    assert [d["kind"] for d in written] == ["PersistentVolumeClaim", "RayService"]
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["rayservice.yaml"]
    if engine == "vllm":
        app = yaml.safe_load(written[1]["spec"]["serveConfigV2"])["applications"][0]
        assert app["import_path"] == "ray.serve.llm:build_openai_app"


def test_every_rayservice_mistake_is_caught_and_strict_catches_the_typo():
    deployment = dk.DeploymentConfig.from_name("deploykit-cpu")
    doc = dk.rayservice(deployment)
    for what, broken in dk.rayservice_mistakes(doc).items():
        checks = dk.validate_rayservice(broken)
        assert any(not c.ok for c in checks), what
    typo = dk.rayservice_mistakes(doc)["serveConfigv2 (misspelt)"]
    lenient, strict = dk.validate_rayservice(typo)[:2]
    assert lenient.ok and not strict.ok  # the CRD's own schema lets the typo through


def test_vendored_schema_names_its_source():
    import json

    from deploykit.deploy.kuberay import RAYSERVICE_SCHEMA

    schema = json.loads(RAYSERVICE_SCHEMA.read_text())
    assert "v1.7.0" in schema["$comment"] and "Apache-2.0" in schema["$comment"]
    assert "v1.7.0" in dk.RAYSERVICE_SCHEMA_SOURCE
    assert (RAYSERVICE_SCHEMA.parent / "VENDORED.md").read_text().count("Apache-2.0") >= 2


@pytest.mark.parametrize(
    ("status", "error", "stream", "text", "words"),
    [
        (500, "Internal Server Error", False, 0, "replica died"),
        (200, "ClientPayloadError: TransferEncodingError", True, 40, "after text"),
        (0, "ServerDisconnectedError: Server disconnected", False, 0, "connection"),
        (418, "teapot", False, 0, "not one of the usual"),
    ],
)
def test_each_failed_attempt_is_explained(status, error, stream, text, words):
    from deploykit.drills.ray_serve import explain

    assert words in explain(status, error, stream, text)


def test_failover_comparison_sets_the_balancers_drills_beside_serves_node_kill():
    from deploykit.drills.failover import DrillRequest, DrillResult
    from deploykit.drills.ray_serve import NodeKillDrill
    from deploykit.rayserve.cluster import NodeKill

    def result(front, outcomes):
        requests = tuple(
            DrillRequest(i * 0.1, 0.5, stream, outcome, 1, 10)
            for i, (outcome, stream) in enumerate(outcomes)
        )
        return DrillResult(front, "127.0.0.1:1", 1.0, 5.0, requests)

    serve = NodeKillDrill(
        kill=NodeKill("worker1", (1,), ("raylet",), 0.0, replicas_killed=1),
        began=0.0,
        result=result("Ray Serve", [("ok", False), ("ok after retry", False)]),
        failures=(),
        replicas_before=3,
        noticed_s=2.0,
        last_failure_s=2.5,
        recovered_s=20.123,
        replacement_first_answer_s=None,
        placement_after={},
    )
    router = result("router", [("ok after retry", False), ("lost", False), ("ok", True)])
    rows = dk.failover_comparison(
        serve, [router, {"front": "nginx", "lost": 0}], {"Ray Serve": 9.5, "router": 1.0},
        rejoin_s={"router": 0.4},
    )  # fmt: skip
    assert [r["front"] for r in rows] == ["Ray Serve", "router", "nginx"]
    assert rows[0]["capacity_back_s"] == 20.12 and rows[0]["rejoin_s"] == "n/a"
    assert (rows[1]["lost"], rows[1]["ok_after_retry"], rows[1]["rejoin_s"]) == (1, 1, 0.4)
    assert rows[1]["capacity_back_s"] == "n/a" and rows[2]["added_latency_ms"] == "n/a"
    assert rows[0]["added_latency_ms"] == 9.5 and rows[1]["source"] == "this run"


def test_kill_node_refuses_the_head_and_unknown_nodes():
    from deploykit.rayserve.cluster import LocalRayCluster

    cluster = object.__new__(LocalRayCluster)
    cluster.nodes_started = {"head": None, "worker1": None}  # type: ignore[assignment]
    for name in ("head", "worker9"):
        with pytest.raises(dk.InvalidArgumentError, match="worker1"):
            cluster.kill_node(name)


# ---- the namespace bridge ---------------------------------------------------------------------


@needs_netns
def test_bridge_reaches_a_server_that_only_listens_inside_the_namespace():
    name = f"dk-test-{int(time.time() * 1000) % 10**8}"
    create_netns(name)
    server = bridge = None
    try:
        port = 18765
        server = subprocess.Popen(
            netns_command(name, [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        bridge, ports = start_bridge(name, [port])
        host_url = f"http://127.0.0.1:{ports[port]}/"
        deadline = time.monotonic() + 20
        while True:  # the server inside may still be starting: the bridge then closes at once
            try:
                assert httpx.get(host_url, trust_env=False, timeout=5).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "nothing answered through the bridge"
                time.sleep(0.2)
        with pytest.raises(httpx.TransportError):  # the host's own port is not the server's
            httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=2)
    finally:
        if bridge is not None:
            bridge.stop()
        if server is not None:
            server.kill()
            server.wait()
        delete_netns(name)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in names


# ---- a real cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """A head (2 CPUs: a spare slot) and two workers (1 CPU each) in a namespace of their own."""
    started = time.time()
    cluster = dk.start_ray_cluster(2, head_cpus=2, worker_cpus=1, network="netns")
    try:
        yield cluster
    finally:
        cluster.stop()
    # nothing of Ray may outlive the cluster: raylet, GCS, dashboard, workers, Serve's actors
    left = dk.ray_processes(since=started)
    assert left == [], [(p.pid, p.name()) for p in left]
    assert cluster.processes() == []
    assert (
        cluster.netns
        not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )


@pytest.fixture(scope="module")
def app(cluster):
    config = dk.RayServeConfig(model="toy-tiny", autoscaling=dk.ServeAutoscaling.fast(1, 3))
    return cluster.deploy(config, timeout_s=240)


@needs_netns
def test_three_nodes_each_named_all_on_loopback(cluster):
    nodes = cluster.nodes()
    assert [n.name for n in nodes] == ["head", "worker1", "worker2"]
    assert all(n.alive and n.address == "127.0.0.1" for n in nodes)
    assert [n.cpus for n in nodes] == [2.0, 1.0, 1.0]
    assert cluster.network == "netns" and cluster.serve_url.startswith("http://127.0.0.1:")


@needs_netns
def test_every_route_of_deploykit_answers_through_serve(app):
    client = dk.openai_client(app.url + "/v1")
    text = client.completions.create(model="toy-tiny", prompt="Hello", max_tokens=8).choices[0].text
    assert isinstance(text, str)
    chunks = list(
        client.chat.completions.create(
            model="toy-tiny",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=8,
            stream=True,
        )
    )
    assert chunks and chunks[-1].choices[0].finish_reason is not None
    with httpx.Client(base_url=app.url, trust_env=False, timeout=30) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/v1/models").json()["data"][0]["id"] == "toy-tiny"
        assert "deploykit:" in http.get("/metrics").text  # deploykit's own metrics
        answer = http.post("/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 4}})
        assert answer.status_code == 200  # TGI's route too
        missing = http.post("/v1/completions", json={"model": "nope", "prompt": "x"})
        assert missing.status_code == 404  # deploykit's own error, through Serve
        assert "/" in answer.headers["x-deploykit-node"]  # node/replica


@needs_netns
def test_scales_up_under_load_then_survives_a_node_kill(cluster, app):
    watch = app.watch(interval_s=0.25)
    try:
        scale = dk.scale_under_load(app, watch, concurrency=8, max_tokens=16, timeout_s=150)
        assert scale.reached_s is not None, "did not reach 3 replicas"
        assert len(scale.placement) >= 2, scale.placement  # spread over nodes
        states = watch.table()
        assert any(row.get("STARTING", 0) for row in states), states  # new replicas loading
        assert max(row.get("RUNNING", 0) for row in states) == 3
        victim = next(n for n in sorted(scale.placement) if n != "head")
        drill = dk.node_kill_drill(
            cluster, app, watch, victim, concurrency=6, max_tokens=16, streams=2,
            stream_max_tokens=200, kill_after_s=1.0, recover_timeout_s=120,
        )  # fmt: skip
    finally:
        watch.stop()
    assert drill.kill.replicas_killed >= 1 and "raylet" in drill.kill.process_names
    assert drill.result.lost == 0, drill.failure_table()  # retried elsewhere
    assert drill.noticed_s is not None and drill.recovered_s is not None, drill.summary()
    # every failure was a request the dead node held: none sent well after the kill
    assert all(f.start_s <= drill.result.kill_at_s + 5 for f in drill.failures)
    assert all(f.meaning for f in drill.failures)
    # the head marks the node dead after its own health checks fail (Ray's default: 5 failures,
    # 3 s apart), which may come after Serve has already replaced the replica
    deadline = time.monotonic() + 60
    while victim in (alive := [n.name for n in cluster.nodes() if n.alive]):
        assert time.monotonic() < deadline, f"the head still lists {victim} alive: {alive}"
        time.sleep(0.5)
    assert [n.name for n in cluster.nodes() if not n.alive] == [victim]
    assert victim not in app.placement()


def test_host_mode_cluster_without_a_namespace_leaves_nothing():
    """What a user without root gets: nodes on 127.0.0.2, on the host's network stack."""
    started = time.time()
    with dk.start_ray_cluster(1, head_cpus=1, worker_cpus=1, network="host") as cluster:
        nodes = cluster.nodes()
        assert cluster.network == "host" and cluster.bridge is None
        assert [(n.name, n.alive, n.address) for n in nodes] == [
            ("head", True, "127.0.0.2"),
            ("worker1", True, "127.0.0.2"),
        ]
        assert cluster.dashboard_url.startswith("http://127.0.0.2:")
    left = dk.ray_processes(since=started)
    assert left == [], [(p.pid, p.name()) for p in left]


def test_ray_commands_cli_prints_each_machines_command(capsys):
    from deploykit.cli import main

    assert main(["ray", "commands", "--head", "10.0.0.1", "--worker", "10.0.0.2"]) == 0
    out = capsys.readouterr().out
    assert "# on head:" in out and "# on worker1:" in out and "--address 10.0.0.1:6379" in out
