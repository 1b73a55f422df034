"""What promote, rollback and the reaper share: a site's promotion options, its production layout, the php-fpm
reload, the health check that decides fast, and the point of no return.

The health check rolls back as soon as the answer is definite: an HTTP error status (a PHP fatal is a 500), a page
without the playbook's marker, or the wrong revision once OPcache has been emptied. Each is taken as definite after
DEFINITE_FAILURES of them (one fluke is not a verdict). It keeps waiting, up to `promote.health_timeout`, only while
the answer may still change: no answer at all (connection refused or reset during a reload), a gateway that has no
PHP behind it yet (502, 503, 504), or an old revision while OPcache may still revalidate (no `php_reload`).
"""

from __future__ import annotations

import http.client
import json
import logging
import posixpath
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from orchestrator.backends.envs import layouts, web
from orchestrator.backends.remote import Command
from orchestrator.errors import OperationFailed, OrchError, UsageError

from .targets import Target

log = logging.getLogger("orch.promote")

TRANSIENT_STATUSES = frozenset({502, 503, 504})  # the web server has no PHP answer yet: a reload, a restart
DEFINITE_FAILURES = 3  # definite failures (no healthy answer between them) before a rollback
POLL_SECONDS = 0.2
REQUEST_TIMEOUT = 10.0  # a slower answer counts as no answer (transient)


@dataclass(frozen=True)
class PromoteOptions:
    """A site's `promote:` block, typed. The defaults live in config/schema.yaml (filled in when the inventory
    loads), not here."""

    keep_releases: int
    health_paths: tuple[str, ...]
    expect_status: int
    health_timeout: float
    restore_db_on_rollback: bool
    visual_threshold: float | None  # screenshots around the switch (actions/compare.py); None: no visual check

    @classmethod
    def from_block(cls, block: dict) -> PromoteOptions:
        """Given a validated, defaults-filled `promote` block, return the options."""
        return cls(
            keep_releases=int(block["keep_releases"]),
            health_paths=tuple(block["health_paths"]),
            expect_status=int(block["expect_status"]),
            health_timeout=float(block["health_timeout"]),
            restore_db_on_rollback=bool(block["restore_db_on_rollback"]),
            visual_threshold=block.get("visual_threshold"),
        )


def health_base(prod: Target, needed_by: str) -> str:
    """Given production and what is about to ask it for its health (`a promotion`, `a rollback`), return its URL
    without a trailing slash; raise UsageError if it has none (nothing could tell whether it still works)."""
    if not prod.env.url:
        raise UsageError(f"{prod.label} has no `url`: {needed_by} needs it for its health check")
    return prod.env.url.rstrip("/")


def options(t: Target) -> PromoteOptions:
    return PromoteOptions.from_block(t.site.promote)


class HealthFailed(OperationFailed):
    """Production did not answer as a healthy site running the expected revision."""


def layout_for(conn, prod: Target) -> layouts.Releases | layouts.InPlace:
    """Given a connection to production's host, return its layout; raise UsageError if the site says
    `releases` but the docroot was never adopted."""
    if prod.site.layout == "releases":
        layout = layouts.Releases(conn, prod.path)
        layout.check()
        return layout
    return layouts.InPlace(conn, prod.path)


def php_reload_command(prod: Target) -> list[str]:
    return list((prod.host.web or {}).get("php_reload") or [])


def reload_php(conn, prod: Target) -> str:
    """Reload php-fpm when the host says how (OPcache must not serve replaced files; in place, a restored file
    can even carry the same mtime second as the cached one, so only a reload is certain). Return a note for
    the step's output; raise RemoteError if the reload fails."""
    command = php_reload_command(prod)
    if not command:
        return ""
    conn.run(Command(*command))
    return "; php-fpm reloaded"


def live_revision(conn, layout) -> str | None:
    """The revision id in the live tree's REVISION file (None before orch's first release)."""
    result = conn.run(Command("cat", posixpath.join(layout.live_dir(), layouts.REVISION_FILE)), check=False)
    try:
        return json.loads(result.text)["revision"] if result.ok else None
    except (ValueError, KeyError):
        return None


@dataclass(frozen=True)
class Probe:
    """One round of health requests: healthy, or what was wrong and whether waiting could change it."""

    healthy: bool
    definite: bool
    text: str


