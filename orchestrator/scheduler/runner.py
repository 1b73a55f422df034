"""What a scheduled job does: run the CLI's own action code on one site environment, inside the daemon's
concurrency slots, logged against the site's task, then tell the notification channels about a failure or a
recovery. `run_job(site, env, kind)` is the function every stored job references.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from orchestrator.actions.backup import backup_target
from orchestrator.actions.prune import prune_target
from orchestrator.actions.targets import target
from orchestrator.actions.verify import verify
from orchestrator.errors import LockHeld, OrchError
from orchestrator.notify import events
from orchestrator.oplog import process

from . import runtime
from .executor import context
from .jobs import FALLBACK_TASK
from .slots import Stopping

log = logging.getLogger("orch.scheduler")
FAILED = ("failed", "interrupted")


def _backup(oplog, t, *, task, catch_up) -> dict:
    summary = backup_target(oplog, t, task=task, catch_up=catch_up)
    return {"backup_id": summary["backup_id"]}


def _verify(oplog, t, *, task, catch_up) -> dict:
    return {"backup_id": verify(oplog, t, backup_id="latest", task=task, catch_up=catch_up)["backup_id"]}


def _prune(oplog, t, *, task, catch_up) -> dict:
    result = prune_target(oplog, t, task=task, catch_up=catch_up)
    return {"dropped": len(result["drop"])}


def _drill(oplog, t, *, task, catch_up) -> dict:
    from orchestrator.actions.drill import boot_drill, plan_drill

    inventory = runtime.current().inventory
    plan = plan_drill(oplog, inventory, t.site.name, backup_id="latest", task=task)
    report = boot_drill(oplog, inventory, plan, catch_up=catch_up)  # a failure is reported below, like any job's
    return {"backup_id": report["backup_id"], "rto_seconds": report["rto_seconds"]}


ACTIONS = {"backup": _backup, "verify": _verify, "prune": _prune, "drill": _drill}


def run_job(site: str, env: str, kind: str) -> dict:
    """Given a site, an environment and a kind (backup, verify, prune), run it now with the daemon's current
    inventory; return the run's result dict (status ok, failed, refused or skipped). Never raises for an orch
    error."""
    rt = runtime.current()
    catch_up = bool(getattr(context, "catch_up", False))
    with rt.running():
        run = {"site": site, "env": env, "kind": kind, "catch_up": catch_up}
        started = process.now() - timedelta(seconds=1)
        if site in rt.inventory.broken:  # its file broke after the job was stored: fail loudly until fixed
            run |= {"status": "failed", "error": "; ".join(rt.inventory.broken[site])}
            report(rt, run, started)
            return run
        try:
            t = target(rt.inventory, site, env)
        except OrchError as exc:  # removed by a reload that raced with this run
            log.warning("%s %s/%s skipped: %s", kind, site, env, exc)
            return run | {"status": "skipped", "error": str(exc)}
        run |= {"host": t.host.name, "task": t.site.task or FALLBACK_TASK}
        try:
            with rt.slots.hold(t.host.name, rt.stopping):
                log.info("%s %s/%s starts%s (task %s)", kind, site, env, _late(catch_up), run["task"])
                run |= {"status": "ok"} | ACTIONS[kind](rt.oplog, t, task=run["task"], catch_up=catch_up)
        except Stopping as exc:
            log.warning("%s %s/%s %s", kind, site, env, exc)
            return run | {"status": "skipped", "error": str(exc)}
        except LockHeld as exc:  # someone else works on the site: not a failure of the site
            run |= {"status": "refused", "error": str(exc)}
        except OrchError as exc:
            run |= {"status": "failed", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one site's bug must not stop the daemon
            log.exception("%s %s/%s: unexpected error", kind, site, env)
            run |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        report(rt, run, started)
        return run


def _late(catch_up: bool) -> str:
    scheduled = getattr(context, "scheduled", None)
    if not catch_up or scheduled is None:
        return ""
    return f" as a catch-up of the run due {scheduled.astimezone().isoformat(sep=' ', timespec='seconds')}"


def report(rt, run: dict, started) -> None:
    """Given a finished run, log it and send `failure` or `recovery` events; never raises. A run its operation
    recorded `refused` (the site was locked, a guard stopped it before any change) is logged, not alerted: it
    is no failure of the site, and a refusal that lasts shows in health as a backup too old."""
    try:
        own, previous = _operations(rt.oplog, run, started)
        run["operation_id"] = own["id"] if own else None
        if own is not None and own["status"] == "refused":
            run["status"] = "refused"
        if run["status"] == "refused":
            log.warning(
                "%s %s/%s refused, nothing changed (operation %s): %s",
                run["kind"],
                run["site"],
                run["env"],
                run["operation_id"],
                run["error"],
            )
        elif run["status"] == "ok":
            log.info("%s %s/%s ok (operation %s)", run["kind"], run["site"], run["env"], run["operation_id"])
            if previous and previous["status"] in FAILED:
                rt.notifier.send(events.recovery(run | {"previous_status": previous["status"]}))
        else:
            log.error(
                "%s %s/%s FAILED (operation %s): %s",
                run["kind"],
                run["site"],
                run["env"],
                run["operation_id"],
                run["error"],
            )
            rt.notifier.send(events.failure(run))
    except Exception:  # noqa: BLE001 - reporting must never turn a finished run into a crash
        log.exception("%s %s/%s: could not report the result", run["kind"], run["site"], run["env"])


def _operations(oplog, run: dict, started) -> tuple[dict | None, dict | None]:
    """Given a finished run and when it started, return (its operation, the previous finished one of the same
    site, env and action) from the oplog; either may be None."""
    recent = [op for op in oplog.operations(site=run["site"], action=run["kind"], limit=20) if op["env"] == run["env"]]
    own = next((op for op in reversed(recent) if datetime.fromisoformat(op["started_at"]) >= started), None)
    before = [op for op in recent if own is None or op["id"] < own["id"]]
    previous = next((op for op in before if op["status"] not in ("running", "refused")), None)
    return own, previous
