"""Build the cookbook site: `make docs`, or `python docs/site.py [--executed DIR] [--out DIR]`.

The pages are docs/*.md, the executed notebooks of the last `make cookbook` (not run again:
myst-nb only renders their saved outputs), and an API page generated from the faces of
`deploykit` (each subpackage's `__all__`). Everything is staged under OUT/src, then Sphinx
writes OUT/html with warnings as errors and nitpicky references. The widget JavaScript
(@jupyter-widgets/html-manager and requirejs, pinned below) comes from the npm registry once,
into build/npm/, and is served from the site's own _static/widgets/: pages load nothing from a
CDN. What this does not do: run notebooks, or publish (the CI workflow uploads OUT/html).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NPM_CACHE = ROOT / "build" / "npm"  # the widget JS packages, fetched once for every build

# npm packages whose files the site serves; sha512 as the registry's `integrity` states it
WIDGET_PACKAGES = {
    "@jupyter-widgets/html-manager@1.0.15": (
        "5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="
    ),
    "requirejs@2.3.8": (
        "7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw=="
    ),
}
# the guides, in the order of the site's navigation (index.md is the landing page)
GUIDES = [
    "which-recipe",
    "running",
    "workshop",
    "adding",
    "gpu-runner",
    "troubleshooting",
    "compatibility",
    "ray",
    "docker",
    "benchmarks",
    "models",
    "library",
    "api",
]
RECIPES_START, RECIPES_END = "<!-- recipes -->", "<!-- /recipes -->"


class SiteError(Exception):
    """The site cannot be built as asked; the message says what to run first."""


def notebooks() -> list[Path]:
    """Return the cookbook's notebooks, as the cookbook runner lists them."""
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def executed_copies(executed: Path, partial: bool) -> dict[str, Path]:
    """Return each notebook's executed copy; refuse a missing or failed one unless partial."""
    found, problems = {}, []
    for source in notebooks():
        copy = executed / source.name
        if not copy.exists():
            problems.append(f"{source.stem}: no executed copy in {executed}")
            continue
        meta = json.loads(copy.read_text()).get("metadata", {}).get("papermill", {})
        if meta.get("exception"):
            problems.append(f"{source.stem}: its run in {executed} failed")
            continue
        found[source.stem] = copy
    if problems and not partial:
        raise SiteError(
            "the site shows every notebook executed; "
            + "; ".join(problems)
            + ". Run `make cookbook` first (or pass --partial for a preview of the others)."
        )
    if not found:
        raise SiteError(f"no executed notebooks in {executed}: run `make cookbook` first")
    return found


def recipe_table() -> str:
    """Return the README's recipe table (between its recipes markers)."""
    text = (ROOT / "README.md").read_text()
    start, end = text.find(RECIPES_START), text.find(RECIPES_END)
    if start < 0 or end < start:
        raise SiteError(f"README.md has no table between {RECIPES_START} and {RECIPES_END}")
    return text[start + len(RECIPES_START) : end].strip()


def landing_page(included: list[str], missing: list[str]) -> str:
    """Return index.md: docs/index.md's intro, the README's recipe table, the rest, the navigation."""
    text = (DOCS / "index.md").read_text()
    for stem in included:  # the notebook table's names become links to their pages
        text = text.replace(f"| `{stem}` |", f"| [{stem}](notebooks/{stem}.ipynb) |")
    title, _, body = text.partition("\n")
    intro, _, rest = body.strip().partition("\n\n")
    parts = [title, "", intro, "", "## Recipes", "", recipe_table(), "", "## Notebooks", "", rest]
    if missing:
        parts += [
            "",
            "```{note}",
            f"Not in this build (no executed copy): {', '.join(missing)}.",
            "```",
        ]
    parts += ["", "```{toctree}", ":hidden:", "", "notebooks/index", *GUIDES, "```", ""]
    return "\n".join(parts)


def notebooks_page(included: list[str], recipe: str) -> str:
    """Return notebooks/index.md: the executed notebooks, in order."""
    lines = [
        "# Notebooks",
        "",
        f"Each page is a notebook as `make cookbook RECIPE={recipe}` ran it, with its outputs.",
        "",
        "```{toctree}",
        ":maxdepth: 1",
        "",
    ]
    return "\n".join([*lines, *included, "```", ""])


