"""Handles for one running operation and its steps; every change is written to the oplog at once.

A step is INSERTed as `running` before its body runs, so a crash leaves a visible trail that the reaper later
turns into `interrupted`, never a silent gap. The write that makes a row final (a step closed, an operation
finished, an artifact recorded) also links it into the tamper-evident chain (chain.py), in the same transaction;
a final row is never written again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from orchestrator import progress as live

from . import chain, process
from .engine import inserted_id
from .rows import seconds
from .schema import artifacts, operations, steps
from .text import OUTPUT_LIMIT, clean, clean_json, tail

OPERATION_STATUSES = ("ok", "failed", "interrupted", "rolled_back", "refused")  # refused: nothing changed
STEP_STATUSES = ("ok", "failed", "interrupted", "skipped")

progress = logging.getLogger("orch.progress")


def exit_status(exc: BaseException | None) -> str:
    """Given the exception leaving a block (or None), return the status it means: ok, failed or interrupted."""
    if exc is None:
        return "ok"
    if isinstance(exc, SystemExit):
        return "ok" if exc.code in (0, None) else "interrupted"
    if isinstance(exc, Exception):
        return "failed"
    return "interrupted"  # KeyboardInterrupt, CancelledError, GeneratorExit: stopped, not broken


def error_text(exc: BaseException) -> str:
    """Given an exception, return the masked one-line-ish text recorded as its error."""
    return clean(str(exc) or type(exc).__name__)


class Step:
    """One recorded step of an operation; `output()` appends to its short, masked, tail-kept output."""

    def __init__(self, engine: sa.Engine, step_id: int, name: str, started_at: datetime):
        self._engine, self.id, self.name, self.started_at = engine, step_id, name, started_at
        self.status = "running"
        self._raw = ""

    def output(self, text: str) -> None:
        """Given text, append it to the step's stored output (masked, cut to its last ~4 KB).

        Once the step is closed its row is in the chain and stays as it is: later output is not stored.
        """
        if self.status != "running":
            return
        # Mask the joined text, not each piece: a secret split across two calls is still found. Keeping
        # twice the limit raw leaves room for masks to shorten it without losing the visible tail.
        self._raw = (self._raw + str(text))[-2 * OUTPUT_LIMIT :]
        self._update(output=tail(clean(self._raw)))

    def skip(self, reason: str) -> None:
        """Given why, mark the step skipped now; leaving its `with` block normally keeps it skipped."""
        self._raw = (self._raw + str(reason))[-2 * OUTPUT_LIMIT :]
        self._close("skipped")

    def _close(self, status: str, error: str | None = None) -> None:
        if error:
            sep = "\n" if self._raw and not self._raw.endswith("\n") else ""
            self._raw = (self._raw + f"{sep}error: {error}")[-2 * OUTPUT_LIMIT :]
        with self._engine.begin() as conn:
            head = chain.lock_head(conn)
            updated = conn.execute(
                steps.update()
                .where(steps.c.id == self.id, steps.c.status == "running")
                .values(status=status, finished_at=process.now(), output=tail(clean(self._raw)))
            ).rowcount
            if updated:  # else the operation's finish (or a reaper) closed it first, and linked it
                chain.append(conn, "step", [self.id], head)
        self.status = status

    def _update(self, **values: Any) -> None:
        with self._engine.begin() as conn:
            conn.execute(steps.update().where(steps.c.id == self.id, steps.c.status == "running").values(**values))


class Operation:
    """Handle for one running operation. Use as a context manager, or call `finish()` yourself.

    Leaving the `with` block normally records `ok`; an exception records `failed` with its text and
    propagates; Ctrl-C, SystemExit(non-zero) or SIGTERM/SIGHUP record `interrupted`. An explicit `finish()`
    inside the block (e.g. `rolled_back`) wins over what the block's exit would record.
    """

    def __init__(
        self,
        engine: sa.Engine,
        op_id: int,
        *,
        task: str,
        site: str | None,
        env: str | None,
        action: str,
        started_at: datetime,
        on_finish: list[Callable[[int], None]] | None = None,
    ):
        self._engine, self.id = engine, op_id
        self._on_finish = on_finish or []
        self.task, self.site, self.env, self.action = task, site, env, action
        self.started_at = started_at
        self.status = "running"
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._signals = ExitStack()

    def __enter__(self) -> Operation:
        self._signals.enter_context(process.signals_as_exit())
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        try:
            if self.status == "running":
                status = exit_status(exc)
                self.finish(status, error_text(exc) if status == "failed" else None)
        finally:
            self._signals.close()
        return False

    @contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Given a step name, record it as running, yield it, then record ok / failed / interrupted.

        The exception that ends the step propagates after being recorded.
        """
        step = self._insert_step(name)
        # every step is also the user's progress line (stderr; -q hides it), and its figures go to a live meter
        label = f"{self.action} {'/'.join(p for p in (self.site, self.env) if p)}: {name}"
        progress.info("%s...", label)
        try:
            with live.step(label):
                yield step
        except BaseException as exc:
            status = exit_status(exc)
            if step.status == "running":
                step._close(status, error_text(exc) if status == "failed" else None)
            raise
        if step.status == "running":
            step._close("ok")

    def artifact(self, kind: str, ident: str, size: int | None = None, details: dict | None = None) -> None:
        """Given what the operation produced (a backup id, a revision, a URL), record it with masked details."""
        with self._engine.begin() as conn:
            head = chain.lock_head(conn)
            artifact_id = inserted_id(
                conn.execute(
                    artifacts.insert().values(
                        operation_id=self.id,
                        kind=kind,
                        ident=clean(ident),
                        size=size,
                        details=clean_json(details or {}),
                        created_at=process.now(),
                    )
                )
            )
            chain.append(conn, "artifact", [artifact_id], head)

    def finish(self, status: str = "ok", error: str | None = None) -> None:
        """Given a final status (ok, failed, interrupted, rolled_back, refused), record it with the masked error text.

        Steps still running are marked interrupted unless the operation ended ok. The operation joins the
        chain, and then the finish hooks run (tracker notes): a hook that fails is logged, never raised.
        Raise ValueError for an unknown status.
        """
        if status not in OPERATION_STATUSES:
            raise ValueError(f"operation status must be one of {OPERATION_STATUSES}, not {status!r}")
        finished = process.now()
        with self._engine.begin() as conn:
            head = chain.lock_head(conn)
            # once final, the row is in the chain: a second finish() leaves it as the first one wrote it
            done = conn.execute(
                operations.update()
                .where(operations.c.id == self.id, operations.c.status == "running")
                .values(
                    status=status, error=clean(error), finished_at=finished, duration=seconds(self.started_at, finished)
                )
            ).rowcount
            if status != "ok":
                conn.execute(
                    steps.update()
                    .where(steps.c.operation_id == self.id, steps.c.status == "running")
                    .values(status="interrupted", finished_at=finished)
                )
            chain.append_operation(conn, self.id, head)
        self.status = status
        for hook in self._on_finish if done else ():
            try:
                hook(self.id)
            except Exception:  # noqa: BLE001 - what runs after an operation must never fail it
                progress.warning(
                    "after operation %s: %s failed", self.id, getattr(hook, "__name__", hook), exc_info=True
                )

    def _insert_step(self, name: str) -> Step:
        with self._seq_lock:
            self._seq += 1
            seq = self._seq
        started = process.now()
        with self._engine.begin() as conn:
            step_id = inserted_id(
                conn.execute(
                    steps.insert().values(
                        operation_id=self.id, seq=seq, name=clean(name), started_at=started, status="running", output=""
                    )
                )
            )
        return Step(self._engine, step_id, name, started)
