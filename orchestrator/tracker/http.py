"""One small HTTP client for the trackers (stdlib urllib: JSON in, JSON out, a deadline, masked errors)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from orchestrator import __version__
from orchestrator.masking import mask


class DeliveryError(Exception):
    """The tracker did not take the note; the message (masked) says why. The note is retried later."""


def call(
    method: str, url: str, *, body: bytes | None = None, headers: dict | None = None, timeout: float = 10
) -> tuple[int, Any]:
    """Given a request, return (status, parsed JSON body or None) for a 2xx answer; raise DeliveryError for a
    network error, a timeout or any other status."""
    request = urllib.request.Request(  # noqa: S310 - http(s) by schema
        url,
        data=body,
        method=method,
        headers={
            "User-Agent": f"orch/{__version__}",
            "Accept": "application/json",
            **({"Content-Type": "application/json"} if body is not None else {}),
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            text = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        raise DeliveryError(mask(f"{method} {url}: HTTP {exc.code}" + (f": {detail}" if detail else ""))) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(mask(f"{method} {url}: {reason}")) from None
    try:
        return status, json.loads(text) if text.strip() else None
    except ValueError:
        return status, None


def dumps(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
