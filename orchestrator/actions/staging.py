"""`orch staging create|refresh|destroy|list`: working copies of production, per task, made safe.

Content flows DOWN: files are restored by restic on the staging host straight from the repository, the dump
is streamed there through the URL replacer into the new database. Then the copy is made safe: config files
point at the staging database and URL, personal data is sanitized, passwords reset (the new one is shown
once), mail and cron are off, and the vhost adds basic auth and `X-Robots-Tag: noindex`. Nothing of this
ever runs against an environment that is, or is configured as, production.
"""
from __future__ import annotations

import posixpath
from urllib.parse import urlsplit

from orchestrator.backends.cms import apply
from orchestrator.backends.cms.playbook import playbook_for_site
from orchestrator.backends.cms.replace import url_pairs
from orchestrator.backends.engines import engine_for
from orchestrator.backends.envs import staging as model
from orchestrator.backends.envs import web
from orchestrator.backends.remote import Command, connect
from orchestrator.backends.storage.restic import Repository
from orchestrator.errors import OperationFailed, Refused, UsageError
from orchestrator.oplog.run import locked_operation

from . import catalog
from .backup import backup_target
from .targets import Target, target


def _repo_on(stage_host, prod: Target) -> Repository:
    """The site's repository as seen from the staging host (restic runs there, not here)."""
    if prod.storage is None:
        raise UsageError(f"site {prod.site.name}: no backup storage, so nothing to copy from")
    if prod.storage.type == "local" and stage_host.name != prod.host.name:
        raise UsageError(f"site {prod.site.name}: storage {prod.storage.name} is a folder on {prod.host.name}; "
                         f"the staging host {stage_host.name} cannot read it (use an s3 storage)")
    return Repository(prod.storage, prod.site.name, stage_host.restic)


def choose_backup(oplog, prod: Target, source: str, task: str) -> dict:
    """Given 'latest', 'fresh' or a backup id, return the production backup to copy from."""
    if source == "fresh":
        backup_id = backup_target(oplog, prod, task=task)["backup_id"]
    else:
        backup_id = source
    with connect(prod.host) as conn:
        return catalog.resolve(catalog.list_backups(prod, conn, oplog), backup_id)


def plan(inventory, site_name: str, name: str, source: str) -> dict:
    """What `staging create` would do, without touching anything."""
    site = inventory.site(site_name)
    staged = model.derive(site, name)
    env, host = staged.env, inventory.hosts[staged.env.host]
    playbook = playbook_for_site(site)
    return {"site": site.name, "env": name, "host": host.name, "path": env.path, "url": env.url,
            "database": f"{env.database.engine}:{env.database.name}" if env.database else None,
            "from": source, "playbook": playbook.name, "basic_auth_user": model.AUTH_USER,
            "vhost": web.vhost_path(host, site.name, name) if host.web else None}


def create(oplog, inventory, site_name: str, *, task: str, name: str | None = None, source: str = "latest") -> dict:
    """Create (or re-create) a staging environment; return its summary with the one-time passwords."""
    site = inventory.site(site_name)
    name = model.check_name(site, name or model.default_name(task))
    staged = model.derive(site, name)
    prod = target(inventory, site.name, "production")
    stage_host = inventory.hosts[staged.env.host]
    web.web_config(stage_host)
    chosen = choose_backup(oplog, prod, source, task)
    params = {"backup_id": chosen["backup_id"], "from": source, "url": staged.env.url}
    with locked_operation(oplog, site=site.name, env=name, task=task, action="staging-create",
                          params=params) as op, connect(stage_host) as conn:
        op.artifact("source-backup", chosen["backup_id"], details={"snapshots": chosen["snapshots"]})
        result = _build(op, conn, site, staged, prod, stage_host, chosen)
        oplog.record_env(site.name, name, task=task, host=stage_host.name, path=staged.env.path,
                         url=staged.env.url, database=_db_summary(staged.env.database),
                         details={"backup_id": chosen["backup_id"], "basic_auth_user": model.AUTH_USER,
                                  "vhost": result["vhost"]})
        op.artifact("staging-url", staged.env.url or "", details={"basic_auth_user": model.AUTH_USER,
                                                                  "path": staged.env.path})
        return result | {"backup_id": chosen["backup_id"], "task": task}


