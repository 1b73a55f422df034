"""`orch verify SITE --boot`: a boot drill. Would the site really come back, and how fast?

The backup is restored into a throwaway copy on the staging host by the staging machinery itself (files,
database, config rewrite, URL replacement, sanitizing, a vhost with basic auth); then the copy's check URLs
(`verify.urls`, or the home page plus a sample of its sitemap) must each answer 200 without a redirect, show
their marker (`verify.markers`, and the playbook's on the home page), within `drill.response_time` seconds,
and the copy must add no PHP fatal or database error, and no flood of warnings, to the host's PHP error log.
The RTO is the time from the start of the restore to the home page's first good answer.

The copy is registered before its first change and removed at the end, whatever happened. Should this process
die without a chance to clean up (kill -9, a crash), a guard process started with the drill notices, and
removes the copy (`drill_guard.py`); a copy left anyway is removed by the site's next drill. A failed drill
alerts the `notify` channels (`failure` events), like a failed scheduled job.
"""

from __future__ import annotations

import http.client
import logging
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field

from orchestrator.backends.cms.playbook import playbook_for_site
from orchestrator.backends.envs import phplog, web
from orchestrator.backends.envs import staging as staging_model
from orchestrator.backends.remote import Command, connect
from orchestrator.backends.visual.urls import check_paths
from orchestrator.errors import OperationFailed, OrchError

from . import catalog, staging
from .plan import SitePlan, execute
from .snap import Subject, subject
from .targets import Target, target

log = logging.getLogger("orch.drill")
PREFIX = "drill-"  # throwaway copies are staging environments named drill-<hex>
DEFAULTS = {"response_time": 10, "timeout": 60, "max_php_warnings": 20}


@dataclass
class DrillPlan(SitePlan):
    """One boot drill: which backup, restored into which throwaway copy, checked how."""

    prod: Target
    backup: dict
    create: staging.CreatePlan  # staging's plan for the throwaway copy
    settings: dict
    error_log: str | None
    paths: list[str]  # the check URLs, from verify.urls or production's sitemap
    sampled: bool  # paths beyond `/` are a sitemap sample (a page newer than the backup may 404)
    leftovers: list[str] = field(default_factory=list)

    @property
    def copy(self) -> str:
        return self.create.env

    def lines(self) -> list[str]:
        s = self.settings
        lines = [f"remove {name}, left by an earlier drill that could not clean up" for name in self.leftovers]
        lines += [
            f"restore backup {self.backup['backup_id']} into the throwaway copy {self.copy}, as "
            "`staging create` would:",
            *(f"  {line}" for line in self.create.lines()),
            f"request {', '.join(self.paths)}: each must answer 200 with its marker within "
            f"{s['response_time']:g} s; the home page must answer well within {s['timeout']:g} s of the start "
            "(the RTO)" + ("; a sampled page that answers 404 is noted, not failed" if self.sampled else ""),
        ]
        if self.error_log:
            lines.append(
                f"read {self.create.host.name}:{self.error_log}: no PHP fatal or database error, at most "
                f"{s['max_php_warnings']} warnings from the copy"
            )
        else:
            lines.append(f"(hosts.{self.create.host.name}.web.php_error_log is not set: the PHP error log is not read)")
        return lines + [f"remove the copy {self.copy} (also on failure or interruption)"]

    def params(self) -> dict:
        return {"backup_id": self.backup["backup_id"], "copy": self.copy, "boot": True}


def plan_drill(
    oplog, inventory, site_name: str, *, backup_id: str = "latest", task: str, name: str | None = None
) -> DrillPlan:
    """Given a site and a backup of its production, return the boot drill's plan (reads only). Raise UsageError
    if the site has no staging template, the staging host no `web` block, or there is no such backup."""
    prod = target(inventory, site_name, "production")
    with connect(prod.host) as conn:
        backup = catalog.resolve(catalog.list_backups(prod, conn, oplog), backup_id)
    name = name or PREFIX + secrets.token_hex(3)
    create = staging.plan_create(oplog, inventory, prod.site.name, task=task, name=name, source=backup["backup_id"])
    leftovers = [
        row["name"] for row in oplog.envs(prod.site.name) if row["name"].startswith(PREFIX) and row["name"] != name
    ]
    settings = DEFAULTS | {k: v for k, v in (prod.site.drill or {}).items() if k in DEFAULTS}
    # staging copies hide their sitemap (noindex), so the sample comes from production's, as visitors see it
    live = subject(oplog, inventory, prod.site.name, "production")
    paths = check_paths(prod.site, live.fetch, live.base_url)
    return DrillPlan(
        "drill",
        prod.site.name,
        "production",
        str(task),
        prod,
        backup,
        create,
        settings,
        (create.host.web or {}).get("php_error_log"),
        paths,
        not (prod.site.verify or {}).get("urls"),
        leftovers,
    )


