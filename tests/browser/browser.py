"""Headless Chromium driven by Selenium, from the system's Debian packages (`chromium`, `chromium-driver`).

Used by the browser tests and by `tests/browser/screenshot.py`. Nothing is downloaded: the driver and
the browser are given by path, and Selenium Manager runs offline (it would otherwise look for a driver on the
internet). A missing browser is an error, never a skip: `make browser` installs it (root, apt).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


class BrowserMissingError(RuntimeError):
    """chromium or chromedriver is not installed."""


def _find(name: str, env: str) -> str:
    path = os.environ.get(env) or shutil.which(name)
    if not path or not Path(path).exists():
        raise BrowserMissingError(
            f"{name} not found (set {env}, or install Debian's chromium and chromium-driver: `make browser`)"
        )
    return path


def chromium(width: int = 1280, height: int = 1000) -> webdriver.Chrome:
    """A new headless Chromium session; the browser's console log is kept (`driver.get_log("browser")`)."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never reach for the network
    options = webdriver.ChromeOptions()
    options.binary_location = _find("chromium", "FWS_CHROMIUM")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=_find("chromedriver", "FWS_CHROMEDRIVER"))
    return webdriver.Chrome(options=options, service=service)
