"""The Ray head's HTTP API (its dashboard): the nodes, and Serve's applications.

Everything deploykit asks a Ray cluster goes through here, as KubeRay's operator does: no
`import ray` in the caller, and the same calls work for a local cluster (through the
namespace bridge) and for a real one (`http://<head>:8265`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import EndpointUnreachableError, EngineError, ServerStartError

NODE_RESOURCE = "deploykit_node_"  # + node name: the custom resource that names each node


@dataclass(frozen=True)
class RayNode:
    """One node as the head sees it."""

    name: str  # head, worker1, ... (from its deploykit_node_<name> resource), else its id
    node_id: str
    address: str
    alive: bool
    is_head: bool
    cpus: float
    gpus: float


class Dashboard:
    """GET, PUT and DELETE on the head's HTTP API, with errors that say what to check."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Send one request; raise EndpointUnreachableError when nothing answers."""
        try:
            # trust_env=False: a proxy from HTTP_PROXY must not intercept the head's loopback API
            with httpx.Client(trust_env=False, timeout=self.timeout_s) as client:
                return client.request(method, self.url + path, json=body)
        except httpx.TransportError as exc:
            raise EndpointUnreachableError(
                f"the Ray dashboard at {self.url} does not answer ({type(exc).__name__}: {exc}). "
                "Check that the head node runs with --include-dashboard true, and that "
                "--dashboard-host is an address you can reach."
            ) from exc

    def get(self, path: str) -> Any:
        """Return the JSON of a GET; raise EngineError on an error status."""
        response = self.request("GET", path)
        if response.status_code != 200:
            raise EngineError(
                f"GET {self.url}{path}: HTTP {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def wait_up(self, timeout_s: float = 60.0) -> None:
        """Wait until the dashboard answers with Serve's API loaded (it starts after the GCS)."""
        deadline = time.monotonic() + timeout_s
        seen = "nothing yet"
        while time.monotonic() < deadline:
            try:
                response = self.request("GET", "/api/serve/applications/")
                if response.status_code == 200:
                    return
                seen = f"HTTP {response.status_code}"
            except EndpointUnreachableError as exc:
                seen = str(exc.__cause__)
            time.sleep(0.25)
        raise ServerStartError(
            f"the Ray dashboard at {self.url} did not serve /api/serve/applications/ within "
            f"{timeout_s:g} s (last: {seen}). Look in the head node's logs "
            "(session_latest/logs/dashboard.log)."
        )

    def nodes(self) -> list[RayNode]:
        """Return every node the head knows, dead ones included, head first."""
        data = self.get("/api/v0/nodes?limit=1000&detail=true")
        rows = data["data"]["result"]["result"]
        nodes = []
        for row in rows:
            resources = row.get("resources_total") or {}
            names = [k[len(NODE_RESOURCE) :] for k in resources if k.startswith(NODE_RESOURCE)]
            nodes.append(
                RayNode(
                    name=names[0] if names else row["node_id"][:8],
                    node_id=row["node_id"],
                    address=row.get("node_ip", ""),
                    alive=row.get("state") == "ALIVE",
                    is_head=bool(row.get("is_head_node")),
                    cpus=float(resources.get("CPU", 0)),
                    gpus=float(resources.get("GPU", 0)),
                )
            )
        return sorted(nodes, key=lambda n: (not n.is_head, n.name, not n.alive))
