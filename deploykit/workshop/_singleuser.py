"""What runs inside an attendee's single-user server: a proxy (`/proxy/PORT/`) that reaches
only the attendee's own ports.

The single-user config file (written by `hub.start_hub`) calls `configure(c)`; the offline
JupyterLab and the deploykit kernel are the workshop lab's options (`lab.lab_arguments`).
"""

from __future__ import annotations

import re
from typing import Any

from .. import _env

# /proxy/PORT/, /proxy/HOST:PORT/, /proxy/absolute/PORT/ (jupyter-server-proxy's routes)
_PROXY_PATH = re.compile(r"/proxy/(?:absolute/)?(?:[^/:@]+:)?(\d+)(?:/|$)")


def own_ports_only(handler: Any, host: str) -> bool:
    """Allow jupyter-server-proxy to reach loopback ports in this attendee's range only.

    jupyter-server-proxy asks a `host_allowlist` callable about the host alone; the port is
    read from the request's path. Without DEPLOYKIT_PORTS every loopback port is allowed.
    """
    if host not in ("localhost", "127.0.0.1"):
        return False
    bounds = _env.port_range()
    if bounds is None:
        return True
    base = handler.base_url.rstrip("/")
    found = (
        _PROXY_PATH.match(handler.request.path, len(base))
        if handler.request.path.startswith(base)
        else None
    )
    return found is not None and bounds[0] <= int(found.group(1)) <= bounds[1]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": __name__}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Route /proxy/PORT/ through own_ports_only, ahead of jupyter-server-proxy's own route.

    jupyter-server-proxy asks its host_allowlist only on /proxy/HOST:PORT/; on /proxy/PORT/ it
    allows every loopback port. Jupyter loads extensions in alphabetical order, this one
    before jupyter_server_proxy, and the first route added for a path is the one used.
    """
    from jupyter_server.utils import url_path_join
    from jupyter_server_proxy.handlers import LocalProxyHandler

    base = serverapp.web_app.settings["base_url"]
    options = {"host_allowlist": own_ports_only, "rewrite_response": ()}
    serverapp.web_app.add_handlers(
        ".*",
        [
            (url_path_join(base, route), LocalProxyHandler, {**options, "absolute_url": absolute})
            for route, absolute in (
                (r"/proxy/(\d+)(/.*|)", False),
                (r"/proxy/absolute/(\d+)(/.*|)", True),
            )
        ],
    )


def configure(c: Any) -> None:
    """Fill the single-user server's config object `c`."""
    c.ServerProxy.host_allowlist = own_ports_only  # /proxy/HOST:PORT/
    c.ServerApp.jpserver_extensions.update({__name__: True})  # /proxy/PORT/
