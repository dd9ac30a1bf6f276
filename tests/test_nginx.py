"""The generated nginx.conf: passes `nginx -t`, and runs for real over three toy-tiny replicas."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from _servers import COMPLETION, MODEL, post_completions, three_replicas, wait_for

import deploykit as dk
from deploykit.router.nginx import nginx_worker_user, write_nginx_config

URLS = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]


@pytest.fixture(scope="module")
def replicas():
    with three_replicas("nginx-replica") as servers:
        yield servers


def test_config_has_the_settings_that_matter(tmp_path):
    text = dk.nginx_config(
        URLS,
        listen_port=8080,
        max_fails=2,
        fail_timeout_s=5,
        read_timeout_s=600,
        connect_timeout_s=0.5,
    )
    assert "daemon off;" in text and "\npid nginx.pid;" in text
    assert "least_conn;" in text
    assert "server 127.0.0.1:8001 max_fails=2 fail_timeout=5s;" in text
    assert "server 127.0.0.1:8002 max_fails=2 fail_timeout=5s;" in text
    for line in (
        "proxy_buffering off;",
        "proxy_cache off;",
        "proxy_http_version 1.1;",
        "proxy_read_timeout 600s;",
        "proxy_connect_timeout 500ms;",
        "proxy_next_upstream error timeout http_502 http_503;",
        "listen 127.0.0.1:8080;",
    ):
        assert line in text, line
    assert "non_idempotent" not in text.split("proxy_next_upstream ")[1].split(";")[0]
    assert "\nuser " not in text  # only when asked (run as root)
    # every path nginx writes to is relative to its prefix: none under /var, /etc or /tmp
    assert "/var/" not in text and "/etc/" not in text and str(tmp_path) not in text
    assert "proxy_temp_path proxy;" in text and "access_log access.log upstream;" in text
    retried = dk.nginx_config(
        URLS,
        listen_port=8080,
        retry_non_idempotent=True,
        user="nobody nogroup",
    )
    assert "http_503 non_idempotent;" in retried and "\nuser nobody nogroup;" in retried


def test_generated_config_passes_nginx_t(tmp_path):
    path = write_nginx_config(URLS, tmp_path, listen_port=dk.free_port(), user=nginx_worker_user())
    report = dk.check_nginx_config(path)
    assert "syntax is ok" in report and "test is successful" in report
    assert [p.name for p in tmp_path.iterdir()] == ["nginx.conf"]  # checked in a scratch prefix


def test_nginx_t_rejection_carries_nginx_message(tmp_path):
    path = write_nginx_config(URLS, tmp_path, listen_port=dk.free_port())
    path.write_text(path.read_text().replace("least_conn;", "least_conn 3;"))
    with pytest.raises(dk.NginxConfigError, match="least_conn") as err:
        dk.check_nginx_config(path)
    assert "nginx.conf:" in str(err.value)  # nginx names the file and line


@pytest.mark.parametrize(
    "urls, match",
    [
        ([], "non-empty list"),
        ("http://127.0.0.1:8001", "non-empty list"),
        (["127.0.0.1:8001"], "http://host:port"),
        (["http://127.0.0.1"], "http://host:port"),
        (["http://127.0.0.1:8001/v1"], "path"),
        (["http://127.0.0.1:8001", "http://127.0.0.1:8001/"], "repeat"),
        (["https://127.0.0.1:8001"], "plain-HTTP"),
    ],
)
def test_bad_replicas_are_refused_before_anything_starts(tmp_path, urls, match):
    with pytest.raises(dk.InvalidArgumentError, match=match):
        dk.nginx_config(urls, listen_port=8080)
    with pytest.raises(dk.InvalidArgumentError, match=match):
        dk.start_nginx(urls, prefix_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "option", [{"listen_port": 0}, {"max_fails": 0}, {"fail_timeout_s": -1}, {"read_timeout_s": 0}]
)
def test_bad_options_are_refused(tmp_path, option):
    with pytest.raises(dk.InvalidArgumentError, match=next(iter(option))):
        dk.nginx_config(URLS, **{"listen_port": 8080, **option})


def test_real_nginx_balances_a_real_load(replicas, tmp_path):
    with dk.start_nginx([r.url for r in replicas], prefix_dir=tmp_path) as nginx:
        responses = post_completions(nginx.url, requests=30, concurrency=6)
        # nginx logs a request when it frees it, a few ms after the client has the whole
        # answer, and a stop in between loses the line (CI saw 29 of 30): wait for them
        log = tmp_path / "access.log"
        wait_for(
            lambda: log.read_text().count("/v1/completions") >= 30,
            timeout_s=10,
            message="nginx logged fewer than the 30 requests it answered, 10 s on",
        )
        access_log = log.read_text()
    assert [r.status_code for r in responses] == [200] * 30
    assert all(r.json()["usage"]["completion_tokens"] > 0 for r in responses)
    served = collections.Counter(r.headers[dk.REPLICA_HEADER] for r in responses)
    ports = {f"127.0.0.1:{r.port}" for r in replicas}
    assert set(served) == ports, served  # every replica took part, nothing else answered
    # nginx's own access log agrees on where each request went
    logged = collections.Counter(
        line.split("upstream=")[1].split()[0]
        for line in access_log.splitlines()
        if "/v1/completions" in line
    )
    assert logged == served
    assert not nginx.is_running()


def test_killed_replica_breaks_its_stream_and_rejoins_after_fail_timeout(replicas, tmp_path):
    """Killing a replica mid-stream reaches the client as a broken stream, never a clean end."""
    with (
        dk.start_nginx([r.url for r in replicas], prefix_dir=tmp_path, fail_timeout_s=2) as nginx,
        httpx.Client(base_url=nginx.url, timeout=60, trust_env=False) as client,
    ):
        body = {**COMPLETION, "max_tokens": 1500, "ignore_eos": True, "stream": True}
        events, error = 0, None
        with client.stream("POST", "/v1/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            host_port = response.headers[dk.REPLICA_HEADER]
            victim = next(r for r in replicas if r.url.endswith(host_port))
            try:
                for line in response.iter_lines():
                    events += line.startswith("data: ")
                    if events == 3:  # events arrive one by one: nginx does not buffer them
                        os.kill(victim.pid, signal.SIGKILL)
                    assert line != "data: [DONE]", "a killed replica's stream ended cleanly"
            except httpx.RemoteProtocolError as exc:
                error = exc
        assert error is not None and "incomplete chunked read" in str(error)
        assert 3 <= events < 1500
        victim.wait(5)
        # the next requests skip the dead replica (connection refused moves them on)
        after = [client.post("/v1/completions", json=COMPLETION) for _ in range(6)]
        assert [r.status_code for r in after] == [200] * 6
        assert not any(
            r.headers[dk.REPLICA_HEADER].split(", ")[-1].endswith(f":{victim.port}") for r in after
        )
        # restarted where it was, nginx takes it back once fail_timeout has passed (passive:
        # only a real request finds out)
        index = replicas.index(victim)  # the fixture stops whatever the list holds at the end
        (replicas[index],) = dk.start_replicas(
            MODEL, 1, ports=[victim.port], device="cpu", threads=1, name="nginx-restarted"
        )
        assert dk.time_to_rejoin(nginx, replicas[index], model=MODEL, timeout_s=15) < 15


def test_nginx_stops_when_the_process_that_started_it_is_killed(replicas, tmp_path):
    # a Jupyter kernel killed at shutdown runs no atexit; nginx must not outlive it
    script = (
        "import sys, time, deploykit as dk\n"
        f"server = dk.start_nginx([{replicas[1].url!r}], prefix_dir={str(tmp_path)!r})\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        nginx = psutil.Process(int(parent.stdout.readline()))
        assert nginx.name() == "nginx"
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10.0
    while _alive(nginx):  # a zombie counts as gone: this container's init may never reap it
        assert time.monotonic() < deadline, "nginx outlived the process that started it"
        time.sleep(0.05)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