def _faces() -> list[str]:
    """Return deploykit's faces in the order deploykit/__init__.py adds them up."""
    init = (ROOT / "deploykit" / "__init__.py").read_text()
    return re.findall(r"^__all__ \+= _(\w+)\.__all__$", init, re.M)


def _defining_module(name: str, obj: object, face: str) -> str:
    """Return the module under deploykit.<face> whose top level assigns name to obj."""
    import pkgutil

    package = importlib.import_module(f"deploykit.{face}")
    names = [package.__name__]
    if hasattr(package, "__path__"):
        names += [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
    for modname in names:
        if vars(importlib.import_module(modname)).get(name) is obj:
            return modname
    return package.__name__


def _data_entry(name: str, obj: object, face: str) -> list[str]:
    """Return a py:data directive for a constant, described by the comment above its assignment."""
    modname = _defining_module(name, obj, face)
    source = inspect.getsource(importlib.import_module(modname)).splitlines()
    at = next((i for i, line in enumerate(source) if re.match(rf"{name}\b\s*(:|=)", line)), None)
    comment: list[str] = []
    while at is not None and at > 0 and source[at - 1].lstrip().startswith("#"):
        at -= 1
        comment.insert(0, source[at].lstrip()[1:].strip())
    what = f"A {type(obj).__name__} of {len(obj)} entries" if hasattr(obj, "__len__") else ""
    text = " ".join(comment) or what or "A constant"
    return [f".. py:data:: {name}", "", f"   {text} (`{modname}`).", ""]


def _hinted_classes(obj: object) -> set[type]:
    """Return the classes named in obj's annotations (a function, or a class and its members)."""
    import typing

    def flatten(hint: object) -> set[type]:
        found = {hint} if inspect.isclass(hint) else set()
        for arg in typing.get_args(hint):
            found |= flatten(arg)
        return found

    targets: list[object] = [obj]
    if inspect.isclass(obj):
        for attr, member in vars(obj).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            member = getattr(member, "fget", None) or getattr(member, "__func__", None) or member
            if callable(member):
                targets.append(member)
    found: set[type] = set()
    for target in targets:
        try:
            hints = typing.get_type_hints(target)
        except Exception:  # a hint only a type checker can evaluate: the page shows it as text
            continue
        for hint in hints.values():
            found |= flatten(hint)
    return found


def _signature_types() -> dict[str, list[type]]:
    """Return, per face, the deploykit classes in public signatures that are not on `dk`."""
    import deploykit

    on_dk = {id(getattr(deploykit, n)) for n in deploykit.__all__}
    todo = [getattr(deploykit, n) for n in deploykit.__all__]
    extra: dict[str, type] = {}
    while todo:
        for cls in _hinted_classes(todo.pop()):
            path = f"{cls.__module__}.{cls.__qualname__}"
            if cls.__module__.startswith("deploykit.") and id(cls) not in on_dk:
                if path not in extra:
                    extra[path] = cls
                    todo.append(cls)
    by_face: dict[str, list[type]] = {}
    for path in sorted(extra):
        by_face.setdefault(path.split(".")[1], []).append(extra[path])
    return by_face


def api_page() -> str:
    """Return api.md: every name on `dk`, face by face, documented from its docstring."""
    import deploykit

    extra = _signature_types()
    lines = [
        "# API reference",
        "",
        "Everything a notebook calls is on `deploykit` (`import deploykit as dk`), once. This page",
        "lists the names face by face, as each subpackage's `__all__` offers them (see",
        "[The library](library.md)), then the other types their signatures use, under their modules.",
        "",
    ]
    for face in _faces():
        module = importlib.import_module(f"deploykit.{face}")
        summary = (inspect.getdoc(module) or "").split("\n\n")[0].replace("\n", " ")
        lines += [
            f"## {face}",
            "",
            summary,
            "",
            "```{eval-rst}",
            ".. currentmodule:: deploykit",
            "",
        ]
        for name in module.__all__:
            obj = getattr(deploykit, name)
            if inspect.isclass(obj):
                kind = "autoexception" if issubclass(obj, BaseException) else "autoclass"
            elif callable(obj):
                kind = "autofunction"
            else:
                lines += _data_entry(name, obj, face)
                continue
            lines += [f".. {kind}:: {name}", ""]
        for cls in extra.get(face, []):
            lines += [f".. autoclass:: {cls.__module__}.{cls.__qualname__}", ""]
        lines += ["```", ""]
    return "\n".join(lines)


def _write(path: Path, text: str | bytes) -> None:
    """Write only when the content changed, so Sphinx rereads only what did."""
    data = text.encode() if isinstance(text, str) else text
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def widget_js(cache: Path) -> dict[str, bytes]:
    """Return the widget JavaScript files for _static/widgets/, from npm (checked, cached)."""
    cache.mkdir(parents=True, exist_ok=True)
    files = {}
    for spec, integrity in WIDGET_PACKAGES.items():
        name, version = spec.rsplit("@", 1)
        tarball = cache / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
        if not tarball.exists():
            npm = shutil.which("npm")
            if npm is None:
                raise SiteError(
                    "npm is not on PATH: the site serves its widget JS from npm packages"
                )
            subprocess.run(
                [npm, "pack", spec, "--pack-destination", str(cache), "--silent"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if digest != integrity:
            tarball.unlink()
            raise SiteError(f"{spec}: sha512 {digest} is not the pinned {integrity}")
        with tarfile.open(tarball) as tar:
            for member in tar.getmembers():
                path = member.name.removeprefix("package/")
                if path == "require.js" or (
                    path.startswith("dist/")
                    and not path.endswith((".map", "embed.js", "libembed-amd.js"))
                ):
                    data = tar.extractfile(member)
                    assert data is not None
                    files[Path(path).name] = data.read()
    return files


def stage(src: Path, executed: Path, npm_cache: Path, partial: bool) -> list[str]:
    """Write the Sphinx sources under src; return the notebooks included."""
    copies = executed_copies(executed, partial)
    included = sorted(copies)
    missing = [p.stem for p in notebooks() if p.stem not in copies]
    wanted = {"conf.py", "index.md", "api.md"}
    _write(src / "conf.py", (DOCS / "conf.py").read_bytes())
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "index.md":
            _write(src / page.name, page.read_bytes())
            wanted.add(page.name)
    _write(src / "index.md", landing_page(included, missing))
    # build/cookbook/<recipe>, or the notebook tests' build/test-notebooks/cpu
    _write(src / "notebooks" / "index.md", notebooks_page(included, executed.name))
    wanted.add("notebooks/index.md")
    _write(src / "api.md", api_page())
    for stem, copy in copies.items():
        _write(src / "notebooks" / f"{stem}.ipynb", copy.read_bytes())
        wanted.add(f"notebooks/{stem}.ipynb")
    for name, data in widget_js(npm_cache).items():
        _write(src / "_static" / "widgets" / name, data)
        wanted.add(f"_static/widgets/{name}")
    stale = [p for p in src.rglob("*") if p.is_file() and str(p.relative_to(src)) not in wanted]
    if stale:  # a page went away: Sphinx would keep its old HTML, so build afresh
        for folder in (src, src.parent / "html", src.parent / "doctrees"):
            shutil.rmtree(folder, ignore_errors=True)
        return stage(src, executed, npm_cache, partial)
    return included


def build(executed: Path, out: Path, partial: bool = False, jobs: str = "1") -> Path:
    """Stage and build the site; return the folder of its HTML."""
    from sphinx.cmd.build import build_main

    sys.path.insert(0, str(ROOT))  # autodoc documents this checkout's deploykit
    included = stage(out / "src", executed, NPM_CACHE, partial)
    html = out / "html"
    args = ["-b", "html", "-W", "--keep-going", "-n", "-q", "-j", jobs]
    args += ["-d", str(out / "doctrees"), str(out / "src"), str(html)]
    if build_main(args) != 0:
        raise SiteError("sphinx-build failed: its warnings are above")
    print(f"site: {len(included)} notebooks, {html / 'index.html'}")
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--executed",
        type=Path,
        default=ROOT / "build" / "cookbook" / "cpu",
        help="folder of executed notebooks (default: build/cookbook/cpu, from `make cookbook`)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="build folder")
    parser.add_argument(
        "--partial", action="store_true", help="build with the notebooks that have executed copies"
    )
    parser.add_argument("-j", "--jobs", default="1", help="Sphinx's parallel jobs (or 'auto')")
    args = parser.parse_args(argv)
    try:
        build(args.executed.resolve(), args.out.resolve(), args.partial, args.jobs)
    except SiteError as exc:
        print(f"site: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