def _build(op, conn, site, staged, prod: Target, stage_host, chosen) -> dict:
    env, playbook = staged.env, playbook_for_site(site)
    repo = _repo_on(stage_host, prod)
    with op.step("restore files on the staging host") as step:
        _restore_files(conn, repo, chosen["snapshots"]["files"], env.path, playbook,
                       flatten=prod.files_root != prod.env.path)
        step.output(f"{env.path} from snapshot {chosen['snapshots']['files']}")
    db_result = _copy_database(op, conn, site, staged, prod, repo, chosen, playbook) if env.database else {}
    with op.step("switch mail and cron off") as step:
        step.output(", ".join(apply.write_guard_files(conn, playbook, env.path)) or "nothing to write")
    vhost = _install_web(op, conn, site, staged, stage_host, playbook)
    return {"site": site.name, "env": env.name, "url": env.url, "path": env.path, "host": stage_host.name,
            "basic_auth": {"user": model.AUTH_USER, "password": staged.auth_password.reveal()},
            "vhost": vhost, **db_result}


def _restore_files(conn, repo: Repository, snapshot_id: str, path: str, playbook, flatten: bool) -> None:
    """Restore a production files snapshot as the staging docroot. A releases-layout snapshot holds
    releases/, shared/ and current: its live release is copied out with the shared links dereferenced."""
    conn.run(Command("rm", "-rf", "--", path).then(Command("mkdir", "-p", "--", path)))
    excludes = [arg for pattern in playbook.cache for arg in ("--exclude", "/" + pattern.strip("/"))]
    if not flatten:
        repo.run(conn, "restore", snapshot_id, "--target", path, *excludes, timeout=None)
        return
    scratch = conn.run(Command("mktemp", "-d", "-p", posixpath.dirname(path.rstrip("/")), ".orch-flat.XXXXXX"))
    scratch = scratch.text.strip()
    try:
        repo.run(conn, "restore", snapshot_id, "--target", scratch, "--exclude", "/releases/*/BAD_RELEASE",
                 timeout=None)
        conn.run(Command("rsync", "-a", "--copy-links", *_excludes(playbook.cache), "--",
                         _live_tree(conn, scratch) + "/", path + "/"))
    finally:
        conn.run(Command("rm", "-rf", "--", scratch), check=False)


def _copy_database(op, conn, site, staged, prod: Target, repo, chosen, playbook) -> dict:
    env, engine = staged.env, engine_for(staged.env.database, staged.env.path)
    if engine.replace_dialect is None:
        raise UsageError(f"staging copies of {env.database.engine} databases are not supported yet")
    admin = engine_for(staged.admin_db, env.path)
    with op.step("create the staging database and its user"):
        apply.provision_database(conn, admin, engine, env.database.name, env.database.user, env.database.password)
    with op.step("load the dump, replacing production URLs") as step:
        pairs = replacement_pairs(playbook, prod.env.url, env.url)
        stats = apply.load_database(conn, repo, chosen["snapshots"]["db"], engine, pairs)
        step.output(f"{stats.get('replacements', 0)} replacements, {stats.get('serialized_fixed', 0)} "
                    f"serialized lengths fixed, {stats.get('lines_changed', 0)} lines changed")
        op.artifact("url-replacements", str(stats.get("replacements", 0)), details=stats | {"pairs": len(pairs)})
    with op.step("point config files at the staging copy") as step:
        step.output("\n".join(apply.rewrite_configs(conn, playbook, env, prod.env)))
    prefix = apply.table_prefix(conn, playbook, env.path)
    with op.step("sanitize personal data") as step:
        count, skipped = apply.sanitize(conn, playbook, site, engine, prefix)
        step.output(f"{count} statements; skipped: {', '.join(skipped) or 'none'}")
    with op.step("reset passwords to a staging password"):
        password = apply.reset_passwords(conn, playbook, engine, prefix)
    return {"replacements": stats, "table_prefix": prefix,
            "staging_password": password.reveal() if password else None}


def replacement_pairs(playbook, production_url: str | None, staging_url: str | None) -> list[tuple[str, str]]:
    """URL pairs for the dump, plus the bare host when the CMS stores it alone (Bitrix's SERVER_NAME).

    The bare-host pair also rewrites e-mail domains such as sale@shop.example: on a staging copy, mail to
    those must not reach production's mailboxes anyway."""
    if not production_url or not staging_url:
        return []
    pairs = url_pairs(production_url, staging_url)
    if playbook.urls.bare_host:
        pairs.append((urlsplit(production_url).netloc, urlsplit(staging_url).netloc))
    return pairs


