"""`orch scheduler run|plan|status|reload`: the unattended user of orch."""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

from orchestrator import progress
from orchestrator.errors import ExitCode, InventoryError, OperationFailed
from orchestrator.masking import mask
from orchestrator.oplog import process

from .app import MaskingFormatter, json_option, pass_app
from .live import LogLines
from .output import human_duration, short_time

FIGURES_EVERY = 30.0  # seconds between two log lines of one step's progress


def daemon_logging(verbosity: int) -> None:
    """Log lines fit for a service: level first; a timestamp unless systemd's journal adds its own."""
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(levelname)s %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(fmt))
    for name, level in (
        ("orch", logging.INFO if verbosity <= 1 else logging.DEBUG),
        ("apscheduler", logging.WARNING if verbosity <= 1 else logging.INFO),
    ):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.WARNING if verbosity < 0 else level)
        logger.propagate = False
    # every step of every run would flood the service log; -v brings them back
    logging.getLogger("orch.progress").setLevel(logging.INFO if verbosity > 1 else logging.WARNING)
    # a long step's figures, at most every 30 s (a short step logs none): shown unless -q
    figures = logging.getLogger("orch.progress.figures")
    figures.setLevel(logging.WARNING if verbosity < 0 else logging.INFO)
    progress.use(LogLines(figures, every=FIGURES_EVERY))


@click.group("scheduler")
def scheduler_group():
    """Back up, prune and verify every site on schedule, unattended.

    Jobs come from the inventory (backup.schedule, verify.schedule, prune.schedule per site) and are kept in
    the oplog database, so runs missed while the daemon was down are caught up once when it returns.
    """


@scheduler_group.command("run")
@click.option(
    "--health-interval",
    type=click.FloatRange(min=1),
    default=3600,
    show_default=True,
    metavar="SECONDS",
    help="How often backup health is evaluated (alarms go to `notify` channels with `health`).",
)
@click.option(
    "--stop-grace",
    type=click.FloatRange(min=0),
    default=60,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM, how long running jobs may finish before they are recorded as interrupted.",
)
@click.option(
    "--standby-poll",
    type=click.FloatRange(min=0.1),
    default=2,
    show_default=True,
    metavar="SECONDS",
    help="How often a standby checks whether the active scheduler is gone.",
)
@pass_app
def run_cmd(app, health_interval, stop_grace, standby_poll):
    """Run the scheduler in the foreground (a systemd `Type=simple` service).

    Logs to stderr. SIGHUP re-reads the inventory (an invalid one keeps the current jobs); SIGTERM stops
    cleanly. A second scheduler on the same oplog database waits as a standby and takes over when the
    active one dies.

    \b
    Example unit:
      [Service]
      ExecStart=/usr/local/bin/orch -i /etc/orch/inventory.yaml scheduler run
      ExecReload=/bin/kill -HUP $MAINPID
      Restart=always
    """
    from orchestrator.scheduler import Daemon

    daemon_logging(app.verbosity)
    daemon = Daemon(
        app.inventory_path, health_interval=health_interval, stop_grace=stop_grace, standby_poll=standby_poll
    )
    daemon.install_signals()
    code = daemon.run()
    if daemon.threads_left:
        # worker threads blocked on remote commands cannot be joined; their operations are already closed
        logging.shutdown()
        os._exit(code)
    raise click.exceptions.Exit(code)


