"""A site's check URLs: the paths boot drills request and visual checks screenshot.

`verify.urls` when the inventory lists them; otherwise the home page plus an even spread of `sitemap_sample`
entries of the site's own sitemap (`/sitemap.xml`, a sitemap index followed one level down), so a check sees
more than the one page everybody looks at anyway.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

LOC = re.compile(r"<loc>\s*([^<\s]+)\s*</loc>", re.IGNORECASE)
SITEMAP = "/sitemap.xml"
MAX_SITEMAPS = 5  # child sitemaps of an index read at most
MAX_HOPS = 3  # redirects followed (WordPress sends /sitemap.xml to /wp-sitemap.xml or /?sitemap=index)

Fetch = Callable[[str], tuple[int, dict, str]]  # URL -> (status, headers, body), redirects not followed


def spread(items: list[str], count: int) -> list[str]:
    """Given a sorted list and how many to keep, return that many items spread evenly (first and last included)."""
    if count <= 0 or not items:
        return []
    if count >= len(items):
        return list(items)
    if count == 1:
        return [items[0]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def _get(fetch: Fetch, url: str) -> str | None:
    """GET a URL of the site, following same-site redirects; return the body of a 200, else None."""
    for _ in range(MAX_HOPS + 1):
        try:
            status, headers, body = fetch(url)
        except OSError:  # no answer: a site that cannot be asked is checked on its home page alone
            return None
        location = {k.lower(): v for k, v in headers.items()}.get("location")
        if 300 <= status < 400 and location:
            nxt = urljoin(url, location)
            if urlsplit(nxt).netloc != urlsplit(url).netloc:
                return None
            url = nxt
            continue
        return body if status == 200 else None
    return None


def _path(url: str, base_path: str) -> str:
    """Given a page URL and the site's own path prefix, return the page's path below the site's URL."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if base_path and path.startswith(base_path + "/"):
        path = path[len(base_path) :]
    return path + (f"?{parts.query}" if parts.query else "")


def sitemap_paths(fetch: Fetch, base_url: str) -> list[str]:
    """Given a fetch function and the site's base URL, return the sorted paths its sitemap lists (same host only)."""
    base = base_url.rstrip("/")
    body = _get(fetch, base + SITEMAP)
    if body is None:
        return []
    locs = [html.unescape(loc) for loc in LOC.findall(body)]
    if "<sitemapindex" in body:
        pages = []
        for child in locs[:MAX_SITEMAPS]:
            if urlsplit(child).netloc == urlsplit(base).netloc:
                pages += [html.unescape(loc) for loc in LOC.findall(_get(fetch, child) or "")]
        locs = pages
    netloc, prefix = urlsplit(base).netloc, urlsplit(base).path.rstrip("/")
    return sorted({_path(loc, prefix) for loc in locs if urlsplit(loc).netloc == netloc})


def check_paths(site, fetch: Fetch, base_url: str) -> list[str]:
    """Given a Site, a fetch function for its environment and the environment's URL, return the check paths."""
    verify = site.verify or {}
    if verify.get("urls"):
        return list(dict.fromkeys(verify["urls"]))
    sample = spread([p for p in sitemap_paths(fetch, base_url) if p != "/"], verify.get("sitemap_sample", 3))
    return ["/", *sample]