def _install_web(op, conn, site, staged, stage_host, playbook) -> str:
    env, cfg = staged.env, web.web_config(stage_host)
    auth_file = posixpath.join(posixpath.dirname(env.path.rstrip("/")), f".orch-{env.name}.htpasswd")
    with op.step("write the vhost (basic auth, noindex) and reload nginx") as step:
        conn.put_bytes(web.htpasswd_line(model.AUTH_USER, staged.auth_password.reveal()).encode(), auth_file,
                       mode=0o644)
        text = playbook.render_vhost(server_name=urlsplit(env.url).hostname, listen=cfg["listen"], root=env.path,
                                     php_socket=cfg["php_socket"], auth_file=auth_file)
        path = web.install_vhost(conn, stage_host, site.name, env.name, text)
        step.output(path)
    with op.step("health check through nginx") as step:
        step.output(_health(staged, cfg, playbook))
    return path


def _health(staged, cfg, playbook) -> str:
    env, auth = staged.env, (model.AUTH_USER, staged.auth_password.reveal())
    url = env.url.rstrip("/") + playbook.health_path

    def probe():
        status, headers, body = web.fetch(url, connect_to=cfg.get("connect"), auth=auth)
        return (status, headers, body) if status == 200 and playbook.healthy(body) else None
    answer = web.wait_until(probe, timeout=20)
    if not answer:
        status, _, body = web.fetch(url, connect_to=cfg.get("connect"), auth=auth)
        raise OperationFailed(f"{url} answered {status} without the playbook's marker: {body[:200]!r}")
    anonymous = web.fetch(url, connect_to=cfg.get("connect"))[0]
    if anonymous != 401:
        raise OperationFailed(f"{url} answered {anonymous} without credentials (expected 401)")
    return f"{url}: 200 with basic auth, 401 without, X-Robots-Tag {answer[1].get('X-Robots-Tag')}"


def refresh(oplog, inventory, site_name: str, *, name: str, task: str, source: str = "latest",
            files: bool = True, db: bool = True, with_code: bool = False) -> dict:
    """Bring production's content down again into an existing staging environment.

    Content files and the database are replaced; code on staging (the work being tested) stays unless
    with_code. The database goes through the same replace/sanitize/password steps as on creation.
    """
    site = inventory.site(site_name)
    model.check_name(site, name)
    registered(oplog, site.name, name)
    staged = model.derive(site, name)
    prod = target(inventory, site.name, "production")
    stage_host = inventory.hosts[staged.env.host]
    chosen = choose_backup(oplog, prod, source, task)
    params = {"backup_id": chosen["backup_id"], "files": files, "db": db, "with_code": with_code}
    with locked_operation(oplog, site=site.name, env=name, task=task, action="staging-refresh",
                          params=params) as op, connect(stage_host) as conn:
        playbook, repo = playbook_for_site(site), _repo_on(stage_host, prod)
        op.artifact("source-backup", chosen["backup_id"], details={"snapshots": chosen["snapshots"]})
        result = {"site": site.name, "env": name, "backup_id": chosen["backup_id"], "url": staged.env.url}
        if files:
            with op.step("refresh " + ("all files" if with_code else "content files")) as step:
                step.output(_refresh_files(conn, repo, chosen["snapshots"]["files"], staged.env, playbook,
                                           with_code, flatten=prod.files_root != prod.env.path))
        if db and staged.env.database:
            result |= _copy_database(op, conn, site, staged, prod, repo, chosen, playbook)
        if with_code:
            with op.step("switch mail and cron off"):
                apply.write_guard_files(conn, playbook, staged.env.path)
        oplog.update_env(site.name, name, backup_id=chosen["backup_id"])
        return result


