"""Headless Debian Chromium driven by Selenium, opened one way for the page's tests (tests/conftest.py) and the
scoreboard's browser row: nothing is downloaded, so where Chromium, its driver or selenium is missing the caller
is told why (`browser_missing`) and skips."""

from __future__ import annotations

import importlib.util
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from gpt.errors import GPTError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def browser_missing() -> str | None:
    """Why headless Chromium cannot run here (None when it can)."""
    if not (CHROMIUM and DRIVER):
        return ("no Chromium: install Debian's chromium and chromium-driver (apt-get install chromium "
                "chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def chromium_driver() -> Any:
    """Headless Debian chromium through its chromium-driver."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,900"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))


def page_rates(site: Path, prompt: str, length: int, runs: int, threads: int = 1, timeout_s: float = 300
               ) -> list[float]:
    """The page of `site` (`python -m export.web --out SITE`), served on loopback with its COOP/COEP headers: `runs`
    greedy generations of `length` characters after `prompt` on `threads` wasm threads, each the tok/s the page
    itself shows (web/index.html's stats line: prefill included)."""
    from selenium.webdriver.support.ui import WebDriverWait

    from export.static_server import make_server

    server = make_server(site, port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    driver = chromium_driver()
    rates = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/?threads={threads}"
        state = "return document.body.dataset.state || ''"
        for _ in range(runs):
            driver.get(url)
            WebDriverWait(driver, timeout_s).until(lambda d: d.execute_script(state) in ("ready", "error"))
            fields = {"prompt": prompt, "length": str(length), "temperature": "0"}
            driver.execute_script("for (const [k, v] of Object.entries(arguments[0])) "
                                  "document.getElementById(k).value = v;", fields)
            driver.find_element("id", "generate").click()
            WebDriverWait(driver, timeout_s).until(lambda d: d.execute_script(state) in ("done", "error"))
            stats = driver.execute_script("return document.getElementById('stats').textContent")
            found = re.search(r"\(([\d.]+) tok/s\)", stats)
            if driver.execute_script(state) != "done" or not found:
                error = driver.execute_script("return document.getElementById('error').textContent")
                raise GPTError(f"the page did not generate: {error or stats}")
            rates.append(float(found.group(1)))
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    return rates
