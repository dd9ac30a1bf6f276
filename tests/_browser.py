"""Headless Debian chromium under chromedriver, kept off the network, for the browser tests.

No background services, every host name unresolvable but loopback, and every request the
pages make readable from Chromium's network log (`requests`), so a test can assert that
nothing left loopback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def start_chromium(user_data_dir: Path, window: str = "1280,2000"):
    """Return a selenium driver of headless chromium that logs every request."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("no chromium or chromedriver: run `make system-packages` (Debian packages)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",  # containers' /dev/shm is small
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={window}",
        # a request that tries to leave loopback is still logged, and then fails here
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={user_data_dir}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    return driver


def requests(driver) -> list[str]:
    """Return the URLs of the requests made since the last call (Chromium's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def outside(urls: list[str], netloc: str) -> list[str]:
    """Return the URLs that went to a network host other than netloc (host:port)."""
    # data:, blob:, about: and chrome:// are the browser's own; anything on a network is not
    return sorted(
        {
            url
            for url in urls
            if urlsplit(url).scheme in ("http", "https", "ws", "wss", "ftp")
            and urlsplit(url).netloc != netloc
        }
    )


def wait_for(driver, script: str, timeout_s: float = 30.0, *args):
    """Return script's value once it is truthy (polled, not slept for a fixed time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.2)
    return driver.execute_script(script, *args)
