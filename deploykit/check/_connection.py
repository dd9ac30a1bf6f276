"""Why a URL does not answer: no process, the wrong port, another address, another health path.

The seed's advice for "connection refused" was "check the health endpoint", which cannot
answer when nothing accepts the connection. This module looks at what does listen: on this
machine (the URL's host is one of its own addresses) it reads the listening sockets and the
processes that own them, so it can name the server on another port or bound to another
address. Once something accepts, it tries the health paths engines use and says which one
this server answers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil

from ._http import Endpoint
from .diagnosis import Diagnosis

# health paths by engine: what a probe, a load balancer or Kubernetes should be given
HEALTH_PATHS = {
    "/health": "deploykit, vLLM, TGI, llama.cpp, transformers serve",
    "/ready": "deploykit (readiness: 503 while draining)",
    "/v1/models": "any OpenAI-compatible server",
    "/api/version": "Ollama",
    "/": "Ollama ('Ollama is running')",
    "/healthz": "a Kubernetes convention",
    "/ping": "SageMaker's convention",
}
_SERVER_WORDS = (
    "deploykit",
    "vllm",
    "llama",
    "ollama",
    "text-generation",
    "transformers",
    "uvicorn",
    "nginx",
    "serve",
)


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket on this machine and the process behind it."""

    address: str
    port: int
    pid: int | None
    command: str

    @property
    def looks_like_a_server(self) -> bool:
        return any(word in self.command.lower() for word in _SERVER_WORDS)


def host_port(url: str) -> tuple[str, int]:
    """Return the host and port a URL connects to."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "127.0.0.1", port


def connects(host: str, port: int, timeout_s: float = 2.0) -> str | None:
    """Return None when a TCP connection opens, else why not ("refused", "timed out", ...)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def is_local(host: str) -> bool:
    """Return True when host is this machine (loopback or one of its addresses)."""
    try:
        ip = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return False
    if ip.is_loopback:
        return True
    own = {
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family in (socket.AF_INET, socket.AF_INET6)
    }
    return str(ip) in own


def listeners() -> list[Listener]:
    """Return this machine's listening TCP sockets (those whose owner can be read)."""
    found = []
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status != psutil.CONN_LISTEN or not conn.laddr:
                continue
            command = ""
            if conn.pid:
                with contextlib.suppress(psutil.Error):
                    command = " ".join(psutil.Process(conn.pid).cmdline()).strip()[:200]
            found.append(Listener(conn.laddr.ip, conn.laddr.port, conn.pid, command))
    return found


def _covers(listener: Listener, host_ip: str) -> bool:
    """Return True when a socket bound to listener.address accepts connections to host_ip."""
    return listener.address in ("0.0.0.0", "::", host_ip) or (
        listener.address == "::ffff:" + host_ip
    )


def serves(address: str, port: int, model: str) -> bool:
    """Return True when the server at address:port lists model (OpenAI's or Ollama's list)."""
    import httpx

    host = f"[{address}]" if ":" in address else address
    for path, key, field in (("/v1/models", "data", "id"), ("/api/tags", "models", "name")):
        try:
            reply = httpx.get(f"http://{host}:{port}{path}", timeout=1.0, trust_env=False)
            items = reply.json().get(key) if reply.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            continue
        names = {str(m.get(field, "")).split(":")[0] for m in items or [] if isinstance(m, dict)}
        if model in names or model.split(":")[0] in names:
            return True
    return False


def _reachable(address: str) -> str:
    return "127.0.0.1" if address in ("0.0.0.0", "::", "::1") else address


