"""`orch scheduler run`: the foreground daemon.

Life cycle: load the inventory (a broken site file costs that site alone: the others are scheduled, the broken
one is alerted about) -> wait as a standby until this process holds the oplog's scheduler lock ->
start APScheduler (jobs persisted in the oplog database, table `scheduler_jobs`) paused, bring the stored jobs
in line with the inventory, resume (missed runs within the grace window run now, once, as catch-ups) ->
serve: SIGHUP reloads the inventory, the lock is checked every few seconds, health is evaluated hourly ->
SIGTERM/SIGINT: no new runs, running ones get `stop_grace` seconds to finish, the rest are recorded as
interrupted and their locks released.
Signal handlers only set flags; the main thread does the work.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from orchestrator import tracker
from orchestrator.config import load_inventory
from orchestrator.errors import InventoryError
from orchestrator.notify import Notifier, events
from orchestrator.oplog import Oplog

from . import cron, leader, runtime
from .executor import CatchUpExecutor
from .jobs import job_specs, problem_lines
from .runtime import Runtime
from .slots import Slots
from .stop import interrupt_own_operations
from .sync import describe, sync_jobs
from .watch import HealthWatch, digest_schedules, send_digest

log = logging.getLogger("orch.scheduler")
JOB_TABLE = "scheduler_jobs"
WORKERS = 64  # threads for runs; most of them only wait for a host slot, the slots bound the real work
LIVENESS_SECONDS = 5  # how often the active daemon checks it still holds the scheduler lock
FIRST_HEALTH_MAX = 600


def load(path):
    """Given the inventory path, return the Inventory with every valid site (broken site files are listed in its
    `broken`); raise InventoryError if the inventory file itself is broken."""
    return load_inventory(path, partial=True)


class Daemon:
    """One scheduler process. `run()` blocks in the main thread; `start()`/`stop()` serve in-process tests."""

    def __init__(
        self, inventory_path, *, health_interval: float = 3600, stop_grace: float = 60, standby_poll: float = 2.0
    ):
        self.path = inventory_path
        self.health_interval, self.stop_grace, self.standby_poll = health_interval, stop_grace, standby_poll
        self.stop_requested, self.reload_requested = threading.Event(), threading.Event()
        self.scheduler: BackgroundScheduler | None = None
        self.runtime: Runtime | None = None
        self.watch = HealthWatch()
        self.alerted: dict[str, list[str]] = {}  # site -> the problems last alerted about, to alert on changes
        self.threads_left = False  # jobs still running after stop: the caller must exit hard

    # -- the process ---------------------------------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_requested.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())

    def run(self) -> int:
        """Serve until stopped; return the exit code (0 after a clean stop, 1 if the scheduler lock was lost).

        Raise InventoryError if the inventory file itself is broken at start.
        """
        inventory = load(self.path)
        oplog = Oplog.from_inventory(inventory)
        tracker.attach(oplog, inventory)  # notes of scheduled operations go to the tracker too
        lock = leader.for_oplog(oplog)
        try:
            if not self._wait_for_leadership(lock):
                return 0
            self.start(self._latest(inventory), oplog)
            code = self._serve(lock)
            self.stop()
            return code
        finally:
            lock.release()
            oplog.close()

    def _wait_for_leadership(self, lock) -> bool:
        """Return True once this process holds the scheduler lock, False if asked to stop first."""
        announced = False
        while not self.stop_requested.is_set():
            if lock.try_acquire():
                return True
            if not announced:
                held = _safe_holder(lock)
                log.info("standby: another scheduler is active (%s); taking over when it stops", _who(held))
                announced = True
            self.stop_requested.wait(self.standby_poll)
        return False

    def _latest(self, inventory):
        """Return the inventory as it is on disk now (a standby may have waited for days), or `inventory`."""
        try:
            return load(self.path)
        except InventoryError as exc:
            _log_problems("the inventory on disk has problems; using the one read at start", exc)
            return inventory

    def _serve(self, lock) -> int:
        next_check = time.monotonic() + LIVENESS_SECONDS
        while not self.stop_requested.wait(0.5):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + LIVENESS_SECONDS
                if not lock.alive():
                    log.error(
                        "lost the scheduler lock (oplog database connection broke): stopping, so that two "
                        "schedulers never run at once"
                    )
                    return 1
        return 0

    # -- start, reload, stop -------------------------------------------------------------------------------

    def start(self, inventory, oplog) -> None:
        """Given a checked inventory and its oplog, start scheduling (this process must hold the lock)."""
        active_since = datetime.now(UTC)
        if oplog.reap():  # a previous scheduler killed on this machine leaves `running` operations: close them
            from orchestrator.actions.rollback import settle_interrupted

            settle_interrupted(oplog, inventory, log.warning)  # and a promotion cut short here: check or undo it
        options = inventory.scheduler
        self.runtime = Runtime(
            inventory,
            oplog,
            Slots(options.max_parallel, _host_limits(inventory)),
            Notifier(inventory.notify),
            active_since,
        )
        runtime.install(self.runtime)
        self.scheduler = scheduler = BackgroundScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(engine=oplog.engine, tablename=JOB_TABLE),
                "internal": MemoryJobStore(),
            },
            executors={"default": CatchUpExecutor(WORKERS, active_since), "internal": ThreadPoolExecutor(2)},
        )
        scheduler.start(paused=True)  # paused: stored jobs are compared with the inventory before any runs
        self._apply(inventory)
        scheduler.add_job(
            self._health,
            IntervalTrigger(seconds=self.health_interval),
            id="health",
            name="backup health",
            jobstore="internal",
            executor="internal",
            next_run_time=active_since + timedelta(seconds=min(self.health_interval, FIRST_HEALTH_MAX)),
        )
        scheduler.resume()
        log.info(
            "scheduler active (%s): %d job(s), oplog %s",
            _who(leader.identity()),
            len(scheduler.get_jobs(jobstore="default")),
            oplog.url,
        )

    def _started(self) -> tuple[BackgroundScheduler, Runtime]:
        """Return the scheduler and runtime that start() made; raise RuntimeError before start() (a bug)."""
        if self.scheduler is None:
            raise RuntimeError("the scheduler has not been started")
        return self.scheduler, self._runtime()

    def _runtime(self) -> Runtime:
        """Return the runtime that start() installed; raise RuntimeError before start() (a bug)."""
        if self.runtime is None:
            raise RuntimeError("the scheduler has not been started")
        return self.runtime

    def reload(self) -> bool:
        """Re-read the inventory and apply it; return whether it had no problems. A broken inventory file keeps
        everything as it is; a broken site file keeps that site's jobs as they are (both logged and alerted)."""
        try:
            inventory = load(self.path)
        except InventoryError as exc:
            _log_problems("reload refused, the current jobs stay", exc)
            return False
        rt = self._runtime()
        if inventory.oplog_url != rt.inventory.oplog_url:
            log.warning("reload: `oplog` changed in the inventory; restart the scheduler to use the new one")
        rt.inventory = inventory
        rt.notifier = Notifier(inventory.notify)
        rt.slots.resize(inventory.scheduler.max_parallel, _host_limits(inventory))
        return not self._apply(inventory)

    def _apply(self, inventory) -> dict[str, list[str]]:
        """Given an inventory, bring the stored jobs and digests in line with it, alert about the sites that
        cannot be scheduled, and return their problems by site."""
        scheduler, rt = self._started()
        specs, problems = job_specs(inventory)
        options = inventory.scheduler
        changes = sync_jobs(scheduler, specs, options.jitter_seconds, options.misfire_grace_seconds, broken=problems)
        log.info("jobs: %s", describe(changes))
        self._alert(problems)
        for job in scheduler.get_jobs(jobstore="internal"):
            if job.id.startswith("digest:"):
                job.remove()
        for schedule, indexes in digest_schedules(inventory.notify).items():
            scheduler.add_job(
                send_digest,
                cron.trigger(schedule),
                args=[rt, indexes],
                id=f"digest:{schedule}",
                name=f"daily digest @ {schedule}",
                jobstore="internal",
                executor="internal",
            )
        return problems

    def _alert(self, problems: dict[str, list[str]]) -> None:
        """Given the sites that cannot be scheduled, log their problems and alert the `failure` channels about
        each site whose problems are new or changed since the last alert."""
        if problems:
            log.error(
                "%d site(s) cannot be scheduled as written, their stored jobs stay: %s",
                len(problems),
                "; ".join(problem_lines(problems)),
            )
        for site, lines in sorted(problems.items()):
            if self.alerted.get(site) != lines:
                self._runtime().notifier.send(events.broken_site(site, lines))
        self.alerted = {site: list(lines) for site, lines in problems.items()}

    def _health(self) -> None:
        try:
            self.watch.check(self.runtime)
        except Exception:  # noqa: BLE001 - a broken check must not kill the hourly job for good
            log.exception("health check failed")
        self._deliver_notes()

    def _deliver_notes(self) -> None:
        """Send the tracker notes whose retry is due, so a tracker that was down gets them within the hour even
        when no operation finishes meanwhile."""
        try:
            rt = self._runtime()
            if tracker.configured(rt.inventory):
                from orchestrator.tracker.delivery import deliver_pending

                deliver_pending(rt.oplog, rt.inventory)
        except Exception:  # noqa: BLE001 - the notes stay queued for the next round
            log.warning("tracker notes not delivered", exc_info=True)

    def stop(self) -> bool:
        """Stop scheduling; give running jobs `stop_grace` seconds, then record the rest as interrupted.

        Return whether every job finished (if not, `threads_left` is set: the process must exit hard).
        """
        log.info("stopping: no new runs")
        scheduler, rt = self._started()
        scheduler.pause()
        rt.stopping.set()
        running = rt.inflight
        if running:
            log.info("waiting up to %ss for %d running job(s)", self.stop_grace, running)
        finished = rt.wait_idle(self.stop_grace)
        if not finished:
            self._interrupt_leftovers(rt)
        scheduler.shutdown(wait=False)
        runtime.install(None)
        self.threads_left = not finished
        log.info("scheduler stopped")
        return finished

    def _interrupt_leftovers(self, rt: Runtime) -> None:
        reason = f"the scheduler stopped (pid {leader.identity()['pid']}) before the operation finished"
        try:
            ids = interrupt_own_operations(rt.oplog, reason)
        except Exception as exc:  # noqa: BLE001 - the database may be why we stop; the reaper closes them later
            log.error("could not record the running operations as interrupted: %s", exc)
            return
        log.warning(
            "stopped with %d job(s) still running: operation(s) %s recorded as interrupted",
            rt.inflight,
            ", ".join(map(str, ids)) or "none yet",
        )


def _host_limits(inventory) -> dict[str, int]:
    return {name: host.max_parallel for name, host in inventory.hosts.items()}


def _safe_holder(lock) -> dict | None:
    try:
        return lock.holder()
    except Exception:  # noqa: BLE001 - only for a log line
        return None


def _who(holder: dict | None) -> str:
    if not holder:
        return "unknown holder"
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"


def _log_problems(what: str, exc: InventoryError) -> None:
    log.error("%s: %d problem(s):", what, len(exc.problems))
    for line in exc.problems:
        log.error("  %s", line)
