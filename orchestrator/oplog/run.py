"""`locked_operation`: the usual shape of a mutating action (record the operation, hold the site lock)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .operation import Operation
from .store import Oplog


@contextmanager
def locked_operation(oplog: Oplog, *, site: str | None, task: str, env: str | None, action: str,
                     params: dict | None = None, lock: bool = True, catch_up: bool = False) -> Iterator[Operation]:
    """Given what is about to run, start its operation, lock its site, yield the operation, then unlock.

    If the site is locked by someone else, the operation is recorded `failed` with the lock message and
    LockHeld propagates. The lock is released after the operation's final status is written, and only if
    this operation took it. With lock=False (or no site) nothing is locked.
    """
    op = oplog.start(task=task, site=site, env=env, action=action, params=params, catch_up=catch_up)
    locked = False
    try:
        with op:
            if lock and site is not None:
                oplog.acquire_lock(site, task=task, operation_id=op.id)
                locked = True
            yield op
    finally:
        if locked:
            oplog.release_lock(site, op.id)
