"""Notifications: send an event to every channel of the inventory's `notify` list that wants it.

Delivery never raises: a dead webhook or SMTP server is logged and reported in the returned results, and the
backup that caused the event stays exactly as it was.
"""

from __future__ import annotations

import logging
import time

from orchestrator.masking import mask

from . import events
from .channels import DELIVER, DeliveryError, describe

log = logging.getLogger("orch.notify")
DEFAULT_ON = ("failure", "recovery")


def wants(channel: dict, kind: str) -> bool:
    """Given a channel and an event kind, return whether the channel subscribed to it (`test` goes to all)."""
    return kind == "test" or kind in (channel.get("on") or DEFAULT_ON)


class Notifier:
    """The inventory's channels, and one `send` that reaches the right ones."""

    def __init__(self, channels: list[dict], *, attempts: int = 2, retry_delay: float = 1.0):
        self.channels = list(channels)
        self.attempts, self.retry_delay = attempts, retry_delay

    def send(self, event: dict, channels: list[dict] | None = None) -> list[dict]:
        """Given an event, deliver it to each subscribed channel (or to `channels`); return one
        {"channel", "ok", "error"} per channel tried. Never raises."""
        chosen = channels if channels is not None else [c for c in self.channels if wants(c, event["event"])]
        return [self._deliver(channel, event) for channel in chosen]

    def _deliver(self, channel: dict, event: dict) -> dict:
        name = describe(channel)
        error = None
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.retry_delay)
            try:
                DELIVER[channel["type"]](channel, event)
                log.info("notify: %s: %s sent", name, event["event"])
                return {"channel": name, "ok": True, "error": None}
            except DeliveryError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - a notifier bug must never break the run that notifies
                error = mask(f"{type(exc).__name__}: {exc}")
        log.warning("notify: %s: %s not delivered: %s", name, event["event"], error)
        return {"channel": name, "ok": False, "error": error}


__all__ = ["DeliveryError", "Notifier", "events", "wants"]
