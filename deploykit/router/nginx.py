"""nginx in front of replicas: a complete nginx.conf, checked with `nginx -t`, and run.

The rendered file runs nginx as a local foreground process (`daemon off;`) with every path
it writes (pid, logs, temp files) relative to its prefix folder (`nginx -p`), so it needs
neither root nor /etc/nginx, and the file holds no path of the machine that rendered it. What nginx does here, next to deploykit's router:

- `least_conn` sends each request to the replica with the fewest open connections;
- health checks are passive: a replica counts as failed after `max_fails` errors within
  `fail_timeout_s`, is skipped for `fail_timeout_s`, then gets live traffic again. Open-source
  nginx has no active checks (`health_check` is NGINX Plus), so a draining replica's 503 on
  /ready is never seen; only its answers to real requests are.

It does not render TLS, authentication or rate limits: put those in the server block you
deploy, not in this test-and-learn file.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import InvalidArgumentError, NginxConfigError
from ..launch import Server, find_executable, free_port, launch_server
from .balancer import check_replica_urls
from .proxy import REPLICA_HEADER  # nginx fills it with the replica(s) it tried

_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

# Run as `python -c THIS PARENT_PID nginx ...`: on Linux, ask for SIGTERM when the starting
# process dies, then become nginx (the request survives exec). A Jupyter kernel killed at
# shutdown runs no atexit, and nginx overwrites its environment with its process title, so
# cleanup that finds a run's leftovers by environment variable cannot see it.
_EXEC_TIED_TO_PARENT = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass  # not Linux: nginx is then stopped by stop() or atexit only
if os.getppid() != int(sys.argv[1]):
    sys.exit("deploykit: the process that started nginx is gone")
os.execv(sys.argv[2], sys.argv[2:])
"""


def nginx_path() -> str:
    """Return the nginx binary, or raise saying how to install it."""
    return find_executable(
        "nginx",
        "On Debian or Ubuntu: `sudo apt-get install nginx` (the "
        "service need not run; deploykit starts its own nginx process); on "
        "macOS: `brew install nginx`.",
    )


def _positive(name: str, value, whole: bool = False) -> None:
    kinds = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise InvalidArgumentError(
            f"{name}={value!r} must be a {'whole ' if whole else ''}number above 0."
        )


def _seconds(value: float) -> str:
    """Return an nginx time: whole seconds as '10s', else milliseconds ('500ms')."""
    return f"{int(value)}s" if float(value).is_integer() else f"{round(value * 1000)}ms"


def nginx_worker_user() -> str | None:
    """Return the `user` directive's value when running as root ("nobody <its group>"), else None.

    Run as root, nginx's workers switch to a user; its compiled-in default group "nobody" does
    not exist on Debian, so name the group. Run as anyone else, workers stay that user.
    """
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    return f"nobody {grp.getgrgid(nobody.pw_gid).gr_name}"


