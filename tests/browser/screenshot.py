"""The README's picture of the playground: a real server, headless Chromium, one query, a PNG of the page.

python -m tests.browser.screenshot docs/img/playground.png      # or: make screenshot
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selenium import webdriver

from tests.browser.browser import chromium
from tests.browser.page import Playground
from tests.integration.server import start_server

WIDTH = 1100
SESSION_PAIRS = ("c9", "k8", "j3", "f1", "a5")


def take(out: Path, sequence: str = "c9k8j3f1??c") -> Path:
    """Serve the bundled model, ask `sequence` on the page, and save the whole page as a PNG at `out`."""
    with start_server() as server:
        driver = chromium(WIDTH, 800)
        try:
            return picture(driver, server.url, out, sequence)
        finally:
            driver.quit()


def picture(driver: webdriver.Chrome, url: str, out: Path, sequence: str = "c9k8j3f1??c") -> Path:
    """With a running browser and server: ask `sequence` on the page at `url`, save the page at `out`."""
    page = Playground(driver, url).open()
    page.ask_sequence(sequence)  # once to warm the connection and the server's first-request paths up
    page.ask_sequence(sequence)
    if page.el("session-panel").is_displayed():  # a session filled pair by pair, the attention on `c` drawn
        page.click(page.el("session-new"), "session-panel")
        for pair in SESSION_PAIRS:
            page.type_into(page.el("session-pair"), pair)
            page.click(page.el("session-append"), "session-panel")
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    # a viewport exactly as tall as the page: the whole page in one picture
    metrics = {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(out)):
            raise RuntimeError(f"chromium could not write {out}")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/img/playground.png"))
    args = parser.parse_args()
    print(take(args.out))


if __name__ == "__main__":
    main()
