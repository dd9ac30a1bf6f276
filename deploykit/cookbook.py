"""Run the cookbook: recipes (named parameter sets) applied to notebooks via papermill.

A recipe key, a notebook parameter and a `-p` flag share one name. Recipe files
look like::

    description: what this profile is for
    parameters:            # applied to every notebook that declares the name
      model: toy-tiny
    notebooks:
      01_quickstart:       # applied to this notebook only
        max_tokens: 32
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import _env, runs
from .errors import NotebookNotFoundError, RecipeKeyError, UnknownRecipeError

__all__ = ["NotebookResult", "Recipe", "load_recipe", "run_cookbook"]

_LEFTOVER_GRACE_S = 10.0  # servers stop via atexit when the kernel exits; give them this long


@dataclass(frozen=True)
class Recipe:
    """A named parameter set: shared values plus per-notebook overrides."""

    name: str
    description: str
    parameters: dict[str, Any]
    notebooks: dict[str, dict[str, Any]]


@dataclass
class NotebookResult:
    """How one notebook run went."""

    notebook: str
    status: str  # "ok" or "failed"
    seconds: float
    output_path: str
    parameters: dict[str, Any] = field(default_factory=dict)
    failing_cell: int | None = None  # index in the notebook, counting from 0
    error: str | None = None


def list_notebooks(root: Path) -> list[Path]:
    """Return the cookbook's notebooks in order."""
    return sorted(p for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def list_recipes(root: Path) -> list[str]:
    """Return the names of the recipes under recipes/."""
    return sorted(p.stem for p in (root / "recipes").glob("*.yaml"))


def load_recipe(name: str, root: Path) -> Recipe:
    """Read recipes/<name>.yaml."""
    import yaml

    path = root / "recipes" / f"{name}.yaml"
    if not path.exists():
        raise UnknownRecipeError(
            f"unknown recipe {name!r}; available: "
            f"{', '.join(list_recipes(root)) or '(none)'} (files in {root / 'recipes'})"
        )
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"description", "parameters", "notebooks"}
    if unknown:
        raise RecipeKeyError(
            f"recipe {name!r}: unknown top-level key(s) {sorted(unknown)}; "
            "valid: description, parameters, notebooks"
        )
    return Recipe(
        name=name,
        description=data.get("description", ""),
        parameters=dict(data.get("parameters") or {}),
        notebooks={k: dict(v or {}) for k, v in (data.get("notebooks") or {}).items()},
    )


def notebook_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """Return the parameters a notebook declares in its `parameters` cell."""
    import papermill

    return dict(papermill.inspect_notebook(str(path)))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ['key=value', ...] into a dict, values read as YAML (so 8 is an int)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RecipeKeyError(
                f"-p {pair!r}: write parameters as key=value, e.g. -p max_tokens=16"
            )
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


