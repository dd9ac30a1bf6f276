"""The cookbook site: built from the notebook tests' executed copies, checked as HTML and in Chromium.

The build is `make docs`'s command (docs/site.py) on build/test-notebooks/cpu, the copies the
notebook tests wrote in this run: no notebook runs again. The browser is Debian's chromium,
headless, kept off the network (no background services, every host name unresolvable but
loopback); pages come from a loopback HTTP server, and every request the pages make is read
from Chromium's network log.
"""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from _browser import outside, requests, start_chromium, wait_for
from _paths import EXECUTED, ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

pytestmark = pytest.mark.executed


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the site once for this module; return its html folder."""
    missing = [p.stem for p in NOTEBOOKS if not (EXECUTED / p.name).exists()]
    if missing:
        pytest.skip(
            f"no executed copy of {', '.join(missing)} in {EXECUTED}: the notebook tests "
            "write them (pytest -m notebook), and the site shows every notebook"
        )
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "site.py"), "--executed", str(EXECUTED)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    return out / "html"


def test_the_build_refuses_missing_or_failed_runs(tmp_path):
    """The site shows every notebook executed: a missing or failed copy stops it, with the fix."""
    failed = json.loads(NOTEBOOKS[0].read_text())
    failed["metadata"]["papermill"] = {"exception": True}
    (tmp_path / NOTEBOOKS[0].name).write_text(json.dumps(failed))
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "site.py"), "--executed", str(tmp_path)]
        + ["--out", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert f"{NOTEBOOKS[0].stem}: its run in {tmp_path} failed" in done.stderr
    assert f"{NOTEBOOKS[1].stem}: no executed copy" in done.stderr
    assert "Run `make cookbook` first" in done.stderr
    assert not (tmp_path / "site" / "html").exists()


class _Page(HTMLParser):
    """What the checks read from a page: links, sources, ids, notebook outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []  # href and src values
        self.ids: set[str] = set()
        self.outputs = 0  # cells' output areas (myst-nb: div.cell_output)
        self.output_images = 0  # images inside them
        self.scripts: list[str] = []
        self._depth: list[bool] = []  # per open div: does it open an output area?

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.refs.append(attrs[key])
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        if tag == "div":
            opens = "cell_output" in (attrs.get("class") or "").split()
            self.outputs += opens
            self._depth.append(opens)
        if tag == "img" and any(self._depth):
            self.output_images += 1

    def handle_endtag(self, tag):
        if tag == "div" and self._depth:
            self._depth.pop()


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def _pages(site: Path) -> list[Path]:
    """Return the site's pages (not the theme's templates under _static/)."""
    return [p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts]


def _expected_outputs(notebook: Path) -> tuple[int, int]:
    """Return (code cells with outputs, images among their outputs) of an executed copy."""
    cells = json.loads(notebook.read_text())["cells"]
    with_outputs = [c for c in cells if c["cell_type"] == "code" and c.get("outputs")]
    images = sum(
        1
        for c in with_outputs
        for o in c["outputs"]
        if "image/png" in o.get("data", {}) and WIDGET_VIEW not in o.get("data", {})
    )
    return len(with_outputs), images


def test_every_notebook_has_a_page_with_its_outputs(site):
    for notebook in NOTEBOOKS:
        page_path = site / "notebooks" / f"{notebook.stem}.html"
        assert page_path.exists(), f"no page for {notebook.stem}"
        page = _parse(page_path)
        cells, images = _expected_outputs(EXECUTED / notebook.name)
        assert cells > 0, f"{notebook.stem}: the executed copy has no outputs"
        assert page.outputs == cells, f"{notebook.stem}: {page.outputs} output areas, {cells} cells"
        assert page.output_images >= images, f"{notebook.stem}: {page.output_images} of {images}"


def test_no_internal_reference_is_broken(site):
    pages = {p.resolve(): _parse(p) for p in _pages(site)}
    broken = []
    for path, page in pages.items():
        for ref in page.refs:
            parts = urlsplit(ref)
            if parts.scheme or parts.netloc:
                continue  # outside the site (the checks below keep pages from loading any)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(site.resolve())}: {ref}")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if parts.fragment not in ids:
                    broken.append(f"{path.relative_to(site)}: {ref} (no such anchor)")
    assert broken == []


def test_pages_load_scripts_from_the_site_only(site):
    for path in _pages(site):
        outside = [s for s in _parse(path).scripts if urlsplit(s).scheme or s.startswith("//")]
        assert outside == [], f"{path.relative_to(site)} loads {outside}"
    page = _parse(site / "notebooks" / "11_monitoring.html")
    widgets = [urlsplit(s).path for s in page.scripts if "/widgets/" in s]
    assert widgets == ["../_static/widgets/require.js", "../_static/widgets/embed-amd.js"], widgets


# ---- in a real browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(site) -> Iterator[str]:
    """Serve the site on a loopback port; yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian chromium under chromedriver, off the network, logging every request."""
    driver = start_chromium(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


PLOTS = """
const imgs = [...document.querySelectorAll('div.cell_output img')];
if (!imgs.every(i => i.complete)) return null;
return imgs.map(i => [i.naturalWidth, i.getBoundingClientRect().width]);
"""
LIVE_VIEW = """
const box = document.querySelector('.cell_output .widget-vbox');
if (!box) return null;
const status = box.querySelector('.widget-html');
const img = box.querySelector('.widget-output img');
if (!status || !img || !img.complete) return null;
return [status.textContent, img.naturalWidth, img.getBoundingClientRect().width];
"""


def test_pages_show_plots_and_the_live_view_and_request_only_loopback(served, browser):
    requests(browser)  # start from an empty log
    seen: list[str] = []
    for name in ("index.html", "api.html", "which-recipe.html"):
        browser.get(f"{served}/{name}")
        assert browser.title, name
        seen += requests(browser)
    plotted = 0
    for notebook in NOTEBOOKS:
        browser.get(f"{served}/notebooks/{notebook.stem}.html")
        sizes = wait_for(browser, PLOTS)
        assert sizes is not None, f"{notebook.stem}: images did not load"
        assert all(natural > 0 and shown > 0 for natural, shown in sizes), (
            f"{notebook.stem}: a plot is not displayed: {sizes}"
        )
        plotted += len(sizes) > 0
        seen += requests(browser)
    assert plotted >= 5, f"plots on only {plotted} notebook pages"
    browser.get(f"{served}/notebooks/11_monitoring.html")
    live = wait_for(browser, LIVE_VIEW)
    assert live, "notebook 11's live view did not render from its saved widget state"
    status, natural, shown = live
    assert status.startswith("finished") and natural > 0 and shown > 0, live
    seen += requests(browser)
    left = outside(seen, urlsplit(served).netloc)
    assert left == [], f"requests left loopback: {left}"
    assert any(urlsplit(url).path == "/_static/widgets/embed-amd.js" for url in seen)
    # the check sees a request that tries to leave (which the resolver rule then stops)
    probe = "https://cdn.jsdelivr.net/npm/x.js"
    browser.execute_script(f"fetch('{probe}').catch(() => null)")
    logged: list[str] = []
    deadline = time.monotonic() + 10
    while probe not in logged and time.monotonic() < deadline:
        logged += requests(browser)
    assert probe in logged, logged