def nginx_config(
    replica_urls: Sequence[str],
    *,
    listen_port: int,
    listen_host: str = "127.0.0.1",
    max_fails: int = 1,
    fail_timeout_s: float = 10.0,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 300.0,
    send_timeout_s: float = 60.0,
    keepalive_connections: int = 16,
    max_body_bytes: int = 1_000_000,
    retry_non_idempotent: bool = False,
    user: str | None = None,
    worker_processes: int = 1,
    buffering: bool = False,
    gzip: bool = False,
) -> str:
    """Return a complete nginx.conf balancing over replica_urls (checked first).

    Its paths (pid, logs, temp folders) are relative: nginx resolves them in the prefix
    folder it is started with (`nginx -p FOLDER -c nginx.conf -e stderr`).

    buffering=True keeps nginx's own default, `proxy_buffering on`; gzip=True compresses
    answers, event streams included, as many sites' nginx does. Together they hold a streamed
    answer until it ends (gzip flushes only what buffering marks to flush), which is what
    `doctor` diagnoses; both are off by default.
    """
    urls = check_replica_urls(replica_urls)
    if any(urlsplit(u).scheme != "http" for u in urls):
        raise InvalidArgumentError(
            "nginx_config() renders plain-HTTP upstreams; give "
            "http:// replica URLs (TLS to replicas is not rendered)."
        )
    if (
        isinstance(listen_port, bool)
        or not isinstance(listen_port, int)
        or not 1 <= listen_port <= 65535
    ):
        raise InvalidArgumentError(
            f"listen_port={listen_port!r} must be a TCP port 1-65535 "
            "(dk.free_port() gives a free one)."
        )
    for name, value in (
        ("fail_timeout_s", fail_timeout_s),
        ("connect_timeout_s", connect_timeout_s),
        ("read_timeout_s", read_timeout_s),
        ("send_timeout_s", send_timeout_s),
    ):
        _positive(name, value)
    for name, value in (
        ("max_fails", max_fails),
        ("keepalive_connections", keepalive_connections),
        ("max_body_bytes", max_body_bytes),
        ("worker_processes", worker_processes),
    ):
        _positive(name, value, whole=True)
    servers = "\n".join(
        f"        server {urlsplit(u).netloc} max_fails={max_fails} "
        f"fail_timeout={_seconds(fail_timeout_s)};"
        for u in urls
    )
    temps = "\n".join(f"    {kind}_temp_path {kind};" for kind in _TEMP_DIRS)
    next_upstream = "error timeout http_502 http_503" + (
        " non_idempotent" if retry_non_idempotent else ""
    )
    return f"""\
# nginx in front of {len(urls)} replica(s), rendered by deploykit (deploykit.router.nginx).
# Run it in the folder that holds this file (the prefix of every relative path below):
#   nginx -p . -c nginx.conf -e stderr
daemon off;  # a foreground process: whoever starts it (deploykit, systemd, a container) stops it
{
        f"user {user};  # run as root: workers drop to this user"
        if user
        else "# no user directive: not run as root, so the workers stay this user"
    }
worker_processes {worker_processes};
pid nginx.pid;
error_log error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    log_format upstream '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                        'upstream=$upstream_addr upstream_status=$upstream_status '
                        'request_time=$request_time';
    access_log access.log upstream;
{_GZIP if gzip else ""}{temps}
    client_max_body_size {max_body_bytes};
    # the whole body stays in memory, so it can be sent again to the next replica
    client_body_buffer_size {max_body_bytes};

    upstream deploykit_replicas {{
        least_conn;  # fewest open connections: a long generation holds its connection
        # max_fails errors within fail_timeout take a replica out for fail_timeout (passive)
{servers}
        keepalive {keepalive_connections};  # idle connections kept open to the replicas
        keepalive_timeout 4s;  # below uvicorn's 5 s: never reuse one the replica is closing
    }}

    server {{
        listen {listen_host}:{listen_port};

        location / {{
            proxy_pass http://deploykit_replicas;
            proxy_http_version 1.1;  # keep-alive to replicas, and chunked streams
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            {_buffering_lines(buffering)}
            proxy_cache off;
            proxy_connect_timeout {_seconds(connect_timeout_s)};
            proxy_send_timeout {_seconds(send_timeout_s)};
            # the longest silence between two reads: a long prompt's first token on a busy
            # replica, or a whole non-streamed generation, must fit in it
            proxy_read_timeout {_seconds(read_timeout_s)};
            # Which failures move a request to the next replica. A POST that was never sent
            # (connection refused, connect timeout) always moves. Once sent, nginx moves a POST
            # only with non_idempotent, and then also re-sends one whose replica died halfway
            # (it may have run it). Left out by default: a 503 from a draining replica then
            # reaches the client, whose retry (with Retry-After) goes elsewhere.
            proxy_next_upstream {next_upstream};
            proxy_next_upstream_tries {len(urls)};
            add_header {REPLICA_HEADER} $upstream_addr always;
        }}
    }}
}}
"""


_GZIP = """    gzip on;  # compress text answers, event streams too
    gzip_types text/event-stream application/x-ndjson application/json text/plain;
    gzip_min_length 0;
    gzip_proxied any;
"""


