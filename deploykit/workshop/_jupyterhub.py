"""What runs inside the JupyterHub process: the classroom's authenticator, spawner and settings.

The hub's config file (written by `hub.start_hub`) calls `configure(c, settings)`; nothing
else imports this module, so deploykit itself never imports JupyterHub.
"""

from __future__ import annotations

import sys
from secrets import compare_digest
from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Dict, List, Unicode


class ClassroomAuthenticator(Authenticator):
    """Each attendee logs in with their own generated password; nobody else logs in."""

    passwords = Dict(Unicode(), config=True, help="attendee name -> password")

    async def authenticate(self, handler: Any, data: dict[str, str]) -> str | None:
        name = self.normalize_username(data.get("username", ""))
        expected = self.passwords.get(name)
        given = str(data.get("password", ""))
        if expected is None or not compare_digest(expected.encode(), given.encode()):
            return None
        return str(name)


class ClassroomSpawner(SimpleLocalProcessSpawner):
    """An attendee's single-user server: this Unix user, their own folder, their environment."""

    attendee_environment = Dict(
        Dict(Unicode()), config=True, help="attendee name -> extra environment variables"
    )

    attendee_arguments = Dict(
        List(Unicode()), config=True, help="attendee name -> extra single-user server options"
    )

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env.update(self.attendee_environment.get(self.user.name, {}))
        return env

    def get_args(self) -> list[str]:
        return [*super().get_args(), *self.attendee_arguments.get(self.user.name, [])]


def configure(c: Any, settings: dict[str, Any]) -> None:
    """Fill JupyterHub's config object `c` from the settings start_hub wrote."""
    state = settings["state_dir"]
    c.JupyterHub.ip = "127.0.0.1"
    c.JupyterHub.port = settings["port"]
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = settings["hub_port"]
    c.JupyterHub.db_url = f"sqlite:///{state}/jupyterhub.sqlite"
    c.JupyterHub.cookie_secret_file = f"{state}/jupyterhub_cookie_secret"
    c.ConfigurableHTTPProxy.command = settings["proxy_command"]
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings['proxy_api_port']}"
    c.ConfigurableHTTPProxy.pid_file = f"{state}/jupyterhub-proxy.pid"

    c.JupyterHub.authenticator_class = ClassroomAuthenticator
    c.ClassroomAuthenticator.passwords = settings["passwords"]
    c.Authenticator.allowed_users = set(settings["passwords"])

    c.JupyterHub.spawner_class = ClassroomSpawner
    c.ClassroomSpawner.home_dir_template = settings["home_template"]
    c.ClassroomSpawner.attendee_environment = settings["environment"]
    c.ClassroomSpawner.attendee_arguments = settings["singleuser_args"]
    # the single-user server runs on this interpreter (deploykit's venv, with its kernel)
    c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
    c.Spawner.args = [f"--config={settings['singleuser_config']}"]
    c.Spawner.default_url = "/lab"
    # a single-user server imports JupyterLab and its extensions: slow on a busy small machine
    c.Spawner.start_timeout = settings["spawn_timeout_s"]
    c.Spawner.http_timeout = settings["spawn_timeout_s"]
    c.Spawner.interrupt_timeout = 5  # then SIGTERM, then SIGKILL (5 s each)
