"""Queue a note when an operation finishes, and deliver queued notes with retries.

Delivery is at least once: a note is marked sent only after its tracker took it; if the answer is lost, the
next delivery finds the note's key at the tracker and posts nothing new, so the tracker gets it exactly once.
"""

from __future__ import annotations

import logging
import threading
import uuid

from orchestrator.billing import rates_for
from orchestrator.errors import OrchError
from orchestrator.oplog import chain, outbox

from . import configured, redmine, tracker_for, webhook
from .http import DeliveryError
from .note import build, task_url

log = logging.getLogger("orch.tracker")
KINDS = {"redmine": redmine.deliver, "webhook": webhook.deliver}


def enqueue(oplog, inventory, op_id: int) -> bool:
    """Given a finished operation's id, queue its note if its site has a tracker that wants it and its task
    maps to an issue; return whether a note was queued. An operation run inside another (a promotion's
    mandatory backup) gets none: the enclosing operation's note lists what it made, and its time."""
    if outbox.enclosing(oplog.engine, op_id) is not None:
        return False
    op = oplog.operation(op_id)
    tracker = tracker_for(inventory, op["site"])
    if tracker is None or not tracker.wants(op["action"]):
        return False
    issue = tracker.issue_for(op["task"])
    if issue is None:
        return False
    link = chain.link_of(oplog.engine, "operation", op_id)
    key = uuid.uuid4().hex
    payload = build(
        op,
        key=key,
        link=None if link is None else str(link),
        rates=rates_for(inventory, op["site"]),
        page=task_url((getattr(inventory, "serve", None) or {}).get("public_url"), op["task"]),
    )
    return outbox.add(
        oplog.engine,
        key=key,
        operation_id=op_id,
        task=op["task"],
        site=op["site"],
        tracker=tracker.identity,
        issue=issue,
        payload=payload,
    )


def deliver_pending(oplog, inventory, *, everything: bool = False, task: str | None = None) -> list[dict]:
    """Deliver the queued notes that are due (every pending one with everything, e.g. `orch tracker retry`);
    return one result per note tried: its row with `status` sent or pending and the `error` if any."""
    results = []
    for item in outbox.claim_due(oplog.engine, everything=everything, limit=500):
        if task is not None and item["task"] != str(task):
            outbox.release(oplog.engine, item["id"])
            continue
        try:
            remote = _deliver(inventory, item)
        except (DeliveryError, OrchError) as exc:
            outbox.failed(oplog.engine, item["id"], str(exc), item["attempts"])
            log.warning("tracker note for task %s not delivered (will retry): %s", item["task"], exc)
            results.append(item | {"status": "pending", "error": str(exc)})
        else:
            outbox.sent(oplog.engine, item["id"], remote)
            results.append(item | {"status": "sent", "remote": remote, "error": None})
    return results


def _deliver(inventory, item: dict) -> dict:
    tracker = tracker_for(inventory, item["site"])
    if tracker is None or tracker.identity != item["tracker"]:
        raise DeliveryError(f"the inventory no longer sends notes of site {item['site']!r} to {item['tracker']}")
    return KINDS[tracker.type](tracker, item)


class NoteHook:
    """An oplog finish hook: queue the operation's note, then deliver due notes in a (non-daemon) thread, so
    the command's own work and lock are done first and the process still waits for the delivery at exit."""

    __name__ = "tracker note"

    def __init__(self, oplog, inventory):
        self.oplog, self._inventory = oplog, inventory
        self._lock = threading.Lock()
        self._queued = False
        self._thread: threading.Thread | None = None

    @property
    def inventory(self):
        if callable(self._inventory):
            self._inventory = self._inventory()
        return self._inventory

    def __call__(self, op_id: int) -> None:
        if not configured(self.inventory) or not enqueue(self.oplog, self.inventory, op_id):
            return
        with self._lock:
            self._queued = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._deliver, name="tracker-delivery")
                self._thread.start()

    def _deliver(self) -> None:
        while True:
            with self._lock:
                if not self._queued:  # a note queued while we delivered gets another round
                    return
                self._queued = False
            try:
                deliver_pending(self.oplog, self.inventory)
            except Exception:  # noqa: BLE001 - a broken delivery leaves the notes queued; never a traceback
                log.warning("tracker delivery failed; the notes stay queued", exc_info=True)
