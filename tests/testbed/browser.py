"""A real browser for the tests: Debian's headless Chromium driven by Playwright.

Browsers cannot be downloaded here, so Playwright launches `/usr/bin/chromium` (package `chromium`) with flags
that keep it off the network except for the pages a test opens. Use the session fixture `browser` from
tests/conftest.py and open pages with `new_page()`; `screenshot()` saves a full-page PNG.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@contextmanager
def chromium() -> Iterator[object]:
    """Yield a running Playwright Browser (Chromium, headless); closed, with Playwright, on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, *, viewport: dict | None = None, javascript: bool = True, **context_options):
    """Given the browser, return a page in a fresh context (own cookies), `viewport` sized, JavaScript on/off."""
    context = browser.new_context(viewport=viewport or VIEWPORT, java_script_enabled=javascript, **context_options)
    return context.new_page()


def screenshot(page, path: Path) -> Path:
    """Save a full-page PNG of the page at `path` (folders created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
