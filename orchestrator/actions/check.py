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
    return {"ok": True, "detail": f"connected in {time.monotonic() - started:.2f}s", "tools": tools, "refused": False}


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


# Whether the SSH user may signal nginx, found without reloading it: the reload argv with `-s SIGNAL` dropped and
# `-T` added dumps the configuration nginx runs with (the same -c and -p), whose `pid` names the master's pid file.
NGINX_SIGNAL_PROBE = r"""skip=0
for a in "$@"; do
  shift
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  if [ "$a" = -s ]; then skip=1; continue; fi
  set -- "$@" "$a"
done
pidfile=$("$@" -T 2>/dev/null | sed -n 's/^[[:space:]]*pid[[:space:]]\{1,\}\([^;]*\);.*/\1/p' | head -n 1)
[ -n "$pidfile" ] || pidfile=$("$1" -V 2>&1 | sed -n 's/.*--pid-path=\([^ ]*\).*/\1/p')
[ -r "$pidfile" ] || { echo "cannot read the nginx pid file ${pidfile:-(none found)}" >&2; exit 1; }
pid=$(cat "$pidfile")
kill -0 "$pid" 2>/dev/null || { echo "may not signal the nginx master (pid $pid, $pidfile)" >&2; exit 1; }
echo "may signal the nginx master (pid $pid)"
"""


def permission_probe(argv: list[str], what: str) -> tuple[Command | None, str]:
    """Given a reload command (argv) and what it reloads, return a Command that tells, without reloading,
    whether the SSH user may run it (None if that cannot be told), and what a success means."""
    if argv and argv[0] == "sudo":  # `sudo -l COMMAND` says whether sudo would run it, and runs nothing
        return Command("sudo", "-n", "-l", *argv[1:]), "sudo allows it without a password"
    if argv and argv[0].rsplit("/", 1)[-1] == "nginx" and "-s" in argv:
        return Command("sh", "-c", NGINX_SIGNAL_PROBE, "orch-probe", *argv), ""
    return None, f"not checked: telling would {what}"


def web_rows(host) -> list[CheckRow]:
    """Given a host with a `web:` block, check it as the SSH user: the vhost folder is writable, the nginx
    configuration test passes, the php-fpm socket is there, and the user may reload nginx and php-fpm (sudo
    commands with `sudo -n -l`, `nginx -s reload` by signalling the master; nothing is reloaded)."""
    web = host.web
    rows: list[CheckRow] = []

    def add(check: str, command: Command | None, good: str, conn) -> None:
        if command is None:
            rows.append(CheckRow("", "", host.name, check, True, good))
            return
        result = conn.run(command, check=False, timeout=30)
        detail = (result.text.strip().splitlines() or [good])[-1] if result.ok else _last(result.stderr or result.text)
        rows.append(CheckRow("", "", host.name, check, result.ok, detail if result.ok else f"FAILED: {detail}"))

    try:
        with connect(host) as conn:
            add(
                "web sites_dir",
                Command(
                    "sh",
                    "-c",
                    'test -d "$1" && test -w "$1" && echo "$1 writable" || '
                    '{ echo "$1: not a folder this user may write in" >&2; exit 1; }',
                    "orch-probe",
                    web["sites_dir"],
                ),
                "",
                conn,
            )
            add("web nginx test", Command(*web["test"]), f"`{' '.join(web['test'])}` passed", conn)
            add(
                "web php socket",
                Command(
                    "sh",
                    "-c",
                    'test -S "$1" && echo "$1 is a socket" || '
                    '{ echo "$1: no such socket (is php-fpm running?)" >&2; exit 1; }',
                    "orch-probe",
                    web["php_socket"],
                ),
                "",
                conn,
            )
            probe, good = permission_probe(web["reload"], "reload nginx")
            add("web reload", probe, good, conn)
            if web.get("php_reload"):
                probe, good = permission_probe(web["php_reload"], "reload php-fpm")
                add("web php_reload", probe, good, conn)
            else:
                rows.append(
                    CheckRow(
                        "",
                        "",
                        host.name,
                        "web php_reload",
                        True,
                        "not set: after a promotion in place OPcache may serve old code, and in the "
                        "releases layout it keeps every release (see hosts.X.web.php_reload)",
                    )
                )
    except OrchError as exc:
        rows.append(CheckRow("", "", host.name, "web", False, str(exc)))
    return rows


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


def run_check(inventory, site_names: list[str] | None = None) -> tuple[list[dict], bool]:
    """Given the inventory and optional site names, check everything and return (rows, any_host_key_refused).

    Each host is probed once however many environments it serves, and its `web:` block checked once (rows with
    an empty site and env); probes run in parallel.
    """
    sites = [inventory.site(n) for n in site_names] if site_names else list(inventory.sites.values())
    envs = [(site, env) for site in sites for env in site.environments.values() if env.target != "docker"]
    host_names = sorted({env.host for _, env in envs})
    docker = [(site, env) for site in sites for env in site.environments.values() if env.target == "docker"]
    s3_names = sorted(
        {
            s.backup.storage
            for s in sites
            if s.backup.storage and getattr(inventory.storage.get(s.backup.storage), "type", None) == "s3"
        }
    )
    with ThreadPoolExecutor(max_workers=8) as pool:
        probes = dict(zip(host_names, pool.map(lambda n: probe_host(inventory.hosts[n]), host_names), strict=True))
        s3_results = dict(zip(s3_names, pool.map(lambda n: s3_status(inventory.storage[n]), s3_names), strict=True))
        rows = list(pool.map(lambda se: _env_rows(inventory, probes, s3_results, *se), envs))
        web_hosts = [inventory.hosts[n] for n in host_names if inventory.hosts[n].web and probes[n]["ok"]]
        rows += list(pool.map(web_rows, web_hosts))
        engines = list(pool.map(lambda se: docker_row(inventory, *se), docker))
    refused = any(p["refused"] for p in probes.values()) or any(r.refused for r in engines)
    return [asdict(r) for group in rows for r in group] + [asdict(r.row) for r in engines], refused


@dataclass
class _EngineRow:
    row: CheckRow
    refused: bool


def docker_row(inventory, site, env) -> _EngineRow:
    """Reach the Docker engine a site's copies are made on; say its version (or why it cannot be reached)."""
    from orchestrator.actions.staging_docker import engine_version  # the Docker SDK loads only when needed

    try:
        name, detail = engine_version(inventory, site)
    except HostKeyError as exc:
        return _EngineRow(CheckRow(site.name, env.name, "?", "docker", False, str(exc)), True)
    except OrchError as exc:
        return _EngineRow(CheckRow(site.name, env.name, "?", "docker", False, str(exc)), False)
    return _EngineRow(CheckRow(site.name, env.name, name, "docker", True, detail), False)


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
