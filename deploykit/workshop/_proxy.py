"""configurable-http-proxy, JupyterHub's proxy, from npm: installed once, pinned and checked.

The package and every one of its dependencies are pinned by the lockfile beside this module
(`hub-proxy.package-lock.json`, with each package's sha512); `npm ci` installs exactly that
and refuses a package whose checksum differs. The install lives in the deploykit cache
(`~/.cache/deploykit/npm/`), so the network is needed once, by `deploykit workshop prepare --hub`
or the first hub.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .. import _env
from ..errors import MissingExtraError, ServerStartError
from ..launch import failure_report, find_executable, run_job

PROXY_VERSION = "5.2.0"  # the last release whose dependencies all run on Debian's Node 20
_PINS = Path(__file__).parent
_FILES = {
    "package.json": "hub-proxy.package.json",
    "package-lock.json": "hub-proxy.package-lock.json",
}
_NPM_HINT = (
    "The workshop hub runs JupyterHub's proxy, configurable-http-proxy, with Node.js: install "
    "npm (Debian: `sudo apt-get install npm`, or `make system-packages`), then run again."
)


def proxy_dir() -> Path:
    """Return the folder that holds (or will hold) the pinned configurable-http-proxy."""
    return _env.cache_dir() / "npm" / f"configurable-http-proxy-{PROXY_VERSION}"


def proxy_command(timeout_s: float = 300.0) -> list[str]:
    """Return configurable-http-proxy's command line, installing it from npm on first use."""
    node = find_executable("node", _NPM_HINT)
    target = proxy_dir()
    script = target / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"
    lock = (_PINS / _FILES["package-lock.json"]).read_bytes()
    installed = target / "package-lock.json"
    if script.exists() and installed.exists() and installed.read_bytes() == lock:
        return [node, str(script)]
    npm = find_executable("npm", _NPM_HINT)
    target.parent.mkdir(parents=True, exist_ok=True)
    # installed beside the target, then renamed: a failed or concurrent install leaves no half
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for name, pinned in _FILES.items():
            shutil.copyfile(_PINS / pinned, work / name)
        command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=warn"]
        # npm runs as `#!/usr/bin/env node`: the node found above goes first on its PATH
        path = os.pathsep.join([str(Path(node).parent), os.environ.get("PATH", "")])
        log = target.parent / f"{target.name}.log"  # kept after a failure, beside the install
        job = run_job(command, cwd=work, timeout_s=timeout_s, log_path=log, env={"PATH": path})
        if not job.ok:
            raise ServerStartError(
                failure_report(
                    f"npm could not install configurable-http-proxy@{PROXY_VERSION}",
                    command,
                    job.log_path,
                    "The first hub needs the npm registry (or run `deploykit workshop prepare "
                    "--hub` where it is reachable); a checksum error means a package changed.",
                    lines=20,
                )
            )
        shutil.rmtree(target, ignore_errors=True)  # an install from an older lockfile
        with contextlib.suppress(OSError):  # another process finished first: keep its install
            work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not script.exists():
        raise MissingExtraError(f"configurable-http-proxy is missing from {target}. {_NPM_HINT}")
    return [node, str(script)]
