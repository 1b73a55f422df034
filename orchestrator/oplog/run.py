"""`locked_operation`: the usual shape of a mutating action (record the operation, hold the site lock)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from orchestrator.errors import LockHeld

from .locks import DEFAULT_TTL
from .operation import Operation
from .store import Oplog

log = logging.getLogger("orch.oplog")


@contextmanager
def locked_operation(
    oplog: Oplog,
    *,
    site: str | None,
    task: str,
    env: str | None,
    action: str,
    params: dict | None = None,
    lock: bool = True,
    catch_up: bool = False,
) -> Iterator[Operation]:
    """Given what is about to run, start its operation, lock its site, yield the operation, then unlock.

    If the site is locked by someone else, the operation is recorded `refused` (nothing was changed, so a PM's
    log shows no failure) with the lock message, and LockHeld propagates. The lock is released after the
    operation's final status is written, and only if this operation took it. With lock=False (or no site)
    nothing is locked.
    """
    op = oplog.start(task=task, site=site, env=env, action=action, params=params, catch_up=catch_up)
    heartbeat = None
    try:
        with op:
            if lock and site is not None:
                try:
                    oplog.acquire_lock(site, task=task, operation_id=op.id)
                except LockHeld as exc:
                    op.finish("refused", error=str(exc))
                    raise
                heartbeat = _Heartbeat(oplog, site, op.id)
                heartbeat.start()
            yield op
    finally:
        if heartbeat is not None:
            heartbeat.stop()
            oplog.release_lock(heartbeat.site, op.id)


class _Heartbeat(threading.Thread):
    """Renews the site lock while the operation runs, so a short TTL frees the sites of holders that died."""

    def __init__(self, oplog: Oplog, site: str, operation_id: int, ttl_seconds: int = DEFAULT_TTL):
        super().__init__(daemon=True, name=f"lock-heartbeat-{site}")
        self.oplog, self.site, self.operation_id, self.ttl = oplog, site, operation_id, ttl_seconds
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.ttl / 3):
            try:
                self.oplog.extend_lock(self.site, self.operation_id, self.ttl)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the TTL leaves room for two
                log.warning("could not renew the lock on %s", self.site, exc_info=True)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)