def resolve(
    recipe: Recipe,
    notebooks: list[Path],
    all_notebooks: list[Path],
    overrides: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Return each selected notebook's parameters; reject any key no notebook declares."""
    declared = {p.stem: notebook_parameters(p) for p in all_notebooks}
    everywhere = sorted({k for params in declared.values() for k in params})
    for key in recipe.parameters:
        if key not in everywhere:
            raise RecipeKeyError(
                f"recipe {recipe.name!r}: unknown key {key!r}; valid keys are the "
                f"notebooks' parameters: {', '.join(everywhere)}"
            )
    for nb, values in recipe.notebooks.items():
        if nb not in declared:
            raise RecipeKeyError(
                f"recipe {recipe.name!r}: section {nb!r} names no notebook; "
                f"notebooks: {', '.join(sorted(declared))}"
            )
        for key in values:
            if key not in declared[nb]:
                raise RecipeKeyError(
                    f"recipe {recipe.name!r}, notebook {nb}: unknown key {key!r}; "
                    f"valid: {', '.join(sorted(declared[nb]))}"
                )
    selected = sorted({k for p in notebooks for k in declared[p.stem]})
    for key in overrides or {}:
        if key not in selected:
            raise RecipeKeyError(
                f"-p {key}: no selected notebook has a parameter {key!r}; "
                f"valid: {', '.join(selected)}"
            )
    resolved = {}
    for path in notebooks:
        names = declared[path.stem]
        params = {k: v for k, v in recipe.parameters.items() if k in names}
        params.update(recipe.notebooks.get(path.stem, {}))
        params.update({k: v for k, v in (overrides or {}).items() if k in names})
        resolved[path.stem] = params
    return resolved


def select(names: list[str], all_notebooks: list[Path]) -> list[Path]:
    """Pick notebooks by stem or file name (all when `names` is empty)."""
    if not names:
        return all_notebooks
    by_stem = {p.stem: p for p in all_notebooks}
    chosen = []
    for name in names:
        stem = Path(name).stem
        if stem not in by_stem:
            raise NotebookNotFoundError(f"no notebook {name!r}; available: {', '.join(by_stem)}")
        chosen.append(by_stem[stem])
    return chosen


def _reap_leftovers(run_id: str) -> list[str]:
    """Wait briefly for processes of this run to exit; kill and describe any that stay."""
    import psutil

    deadline = time.monotonic() + _LEFTOVER_GRACE_S
    procs = runs.marked_processes("DEPLOYKIT_RUN_ID", run_id)
    while procs and time.monotonic() < deadline:
        time.sleep(0.2)
        procs = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    described = []
    for proc in procs:
        try:
            described.append(f"pid {proc.pid} ({' '.join(proc.cmdline()[:4])})")
            proc.kill()
        except psutil.Error:
            continue
    return described


def _source_index(path: Path, executed_index: int, parameters: dict[str, Any]) -> int:
    """Map a cell index in the executed copy back to the committed notebook."""
    import nbformat

    if not parameters:
        return executed_index
    cells = nbformat.read(path, as_version=4).cells
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    # papermill inserts one "injected-parameters" cell right after the parameters cell
    return executed_index - 1 if tagged and executed_index > tagged[0] else executed_index


def run_notebook(
    path: Path,
    output: Path,
    parameters: dict[str, Any],
    root: Path,
    timeout_s: float = 1800.0,
    progress: bool = True,
) -> NotebookResult:
    """Execute one notebook with papermill; record where it failed and what it left running."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    run_id = uuid.uuid4().hex
    saved = {
        k: os.environ.get(k) for k in ("DEPLOYKIT_RUN_ID", "DEPLOYKIT_ROOT", "DEPLOYKIT_NOTEBOOK")
    }
    os.environ["DEPLOYKIT_RUN_ID"] = run_id  # inherited by the kernel and every server it starts
    os.environ["DEPLOYKIT_ROOT"] = str(root)
    os.environ["DEPLOYKIT_NOTEBOOK"] = path.stem  # the run folder's notebook column
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = NotebookResult(
        notebook=path.stem, status="ok", seconds=0.0, output_path=str(output), parameters=parameters
    )
    try:
        papermill.execute_notebook(
            str(path),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=progress,
            execution_timeout=timeout_s,
            cwd=str(output.parent),
        )
    except PapermillExecutionError as exc:
        result.status, result.failing_cell = (
            "failed",
            _source_index(path, exc.cell_index, parameters),
        )
        result.error = f"{exc.ename}: {exc.evalue}"
        print(
            f"\n--- {path.stem} failed in cell {exc.cell_index} ---\n{exc.source}\n"
            + "\n".join(exc.traceback),
            file=sys.stderr,
        )
    except Exception as exc:  # kernel died, timeout, bad notebook: still report, keep going
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        print(f"\n--- {path.stem} failed: {result.error}", file=sys.stderr)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    left = _reap_leftovers(run_id)
    if left:
        result.status = "failed"
        result.error = (
            (result.error + "; ") if result.error else ""
        ) + f"left processes running after the kernel exited: {', '.join(left)} (killed)"
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def run_cookbook(
    notebooks: list[str] | None = None,
    recipe: str = "cpu",
    overrides: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    root: str | Path | None = None,
    timeout_s: float = 1800.0,
    progress: bool = True,
) -> list[NotebookResult]:
    """Run notebooks on a recipe; write executed copies and summary.{json,md} to out_dir."""
    root = Path(root).resolve() if root else _env.find_root()
    all_nbs = list_notebooks(root)
    chosen = select(notebooks or [], all_nbs)
    rec = load_recipe(recipe, root)
    params = resolve(rec, chosen, all_nbs, overrides)  # validate everything before running
    out = Path(out_dir) if out_dir else root / "build" / "cookbook" / recipe
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, path in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {path.stem} (recipe {recipe})", file=sys.stderr, flush=True)
        results.append(
            run_notebook(
                path,
                out / path.name,
                params[path.stem],
                root,
                timeout_s=timeout_s,
                progress=progress,
            )
        )
    (out / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    (out / "summary.md").write_text(summary_table(results) + "\n")
    return results


def summary_table(results: list[NotebookResult]) -> str:
    """Format results as a Markdown table: notebook, status, seconds, failing cell."""
    lines = ["| notebook | status | seconds | failing cell | error |", "|---|---|---:|---:|---|"]
    for r in results:
        cell = "" if r.failing_cell is None else str(r.failing_cell)
        error = (r.error or "").replace("|", "\\|").replace("\n", " ")[:160]
        lines.append(f"| {r.notebook} | {r.status} | {r.seconds:.1f} | {cell} | {error} |")
    return "\n".join(lines)


def add_cli(sub) -> None:
    """Add `deploykit cookbook list|run` to the CLI."""
    from .argtypes import positive_float

    p = sub.add_parser("cookbook", help="list or run the cookbook's notebooks")
    csub = p.add_subparsers(dest="cookbook_cmd", required=True)
    csub.add_parser("list", help="list notebooks and recipes").set_defaults(func=cli_list)
    run = csub.add_parser("run", help="execute notebooks with papermill")
    run.add_argument("notebooks", nargs="*", help="names such as 01_quickstart (default: all)")
    run.add_argument("--recipe", default="cpu", help="recipe name from recipes/ (default: cpu)")
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a notebook parameter (YAML value)",
    )
    run.add_argument(
        "--out", default=None, help="folder for executed copies (default: build/cookbook/<recipe>)"
    )
    run.add_argument("--root", default=None, help="cookbook checkout (default: found from here)")
    run.add_argument("--timeout-s", type=positive_float, default=1800.0, help="per-cell timeout")
    run.set_defaults(func=cli_run)


def cli_list(args) -> int:
    """`deploykit cookbook list`: notebooks with their parameters, and recipes."""
    root = _env.find_root()
    for path in list_notebooks(root):
        print(f"{path.stem}: {', '.join(notebook_parameters(path))}")
    print(f"recipes: {', '.join(list_recipes(root))}")
    return 0


def cli_run(args) -> int:
    """`deploykit cookbook run`: exit 1 when any notebook failed."""
    results = run_cookbook(
        args.notebooks,
        recipe=args.recipe,
        overrides=parse_overrides(args.param),
        out_dir=args.out,
        root=args.root,
        timeout_s=args.timeout_s,
    )
    print(summary_table(results))
    failed = [r.notebook for r in results if r.status != "ok"]
    if failed:
        print(
            f"{len(failed)} of {len(results)} notebooks failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    print(f"all {len(results)} notebooks passed", file=sys.stderr)
    return 0
