"""The workshop hub for real: JupyterHub, its npm proxy, two attendees who log in through the
login form, their single-user servers, and servers reached through jupyter-server-proxy."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from _paths import ROOT

from deploykit.cookbook import Recipe
from deploykit.errors import InvalidArgumentError
from deploykit.launch import launch_server
from deploykit.server.process import start_server
from deploykit.workshop._proxy import PROXY_VERSION, proxy_command
from deploykit.workshop.hub import Hub, _gpu_share, start_hub
from deploykit.workshop.prepare import prepare_workshop


def _free_port_in(low: int, high: int) -> int:
    """Return a port in [low, high] nothing listens on (what free_port does with DEPLOYKIT_PORTS)."""
    for port in range(low, high + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {low}-{high}")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _login(hub: Hub, name: str, password: str) -> httpx.Client:
    """Log in through the hub's login form, as an attendee's browser does."""
    client = httpx.Client(base_url=hub.url, follow_redirects=True, trust_env=False, timeout=60)
    form = client.get("/hub/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
    assert xsrf, form.text[:500]
    answer = client.post(
        "/hub/login",
        data={"username": name, "password": password, "_xsrf": xsrf.group(1)},
        follow_redirects=False,
    )
    assert answer.status_code == 302, answer.text[:500]  # on to the attendee's server
    return client


def _open_lab(client: httpx.Client, name: str, timeout_s: float = 180.0) -> httpx.Response:
    """Start the attendee's server (GET /hub/spawn) and wait until their JupyterLab answers."""
    client.get("/hub/spawn")
    deadline = time.monotonic() + timeout_s
    while True:  # the hub shows spawn-pending until the single-user server is up
        page = client.get(f"/user/{name}/lab")
        if page.url.path == f"/user/{name}/lab" and page.status_code == 200:
            return page
        assert time.monotonic() < deadline, f"{name}'s server did not start: {page.url}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    started = start_hub(["alice", "bob"], root=root, recipe="cpu")
    yield started
    started.stop()


def test_wrong_password_does_not_log_in(hub):
    alice, bob = hub.attendees["alice"], hub.attendees["bob"]
    with httpx.Client(base_url=hub.url, trust_env=False, timeout=60) as client:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', client.get("/hub/login").text)
        assert xsrf
        answer = client.post(
            "/hub/login",
            data={"username": "alice", "password": bob.password, "_xsrf": xsrf.group(1)},
        )
    assert answer.status_code == 403 and "Invalid username or password" in answer.text
    assert alice.password != bob.password  # one password each, not one for the class


