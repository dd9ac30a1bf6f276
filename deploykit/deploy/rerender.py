"""A config changed and rendered again: what changes in its files, and whether they still pass.

`rerender(config, "docker", gpus=1)` renders the Dockerfile and Compose file of config and of
config with the changes, diffs them file by file, and runs the same checks as the notebooks on
the new files (hadolint and the Compose schema; kubernetes-validate, strict, for "kubernetes").
A change the config refuses raises its InvalidArgumentError, with what to do. Nothing is
written or started.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError
from .config import DeploymentConfig
from .docker import compose_yaml, dockerfile
from .kubernetes import FILE_NAMES, kustomization, manifests
from .validate import Check, lint_dockerfile, validate_compose, validate_manifests

FILE_SETS = ("docker", "kubernetes")


def rendered_files(config: DeploymentConfig, files: str = "docker") -> dict[str, str]:
    """Return the text of each file config renders: name -> text (files: docker or kubernetes)."""
    import yaml

    if files == "docker":
        return {"Dockerfile": dockerfile(config), "compose.yaml": compose_yaml(config)}
    if files == "kubernetes":
        texts = {
            FILE_NAMES[doc["kind"]]: yaml.safe_dump(doc, sort_keys=False)
            for doc in manifests(config)
        }
        return texts | {
            "kustomization.yaml": yaml.safe_dump(kustomization(config), sort_keys=False)
        }
    raise InvalidArgumentError(f"files={files!r}: use one of {', '.join(FILE_SETS)}.")


@dataclass(frozen=True)
class Rerendered:
    """The files of a config before and after some changes, and the checks of the new ones."""

    changes: dict[str, Any]  # the fields that differ from the original config
    before: dict[str, str]  # file name -> text
    after: dict[str, str]
    checks: tuple[Check, ...]

    @property
    def changed_files(self) -> list[str]:
        """Return the files added, removed or changed, in rendering order."""
        names = list(dict.fromkeys([*self.before, *self.after]))
        return [n for n in names if self.before.get(n) != self.after.get(n)]

    @property
    def ok(self) -> bool:
        """Return True when every check of the new files passed."""
        return all(check.ok for check in self.checks)

    def diff(self) -> str:
        """Return a unified diff of every changed file ('' when nothing changed)."""
        parts: list[str] = []
        for name in self.changed_files:
            old, new = self.before.get(name), self.after.get(name)
            parts += difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                (new or "").splitlines(keepends=True),
                f"a/{name}" if old is not None else "/dev/null",
                f"b/{name}" if new is not None else "/dev/null",
                n=1,
            )
        return "".join(parts)

    def __str__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.changes.items()) or "no setting changed"
        changed = self.changed_files
        head = f"{settings}: " + (f"{', '.join(changed)} change" if changed else "no file changes")
        body = self.diff().rstrip("\n")
        checks = "\n".join(str(check) for check in self.checks)
        return "\n".join(part for part in (head, body, checks) if part)

    def __repr__(self) -> str:
        return str(self)


def rerender(
    config: DeploymentConfig,
    files: str = "docker",
    *,
    kubernetes_version: str | None = None,
    **changes: Any,
) -> Rerendered:
    """Render config's files with changes applied; diff them and check the new ones.

    files is "docker" (Dockerfile, compose.yaml) or "kubernetes" (the manifests and their
    kustomization.yaml). A change the config refuses raises, saying what to change.
    """
    before = rendered_files(config, files)
    changed = config.replace(**changes)
    after = rendered_files(changed, files)
    if files == "docker":
        checks: tuple[Check, ...] = (
            lint_dockerfile(after["Dockerfile"]),
            validate_compose(after["compose.yaml"]),
        )
    else:
        checks = (
            validate_manifests(
                manifests(changed), kubernetes_version=kubernetes_version, target="manifests"
            ),
        )
    moved = {k: v for k, v in changes.items() if getattr(config, k) != v}
    return Rerendered(moved, before, after, checks)
