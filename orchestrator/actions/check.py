"""`orch check`: can we reach every host, database and storage the inventory names, with which tools?"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from orchestrator.backends.engines import engine_for
from orchestrator.backends.remote import Command, connect
from orchestrator.errors import HostKeyError, OrchError

TOOLS = ("mariadb-dump", "mysqldump", "pg_dump", "php", "rsync", "python3")
# Our own constant probe; the restic path from the inventory arrives as "$1", quoted by Command.
PROBE = """printf 'restic\\t%s\\n' "$("$1" version 2>/dev/null | head -n1 || true)"
shift
for t in "$@"; do
  if command -v "$t" >/dev/null 2>&1; then printf '%s\\t%s\\n' "$t" "$("$t" --version 2>&1 | head -n1)"
  else printf '%s\\t\\n' "$t"; fi
done"""


@dataclass
class CheckRow:
    site: str
    env: str
    host: str
    check: str
    ok: bool
    detail: str


def probe_host(host) -> dict:
    """Connect to a host and return {'ok', 'detail', 'tools': {tool: version line or ''}, 'refused'}."""
    started = time.monotonic()
    try:
        with connect(host) as conn:
            out = conn.run(Command("sh", "-c", PROBE, "orch-probe", host.restic, *TOOLS)).text
    except HostKeyError as exc:
        return {"ok": False, "detail": str(exc), "tools": {}, "refused": True}
    except OrchError as exc:
        return {"ok": False, "detail": str(exc), "tools": {}, "refused": False}
    tools = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return {"ok": True, "detail": f"connected in {time.monotonic() - started:.2f}s", "tools": tools,
            "refused": False}


def tools_row(site, env, probe: dict) -> CheckRow:
    tools = probe["tools"]
    found = [f"{name} {_version(line)}" for name, line in tools.items() if line]
    missing = [name for name in ("restic", "rsync") if not tools.get(name)]
    db = env.database
    if db and db.engine == "mysql" and not (tools.get("mariadb-dump") or tools.get("mysqldump")):
        missing.append("mariadb-dump/mysqldump")
    if db and db.engine == "postgresql" and not tools.get("pg_dump"):
        missing.append("pg_dump")
    detail = ", ".join(found) + (f"; MISSING: {', '.join(missing)}" if missing else "")
    return CheckRow(site.name, env.name, env.host, "tools", not missing, detail)


def _version(line: str) -> str:
    words = [w for w in line.replace(",", " ").split() if w[:1].isdigit()]
    return words[0] if words else line[:30]


def database_row(site, env, host) -> CheckRow:
    db = env.database
    engine = engine_for(db, env.path)
    try:
        with connect(host) as conn:
            result = conn.run(engine.ping(), check=False, timeout=30)
        ok, detail = result.ok, (f"{db.engine} login ok" if result.ok else result.stderr.strip()[-300:])
    except OrchError as exc:
        ok, detail = False, str(exc)
    return CheckRow(site.name, env.name, env.host, "database", ok, detail)


def s3_status(storage) -> tuple[bool, str]:
    """Reach an S3 storage's bucket (creating it if allowed): (ok, detail)."""
    from orchestrator.backends.storage.s3 import ensure_bucket
    try:
        return True, f"{storage.name}: s3 bucket {storage.bucket} {ensure_bucket(storage)}"
    except OrchError as exc:
        return False, str(exc)


def storage_row(site, env, inventory, host, s3_results: dict) -> CheckRow:
    storage = inventory.storage.get(site.backup.storage) if site.backup.storage else None
    if storage is None:
        return CheckRow(site.name, env.name, env.host, "storage", True, "no backup storage configured")
    if storage.type == "s3":
        return CheckRow(site.name, env.name, env.host, "storage", *s3_results[storage.name])
    try:
        with connect(host) as conn:
            ok = conn.ok(Command("sh", "-c", 'test -w "$1" || test -w "$(dirname "$1")"', "orch", storage.path))
    except OrchError as exc:
        return CheckRow(site.name, env.name, env.host, "storage", False, str(exc))
    detail = f"local {storage.path} " + ("writable" if ok else f"NOT writable on host {host.name}")
    return CheckRow(site.name, env.name, env.host, "storage", ok, f"{storage.name}: {detail}")


def run_check(inventory, site_names: list[str] | None = None) -> tuple[list[dict], bool]:
    """Given the inventory and optional site names, check everything and return (rows, any_host_key_refused).

    Each host is probed once however many environments it serves; probes run in parallel.
    """
    sites = [inventory.site(n) for n in site_names] if site_names else list(inventory.sites.values())
    envs = [(site, env) for site in sites for env in site.environments.values()]
    host_names = sorted({env.host for _, env in envs})
    s3_names = sorted({s.backup.storage for s in sites if s.backup.storage
                       and getattr(inventory.storage.get(s.backup.storage), "type", None) == "s3"})
    with ThreadPoolExecutor(max_workers=8) as pool:
        probes = dict(zip(host_names, pool.map(lambda n: probe_host(inventory.hosts[n]), host_names), strict=True))
        s3_results = dict(zip(s3_names, pool.map(lambda n: s3_status(inventory.storage[n]), s3_names), strict=True))
        rows = list(pool.map(lambda se: _env_rows(inventory, probes, s3_results, *se), envs))
    return [asdict(r) for group in rows for r in group], any(p["refused"] for p in probes.values())


def _env_rows(inventory, probes, s3_results, site, env) -> list[CheckRow]:
    probe, host = probes[env.host], inventory.hosts[env.host]
    rows = [CheckRow(site.name, env.name, env.host, "connect", probe["ok"], probe["detail"])]
    if not probe["ok"]:
        return rows
    rows.append(tools_row(site, env, probe))
    if env.database:
        rows.append(database_row(site, env, host))
    rows.append(storage_row(site, env, inventory, host, s3_results))
    return rows