def boot_drill(oplog, inventory, plan: DrillPlan, *, notifier=None, catch_up: bool = False) -> dict:
    """Run a boot drill as one locked operation; return its report. Raise OperationFailed (after alerting
    `notifier`'s channels, when given) if the copy did not come up as it should."""

    def recheck(p: DrillPlan) -> DrillPlan:  # an earlier drill's copy may have been cleaned up meanwhile
        again = plan_drill(oplog, inventory, p.site, backup_id=p.backup["backup_id"], task=p.task, name=p.copy)
        again.paths = p.paths  # the pages the plan named
        return again

    def apply(op, p: DrillPlan) -> dict:
        report = _run(oplog, inventory, op, p)
        if report["problems"]:
            error = f"{p.site}: boot drill of backup {p.backup['backup_id']} FAILED: " + "; ".join(report["problems"])
            if notifier is not None:
                _alert(notifier, p, op, error)
            raise OperationFailed(error)
        return report

    return execute(oplog, plan, apply, recheck=recheck, catch_up=catch_up)


def _run(oplog, inventory, op, plan: DrillPlan) -> dict:
    for name in plan.leftovers:
        _remove(oplog, op, inventory, plan, name)
    guard = _spawn_guard(inventory, plan)
    started = time.monotonic()
    try:
        report = _boot_and_check(oplog, op, plan, started)
    finally:
        try:
            _remove(oplog, op, inventory, plan, plan.copy)
        finally:
            guard.terminate()
            guard.wait(timeout=10)
    report["seconds"] = round(time.monotonic() - started, 2)
    op.artifact(
        "drill",
        f"{plan.backup['backup_id']}: "
        + (f"RTO {report['rto_seconds']:.1f} s" if report["rto_seconds"] is not None else "no good answer")
        + f", {sum(r['ok'] for r in report['urls'])}/{len(report['urls'])} URLs ok",
        details=report,
    )
    return report


def _boot_and_check(oplog, op, plan: DrillPlan, started: float) -> dict:
    """Restore the copy, time its first good answer, check every URL and the error log; return the report."""
    problems: list[str] = []
    staged, host = plan.create.staged, plan.create.host
    report = {
        "site": plan.site,
        "backup_id": plan.backup["backup_id"],
        "copy": plan.copy,
        "url": staged.env.url,
        "rto_seconds": None,
        "urls": [],
        "php": None,
        "problems": problems,
    }
    with connect(host) as conn:
        offset = phplog.size(conn, plan.error_log) if plan.error_log else None
        deadline = started + plan.settings["timeout"]
        try:
            staging._apply_create(oplog, op, plan.create)
        except OrchError as exc:
            problems.append(f"the restored copy did not come up: {exc}")
            deadline = 0  # it had its chance: one more look, no waiting
        subj = Subject(
            plan.prod.site,
            staged.env,
            staged.url,
            (host.web or {}).get("connect"),
            (staging_model.AUTH_USER, staged.auth_password.reveal()),
        )
        checks = _Checks(subj, playbook_for_site(plan.prod.site), plan.settings)
        with op.step("first good answer of the home page (RTO)") as step:
            report["rto_seconds"] = checks.first_good_answer(deadline, started)
            step.output(f"{report['rto_seconds']} s" if report["rto_seconds"] is not None else "never")
        if report["rto_seconds"] is None and deadline:
            problems.append(f"the home page gave no good answer within {plan.settings['timeout']:g} s")
        report["urls"] = _request_all(op, checks, plan, problems)
        if plan.error_log:
            with op.step("read the PHP error log") as step:
                found = _errors(conn, plan, plan.error_log, offset)
                report["php"] = found.as_dict()
                step.output(
                    f"{len(found.fatal)} fatal, {len(found.database)} database errors, {len(found.warning)} warnings"
                )
                problems += _php_problems(found, plan.settings["max_php_warnings"])
    return report


def _request_all(op, checks: _Checks, plan: DrillPlan, problems: list[str]) -> list[dict]:
    """Request every check URL once; record each as a `check-url` artifact, add its problem; return the results."""
    results = []
    with op.step("request the check URLs") as step:
        for path in plan.paths:
            result = checks.probe(path)
            if plan.sampled and path != "/" and result["status"] == 404:
                result["note"] = "answers 404: a page newer than the backup?"
            elif not result["ok"]:
                problems.append(f"{path} {result['problem']}")
            results.append(result)
            op.artifact(
                "check-url",
                f"{path}: {result['status']} in {result['seconds']:.2f} s"
                + ("" if result["ok"] else f" ({result.get('note') or result['problem']})"),
                details=result,
            )
            step.output(f"{path}: {result['status']} {result['seconds']:.2f} s {result['problem'] or 'ok'}\n")
    return results