def _buffering_lines(buffering: bool) -> str:
    if buffering:
        return "# nginx's default: hold answers in buffers (streams arrive in lumps)\n            proxy_buffering on;"
    return "# streams: pass each SSE event on as it arrives, never store the answer\n            proxy_buffering off;"


def write_nginx_config(
    replica_urls: Sequence[str], prefix_dir: str | os.PathLike[str], *, listen_port: int, **options
) -> Path:
    """Render the config into prefix_dir/nginx.conf; return its path.

    nginx makes its temp folders there when it starts (and `nginx -t` when it checks).
    """
    prefix = Path(prefix_dir)
    text = nginx_config(replica_urls, listen_port=listen_port, **options)
    prefix.mkdir(parents=True, exist_ok=True)
    if options.get("user"):
        prefix.chmod(0o755)  # workers (another user) reach their temp folders through it
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


def check_nginx_config(
    path: str | os.PathLike[str],
    prefix_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = 30.0,
) -> str:
    """Run `nginx -t` on the config at path; return nginx's report, or raise with its message.

    prefix_dir is where nginx resolves the file's relative paths (and makes its logs and
    temp folders while checking); by default a temporary folder, so a checked file's folder
    stays as it was.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise InvalidArgumentError(
            f"no nginx config at {path}; write one with dk.write_nginx_config(...) first."
        )
    with tempfile.TemporaryDirectory(prefix="deploykit-nginx-t-") as scratch:
        prefix = Path(prefix_dir).resolve() if prefix_dir is not None else Path(scratch)
        command = [nginx_path(), "-t", "-p", f"{prefix}/", "-c", str(path), "-e", "stderr"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    report = (done.stderr + done.stdout).strip()
    if done.returncode != 0:
        raise NginxConfigError(
            f"`nginx -t` rejected {path} (exit code {done.returncode}):\n"
            f"{report}\nFix the line nginx names above, then check again."
        )
    return report


def start_nginx(
    replica_urls: Sequence[str],
    *,
    port: int = 0,
    prefix_dir: str | os.PathLike[str] | None = None,
    max_fails: int = 1,
    fail_timeout_s: float = 10.0,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 300.0,
    retry_non_idempotent: bool = False,
    timeout_s: float = 30.0,
    name: str = "nginx",
    host: str = "127.0.0.1",
    buffering: bool = False,
    gzip: bool = False,
) -> Server:
    """Render, check (`nginx -t`) and start nginx over replica_urls; wait until /health passes.

    /health is proxied to a replica, so it passes once nginx runs and one replica answers.
    prefix_dir (default: a new temp folder) holds the config, logs and temp files. On Linux
    nginx also stops when the thread that started it ends, so start it from the main thread.
    host is the address nginx listens on; buffering and gzip are `nginx_config`'s.
    """
    binary = nginx_path()  # before any file is written
    port = port or free_port(host)
    prefix = (
        Path(prefix_dir)
        if prefix_dir is not None
        else Path(tempfile.mkdtemp(prefix="deploykit-nginx-"))
    )
    conf = write_nginx_config(
        replica_urls,
        prefix,
        listen_port=port,
        max_fails=max_fails,
        fail_timeout_s=fail_timeout_s,
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
        retry_non_idempotent=retry_non_idempotent,
        user=nginx_worker_user(),
        listen_host=host,
        buffering=buffering,
        gzip=gzip,
    )
    check_nginx_config(conf, prefix)
    for log in ("access.log", "error.log"):  # this run's logs only, when a prefix is reused
        (prefix / log).write_text("")
    command = [binary, "-p", f"{prefix.resolve()}/", "-c", str(conf.resolve()), "-e", "stderr"]
    return launch_server(
        [sys.executable, "-c", _EXEC_TIED_TO_PARENT, str(os.getpid()), *command],
        port=port,
        host=host,
        health_path="/health",
        timeout_s=timeout_s,
        name=name,
        log_path=prefix / "nginx.log",
    )
