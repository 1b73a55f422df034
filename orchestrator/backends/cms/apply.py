"""What a playbook does to a staging copy on its host: config files, database load, sanitizing, passwords,
mail and cron off. Each function is one step of `orch staging create/refresh`, run through a connector."""

from __future__ import annotations

import posixpath
import secrets

from orchestrator.backends.remote import Command, Sensitive
from orchestrator.backends.remote.written import watching
from orchestrator.errors import OperationFailed

from . import hostscript
from .configfiles import Target, read_table_prefix, rewrite_config_file
from .sanitize import bcrypt_command, hash_password, password_reset_statements, sanitize_statements


def read_file(conn, path: str) -> str | None:
    result = conn.run(Command("cat", "--", path), check=False)
    return result.stdout.decode("utf-8", "surrogateescape") if result.ok else None


def table_prefix(conn, playbook, env_path: str) -> str:
    """Read the table prefix from the file the playbook names (wp-config.php...), else its default."""
    source = playbook.table_prefix
    if source.file:
        text = read_file(conn, posixpath.join(env_path, source.file))
        fmt = next((c.format for c in playbook.config if c.path == source.file), None)
        found = read_table_prefix(fmt, text) if text is not None and fmt else None
        if found is not None:
            return found
    return source.default


def rewrite_configs(conn, playbook, env, source_env) -> list[str]:
    """Rewrite each config file of the playbook for the environment; return one report line per change."""
    target = Target.for_environment(env, source_env)
    report = []
    for item in playbook.config:
        path = posixpath.join(env.path, item.path)
        text = read_file(conn, path)
        if text is None:
            if item.required:
                raise OperationFailed(f"{item.path} is missing in {env.path}: cannot point it at the staging copy")
            continue
        rewrite = rewrite_config_file(item, text, target)
        conn.put_bytes(rewrite.text.encode("utf-8", "surrogateescape"), path, mode=0o640)
        report += [f"{item.path}: {line}" for line in rewrite.report()]
    return report


def provision_database(conn, admin_engine, engine, database: str, user: str, password) -> None:
    """(Re)create the environment's empty database and its user, as the staging server's admin.

    The SQL holds the new password, so it goes on stdin, never argv."""
    sql = admin_engine.provision_sql(database, user, password.reveal())
    conn.run(admin_engine.script(admin_engine.db.name or admin_engine.ADMIN_DATABASE), stdin=sql.encode())


def load_database(conn, repo, snapshot_id: str, engine, pairs: list[tuple[str, str]], size: int | None = None) -> dict:
    """Stream the stored dump through the URL replacer into the environment's database; return the counts.
    The dump's bytes streamed so far (of `size`, the dump's recorded size) are the step's progress figures."""
    script = hostscript.ensure_script(conn)
    stream = repo.command("dump", snapshot_id, "/" + engine.dump_filename)
    plain = engine.to_plain_sql()
    if plain is not None:
        stream = stream.pipe(plain)
    pipeline = stream.pipe(hostscript.replace_command(script, pairs, engine.replace_dialect)).pipe(engine.script())
    with watching(conn, posixpath.basename(repo.restic), "dump", snapshot_id, total=size):
        result = conn.run(pipeline, check=False, timeout=None)
    if not result.ok:
        raise OperationFailed(
            f"loading the database failed (exit {result.exit_status}): {result.stderr.strip()[-400:]}"
        )
    return hostscript.parse_stats(result.stderr)


def sanitize(conn, playbook, site, engine, prefix: str) -> tuple[int, list[str]]:
    """Apply the playbook's and the site's sanitize rules; return (statements run, skipped lines)."""
    plan = sanitize_statements(playbook, site.sanitize, engine.db.engine, prefix, engine.columns(conn))
    if plan.statements:
        conn.run(engine.script(), stdin=("\n".join(s + ";" for s in plan.statements) + "\n").encode())
    return len(plan.statements), list(plan.skipped)


def reset_passwords(conn, playbook, engine, prefix: str) -> Sensitive | None:
    """Set every account's password to one new staging password; return it (None if the CMS has no rule)."""
    reset = playbook.password_reset
    if reset is None:
        return None
    password = Sensitive(secrets.token_urlsafe(12))
    if reset.scheme == "bcrypt":
        hashed = conn.run(bcrypt_command(password)).text.strip()
    else:
        hashed = hash_password(reset.scheme, password)
    statements = password_reset_statements(playbook, engine.db.engine, prefix, hashed, engine.columns(conn))
    conn.run(engine.script(), stdin=("\n".join(s + ";" for s in statements) + "\n").encode())
    return password


def write_guard_files(conn, playbook, env_path: str) -> list[str]:
    """Write the playbook's staging-only files (mail off, cron off); return their paths."""
    files = {**playbook.mail_off.files, **playbook.cron_off.files}
    for rel, text in files.items():
        path = posixpath.join(env_path, rel)
        conn.run(Command("mkdir", "-p", "--", posixpath.dirname(path)))
        conn.put_bytes(text.encode(), path, mode=0o644)
    return sorted(files)
