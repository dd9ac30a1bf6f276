"""Workshop mode: attendees' copies (a refresh keeps edits), the offline lab and its Ctrl-C,
and the checklist of `deploykit workshop prepare` (on what is already built: nothing is built
here)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import nbformat
import psutil
import pytest
from _paths import ROOT
from jupyter_client import BlockingKernelClient

import deploykit as dk
from deploykit.workshop.lab import KERNEL, MANIFEST, STATE_DIR
from deploykit.workshop.prepare import notebook_needs

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _digests(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _injected(path: Path) -> str:
    """Return the source of a copy's injected-parameters cell."""
    cells = nbformat.read(path, as_version=4).cells
    return next(c.source for c in cells if "injected-parameters" in c.metadata.get("tags", []))


@pytest.fixture
def cookbook(tmp_path: Path) -> Path:
    """A checkout with two of the notebooks and two recipes that set them differently."""
    root = tmp_path / "checkout"
    (root / "notebooks").mkdir(parents=True)
    (root / "recipes").mkdir()
    for name in ("01_quickstart", "09_batching"):
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", root / "notebooks")
    for recipe, tokens in (("first", 16), ("second", 24)):
        (root / "recipes" / f"{recipe}.yaml").write_text(
            f"parameters:\n  model: toy-tiny\nnotebooks:\n  01_quickstart:\n"
            f"    max_tokens: {tokens}\n  09_batching:\n    max_new_tokens: {tokens}\n"
        )
    return root


def test_copies_carry_the_recipe_and_the_deploykit_kernel_and_leave_the_originals(tmp_path):
    before = _digests(NOTEBOOKS)
    report = dk.attendee_copies(tmp_path / "ws", "cpu", root=ROOT)
    assert report.new == tuple(p.name for p in NOTEBOOKS) and report.recipe == "cpu"
    assert _digests(NOTEBOOKS) == before, "an original notebook changed"
    copy = nbformat.read(tmp_path / "ws" / "01_quickstart.ipynb", as_version=4)
    assert copy.metadata.kernelspec.name == KERNEL
    # the cpu recipe's values for 01, after the parameters cell, as papermill injects them
    tags = [c.metadata.get("tags", []) for c in copy.cells]
    assert tags.index(["injected-parameters"]) == tags.index(["parameters"]) + 1
    assert 'model = "smollm2-135m"' in _injected(tmp_path / "ws" / "01_quickstart.ipynb")
    assert "timing_runs = 3" in _injected(tmp_path / "ws" / "01_quickstart.ipynb")
    # otherwise the copy is the original: same cells, nothing executed
    original = nbformat.read(NOTEBOOKS[0], as_version=4)
    kept = [c for c in copy.cells if c.id != "injected-parameters"]
    assert [c.source for c in kept] == [c.source for c in original.cells]
    assert all(not c.get("outputs") for c in copy.cells)
    nbformat.validate(copy)


