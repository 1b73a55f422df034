"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) taking deterministic full-page shots.

Deterministic means: the same page, shot twice, gives the same pixels. So every shot has a fixed viewport and
device scale, light colour scheme, UTC and en-US, reduced motion, CSS animations and transitions switched off,
the caret hidden, lazy images made eager, web fonts awaited and the network idle before the picture is taken.
Playwright starts each browser with a fresh, empty profile (`--user-data-dir` in a new temp folder, removed
when the browser closes); nothing is ever downloaded (the flags below keep Chromium off the network except
for the pages asked for).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from orchestrator.errors import OrchError, UsageError

log = logging.getLogger("orch.visual")

CHROMIUM = os.environ.get("ORCH_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-color-profile=srgb",
    "--font-render-hinting=none",
]


@dataclass(frozen=True)
class Viewport:
    """A named window size shots are taken at."""

    name: str
    width: int
    height: int
    mobile: bool = False


VIEWPORTS = (Viewport("desktop", 1280, 800), Viewport("mobile", 390, 844, mobile=True))
MAX_HEIGHT = 12000  # px: a page longer than this is cut (an endless feed must not fill the disk)
PAGE_TIMEOUT = 30_000  # ms for the page to load
IDLE_TIMEOUT = 10_000  # ms for the network to go quiet once it has loaded

STILL = """*, *::before, *::after { animation: none !important; transition: none !important;
  caret-color: transparent !important; scroll-behavior: auto !important; }"""

# Run in the page. EAGER: lazy images load now (else what loads depends on scrolling and timing). MEASURE, once
# the network is idle: the document's height and the boxes (page pixels) the ignore selectors match.
EAGER = """async () => {
  document.querySelectorAll('img[loading="lazy"], iframe[loading="lazy"]').forEach(e => { e.loading = 'eager'; });
  await document.fonts.ready;
}"""
MEASURE = """async (selectors) => {
  await document.fonts.ready;
  const boxes = [];
  for (const selector of selectors) {
    let found = [];
    try { found = document.querySelectorAll(selector); } catch (e) { continue; }
    for (const el of found) {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && r.height > 0)
        boxes.push([Math.floor(r.left + scrollX), Math.floor(r.top + scrollY),
                    Math.ceil(r.width), Math.ceil(r.height)]);
    }
  }
  const height = Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0);
  return {boxes, height};
}"""


class BrowserError(OrchError):
    """Chromium could not be started or could not take a shot."""


@dataclass
class Capture:
    """One taken shot: the PNG bytes and what the page said while it was taken."""

    png: bytes
    status: int | None
    ignore: list[list[int]] = field(default_factory=list)
    error: str | None = None


def host_rules(url: str, connect_to: str | None) -> list[str]:
    """Given a site URL and the `address:port` its host is reached at (or None), return the Chromium flags that
    send the URL's host name there (staging names are rarely in DNS). The port stays the URL's own."""
    if not connect_to:
        return []
    host = urlsplit(url).hostname
    address = connect_to.rsplit(":", 1)[0] if connect_to.count(":") == 1 else connect_to
    if not host or host == address:
        return []
    return [f"--host-resolver-rules=MAP {host} {address}"]


class Camera:
    """An open headless Chromium; `shoot()` takes one deterministic full-page screenshot."""

    def __init__(self, browser, *, auth: tuple[str, str] | None):
        self._browser, self._auth = browser, auth
        self._contexts: dict[str, object] = {}

    def _context(self, viewport: Viewport):
        if viewport.name not in self._contexts:
            self._contexts[viewport.name] = self._browser.new_context(
                viewport={"width": viewport.width, "height": viewport.height},
                device_scale_factor=1,
                is_mobile=viewport.mobile,
                has_touch=viewport.mobile,
                color_scheme="light",
                locale="en-US",
                timezone_id="UTC",
                reduced_motion="reduce",
                ignore_https_errors=True,
                service_workers="block",
                http_credentials={"username": self._auth[0], "password": self._auth[1]} if self._auth else None,
            )
        return self._contexts[viewport.name]

    def shoot(self, url: str, viewport: Viewport, ignore: Sequence[str] = ()) -> Capture:
        """Given a URL, a viewport and CSS selectors to ignore, return the full-page shot (never raises for a
        page that fails to load: the capture then carries the error and whatever the browser shows)."""
        page = self._context(viewport).new_page()
        try:
            status, error = None, None
            try:
                response = page.goto(url, wait_until="load", timeout=PAGE_TIMEOUT)
                status = response.status if response else None
            except Exception as exc:  # noqa: BLE001 - Playwright's TimeoutError/Error: record it, shoot anyway
                error = _first_line(exc)
            page.add_style_tag(content=STILL)
            page.evaluate(EAGER)
            try:
                page.wait_for_load_state("networkidle", timeout=IDLE_TIMEOUT)
            except Exception:  # noqa: BLE001 - a page that polls forever is shot as it is
                log.info("%s: the network did not go idle within %d s", url, IDLE_TIMEOUT // 1000)
            found = page.evaluate(MEASURE, list(ignore))
            height = min(int(found["height"]) or viewport.height, MAX_HEIGHT)
            png = page.screenshot(
                full_page=True,
                animations="disabled",
                caret="hide",
                timeout=PAGE_TIMEOUT,
                clip={"x": 0, "y": 0, "width": viewport.width, "height": max(height, 1)},
            )
            return Capture(png, status, [list(box) for box in found["boxes"]], error)
        except Exception as exc:
            raise BrowserError(f"{url} ({viewport.name}): the screenshot failed: {_first_line(exc)}") from exc
        finally:
            page.close()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


@contextmanager
def camera(url: str, *, connect_to: str | None = None, auth: tuple[str, str] | None = None) -> Iterator[Camera]:
    """Given the base URL of the site to shoot (and where its host is reached, and basic-auth credentials),
    yield a Camera on a fresh headless Chromium, closed afterwards. Raise UsageError when Chromium is missing,
    BrowserError when it does not start."""
    if not os.access(CHROMIUM, os.X_OK):
        raise UsageError(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=FLAGS + host_rules(url, connect_to)
            )
        except Exception as exc:
            raise BrowserError(f"headless Chromium did not start: {_first_line(exc)}") from exc
        try:
            yield Camera(browser, auth=auth)
        finally:
            browser.close()