def probe(prod: Target, opts: PromoteOptions, playbook, revision: str | None, *, final: bool) -> Probe:
    """Given production, ask each health path and the revision file once; return the verdict.
    `final`: the revision answered can no longer change by waiting (php-fpm was reloaded)."""
    base, connect_to = health_base(prod, "a health check"), (prod.host.web or {}).get("connect")
    for path in opts.health_paths:
        status, _, body = web.fetch(base + path, connect_to=connect_to, timeout=REQUEST_TIMEOUT)
        if status != opts.expect_status:
            return Probe(False, status not in TRANSIENT_STATUSES, f"{path} answered {status}: {body[:160]!r}")
        if path == "/" and not playbook.healthy(body):
            return Probe(False, True, f"{path} lacks the playbook's health marker")
    if revision is None:
        return Probe(True, False, f"{', '.join(opts.health_paths)} healthy")
    status, _, body = web.fetch(f"{base}/{layouts.REVISION_PHP}", connect_to=connect_to, timeout=REQUEST_TIMEOUT)
    if status != 200:
        return Probe(False, status not in TRANSIENT_STATUSES, f"/{layouts.REVISION_PHP} answered {status}")
    if body.strip() != revision:
        return Probe(False, final, f"/{layouts.REVISION_PHP} answered {body.strip()[:60]!r}, expected {revision}")
    return Probe(True, False, f"{', '.join(opts.health_paths)} healthy, revision {revision} live")


def health_check(prod: Target, opts: PromoteOptions, playbook, revision: str | None) -> str:
    """Poll production until it answers healthy (and PHP serves `revision`); return what was seen.

    Raise HealthFailed after DEFINITE_FAILURES definite failures, or when `health_timeout` passes while the
    answers were only transient (see the module docstring)."""
    final = bool(php_reload_command(prod))
    started = time.monotonic()
    definite = 0
    while True:
        try:
            verdict = probe(prod, opts, playbook, revision, final=final)
        except (OSError, http.client.HTTPException) as exc:  # no answer (refused, reset, timed out): may change
            verdict = Probe(False, False, f"{prod.env.url}: {exc}")
        if verdict.healthy:
            return f"{verdict.text} after {time.monotonic() - started:.1f}s"
        definite += verdict.definite
        if definite >= DEFINITE_FAILURES:
            raise HealthFailed(
                f"health check failed: {verdict.text} ({definite} definite failures in "
                f"{time.monotonic() - started:.1f}s)"
            )
        if time.monotonic() - started >= opts.health_timeout:
            raise HealthFailed(f"health check failed: {verdict.text} (still after {opts.health_timeout:g}s)")
        time.sleep(POLL_SECONDS)


def failure_reason(exc: BaseException) -> str:
    """Given what ended a change of production, return the one line recorded as the reason it was undone."""
    if isinstance(exc, OrchError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({exc or 'Ctrl-C'})"
    if isinstance(exc, SystemExit):
        return f"interrupted (exit {exc.code})"
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def signals_deferred(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """While inside, remember SIGINT/SIGTERM/SIGHUP instead of acting on them, then deliver the first one: a
    second Ctrl-C never cuts an undo in half. (Python runs signal handlers in the main thread only, so a
    handler swap is the way; elsewhere this does nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in signals}
    for signum in signals:
        signal.signal(signum, lambda number, _frame: caught.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])


@contextmanager
def point_of_no_return(op, undo: Callable[[str], str]) -> Iterator[None]:
    """Given the running operation and how to undo the production change made inside the block, run it.

    If ANY exception leaves the block (an OrchError, an http.client error, a bug, Ctrl-C, SIGTERM), call
    undo(reason) (signals deferred meanwhile), record the operation `rolled_back` with the reason and raise
    OperationFailed; an interrupt is re-raised as it was, after the undo. If the undo fails too, record the
    operation `failed` saying so and raise OperationFailed.
    """
    try:
        yield
    except BaseException as exc:
        reason = failure_reason(exc)
        with signals_deferred():
            try:
                with op.step("automatic rollback") as step:
                    step.output(undo(reason))
            except Exception as undo_error:  # noqa: BLE001 -- said to the user and the oplog, never hidden
                message = (
                    f"{reason}; the automatic rollback failed too: {failure_reason(undo_error)} "
                    f"(production may still run the new release: see `orch releases`, then `orch rollback`)"
                )
                op.finish("failed", error=message)
                raise OperationFailed(f"promotion failed and was not rolled back: {message}") from exc
            op.finish("rolled_back", error=reason)
        if isinstance(exc, Exception):
            raise OperationFailed(f"promotion rolled back: {reason}") from exc
        raise


def undo_promotion(conn, prod: Target, layout, journal: layouts.Journal, reason: str, *, migrated: bool) -> str:
    """Take a promotion back as its journal says (safe to repeat), reload php-fpm, and restore the database
    from the pre-promotion backup when migrations ran and the site asks for it. Return what was done."""
    done = layout.undo(journal, reason)
    try:
        done += reload_php(conn, prod)
    except OrchError as exc:  # the code is back; a failed reload must not hide that
        done += f"; php-fpm reload failed: {exc}"
        log.warning("%s: php-fpm reload after the rollback failed: %s", prod.label, exc)
    snapshot = journal.meta.get("db_snapshot")
    if migrated and options(prod).restore_db_on_rollback and snapshot:
        from .restore import restore_database

        done += "; database restored: " + restore_database(conn, prod, snapshot)
    return done
