"""What a dead orchestrator may have left running on its hosts: found and stopped when its operation is reaped.

Each command's watchdog stops it when orch dies, so normally nothing is left. This is the check behind that
promise, for a watchdog that could not act (killed itself, or its host froze while orch died)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from orchestrator.errors import OrchError

from . import connect
from .supervise import owner, sweep_command

log = logging.getLogger("orch.remote")


def stop_leftovers(inventory: Callable[[], object], operation: dict) -> str | None:
    """Given the inventory (loaded on demand) and a dead operation (its `pid`, `host` and `site`), stop every
    process its orchestrator left on the site's hosts. Return a note saying what was stopped, or which host
    could not be checked; None when nothing was left."""
    try:
        hosts = hosts_of(inventory(), operation.get("site"))
    except OrchError as exc:
        return f"its hosts were not checked for leftover processes ({exc})"
    dead = owner(operation["host"], operation["pid"])
    notes = []
    for host in hosts:
        try:
            with connect(host) as conn:
                found = conn.run(sweep_command(dead), timeout=60).text.splitlines()
        except OrchError as exc:
            notes.append(f"host {host.name} not checked for leftover processes ({exc})")
            continue
        if found:
            what = "; ".join(line.partition(" ")[2][:80] for line in found[:5])
            notes.append(f"stopped {len(found)} leftover process(es) on host {host.name}: {what}")
    for note in notes:
        log.warning("operation %s: %s", operation["id"], note)
    return "; ".join(notes) or None


def hosts_of(inventory, site: str | None) -> list:
    """Return the inventory Hosts a site's environments live on (none for an unknown or missing site)."""
    found = inventory.sites.get(site) if site else None
    names = sorted({env.host for env in found.environments.values() if env.host}) if found else []  # docker: none
    return [inventory.hosts[name] for name in names if name in inventory.hosts]
