"""`orch rollback` and `orch releases`: back to an earlier release, and what releases there are; and settling a
promotion whose orch died after changing production (run by the CLI when it reaps dead operations).

Production's host is the record of what is live: the releases layout's `current` link and BAD_RELEASE marks, and
in both layouts the promotion journals (layouts.py), whichever orch or oplog made them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.backends.cms.playbook import playbook_for_site
from orchestrator.backends.envs import layouts
from orchestrator.backends.remote import connect
from orchestrator.errors import LockHeld, UsageError
from orchestrator.oplog.run import locked_operation

from .plan import Plan, execute
from .release import (
    HealthFailed,
    health_base,
    health_check,
    layout_for,
    live_revision,
    options,
    reload_php,
    undo_promotion,
)
from .targets import Target, target

log = logging.getLogger("orch.promote")


@dataclass
class RollbackPlan(Plan):
    """Which release production goes back to: a switch (releases layout) or promotions undone (in place)."""

    target: Target
    asked: str | None  # --to as given: the plan is decided again from it under the lock
    current: str | None  # the live release (releases) or the newest applied promotion (in place)
    to: str | None  # the release live afterwards (None in place: what was there before orch)
    undo: tuple[layouts.Journal, ...]  # in place: promotions undone, newest first; releases: unfinished ones

    def lines(self) -> list[str]:
        if self.target.site.layout == "releases":
            return [f"switch current from releases/{self.current} to releases/{self.to}; mark {self.current} bad"]
        return [
            f"undo promotion {j.id} (revision {j.meta.get('revision', '?')}, task {j.meta.get('task', '?')})"
            for j in self.undo
        ]

    def params(self) -> dict:
        return {"from": self.current, "to": self.to}

    def as_dict(self) -> dict:
        return {
            "site": self.site,
            "env": self.env,
            "task": self.task,
            "from": self.current,
            "to": self.to,
            "undo": [j.id for j in self.undo],
            "plan": self.lines(),
        }


def plan_rollback(inventory, site_name: str, *, task: str, to: str | None = None) -> RollbackPlan:
    """Given a site (and optionally the release to go back to), return the rollback's plan (reads only); raise
    UsageError if there is nothing to go back to, or production has no URL to health-check."""
    prod = target(inventory, site_name, "production")
    health_base(prod, "a rollback")  # checked before anything is switched back
    with connect(prod.host) as conn:
        layout = layout_for(conn, prod)
        if isinstance(layout, layouts.Releases):
            current = layout.current() or ""  # check() saw `current`
            chosen, unfinished = _releases_choice(layout, prod.site.name, current, to)
            return RollbackPlan("rollback", prod.site.name, "production", task, prod, to, current, chosen, unfinished)
        undo, left = _inplace_choice(layout, prod.site.name, to)
        return RollbackPlan("rollback", prod.site.name, "production", task, prod, to, undo[0].id, left, tuple(undo))


def _releases_choice(layout: layouts.Releases, site: str, current: str, to: str | None):
    """The release to switch to (`to`, or the one before the live one), and the unfinished promotions to it."""
    unfinished = tuple(layout.unfinished())
    if to is None:
        to = unfinished[-1].meta.get("previous") if unfinished else layout.previous_good(current)
        if not to:
            raise UsageError(f"{site}: no earlier good release than {current}")
    elif to not in {row["release"] for row in layout.listing()}:
        raise UsageError(f"{site}: no release {to!r} (see `orch releases {site}`)")
    if to == current:
        raise UsageError(f"{site}: release {to} is already live")
    return to, unfinished


def _inplace_choice(layout: layouts.InPlace, site: str, to: str | None):
    """The promotions to undo, newest first (the newest one, or all newer than `to`), and the one left live."""
    journals = layout.applied()
    ids = [j.id for j in journals]
    if to is not None and to not in ids:
        raise UsageError(f"{site}: no applied in-place promotion {to!r} (see `orch releases {site}`)")
    keep = ids.index(to) + 1 if to is not None else len(ids) - 1  # promotions left applied
    undo = list(reversed(journals[max(keep, 0) :]))
    if not undo:
        raise UsageError(f"{site}: no successful in-place promotion to undo" + (f" after {to}" if to else ""))
    return undo, ids[keep - 1] if keep > 0 else None


def rollback(oplog, inventory, plan: RollbackPlan) -> dict:
    """Given a plan, put production back (deciding again under the lock), check its health; return the outcome.
    Raise HealthFailed if production is not healthy afterwards."""

    def recheck(p: RollbackPlan) -> RollbackPlan:  # a promotion may have finished while we waited
        return plan_rollback(inventory, p.target.site.name, task=p.task, to=p.asked)

    return execute(oplog, plan, _apply_rollback, recheck=recheck)


def _apply_rollback(op, plan: RollbackPlan) -> dict:
    prod = plan.target
    with connect(prod.host) as conn:
        layout = layout_for(conn, prod)
        with op.step("switch back") as step:
            reason = f"rolled back by task {plan.task}"
            if isinstance(layout, layouts.Releases):
                to, current = str(plan.to), str(plan.current)  # both set for this layout
                layout.switch_to(to)
                layout.mark_bad(current, reason)
                for journal in plan.undo:  # the promotion that made it live never ended: it has now
                    layout.set_state(journal.id, "undone")
                done = f"current -> releases/{plan.to}; release {plan.current} marked bad"
            else:
                done = "; ".join(f"{j.id}: {layout.undo(j, reason)}" for j in plan.undo)
            step.output(done + reload_php(conn, prod))
        result: dict[str, Any] = {
            "site": prod.site.name,
            "from": plan.current,
            "to": plan.to,
            "undone": [j.id for j in plan.undo],
        }
        with op.step("health check") as step:
            result["revision"] = live_revision(conn, layout)
            step.output(health_check(prod, options(prod), playbook_for_site(prod.site), result["revision"]))
    op.artifact("rollback", str(plan.to or plan.current), details=result)
    return result


def releases(oplog, inventory, site_name: str) -> list[dict]:
    """The site's releases, newest first, read from production's host: release folders (releases layout) or
    promotion journals (in place), each `current`, `unverified` (live, its promotion never ended), `previous`
    or `bad`."""
    prod = target(inventory, site_name, "production")
    with connect(prod.host) as conn:
        layout = layout_for(conn, prod)
        if isinstance(layout, layouts.Releases):
            return layout.listing()
        rows, live = [], None
        for journal in reversed(layout.journals()):
            if journal.state == "abandoned":
                continue
            applied = journal.state in layouts.APPLIED
            status = "bad" if not applied else "previous" if live else "unverified" if journal.unfinished else "current"
            live = live or applied
            rows.append(
                {
                    "release": journal.id,
                    "revision": journal.meta.get("revision"),
                    "task": journal.meta.get("task"),
                    "created": journal.meta.get("created"),
                    "status": status,
                }
            )
        return rows


# -- settling promotions whose orch died -------------------------------------------------------------------------


def settle_verdict(journal: layouts.Journal) -> str:
    """Given the journal of a promotion whose orch died, return what makes production safe again:
    `abandon` (nothing live changed: clean up), `check` (every step but the health check ran: check now, keep
    or undo), `undo` (cut short mid-change, before or during migrations, or mid-undo) or `none` (it ended)."""
    state = journal.state
    if state == "prepared":
        return "abandon"
    if state == "migrated" or (state == "switched" and not journal.meta.get("migration")):
        return "check"
    return "undo" if journal.unfinished else "none"


def settle_interrupted(oplog, inventory, say: Callable[[str], None]) -> None:
    """Given an oplog whose dead operations were just reaped, settle each interrupted promotion of this machine
    that changed production and was not settled yet: check it now and keep it, or roll it back (see
    settle_verdict). Each gets a `recover` operation under its task, and one line to the user. A failure to
    settle is said, never raised: the command that opened the oplog goes on."""
    from orchestrator.oplog.process import machine

    settled = {
        str(op["params"].get("promotion")) for op in oplog.operations(action="recover") if op["status"] != "refused"
    }
    for op in oplog.operations(action="promote", oldest_first=True):
        if op["status"] != "interrupted" or op["host"] != machine() or str(op["id"]) in settled:
            continue
        journal = next((a["ident"] for a in oplog.operation(op["id"])["artifacts"] if a["kind"] == "journal"), None)
        if journal is None:
            continue  # died before its journal: production was never changed
        try:
            message = _settle(oplog, inventory, op, journal)
        except LockHeld:
            continue  # someone is on it right now
        except Exception as exc:  # noqa: BLE001 -- told to the user; the command that opened the oplog goes on
            message = (
                f"{op['site']}: promotion {op['id']} (task {op['task']}) was interrupted and could not be "
                f"settled: {exc}; see `orch releases {op['site']}`, then `orch rollback {op['site']}`"
            )
        if message:
            say(message)


def _settle(oplog, inventory, promotion: dict, journal_id: str) -> str:
    prod = target(inventory, promotion["site"], "production")
    what = f"{prod.site.name}: promotion {promotion['id']} (task {promotion['task']}) was interrupted"
    with (
        locked_operation(
            oplog,
            site=prod.site.name,
            env="production",
            task=promotion["task"],
            action="recover",
            params={"promotion": promotion["id"], "journal": journal_id},
        ) as op,
        connect(prod.host) as conn,
    ):
        layout = layout_for(conn, prod)
        journal = layout.journal(journal_id)
        verdict = settle_verdict(journal) if journal else "none"
        with op.step(f"settle promotion {promotion['id']} ({journal.state if journal else 'no journal'})") as step:
            if journal is None or verdict == "none":
                step.skip("nothing to do: it had ended")
                return ""
            if verdict == "abandon":
                step.output(layout.abandon(journal))
                return f"{what} before production changed: its unfinished build was removed"
            if verdict == "check":
                try:
                    step.output(
                        health_check(prod, options(prod), playbook_for_site(prod.site), journal.meta.get("revision"))
                    )
                    layout.set_state(journal.id, "verified")
                    return (
                        f"{what} after its switch: checked now, healthy; release {journal.release} stays live "
                        f"(operation {op.id})"
                    )
                except HealthFailed as exc:
                    reason = str(exc)
            else:
                reason = f"interrupted while {journal.state}: the release was never checked"
            done = undo_promotion(
                conn,
                prod,
                layout,
                journal,
                f"promotion {promotion['id']} {reason}",
                migrated=journal.state in ("migrating", "migrated"),
            )
            step.output(done)
        op.artifact("rollback", journal.meta.get("revision", journal.id), details={"reason": reason})
        op.finish("rolled_back", error=f"promotion {promotion['id']} rolled back: {reason}")
        return f"{what} after production changed; rolled back ({reason}): {done} (operation {op.id})"
