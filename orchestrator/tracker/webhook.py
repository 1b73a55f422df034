"""Webhook: the note as one JSON POST, its raw body signed with HMAC-SHA256 (`X-Orch-Signature: sha256=<hex>`).

The body carries the note's `key` (also the `Idempotency-Key` header): a receiver that keeps the keys it has
seen drops a second delivery of the same note, which at-least-once delivery may send after a lost answer.
"""

from __future__ import annotations

import hashlib
import hmac

from .http import call, dumps

SIGNATURE_HEADER = "X-Orch-Signature"


def sign(secret: str, body: bytes) -> str:
    """Given the shared secret and the raw body, return the signature header's value."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Given the shared secret, a raw body and its signature header, return whether they match (for receivers)."""
    return header is not None and bool(header) and hmac.compare_digest(sign(secret, body), header)


def deliver(tracker, item: dict) -> dict:
    """Given the Tracker and a claimed outbox row, POST the note; return the receiver's status. Raise
    DeliveryError if the receiver does not answer 2xx."""
    body = dumps(
        {"key": item["key"], "task": item["task"], "issue": item["issue"], "site": item["site"], **item["payload"]}
    )
    status, _ = call(
        "POST",
        tracker.url,
        body=body,
        timeout=tracker.timeout,
        headers={SIGNATURE_HEADER: sign(tracker.secret.reveal(), body), "Idempotency-Key": item["key"]},
    )
    return {"status": status}
