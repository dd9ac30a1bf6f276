"""Container files from one DeploymentConfig: checked by hadolint, the Compose schema and
kubernetes-validate, wrong combinations refused, and the CPU image's CMD run here for real."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from _outputs import temporary_paths
from IPython.lib.pretty import pretty

import deploykit as dk
from deploykit.deploy import DeploymentConfig
from deploykit.deploy.docker import compose_file, compose_yaml, container_command
from deploykit.deploy.kubernetes import KUBERNETES_VERSION
from deploykit.deploy.validate import context_sources

PRESETS = DeploymentConfig.presets
# every Dockerfile the issue names: deploykit CPU and GPU, vLLM GPU, TGI GPU (+ the default)
CONFIGS = {name: DeploymentConfig.from_name(name) for name in PRESETS}
CONFIGS["default"] = DeploymentConfig()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_rendered_dockerfile_passes_hadolint(name):
    check = dk.lint_dockerfile(dk.dockerfile(CONFIGS[name]), name)
    assert check.ok, str(check)


def test_hadolint_really_runs_it_flags_the_seeds_dockerfile():
    check = dk.lint_dockerfile(dk.SEED_DOCKERFILE, "seed")
    assert any("DL3008" in p for p in check.problems), str(check)
    assert "2.15" in dk.hadolint_version()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_compose_file_validates_against_the_compose_spec(name):
    config = CONFIGS[name]
    check = dk.validate_compose(compose_yaml(config), name)
    assert check.ok, str(check)
    service = compose_file(config)["services"][config.name]
    assert service["environment"] == ["HF_TOKEN"]  # by name: no value in the file
    assert service["volumes"] == ["model-cache:/models"]
    volume = compose_file(config)["volumes"]["model-cache"]["name"]
    [run] = [c for c in dk.docker_commands(config, "out") if c.startswith("docker run")]
    assert f" -v {volume}:/models " in run  # one cache for both
    assert service["restart"] == "unless-stopped"
    assert int(service["stop_grace_period"].rstrip("s")) > config.drain_timeout_s
    assert service["healthcheck"]["start_period"] == f"{config.model_load_s}s"
    devices = service["deploy"]["resources"].get("reservations", {}).get("devices", [])
    assert [d["count"] for d in devices] == ([config.gpus] if config.gpus else [])


def test_compose_schema_is_enforced():
    doc = compose_file(DeploymentConfig())
    doc["services"]["llm"]["healthchek"] = doc["services"]["llm"].pop("healthcheck")
    doc["services"]["llm"]["restart"] = 3
    check = dk.validate_compose(doc)
    assert len(check.problems) == 2, str(check)
    assert "healthchek" in str(check)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_manifests_pass_kubernetes_validate_strict(name):
    check = dk.validate_manifests(dk.manifests(CONFIGS[name]), target=name)
    assert check.ok, str(check)
    assert KUBERNETES_VERSION in check.tool and "strict" in check.tool


def test_kubernetes_validate_is_enforced_and_its_cli_agrees(tmp_path):
    config = CONFIGS["vllm-gpu"]
    paths = dk.write_manifests(config, tmp_path)
    files = [str(path) for name, path in paths.items() if name != "kustomization.yaml"]
    cli = Path(sys.executable).with_name("kubernetes-validate")
    done = subprocess.run(
        [str(cli), "--strict", "-k", KUBERNETES_VERSION, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.count("passed") == 5, done.stdout + done.stderr
    bad = dk.manifests(config)
    bad[1]["spec"]["template"]["spec"]["containers"][0]["startupprobe"] = {}
    bad[2]["spec"]["ports"][0]["port"] = "80"  # a string where the Service wants an integer
    check = dk.validate_manifests(bad)
    assert len(check.problems) == 2 and "startupprobe" in str(check), str(check)


def test_manifest_kinds_and_probe_sizes():
    config = CONFIGS["vllm-gpu"]
    docs = dk.manifests(config)
    assert [d["kind"] for d in docs] == [
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    pod = docs[1]["spec"]["template"]["spec"]
    [server] = pod["containers"]
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= config.model_load_s
    assert server["livenessProbe"]["httpGet"]["path"] == "/health"
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"  # vLLM has no /ready
    assert pod["terminationGracePeriodSeconds"] > config.drain_timeout_s + config.prestop_sleep_s
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert server["resources"]["requests"]["memory"] == server["resources"]["limits"]["memory"]
    assert "replicas" not in docs[1]["spec"]  # the HPA owns it
    assert docs[3]["spec"]["metrics"][0]["pods"]["metric"]["name"] == config.queue_metric
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert server["args"][:1] == [config.model] and "--shutdown-timeout" in server["args"]

    own = dk.manifests(DeploymentConfig())[1]["spec"]
    assert own["replicas"] == 1
    probes = own["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_images_run_as_non_root_and_hold_no_model():
    for name, config in CONFIGS.items():
        text = dk.dockerfile(config)
        users = [line for line in text.splitlines() if line.startswith("USER ")]
        assert users and users[-1] != "USER root" and not users[-1].startswith("USER 0"), name
        assert "from_pretrained" not in text and "HF_TOKEN" not in text, name
        assert (
            dk.exec_form(text, "HEALTHCHECK")[-1].endswith(":" + str(config.port) + "/health")
            or "/health" in dk.exec_form(text, "HEALTHCHECK")[-1]
        ), name
    assert dk.exec_form(dk.dockerfile(CONFIGS["vllm-gpu"]))[0] == CONFIGS["vllm-gpu"].model
    assert container_command(CONFIGS["vllm-gpu"])[:3] == [
        "vllm",
        "serve",
        CONFIGS["vllm-gpu"].model,
    ]
    assert "FROM vllm/vllm-openai:v" in dk.dockerfile(CONFIGS["vllm-gpu"])
    assert "FROM ghcr.io/huggingface/text-generation-inference:3.3.7" in dk.dockerfile(
        CONFIGS["tgi-gpu"]
    )
    assert "ARG BASE=nvidia/cuda:" in dk.dockerfile(CONFIGS["deploykit-gpu"])
    assert "ARG BASE=python:3.11-slim-bookworm" in dk.dockerfile(CONFIGS["deploykit-cpu"])


WRONG = [
    (dict(engine="vllm", model="org/m", gpus=0), "GPU image but gpus=0", "gpus=1"),
    (dict(base_image="nvidia/cuda:12.9.1-runtime-ubuntu24.04"), "GPU image but gpus=0", "gpus=1"),
    (dict(gpus=1, base_image="python:3.11-slim"), "no CUDA runtime", "base_image=''"),
    (
        dict(model_load_s=600, startup_failure_threshold=30),
        "shorter than model_load_s",
        "startup_failure_threshold >= 60",
    ),
    (dict(drain_timeout_s=60, grace_period_s=30), "SIGKILL", "grace_period_s >= 75"),
    (dict(port=80), "privileged", "8000"),
    (dict(image="me/llm:latest"), "not pinned", "version tag"),
    (dict(replicas=1, max_replicas=3), "ReadWriteOnce", "ReadWriteMany"),
    (
        dict(
            engine="vllm", model="org/m", gpus=1, max_replicas=2, cache_access_mode="ReadWriteMany"
        ),
        "CPU utilization",
        "queue_metric",
    ),
    (dict(model="/data/weights"), "outside the model volume", "/models/"),
    (dict(engine="vllm", model="toy-tiny", gpus=1), "built-in", "hub id"),
    (
        dict(gpus=2, base_image="nvidia/cuda:12.9.1-runtime-ubuntu24.04"),
        "one device",
        "engine='vllm'",
    ),
    (dict(engine="helm"), "not one deploykit renders", "deploykit, vllm, tgi"),
    (dict(name="LLM_1"), "DNS label", "lowercase"),
]


@pytest.mark.parametrize("changes,problem,fix", WRONG, ids=[w[1] for w in WRONG])
def test_wrong_combination_is_rejected_saying_what_to_change(changes, problem, fix):
    with pytest.raises(dk.DeployKitError) as info:
        DeploymentConfig(**changes)
    assert problem in str(info.value) and fix in str(info.value), str(info.value)


def test_probe_and_grace_defaults_follow_the_timings():
    config = DeploymentConfig(model_load_s=601, probe_period_s=10, drain_timeout_s=45)
    assert config.startup_threshold == 62 and config.grace_s == 5 + 45 + 10
    assert dk.probe_timeline(config)["startup_budget_s"] >= 601
    with pytest.raises(dk.InvalidArgumentError):
        config.replace(startup_failure_threshold=60)
    with pytest.raises(dk.InvalidArgumentError):
        DeploymentConfig.from_name("no-such-preset")


def test_written_folder_is_its_own_build_context(tmp_path):
    out = tmp_path / "deploy" / "14_docker_compose"
    paths = dk.write_docker_files(DeploymentConfig(), out)
    assert sorted(paths) == sorted(
        ["Dockerfile", ".dockerignore", "compose.yaml", "app/", "wheelhouse/"]
    )
    assert all(path.parent == out for path in paths.values())
    compose = yaml.safe_load(paths["compose.yaml"].read_text())
    assert compose["services"]["llm"]["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert "name" not in compose  # Compose 1.29 rejects a top-level name
    assert "start_interval" not in compose["services"]["llm"]["healthcheck"]
    assert paths[".dockerignore"].read_text() == "*\n!app/\n!wheelhouse/\n"
    assert dk.check_build_context(paths["compose.yaml"]).ok
    for path in (
        paths["Dockerfile"],
        paths["compose.yaml"],
        paths["wheelhouse/"] / "requirements.txt",
    ):
        assert temporary_paths(path.read_text()) == [], path  # nothing names where it was written
        assert str(tmp_path) not in path.read_text(), path
    text = paths["Dockerfile"].read_text()
    code = [line for line in text.splitlines() if not line.startswith("#")]
    urls = [u for line in code for u in line.split("://")[1:]]
    assert all(u.startswith("127.0.0.1:") for u in urls)  # no index address: an offline build
    assert "--no-index --find-links /wheelhouse" in text
    assert text.rstrip().splitlines()[-1] == "COPY app/ /opt/app/"  # the code layer comes last

    commands = dk.docker_commands(DeploymentConfig(), "deploy/14_docker_compose")
    assert commands[0].startswith("python3 -m pip download --only-binary=:all: -d ")
    assert commands[1] == "docker build -t deploykit-llm:0.1.0 deploy/14_docker_compose"
    assert commands[3].startswith("docker compose -f deploy/14_docker_compose/compose.yaml up")

    vllm = dk.write_docker_files(CONFIGS["vllm-gpu"], tmp_path / "vllm")
    assert sorted(vllm) == [".dockerignore", "Dockerfile", "compose.yaml"]  # copies nothing
    assert dk.check_build_context(vllm["compose.yaml"]).ok


def test_app_layer_is_the_checkouts_code_byte_compiled_and_imports(tmp_path):
    app = dk.write_docker_files(DeploymentConfig(), tmp_path / "ctx")["app/"]
    names = {p.relative_to(app).as_posix() for p in app.rglob("*") if p.is_file()}
    assert "deploykit/__init__.py" in names and "deploykit/server/app.py" in names
    assert not [n for n in names if n.startswith(("tests/", ".git")) or n.endswith(".ipynb")]
    pyc = next((app / "deploykit" / "__pycache__").glob("__init__.cpython-*.pyc")).read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b11  # checked hash: valid whatever the times
    stale = app / "deploykit" / "gone.py"
    stale.write_text("x = 1\n")
    dk.write_docker_files(DeploymentConfig(), tmp_path / "ctx")  # a rewrite drops removed files
    assert not stale.exists()
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "import deploykit; print(deploykit.__file__)",
            str(app),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith(str(app)), done.stderr


def test_wheelhouse_lists_pin_this_environment_and_hold_only_the_server():
    from importlib.metadata import version

    from deploykit.deploy.wheels import SERVER_REQUIREMENTS, constraints_text

    pins = dict(line.split("==") for line in constraints_text().splitlines()[1:])
    assert pins["torch"] == version("torch") and pins["fastapi"] == version("fastapi")
    assert "deploykit" not in pins
    assert not {"jupyterlab", "papermill", "matplotlib", "pandas", "openai"} & set(
        SERVER_REQUIREMENTS
    )


def test_build_context_check_finds_what_docker_would_miss(tmp_path):
    paths = dk.write_docker_files(DeploymentConfig(), tmp_path / "ctx")
    paths[".dockerignore"].write_text("*\n!wheelhouse/\n")  # app/ no longer reaches the build
    assert "excluded by .dockerignore" in str(dk.check_build_context(paths["compose.yaml"]))
    import shutil

    shutil.rmtree(paths["app/"])
    assert "not in the build context" in str(dk.check_build_context(paths["compose.yaml"]))
    compose = yaml.safe_load(paths["compose.yaml"].read_text())
    compose["services"]["llm"]["build"] = {"context": str(tmp_path / "ctx")}
    paths["compose.yaml"].write_text(yaml.safe_dump(compose))
    assert "absolute path" in str(dk.check_build_context(paths["compose.yaml"]))
    sources = context_sources(
        "FROM a AS b\nCOPY x.txt y/ /dst/\nCOPY --from=b /o /p\n"
        "RUN --mount=type=bind,source=w.whl,target=/w pip install /w\n"
        "RUN --mount=type=bind,from=b,source=/dist,target=/dist true\n"
    )
    assert sources == ["x.txt", "y/", "w.whl"]


def test_manifests_folder_applies_with_kustomize(tmp_path):
    out = tmp_path / "deploy" / "15_kubernetes"
    paths = dk.write_manifests(CONFIGS["vllm-gpu"], out)
    kustomization = yaml.safe_load(paths["kustomization.yaml"].read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == [
        "pvc.yaml",
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "pdb.yaml",
    ]
    assert dk.check_kustomization(out).ok, str(dk.check_kustomization(out))
    assert dk.kubernetes_commands(CONFIGS["vllm-gpu"], "deploy/15_kubernetes")[2] == (
        "kubectl apply -k deploy/15_kubernetes"
    )
    # rewritten without an autoscaler: the old hpa.yaml goes, the kustomization follows
    paths = dk.write_manifests(DeploymentConfig(), out)
    assert not (out / "hpa.yaml").exists() and "hpa.yaml" not in paths
    assert dk.check_kustomization(out).ok
    (out / "extra.yaml").write_text("kind: ConfigMap\n")
    (out / "service.yaml").unlink()
    problems = str(dk.check_kustomization(out))
    assert "extra.yaml: in the folder, not listed" in problems
    assert "service.yaml: listed, but not in" in problems


def test_tables_fit_a_page():
    for rows in (
        dk.docker_differences(CONFIGS["vllm-gpu"]),
        dk.kubernetes_differences(CONFIGS["vllm-gpu"]),
    ):
        text = dk.differences_markdown(rows)
        assert len(text.text.splitlines()) >= len(rows)
        assert max(len(line) for line in text.text.splitlines()) <= 100
        assert pretty(text) == text.text  # a notebook's text/plain: the text, not a repr
    assert max(len(line) for line in str(CONFIGS["vllm-gpu"]).splitlines()) <= 100
    rows = dk.probe_table(CONFIGS["vllm-gpu"])
    assert [r["probe"] for r in rows] == ["startupProbe", "readinessProbe", "livenessProbe"]
    assert rows[0]["acts_after_s"] >= CONFIGS["vllm-gpu"].model_load_s


def test_host_command_changes_only_what_cannot_exist_here():
    config = DeploymentConfig(model="/models/llama", dtype="float32", drain_timeout_s=45)
    cmd = dk.exec_form(dk.dockerfile(config), "CMD")
    host = dk.host_command(cmd, model="toy-tiny")
    assert [s.part for s in host.substitutions] == ["executable", "--model", "--host", "--port"]
    assert host.argv[:3] == (sys.executable, "-m", "deploykit")
    kept = dict(zip(host.argv[4::2], host.argv[5::2]))
    assert kept == {
        "--model": "toy-tiny",
        "--host": "{host}",
        "--port": "{port}",
        "--device": "cpu",
        "--dtype": "float32",
        "--drain-timeout-s": "45",
    }
    with pytest.raises(dk.InvalidArgumentError):
        dk.host_command(dk.exec_form(dk.dockerfile(CONFIGS["vllm-gpu"])))


def test_cpu_image_cmd_serves_passes_its_healthcheck_and_drains_on_sigterm():
    config = DeploymentConfig(model="/models/smollm2-135m", dtype="float32", drain_timeout_s=60)
    text = dk.dockerfile(config)
    host = dk.host_command(dk.exec_form(text, "CMD"), model="toy-tiny")  # read back from the file
    server = host.start(env={"OMP_NUM_THREADS": "1"})
    with server:
        assert httpx.get(server.url + "/health").status_code == 200
        assert httpx.get(server.url + "/ready").status_code == 200
        assert dk.run_healthcheck(text, server.port) == 0  # the image's own HEALTHCHECK command
        drain = dk.sigterm_drain(server, model="toy-tiny", requests=6, max_tokens=300)
        assert drain.ready_status in (503, 0)  # draining: load balancers stop sending new work
        assert drain.new_request_status in (503, 0)  # new work is refused, told when to retry
        assert drain.new_request_status == 0 or drain.retry_after is not None
        assert drain.all_completed, drain.statuses
        assert drain.completion_tokens == (300,) * 6  # finished, not cut short
        assert drain.exit_code == 0, server.log_tail()
        assert drain.drain_s < config.drain_timeout_s
        assert dk.run_healthcheck(text, server.port) != 0  # gone: Docker would see it unhealthy


@pytest.mark.parametrize("recipe", ["cpu", "gpu-24gb", "gpu-80gb"])
def test_every_recipe_renders_valid_files_in_notebooks_14_and_15(recipe):
    """The GPU recipes never run in CI: build their configs as the notebooks do, and check them."""
    import ast
    import dataclasses

    from deploykit import cookbook

    root = Path(__file__).resolve().parent.parent
    paths = [
        root / "notebooks" / f"{stem}.ipynb" for stem in ("14_docker_compose", "15_kubernetes")
    ]
    resolved = cookbook.resolve(
        cookbook.load_recipe(recipe, root), paths, cookbook.list_notebooks(root)
    )
    fields = {f.name for f in dataclasses.fields(DeploymentConfig)}
    for path in paths:
        declared = cookbook.notebook_parameters(path)
        values = {k: ast.literal_eval(v["default"]) for k, v in declared.items()}
        values.update(resolved[path.stem])
        values["queue_metric"] = values.get("queue_metric") or None
        config = DeploymentConfig(**{k: v for k, v in values.items() if k in fields})
        assert config.engine != "deploykit" or recipe == "cpu"
        assert dk.lint_dockerfile(dk.dockerfile(config)).ok
        assert dk.validate_compose(compose_file(config)).ok
        assert dk.validate_manifests(dk.manifests(config)).ok


def test_rerender_diffs_the_changed_files_and_checks_the_new_ones():
    config = DeploymentConfig()
    gpu = dk.rerender(config, "docker", gpus=1, memory_gib=16, port=config.port)
    assert gpu.changes == {"gpus": 1, "memory_gib": 16}  # the unchanged port is not listed
    assert gpu.changed_files == ["Dockerfile", "compose.yaml"] and gpu.ok
    assert [c.tool for c in gpu.checks] == ["hadolint", "compose-spec schema"]
    diff = gpu.diff()
    assert "+ARG BASE=nvidia/cuda:" in diff and "-ARG BASE=python:3.11-slim-bookworm" in diff
    assert "-          memory: 8g" in diff and "+          memory: 16g" in diff
    assert "+            count: 1" in diff and '"--device", "cuda"' in diff
    assert str(gpu).startswith("gpus=1, memory_gib=16: Dockerfile, compose.yaml change\n")

    same = dk.rerender(config, "docker", gpus=0)
    assert same.changes == {} and same.changed_files == [] and same.diff() == ""
    assert str(same).splitlines()[0] == "no setting changed: no file changes"


def test_rerender_kubernetes_drops_the_autoscaler_and_validates_strictly():
    config = DeploymentConfig(max_replicas=3, cache_access_mode="ReadWriteMany")
    fixed = dk.rerender(config, "kubernetes", max_replicas=1)
    assert fixed.changed_files == ["deployment.yaml", "hpa.yaml", "kustomization.yaml"]
    assert "hpa.yaml" in fixed.before and "hpa.yaml" not in fixed.after
    assert "+++ /dev/null" in fixed.diff() and "+  replicas: 1" in fixed.diff()
    assert fixed.ok and fixed.checks[0].tool.startswith("kubernetes-validate")
    assert "strict" in fixed.checks[0].tool


@pytest.mark.parametrize(
    "files, changes, says",
    [
        ("docker", {"engine": "vllm"}, "gpus=0"),  # vLLM's image with no GPU
        ("kubernetes", {"replicas": 4}, "max_replicas=3 < replicas=4"),
        ("helm", {}, "use one of docker, kubernetes"),
    ],
)
def test_rerender_refuses_what_the_config_refuses(files, changes, says):
    config = DeploymentConfig(max_replicas=3, cache_access_mode="ReadWriteMany")
    with pytest.raises(dk.InvalidArgumentError, match=re.escape(says)):
        dk.rerender(config, files, **changes)
