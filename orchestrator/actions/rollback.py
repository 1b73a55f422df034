"""`orch rollback` and `orch releases`: back to an earlier release, and what releases there are."""
from __future__ import annotations

from orchestrator.backends.cms.playbook import playbook_for_site
from orchestrator.backends.envs import layouts
from orchestrator.backends.remote import connect
from orchestrator.errors import UsageError
from orchestrator.oplog.run import locked_operation

from .promote import health_check, layout_for, live_revision, reload_php
from .targets import target


def rollback(oplog, inventory, site_name: str, *, task: str, to: str | None = None) -> dict:
    """Put production back on an earlier release (releases layout) or undo the last promotion (in place)."""
    site = inventory.site(site_name)
    prod = target(inventory, site.name, "production")
    with locked_operation(oplog, site=site.name, env="production", task=task, action="rollback",
                          params={"to": to}) as op, connect(prod.host) as conn:
        layout = layout_for(conn, prod)
        with op.step("switch back") as step:
            if isinstance(layout, layouts.Releases):
                current = layout.current()
                chosen = to or layout.previous_good(current)
                if not chosen:
                    raise UsageError(f"{site.name}: no earlier good release than {current}")
                layout.switch(chosen)
                layout.mark_bad(current, f"rolled back by task {task}")
                result = {"from": current, "to": chosen}
            else:
                last = _last_inplace_promotion(oplog, site.name, to)
                done = layout.undo(last)
                op.artifact("undone-promotion", str(last))
                result = {"undone_operation": last, "restored": len(done["restored"]), "deleted": len(done["deleted"])}
            step.output(str(result) + reload_php(conn, prod))
        with op.step("health check") as step:
            result["revision"] = live_revision(conn, layout)
            step.output(health_check(prod, playbook_for_site(site), result["revision"]))
        op.artifact("rollback", str(result.get("to") or result.get("undone_operation")), details=result)
        return {"site": site.name, **result}


def _last_inplace_promotion(oplog, site: str, to: str | None) -> int:
    """The newest successful in-place promotion not undone yet (or the one with id `to`)."""
    undone = {a["ident"] for op in oplog.operations(site=site, action="rollback", with_details=True)
              if op["status"] == "ok" for a in op.get("artifacts", []) if a["kind"] == "undone-promotion"}
    promotions = [op for op in oplog.operations(site=site, action="promote")
                  if op["status"] == "ok" and str(op["id"]) not in undone]
    if to:
        promotions = [op for op in promotions if str(op["id"]) == to]
    if not promotions:
        raise UsageError(f"{site}: no successful in-place promotion to undo" + (f" with id {to}" if to else ""))
    return promotions[0]["id"]


def releases(oplog, inventory, site_name: str) -> list[dict]:
    """The site's releases: from the host (releases layout) or from promotions in the oplog (in place)."""
    site = inventory.site(site_name)
    prod = target(inventory, site.name, "production")
    if site.layout == "releases":
        with connect(prod.host) as conn:
            return layouts.Releases(conn, prod.env.path).listing()
    rows = []
    for op in oplog.operations(site=site.name, action="promote", with_details=True):
        revision = next((a for a in op.get("artifacts", []) if a["kind"] == "revision"), None)
        rows.append({"release": str(op["id"]), "status": op["status"], "task": op["task"],
                     "created": op["started_at"], "revision": revision["ident"] if revision else None})
    return rows