class _Checks:
    """Requests to the copy: one check URL at a time, each judged on status, marker and time."""

    def __init__(self, subj: Subject, playbook, settings: dict):
        self.subj, self.playbook, self.limit = subj, playbook, float(settings["response_time"])
        self.markers = (subj.site.verify or {}).get("markers") or {}

    def probe(self, path: str) -> dict:
        """Given a path, request it once; return {path, status, seconds, bytes, ok, problem}."""
        started = time.monotonic()
        try:
            status, headers, body = web.fetch(
                self.subj.url(path),
                connect_to=self.subj.connect_to,
                auth=self.subj.auth,
                timeout=self.limit + 2,
                follow_redirects=False,
            )
        except (OSError, http.client.HTTPException) as exc:
            return {
                "path": path,
                "status": None,
                "seconds": round(time.monotonic() - started, 3),
                "bytes": 0,
                "ok": False,
                "problem": f"gave no answer ({exc})",
            }
        seconds = round(time.monotonic() - started, 3)
        problem = self._judge(path, status, headers, body, seconds)
        return {
            "path": path,
            "status": status,
            "seconds": seconds,
            "bytes": len(body.encode()),
            "ok": not problem,
            "problem": problem,
        }

    def _judge(self, path: str, status: int, headers: dict, body: str, seconds: float) -> str | None:
        if status != 200:
            where = {k.lower(): v for k, v in headers.items()}.get("location")
            return f"answered {status}" + (f" (to {where})" if where else "")
        if seconds > self.limit:
            return f"took {seconds:.1f} s (limit {self.limit:g} s)"
        marker = self.markers.get(path)
        if marker and marker not in body:
            return f"lacks its marker {marker!r}"
        if path == "/" and not self.playbook.healthy(body):
            return "lacks the playbook's health marker"
        return None

    def first_good_answer(self, deadline: float, started: float) -> float | None:
        """Poll the home page until it answers well; return the seconds since `started`, or None at deadline."""
        while True:
            if self.probe("/")["ok"]:
                return round(time.monotonic() - started, 2)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)


def _errors(conn, plan: DrillPlan, error_log: str, offset: int | None) -> phplog.Findings:
    """The copy's entries in `error_log` since `offset`: those naming its real docroot or its database."""
    staged = plan.create.staged
    real = conn.run(Command("readlink", "-f", "--", staged.path), check=False).text.strip()
    tokens = [
        t
        for t in {
            staged.path.rstrip("/") + "/",
            real.rstrip("/") + "/" if real else "",
            staged.env.database.name if staged.env.database else "",
        }
        if t
    ]
    return phplog.findings(phplog.read_since(conn, error_log, offset or 0), tokens)


def _php_problems(found: phplog.Findings, max_warnings: int) -> list[str]:
    problems = []
    if found.fatal:
        problems.append(f"PHP fatal error: {found.fatal[0][:200]}")
    if found.database:
        problems.append(f"database error: {found.database[0][:200]}")
    if len(found.warning) > max_warnings:
        problems.append(f"{len(found.warning)} PHP warnings (at most {max_warnings})")
    return problems


def _remove(oplog, op, inventory, plan: DrillPlan, name: str) -> None:
    """Remove a throwaway copy (registered or half made) within the running operation."""
    if not any(row["name"] == name for row in oplog.envs(plan.site)):
        return
    staging._apply_destroy(oplog, op, staging.plan_destroy(oplog, inventory, plan.site, name=name, task=plan.task))


def remove_copy(oplog, inventory, site: str, name: str, *, task: str) -> dict | None:
    """Remove a throwaway copy left by a drill that died, as its own locked operation (`staging-destroy`);
    return the outcome, or None if it is gone already."""
    if not any(row["name"] == name for row in oplog.envs(site)):
        return None
    return staging.destroy(oplog, inventory, staging.plan_destroy(oplog, inventory, site, name=name, task=task))


def _spawn_guard(inventory, plan: DrillPlan) -> subprocess.Popen:
    """Start the process that removes the copy should this one die first (its own session: a signal to our
    process group does not reach it)."""
    argv = [
        sys.executable,
        "-m",
        "orchestrator.actions.drill_guard",
        str(inventory.path),
        plan.site,
        plan.copy,
        plan.task,
        str(os.getpid()),
    ]
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _alert(notifier, plan: DrillPlan, op, error: str) -> None:
    from orchestrator.notify import events

    run = {
        "kind": "drill",
        "site": plan.site,
        "env": plan.env,
        "host": plan.create.host.name,
        "task": plan.task,
        "operation_id": op.id,
        "status": "failed",
        "error": error,
        "backup_id": plan.backup["backup_id"],
    }
    notifier.send(events.failure(run))