def diagnose_refused(url: str, why: str, model: str | None = None, log: str = "") -> Diagnosis:
    """Name why nothing accepts a connection to url: no process, wrong port, other address.

    model (what the client asks for) tells the intended server from others on the machine;
    log (the server's, when known) says why its process is gone.
    """
    from ._memory import oom_lines

    host, port = host_port(url)
    evidence = [f"TCP connect to {host}:{port}: {why}"]
    died = [f"the server's log: {line}" for line in oom_lines(log)[:2]] or (
        [f"the server's log ends: {log.strip().splitlines()[-1][:160]}"] if log.strip() else []
    )
    if not is_local(host):
        return Diagnosis(
            "no_process",
            f"Nothing accepts connections at {host}:{port}",
            (*evidence, f"{host} is another machine: its sockets cannot be read from here"),
            "On that machine: check that the server runs (`ps`, its logs), that it listens on "
            f"port {port} (`ss -ltnp`), bound to an address reachable from here (0.0.0.0, not "
            "127.0.0.1), and that no firewall or security group drops the port.",
        )
    host_ip = socket.gethostbyname(host)
    socks = listeners()
    same_port = [s for s in socks if s.port == port and not _covers(s, host_ip)]
    if same_port:
        s = same_port[0]
        return Diagnosis(
            "wrong_address",
            f"The server listens on port {port}, but bound to {s.address}, not {host_ip}",
            (*evidence, f"listening: {s.address}:{s.port} (pid {s.pid}: {s.command[:100]})"),
            f"Connect to http://{s.address}:{port}, or restart the server bound to an address "
            f"that covers {host_ip} (`--host 0.0.0.0` for every interface; in a container, "
            "0.0.0.0 is required for a published port to reach it).",
        )
    servers = [s for s in socks if s.looks_like_a_server and s.port != port]
    if model is not None:
        mine = [s for s in servers[:20] if serves(_reachable(s.address), s.port, model)]
        others = (
            f"none of the {len(servers)} server(s) listening here serves {model!r}"
            if servers
            else "no server-like process listens on any other port"
        )
    else:
        mine = servers if len(servers) == 1 else []
        others = (
            f"{len(servers)} servers listen here; say which model you want (model=) to find yours"
            if servers
            else "no server-like process listens on any other port"
        )
    if mine:
        # a socket this host reaches first (not one bound to another address), then the nearest port
        best = min(mine, key=lambda s: (not _covers(s, host_ip), abs(s.port - port)))
        url_host = host if _covers(best, host_ip) else best.address
        listed = "; ".join(
            f"{s.address}:{s.port} (pid {s.pid}: {s.command[:80]})" for s in mine[:3]
        )
        what = f"serving {model!r}" if model else "the one server here"
        return Diagnosis(
            "wrong_port",
            f"Nothing listens on port {port}; the server listens on port {best.port}",
            (*evidence, f"{what}: {listed}"),
            f"Use the port the server was started with (http://{url_host}:{best.port}), or start it "
            f"with `--port {port}`; a server started with port 0 picks a free one and logs it.",
        )
    return Diagnosis(
        "no_process",
        f"No process listens on port {port} on this machine",
        (*evidence, f"no listening socket on port {port}; {others}", *died),
        "Start the server, and read its log if it exits: a model that fails to load ends the "
        "process before it ever listens"
        + (" (above, what its log says)" if died else "")
        + ". The seed's 'check the health endpoint' cannot help while nothing accepts "
        "connections.",
    )


def diagnose_health(endpoint: Endpoint, health_path: str) -> tuple[Diagnosis | None, str]:
    """Probe health_path; when it is not 200, say which known health path answers instead.

    Returns the diagnosis (or None) and a line saying what was seen.
    """
    reply = endpoint.send("GET", health_path, timeout_s=10)
    if reply.status == 200:
        return None, f"GET {health_path}: 200"
    answers = []
    for path, who in HEALTH_PATHS.items():
        if path == health_path:
            continue
        other = endpoint.send("GET", path, timeout_s=10)
        if other.status == 200:
            answers.append((path, who))
    seen = (
        f"GET {health_path}: {reply.status if reply.status is not None else reply.exchange.answer}"
    )
    if not answers:
        return (
            Diagnosis(
                "unhealthy",
                "The server accepts connections but answers no health path with 200",
                (seen, f"tried {', '.join(HEALTH_PATHS)}"),
                "Read the server's log: a server still loading its model answers 503 (llama.cpp) "
                "or not at all; one that failed to load may keep its port open.",
            ),
            seen,
        )
    path, who = answers[0]
    found = ", ".join(f"{p} ({w})" for p, w in answers)
    return (
        Diagnosis(
            "wrong_health_path",
            f"{health_path} is not this server's health path; {path} answers 200",
            (seen, f"answering 200: {found}"),
            f"Point the probe (load balancer, Kubernetes, the client's check) at {path}. Health "
            "answers differ by engine: vLLM's /health is 200 with an empty body, llama.cpp's "
            '\'{"status": "ok"}\', deploykit\'s \'{"status": "ok"}\', so check the status code, '
            'not a body such as the seed\'s "healthy".',
        ),
        seen,
    )
