"""The workshop in a real browser: headless Chromium (Debian's, off the network) opens the
workshop's JupyterLab, runs notebook 01's copy on the deploykit kernel up to its Try-it cell,
changes a control, clicks Run and sees the answer change. The screenshot is kept in
build/test-artifacts/workshop-browser.png, also when the test fails."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import nbformat
import psutil
from _browser import outside, requests, start_chromium, wait_for
from _paths import ROOT

import deploykit as dk
from deploykit.workshop.lab import KERNEL, LAB_ID

NOTEBOOK = "01_quickstart.ipynb"
ARTIFACT = ROOT / "build" / "test-artifacts" / "workshop-browser.png"
RUN_S = 600.0  # notebook 01 up to its Try-it cell, on two busy cores

CELLS = "return document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').length"
CELL = "return document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')[arguments[0]]"
# the Try-it widget's answer once no cell is queued or running, or the first traceback at once
ANSWER = """
const errors = [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
  .map(o => o.innerText).filter(t => t.includes('Traceback (most recent call last)'));
if (errors.length) return 'error: ' + errors[0];
const cell = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')[arguments[0]];
const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-InputPrompt')];
if (prompts.some(p => p.textContent.includes('*'))) return null;
const out = cell && cell.querySelector('.dk-try-it-output');
const run = cell && cell.querySelector('.dk-try-it-run');
if (!out || !run || run.disabled) return null;
const text = out.innerText.trim();
return text && text !== arguments[1] ? text : null;
"""
READOUT = "return arguments[0].textContent !== arguments[1] ? arguments[0].textContent : null"


def _try_it_index(path: Path) -> int:
    """Return the index of the copy's Try-it code cell (the contract's cell id)."""
    cells = nbformat.read(path, as_version=4).cells
    return next(i for i, cell in enumerate(cells) if cell.get("id") == "try-it")


def _kernel_idle(lab) -> bool:
    """Return True once the notebook's session runs an idle deploykit kernel."""
    sessions = httpx.get(
        f"{lab.base_url}/api/sessions",
        headers={"Authorization": f"token {lab.token}"},
        trust_env=False,
        timeout=10,
    ).json()
    kernels = [s["kernel"] for s in sessions if s["path"] == NOTEBOOK]
    return (
        bool(kernels) and kernels[0]["name"] == KERNEL and kernels[0]["execution_state"] == "idle"
    )


def _menu(driver, menu: str, command: str) -> None:
    """Click a menu of the menu bar, then one of its items (by its command id)."""
    from selenium.webdriver.common.by import By

    bar = driver.find_element(
        By.XPATH, f"//div[contains(@class, 'lm-MenuBar-itemLabel') and text()='{menu}']"
    )
    bar.click()
    item = driver.find_element(By.CSS_SELECTOR, f"li.lm-Menu-item[data-command='{command}']")
    item.click()


def _left_behind(lab_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(LAB_ID) == lab_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_try_it_in_the_workshop_lab(tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    env = {
        name: str(tmp_path / dirname)  # Jupyter's and IPython's writable dirs, not the user's
        for name, dirname in [
            ("JUPYTER_CONFIG_DIR", "config"),
            ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("IPYTHONDIR", "ipython"),
        ]
    }
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.unlink(missing_ok=True)
    lab = dk.start_lab(tmp_path / "workshop", env=env)  # the workshop recipe, else cpu
    index = _try_it_index(lab.folder / NOTEBOOK)
    driver = None
    seen: list[str] = []
    try:
        driver = start_chromium(tmp_path / "chromium", window="1400,1000")
        driver.get(f"{lab.base_url}/lab/tree/{NOTEBOOK}?token={lab.token}")
        expected = len(nbformat.read(lab.folder / NOTEBOOK, as_version=4).cells)
        assert wait_for(driver, f"{CELLS} === {expected}", 120), "the notebook did not open"
        seen += requests(driver)
        deadline = time.monotonic() + 120
        while not _kernel_idle(lab):
            assert time.monotonic() < deadline, "the deploykit kernel did not become idle"
            time.sleep(0.5)
        # select the Try-it cell, run every cell above it, then it (not the clean-up after it)
        cell = driver.execute_script(CELL, index)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
        cell.find_element("css selector", ".jp-InputPrompt").click()
        _menu(driver, "Run", "notebook:run-all-above")
        _menu(driver, "Run", "notebook:run-cell")
        first = wait_for(driver, ANSWER, RUN_S, index, "")
        assert first and not first.startswith("error: "), first or "no answer from Try it"
        seen += requests(driver)
        # move a control (a slider, to its lowest value), click Run, and see the answer change
        cell = driver.execute_script(CELL, index)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
        sliders = cell.find_elements("css selector", ".dk-try-it-control .noUi-handle")
        assert sliders, "no Try-it control is a slider"
        readout = cell.find_element("css selector", ".dk-try-it-control .widget-readout")
        value = readout.text
        sliders[0].send_keys(Keys.HOME)
        moved = wait_for(driver, READOUT, 10, readout, value)
        assert moved, f"the slider did not move from {value}"
        cell.find_element("css selector", ".dk-try-it-run").click()
        second = wait_for(driver, ANSWER, RUN_S, index, first)
        assert second, f"the answer did not change after Run: still {first!r}"
        assert not second.startswith("error: "), second
        seen += requests(driver)
    finally:
        if driver is not None:
            driver.save_screenshot(str(ARTIFACT))
            driver.quit()
        lab.stop()
    left = outside(seen, urlsplit(lab.base_url).netloc)
    assert left == [], f"the page made requests outside the lab: {left}"
    assert ARTIFACT.stat().st_size > 0
    assert _left_behind(lab.lab_id) == [], "the lab's kernel or a server still runs"
    after = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert after == [], f"left running: {after}"