def test_each_attendee_reaches_their_own_server_and_no_other(hub, tmp_path):
    alice, bob = hub.attendees["alice"], hub.attendees["bob"]
    as_alice, as_bob = _login(hub, "alice", alice.password), _login(hub, "bob", bob.password)
    with contextlib.closing(as_alice), contextlib.closing(as_bob):
        # alice's JupyterLab is the workshop lab: offline, on the deploykit kernel
        page = _open_lab(as_alice, "alice").text
        config = json.loads(
            re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1)
        )
        assert config["disabledExtensions"] == ["@jupyterlab/apputils-extension:announcements"]
        assert config["news"] == {"disabled": True}
        assert config["extensionManager"]["name"] == "read-only"
        specs = as_alice.get("/user/alice/api/kernelspecs").json()
        assert specs["default"] == "deploykit"
        _open_lab(as_bob, "bob")
        # each single-user server carries its attendee's environment (kernels inherit it)
        servers = {
            p.environ()["DEPLOYKIT_OWNER"]: p
            for p in hub.processes()
            if "jupyterhub.singleuser" in " ".join(p.cmdline())
        }
        assert set(servers) == {"alice", "bob"}
        env = servers["alice"].environ()
        assert env["DEPLOYKIT_PORTS"] == "20000-20099" and env["HOME"] == str(alice.home)
        assert servers["bob"].environ()["DEPLOYKIT_PORTS"] == "20100-20199"
        copy = json.loads((alice.home / "01_quickstart.ipynb").read_text())
        assert copy["metadata"]["kernelspec"]["name"] == "deploykit"

        # alice's notebook starts deploykit's server in her range; bob a plain one in his
        toy = start_server(
            "toy-tiny",
            device="cpu",
            port=_free_port_in(*alice.ports),
            env={**alice.environment, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        )
        (tmp_path / "bob.txt").write_text("bob's file")
        plain = launch_server(
            [sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
            port=_free_port_in(*bob.ports),
            health_path="/",
            cwd=tmp_path,
            env=bob.environment,
        )
        models = as_alice.get(f"/user/alice/proxy/{toy.port}/v1/models")
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "toy-tiny"
        assert "bob.txt" in as_bob.get(f"/user/bob/proxy/{plain.port}/").text

        # bob's cookies do not open alice's server: the hub refuses him her OAuth client
        other = as_bob.get(f"/user/alice/proxy/{toy.port}/v1/models")
        assert other.status_code == 403 and "toy-tiny" not in other.text
        # alice's proxy reaches her own port range only, in each of its URL forms
        for path in (f"{plain.port}/", f"127.0.0.1:{plain.port}/", f"absolute/{plain.port}/"):
            refused = as_alice.get(f"/user/alice/proxy/{path}")
            assert refused.status_code == 403 and "bob.txt" not in refused.text, path
        # ...but her code reaches bob's server directly: one Unix user, one loopback
        assert "bob.txt" in httpx.get(plain.url, trust_env=False).text

        started = [p.pid for p in hub.processes()]
        hub.stop()
        assert hub.processes() == []
        assert not toy.is_running() and not plain.is_running()  # stopped with the hub
        assert not any(_alive(pid) for pid in started)


def test_bad_attendee_names_are_refused_in_one_line(tmp_path):
    with pytest.raises(InvalidArgumentError, match="lowercase"):
        start_hub(["alice", "alice"], root=tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "deploykit", "workshop", "hub", "--attendees", "Alice Smith"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "deploykit: error: attendees" in done.stderr


def test_gpu_memory_is_split_evenly_where_the_planner_says_the_model_fits():
    gpu = Recipe("g", "", {"device": "cuda", "model": "meta-llama/Llama-3.1-8B-Instruct"}, {})
    assert _gpu_share(gpu, 3, None, memory_gib=80.0) == 0.3  # the planner fits 4 on 80 GiB
    assert _gpu_share(gpu, 3, None, memory_gib=None) == 0.3  # no GPU seen: nothing to check
    with pytest.raises(InvalidArgumentError, match="GPU for 1 of them"):
        _gpu_share(gpu, 2, None, memory_gib=24.0)
    assert _gpu_share(gpu, 2, 0.2, memory_gib=24.0) == 0.2  # the instructor's call
    assert _gpu_share(gpu, 127, None, memory_gib=None) == 0.007
    cpu = Recipe("c", "", {"device": "cpu", "model": "toy-tiny"}, {})
    assert _gpu_share(cpu, 3, None, memory_gib=80.0) is None


def test_the_command_prints_each_login_and_sigterm_stops_everything(tmp_path):
    command = [sys.executable, "-m", "deploykit", "workshop", "hub", "--attendees", "ann,ben"]
    cli = subprocess.Popen(
        [*command, "--dir", str(tmp_path), "--recipe", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        lines = [cli.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("JupyterHub for 2 attendees at http://127.0.0.1:"), lines
        assert re.match(r"  ann +password \S{12}  ports 20000-20099  folder ", lines[1]), lines
        assert re.match(r"  ben +password \S{12}  ports 20100-20199  folder ", lines[2]), lines
        started = psutil.Process(cli.pid).children(recursive=True)  # the hub and its proxy
        assert len(started) >= 2
        cli.terminate()
        assert cli.wait(timeout=60) == 0
    finally:
        cli.kill()
    assert "stopping JupyterHub" in cli.stdout.read()
    assert not any(_alive(proc.pid) for proc in started)


def test_prepare_installs_the_pinned_proxy_for_the_hub(tmp_path):
    checklist = prepare_workshop(
        "cpu", folder=tmp_path, models=False, vllm=False, docker=False, hub_proxy=True
    )
    assert checklist.steps["JupyterHub's proxy (npm)"].startswith("done")
    node, script = proxy_command()
    version = subprocess.run([node, script, "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == PROXY_VERSION == "5.2.0"