def _refresh_files(conn, repo: Repository, snapshot_id: str, env, playbook, with_code: bool,
                   flatten: bool = False) -> str:
    """Restore the snapshot's content (or everything) beside the env, then rsync it in.

    Without with_code only the playbook's content paths come down; each plain (glob-free) content folder
    is mirrored exactly (--delete), so files removed on production disappear on staging too. Cache paths
    never come down; config files and staging guard files are never overwritten."""
    parent = posixpath.dirname(env.path.rstrip("/"))
    scratch = conn.run(Command("mktemp", "-d", "-p", parent, ".orch-refresh.XXXXXX")).text.strip()
    try:
        includes = [] if with_code or flatten else [
            a for p in playbook.content for a in ("--include", "/" + p.strip("/"))]
        repo.run(conn, "restore", snapshot_id, "--target", scratch, *includes, timeout=None)
        if flatten:  # a releases-layout snapshot: the live release, shared links dereferenced
            flat = scratch + "/flat"
            conn.run(Command("rsync", "-a", "--copy-links", "--", _live_tree(conn, scratch) + "/", flat + "/"))
            scratch_source = flat
        else:
            scratch_source = scratch
        staging_only = [item.path for item in playbook.config] + [*playbook.mail_off.files, *playbook.cron_off.files]
        skip = [*playbook.cache, *staging_only]
        if with_code:
            conn.run(Command("rsync", "-a", "--delete", *_excludes(skip), "--", scratch_source + "/", env.path + "/"))
            return f"{env.path}: everything but cache, config and staging guard files"
        if not flatten:  # the restore held only content (glob patterns included): bring all of it
            conn.run(Command("rsync", "-a", *_excludes(skip), "--", scratch_source + "/", env.path + "/"))
        mirrored = []
        for pattern in playbook.content:
            rel = pattern.strip("/")
            if not any(c in rel for c in "*?[") and conn.ok(Command("test", "-d", posixpath.join(scratch_source, rel))):
                conn.run(Command("rsync", "-a", "--delete", *_excludes(skip, rel), "--",
                                 posixpath.join(scratch_source, rel) + "/", posixpath.join(env.path, rel) + "/"))
                mirrored.append(rel)
        return f"content mirrored: {', '.join(mirrored) or 'none found'}"
    finally:
        conn.run(Command("rm", "-rf", "--", scratch), check=False)


def _live_tree(conn, restored: str) -> str:
    """Given a restored files snapshot, return its live docroot: `current` of a releases-layout snapshot, or the
    snapshot itself (backups taken before `orch adopt` are flat)."""
    current = posixpath.join(restored, "current")
    return current if conn.ok(Command("test", "-L", current)) else restored


def _excludes(patterns, under: str = "") -> list[str]:
    """rsync --exclude arguments for env-relative patterns, anchored at the transfer root `under`."""
    prefix = under.strip("/") + "/" if under else ""
    return [arg for pattern in patterns if pattern.strip("/").startswith(prefix)
            for arg in ("--exclude", "/" + pattern.strip("/")[len(prefix):])]


def _db_summary(db) -> dict | None:
    return {"engine": db.engine, "name": db.name, "user": db.user, "host": db.host, "port": db.port} if db else None


def registered(oplog, site: str, name: str) -> dict:
    """Return a live registered staging environment; raise Refused/UsageError if it is not one."""
    for row in oplog.envs(site):
        if row["name"] == name:
            return row
    raise UsageError(f"{site}/{name} is not a staging environment orch made (see `orch staging list {site}`)")


def destroy(oplog, inventory, site_name: str, *, name: str, task: str) -> dict:
    """Remove a staging environment: vhost, basic-auth file, files, database and its user."""
    site = inventory.site(site_name)
    model.check_name(site, name)  # refuses production whatever the registry says
    row = registered(oplog, site.name, name)
    staged = model.derive(site, name)
    host = inventory.hosts[row["host"]]
    if row["path"] != staged.env.path:
        raise Refused(f"{site.name}/{name}: registered path {row['path']} differs from the template's "
                      f"{staged.env.path}; refusing to delete either")
    with locked_operation(oplog, site=site.name, env=name, task=task, action="staging-destroy",
                          params={"path": row["path"]}) as op, connect(host) as conn:
        with op.step("remove the vhost and reload nginx") as step:
            removed = web.remove_vhost(conn, host, site.name, name) if host.web else False
            step.output("removed" if removed else "no vhost")
        with op.step("drop the database and its user"):
            if staged.env.database and staged.admin_db:
                admin = engine_for(staged.admin_db, staged.env.path)
                sql = admin.deprovision_sql(staged.env.database.name, staged.env.database.user)
                conn.run(admin.script(admin.db.name or admin.ADMIN_DATABASE), stdin=sql.encode())
        with op.step("delete the files") as step:
            auth_file = posixpath.join(posixpath.dirname(row["path"].rstrip("/")), f".orch-{name}.htpasswd")
            conn.run(Command("rm", "-rf", "--", row["path"], auth_file))
            step.output(row["path"])
        oplog.env_destroyed(site.name, name)
        return {"site": site.name, "env": name, "destroyed": True, "path": row["path"]}


def listing(oplog, site: str | None = None) -> list[dict]:
    return oplog.envs(site)