@scheduler_group.command("plan")
@json_option
@pass_app
def plan_cmd(app):
    """Every scheduled job's next run, per host, with warnings for over-subscribed nightly windows, per host
    (hosts.X.max_parallel) and for the whole fleet (scheduler.max_parallel), estimated from the last durations
    in the oplog.

    \b
    Example:
      orch scheduler plan --json
    """
    from orchestrator.scheduler.plan import plan

    result = plan(app.inventory, app.oplog)
    rows = [
        job | {"next": short_time(job["next_run"]), "estimate": human_duration(job["estimated_seconds"])}
        for job in sorted(result["jobs"], key=lambda job: job["host"])
    ]  # stable: by host, then by time
    app.emit(
        result,
        [
            ("host", "host"),
            ("next", "next run"),
            ("kind", "job"),
            ("site", "site"),
            ("env", "env"),
            ("schedule", "schedule"),
            ("estimate", "typical"),
            ("task", "task"),
        ],
        rows=rows,
    )
    if not app.json:
        for host in result["hosts"]:
            window = host["nightly_window"] or "no window"
            app.say(
                f"host {host['host']}: {host['jobs']} job(s), max_parallel {host['max_parallel']}, {window}"
                + (f", ~{human_duration(host['estimated_seconds'])} of work in it" if host["window_seconds"] else "")
            )
        fleet = result["fleet"]
        if fleet["window_seconds"]:
            app.say(
                f"fleet: {fleet['hosts']} host(s) with a window, scheduler.max_parallel {fleet['max_parallel']}, "
                f"~{human_duration(fleet['needed_seconds'])} of work per slot on the busiest night, for a "
                f"{human_duration(fleet['window_seconds'])} window"
            )
        app.say(f"times in {result['timezone']}")
    for line in result["warnings"]:
        app.say(f"warning: {line}")
    for line in result["problems"]:
        click.echo(f"orch: {mask(line)}", err=True)
    if result["problems"]:  # the plan of every other site is shown; these sites are not scheduled as written
        raise click.exceptions.Exit(ExitCode.FAILED)


def _holder(app):
    from orchestrator.scheduler import leader

    return leader.for_oplog(app.oplog).holder()


@scheduler_group.command("status")
@json_option
@pass_app
def status_cmd(app):
    """Which scheduler is active on this oplog database (pid, machine, since), and its stored jobs.

    \b
    Example:
      orch scheduler status --json
    """
    from orchestrator.scheduler.plan import stored_next_runs

    active = _holder(app)
    jobs = [
        {"id": job_id, "next_run": when.isoformat()}
        for job_id, when in sorted(stored_next_runs(app.oplog.engine).items(), key=lambda item: item[1])
    ]
    app.emit(
        {"active": active, "jobs": jobs},
        [("id", "job"), ("next", "next run (utc)")],
        rows=[job | {"next": short_time(job["next_run"])} for job in jobs],
    )
    if not app.json:
        app.say(
            f"active scheduler: pid {active['pid']} on {active['host']} since {active['since']}"
            if active
            else "no scheduler is active on this oplog database"
        )


@scheduler_group.command("reload")
@json_option
@pass_app
def reload_cmd(app):
    """Make the running scheduler re-read the inventory (SIGHUP), after checking the inventory here first.

    A broken inventory file is not sent (the scheduler keeps its current jobs); a broken site file keeps that
    site's jobs as they are while the rest is reloaded (exit 1).

    \b
    Example:
      orch scheduler reload
    """
    try:
        _ = app.inventory  # checked here: a broken inventory would only be refused by the daemon's log
    except InventoryError as exc:
        raise InventoryError([*exc.problems, "not reloaded: the scheduler keeps its current jobs"]) from None
    active = _holder(app)
    if not active or not active.get("pid"):
        raise OperationFailed("no scheduler is active on this oplog database")
    if active["host"] != process.machine():
        raise OperationFailed(
            mask(
                f"the active scheduler runs on {active['host']} (pid {active['pid']}): "
                "run `orch scheduler reload` there"
            )
        )
    try:
        os.kill(active["pid"], signal.SIGHUP)
    except ProcessLookupError:
        raise OperationFailed(f"the active scheduler (pid {active['pid']}) is gone") from None
    app.emit({"reloaded": True, **active, "broken": sorted(app.inventory.broken)})
    app.say(f"reload requested from the scheduler (pid {active['pid']}); its log says what changed")
    if app.broken_sites():
        app.say("the sites of broken files keep their current jobs")
        raise click.exceptions.Exit(ExitCode.FAILED)


COMMANDS = [scheduler_group]
