"""The Docker engine as a real part: deploykit's private dockerd (or yours), builds with no
network, containers on loopback, Compose, and nothing left running afterwards.

`make test` prepares the images first (`deploykit docker prepare`); these tests use the base
image and deploykit's server image from that step.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

import deploykit as dk
from deploykit.deploy import engine as engine_module
from deploykit.deploy.image import stack_compose


@pytest.fixture(scope="module")
def _stopped_at_the_end():
    yield
    dk.docker_engine().stop()  # the private engine (yours is left alone)
    assert dk.leftovers() == []


@pytest.fixture
def docker(_stopped_at_the_end):
    return dk.docker_engine()  # the running one, or started afresh


def test_private_engine_is_loopback_only_and_leaves_nothing_running(docker, tmp_path):
    if not docker.private:
        pytest.skip("your own Docker engine answers; deploykit does not start or stop it")
    networks = docker.docker("network", "ls", "--format", "{{.Driver}}").stdout.split()
    assert "bridge" not in networks  # --bridge=none: no 172.17 network exists
    base = dk.base_image(docker)
    docker.docker("run", "-d", "--name", "sleeper", "--network", "none", base, "sleep", "600")
    assert any("(container)" in line for line in dk.leftovers())
    docker.stop()
    assert dk.leftovers() == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(engine_module.engine_root()) not in mounts
    again = dk.docker_engine()  # starts afresh; the images are still in the data root
    assert again.is_running() and again.has_image(base)


def test_a_failed_build_says_which_step_failed(docker, tmp_path):
    base = dk.base_image(docker)
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nRUN echo the-broken-step && false\n"
    )
    with pytest.raises(dk.DockerError) as info:
        dk.build_image(docker, tmp_path, "deploykit-test-broken:1", base=base, quiet=True)
    assert "the-broken-step" in str(info.value) and "exit" in str(info.value)
    (tmp_path / "Dockerfile").write_text(
        'ARG BASE\nFROM ${BASE}\nRUN python3 -c "import urllib.request as u; '
        "u.urlopen('http://127.0.0.1:9', timeout=2)\"\n"
    )
    with pytest.raises(dk.DockerError):  # --network none: not even loopback during a build
        dk.build_image(docker, tmp_path, "deploykit-test-network:1", base=base, quiet=True)


def test_a_container_that_dies_while_starting_shows_its_log(docker, tmp_path):
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    with pytest.raises(dk.DockerError, match="no config.json"):
        dk.run_server(docker, "deploykit-llm:0.1.0", model_folder=bad)
    (bad / "config.json").write_text('{"model_type": "no-such-architecture"}')
    container = dk.run_server(docker, "deploykit-llm:0.1.0", model_folder=bad, name="dk-bad")
    try:
        with pytest.raises(dk.DockerError) as info:
            container.wait_healthy(timeout_s=120)
        assert "exited before it was healthy" in str(info.value)
        assert "/opt/app/deploykit/" in str(info.value)  # the server's own output, from its log
    finally:
        container.stop()
    assert container.status() == "removed"


def test_no_engine_and_no_root_says_what_to_do(monkeypatch):
    monkeypatch.setattr(engine_module, "_users_engine", lambda: None)
    monkeypatch.setattr(engine_module, "_private", None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(dk.DockerError) as info:
        dk.docker_engine()
    assert "needs root" in str(info.value) and "DOCKER_HOST" in str(info.value)
    with pytest.raises(dk.DockerError, match="start Docker"):
        dk.docker_engine(private=False)


def test_the_stack_file_is_read_by_debians_compose_and_the_spec(tmp_path):
    compose = stack_compose(
        "deploykit-llm:0.1.0",
        "deploykit-prometheus:1",
        model_folder="./model",
        served_name="toy-tiny",
        port=41000,
        prometheus_port=41001,
    )
    assert dk.validate_compose(compose).ok
    assert compose["services"]["prometheus"]["depends_on"] == {
        "server": {"condition": "service_healthy"}
    }
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(compose))
    (tmp_path / "model").mkdir()
    for file in (
        path,
        dk.write_docker_files(dk.DeploymentConfig(), tmp_path / "d")["compose.yaml"],
    ):
        done = subprocess.run(
            ["docker-compose", "-f", str(file), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr  # Compose 1.29 rejects name: and start_interval


def test_wheelhouse_install_needs_no_network(docker):
    """The image's pip reads only the wheelhouse: the image holds every server import."""
    done = docker.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "deploykit-llm:0.1.0",
        "python",
        "-c",
        "import deploykit.server.app, torch, transformers, uvicorn; "
        "import deploykit, sys; print(deploykit.__file__)",
        timeout=120,
    )
    assert done.stdout.strip() == "/opt/app/deploykit/__init__.py"
    user = docker.docker("run", "--rm", "--network", "none", "deploykit-llm:0.1.0", "id", "-u")
    assert user.stdout.strip() == "10001"