def test_a_refresh_replaces_unedited_copies_and_keeps_edited_ones(cookbook, tmp_path):
    folder = tmp_path / "ws"
    first = dk.attendee_copies(folder, "first", root=cookbook)
    assert first.new == ("01_quickstart.ipynb", "09_batching.ipynb")
    assert dk.attendee_copies(folder, "first", root=cookbook).unchanged == first.new
    # the attendee edits 01 (as JupyterLab saves it: a new cell) and leaves 09 alone
    edited = folder / "01_quickstart.ipynb"
    nb = nbformat.read(edited, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print('my own cell')"))
    nbformat.write(nb, edited)
    mine = edited.read_bytes()
    # ... and runs 09: outputs and metadata are not edits
    ran = nbformat.read(folder / "09_batching.ipynb", as_version=4)
    code = next(cell for cell in ran.cells if cell.cell_type == "code")
    code.outputs, code.execution_count = [nbformat.v4.new_output("stream", text="ran\n")], 1
    ran.metadata.language_info = {"name": "python", "version": "3.11"}
    nbformat.write(ran, folder / "09_batching.ipynb")

    second = dk.attendee_copies(folder, "second", root=cookbook)
    assert second.kept == ("01_quickstart.ipynb",) and second.updated == ("09_batching.ipynb",)
    assert edited.read_bytes() == mine, "the attendee's edit was overwritten"
    assert "max_tokens = 24" in _injected(folder / "01_quickstart.new.ipynb")
    assert "max_new_tokens = 24" in _injected(folder / "09_batching.ipynb")
    lines = second.lines()
    assert (
        "kept your edited 01_quickstart.ipynb; the new version is 01_quickstart.new.ipynb" in lines
    )
    assert "updated (you had not edited it): 09_batching.ipynb" in lines
    # again: the edit is still kept, 09 is current; a copy the manifest never wrote is kept too
    (folder / ".deploykit-workshop" / "manifest.json").unlink()
    third = dk.attendee_copies(folder, "second", root=cookbook)
    assert third.kept == ("01_quickstart.ipynb",) and third.unchanged == ("09_batching.ipynb",)
    assert edited.read_bytes() == mine
    manifest = json.loads((folder / STATE_DIR / MANIFEST).read_text())
    assert manifest["recipe"] == "second" and set(manifest["copies"]) == {"09_batching.ipynb"}


def test_an_unknown_recipe_is_one_line_with_the_fix(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "deploykit", "workshop", "--dir", str(tmp_path), "--recipe", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 2 and done.stderr.startswith("deploykit: error: unknown recipe")
    assert len(done.stderr.strip().splitlines()) == 1


# ---- the lab: offline, and Ctrl-C stops everything ------------------------------------------

CONNECT = re.compile(r"connect\(\d+, \{sa_family=(AF_INET6?), (.*?)\}")
ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')
SERVE = """
import sys, deploykit as dk
server = dk.launch_server([sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"],
                          health_path="/", name="left-by-a-killed-kernel")
print(server.pid)
"""


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


def _read_until(lines: queue.Queue, pattern: str, timeout_s: float, seen: list[str]) -> str:
    """Return the first output line matching pattern (the lines before it go into seen)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if re.search(pattern, line):
            return line
    pytest.fail(f"no line matching {pattern!r} in {timeout_s} s:\n{''.join(seen)}")


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


def _running(pid: int) -> bool:
    """Return True while pid runs (a zombie nobody reaped, e.g. under a VM's init, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _lab_processes(lab_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("DEPLOYKIT_LAB_ID") == lab_id and proc.is_running():
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except psutil.Error:
            continue
    return found


def test_the_lab_is_offline_and_ctrl_c_stops_it_with_every_server(tmp_path):
    """`deploykit workshop` under strace: every connect() it, its kernels and servers make.

    A kernel starts a server, then is killed (SIGKILL): the server is orphaned. Ctrl-C still
    stops the lab, the kernels and that server.
    """
    if shutil.which("strace") is None:
        pytest.fail("no strace: run `make system-packages` (Debian package strace)")
    runtime = tmp_path / "runtime"
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    env.pop("JUPYTER_PATH", None)
    trace = tmp_path / "connect.trace"
    command = ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=connect", "-o", str(trace)]
    command += [sys.executable, "-m", "deploykit", "workshop", "--dir", str(tmp_path / "ws")]
    traced = subprocess.Popen(
        [*command, "--recipe", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_lines, args=(traced.stdout, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    server_pid, lab_id = None, None
    try:
        url = _read_until(lines, r"^\s+http://127\.0\.0\.1:\d+/lab\?token=", 120, seen).strip()
        base, token = url.split("/lab?token=")
        cli = psutil.Process(traced.pid).children()[0]  # strace runs deploykit as its child
        lab = cli.children()[0]
        lab_id = lab.environ()["DEPLOYKIT_LAB_ID"]
        with httpx.Client(base_url=base, trust_env=False, timeout=30) as client:
            client.headers["Authorization"] = f"token {token}"
            # what the page loads, and the calls the announcements plugin would make
            page = client.get("/lab").raise_for_status().text
            config = json.loads(
                re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1)
            )
            assert config["disabledExtensions"] == ["@jupyterlab/apputils-extension:announcements"]
            assert config["news"] == {"disabled": True}
            assert config["extensionManager"]["name"] == "read-only"
            assert client.get("/lab/api/update").json() == {"notification": None}
            assert client.get("/lab/api/news").json() == {"news": []}
            assert client.get("/lab/api/extensions", params={"query": "widgets"}).json() == []
            assert client.get("/api/contents").json()["content"], "the folder is empty"
            # a kernel of the default kind, which starts a server, and is then killed
            kernel = client.post("/api/kernels", json={}).raise_for_status().json()
        assert kernel["name"] == KERNEL
        assert httpx.get(f"{base}/api/contents", trust_env=False).status_code == 403  # no token
        kc = BlockingKernelClient(connection_file=str(runtime / f"kernel-{kernel['id']}.json"))
        kc.load_connection_file()
        kc.start_channels()
        printed: list[str] = []
        try:
            kc.wait_for_ready(timeout=120)
            reply = kc.execute_interactive(
                SERVE,
                timeout=120,
                output_hook=lambda m: printed.append(m["content"].get("text", "")),
            )
        finally:
            kc.stop_channels()
        assert reply["content"]["status"] == "ok", (reply["content"], printed)
        server_pid = int("".join(printed).split()[-1])
        server = psutil.Process(server_pid)
        kernel_proc = psutil.Process(server.ppid())
        kernel_proc.kill()
        kernel_proc.wait(30)
        assert server.is_running(), "the server should outlive its killed kernel"
        cli.send_signal(signal.SIGINT)  # Ctrl-C
        assert traced.wait(timeout=120) == 0
        server_left = _running(server_pid)
    finally:  # on a failure, what the test started must not outlive it
        if traced.poll() is None:
            left = psutil.Process(traced.pid).children(recursive=True)
            left += _lab_processes(lab_id) if lab_id else []
            os.killpg(traced.pid, signal.SIGKILL)
            for proc in left:  # the lab, kernels and servers run in their own groups
                with contextlib.suppress(psutil.Error, OSError):
                    if os.getpgid(proc.pid) != os.getpgid(0):
                        os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            traced.wait()
        if server_pid is not None and _running(server_pid):
            os.killpg(server_pid, signal.SIGKILL)
    reader.join(timeout=30)  # the output's last lines
    while not lines.empty():
        seen.append(lines.get_nowait())
    output = "".join(seen)
    assert f"{len(NOTEBOOKS)} new" in output and "new: 01_quickstart.ipynb" in output, output
    assert "stopping JupyterLab, its kernels and their servers" in output, output
    assert not server_left, "the server whose kernel was killed still runs"
    assert _lab_processes(lab_id) == [], "the lab left processes running"
    # every connect() of the lab, its kernels and the server stayed on loopback
    calls = CONNECT.findall(trace.read_text())
    addresses = [next(a for a in ADDRESS.search(rest).groups() if a) for _, rest in calls]
    assert [a for a in addresses if not _loopback(a)] == []
    assert len(addresses) > 5, f"strace saw too few connections to trust: {addresses}"


# ---- prepare's checklist --------------------------------------------------------------------


def test_needs_are_read_from_the_notebooks_and_the_recipe():
    by_name = {p.stem: p for p in NOTEBOOKS}
    vllm = notebook_needs(by_name["03_vllm_server"], {})
    assert vllm.vllm and vllm.models == ("smollm2-135m",) and not vllm.docker
    bench = notebook_needs(by_name["10_benchmarking"], {"servers": ["deploykit", "naive"]})
    assert not bench.vllm and bench.models == ("toy-tiny",)
    assert not notebook_needs(by_name["11_monitoring"], {"use_vllm": False}).vllm
    assert notebook_needs(by_name["11_monitoring"], {}).programs == ("prometheus", "promtool")
    assert notebook_needs(by_name["13_load_balancing"], {}).programs == ("nginx",)
    assert notebook_needs(by_name["14_docker_compose"], {}).docker
    hub = notebook_needs(by_name["01_quickstart"], {"model": "HuggingFaceTB/SmolLM2-360M"})
    assert hub.hub_models == ("HuggingFaceTB/SmolLM2-360M",) and hub.models == ()


def test_the_checklist_reports_what_is_built_and_what_is_missing(tmp_path, monkeypatch):
    # the built-in models the tests use are built (make test builds them first)
    built = dk.prepare_workshop("cpu", folder=tmp_path, models=False, vllm=False, docker=False)
    rows = {row.notebook: row for row in built.notebooks}
    assert list(rows) == [p.stem for p in NOTEBOOKS] and built.steps == {}
    assert rows["01_quickstart"].ok and rows["01_quickstart"].offline
    assert rows["09_batching"].ok, rows["09_batching"].lacks
    assert re.search(r"^  01_quickstart +ok +yes$", str(built), re.M), str(built)
    # an empty cache: the models are missing; the toy trains offline, smollm2 needs the network
    monkeypatch.setenv("DEPLOYKIT_CACHE", str(tmp_path / "empty-cache"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("DEPLOYKIT_PORTS", f"{port}-{port + 1}")
        empty = dk.prepare_workshop(
            "cpu", folder=tmp_path, models=False, vllm=False, docker=False, min_free_gib=1e9
        )
    rows = {row.notebook: row for row in empty.notebooks}
    assert [lack.what for lack in rows["01_quickstart"].lacks] == ["smollm2-135m not built"]
    assert not rows["01_quickstart"].offline
    assert [lack.what for lack in rows["09_batching"].lacks] == ["toy-tiny not built"]
    assert rows["09_batching"].offline and not rows["09_batching"].ok
    assert not empty.ports_ok and f"in use: {port}" in empty.ports
    assert not empty.disk_ok and "below 1e+09 GiB" in empty.disk[0]
    assert not empty.ok
    assert re.search(r"^  01_quickstart +lacks +no +smollm2-135m not built", str(empty), re.M)
