"""`orch staging create|refresh|destroy|list`: working copies of production, per task, made safe.

Content flows DOWN: files are restored by restic on the staging host straight from the repository, the dump
is streamed there through the URL replacer into the new database. Then the copy is made safe: config files
point at the staging database and URL, personal data is sanitized, passwords reset (the new one is shown
once), mail and cron are off, and the vhost adds basic auth and `X-Robots-Tag: noindex`. Nothing of this
ever runs against an environment that is, or is configured as, production.

Each verb has the one shape: `plan_*` reads only and holds every guard; the apply runs as one locked
operation that plans again under the lock. `create` registers the copy (status `creating`) before its first
change and marks it `ready` or `failed` at the end, so a half-made copy is listed and `destroy` removes it.
A `--from fresh` backup of production is taken inside the same locked operation.
"""

from __future__ import annotations

import http.client
import logging
import posixpath
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import ClassVar
from urllib.parse import urlsplit

from orchestrator.ages import age_text
from orchestrator.backends.cms import apply
from orchestrator.backends.cms.playbook import Playbook, playbook_for_site
from orchestrator.backends.cms.replace import url_pairs
from orchestrator.backends.engines import engine_for
from orchestrator.backends.envs import staging as model
from orchestrator.backends.envs import web
from orchestrator.backends.envs.docroot import resolve_all, sync_into
from orchestrator.backends.remote import Command, connect
from orchestrator.backends.remote.written import watching
from orchestrator.backends.storage.restic import NOT_A_REPO, Repository, RepositoryError
from orchestrator.config.model import Database, DockerHost, Host
from orchestrator.errors import OperationFailed, OrchError, Refused, UsageError

from . import catalog
from .backup import backup_target
from .plan import SitePlan, execute
from .targets import Target, target

log = logging.getLogger("orch.staging")
HEALTH_STREAK = 3  # answers in a row from the new config before the copy counts as served (see web.wait_until)


def _repo_on(stage_host, prod: Target) -> Repository:
    """The site's repository as seen from the staging host (restic runs there, not here)."""
    if prod.storage is None:
        raise UsageError(f"site {prod.site.name}: no backup storage, so nothing to copy from")
    if prod.storage.type == "local" and stage_host.name != prod.host.name:
        raise UsageError(
            f"site {prod.site.name}: storage {prod.storage.name} is a folder on {prod.host.name}; "
            f"the staging host {stage_host.name} cannot read it (use an s3 storage)"
        )
    return Repository(prod.storage, prod.site.name, stage_host.restic)


def pick_backup(oplog, prod: Target, source: str) -> dict | None:
    """Given 'latest', 'fresh' or a backup id, return the production backup to copy from; None for 'fresh' (it
    is taken under the operation's lock). Raise UsageError if there is no such backup."""
    if source == "fresh":
        return None
    with connect(prod.host) as conn:
        try:
            backups = catalog.list_backups(prod, conn, oplog)
        except RepositoryError as exc:
            if not NOT_A_REPO.search(str(exc)):
                raise
            backups = []  # never backed up: no repository yet, so no backup either
    if source == "latest" and not any(b["status"] == "ok" for b in backups):
        raise UsageError(f"{prod.label} has no complete backup yet: copy a new one with `--from fresh`")
    return catalog.resolve(backups, source)


def backup_now(oplog, op, prod: Target, task: str) -> dict:
    """Back up production inside the running operation (its site lock covers production) and return it."""
    with op.step("back up production (--from fresh)") as step:
        backup_id = backup_target(oplog, prod, task=task, lock=False)["backup_id"]
        step.output(f"backup {backup_id}")
    with connect(prod.host) as conn:
        return catalog.resolve(catalog.list_backups(prod, conn, oplog), backup_id)


def source_lines(plan) -> list[str]:
    if plan.backup is None:
        return [f"back up production {plan.prod.label} first and copy that backup (--from fresh)"]
    return [f"copy production backup {plan.backup['backup_id']} ({plan.source})"]


@dataclass
class StagingPlan(SitePlan):
    """What every staging verb acts on: the derived copy and its host."""

    staged: model.StagingEnv
    host: Host | DockerHost  # where the copy lives: a staging host, or the Docker engine of a docker copy
    target: ClassVar[str] = "host"  # where the copy lives: `host` here, `docker` in actions/staging_docker.py

    @property
    def label(self) -> str:
        return f"{self.site}/{self.env}"


@dataclass
class CopyPlan(StagingPlan):
    """A verb that copies production down: from which backup, with which playbook."""

    prod: Target
    playbook: Playbook
    source: str  # latest | fresh | a backup id, as the user said
    backup: dict | None  # None: --from fresh, taken under the operation's lock


@dataclass
class CreatePlan(CopyPlan):
    """Make (or make again) a staging copy from a production backup."""

    host: Host  # a staging host (docker copies have their own plan)
    vhost: str
    replaces: bool  # a copy of that name exists: its files and database are made anew

    def lines(self) -> list[str]:
        env, db = self.staged.env, self.staged.env.database
        lines = (
            [f"replace the existing copy {self.label}: its files and database are made anew"] if self.replaces else []
        )
        lines += [
            f"register {self.label} (status creating) before the first change",
            *source_lines(self),
            f"restore its files into {self.host.name}:{env.path} (cache left out)",
        ]
        if db is not None:
            lines += [
                f"create {db.engine} database {db.name} and its user {db.user}",
                f"load the dump, replacing {self.prod.env.url} with {env.url}",
                "point config files at the copy, sanitize personal data, reset passwords",
            ]
        return lines + [
            "switch mail and cron off",
            f"write vhost {self.vhost} (basic auth {model.AUTH_USER} in {self.staged.auth_file}, "
            "noindex), reload nginx, wait until it serves the copy",
        ]

    def params(self) -> dict:
        return {
            "backup_id": self.backup["backup_id"] if self.backup else None,
            "from": self.source,
            "url": self.staged.env.url,
        }

    def as_dict(self) -> dict:
        env = self.staged.env
        return {
            "site": self.site,
            "env": self.env,
            "host": self.host.name,
            "path": env.path,
            "url": env.url,
            "database": f"{env.database.engine}:{env.database.name}" if env.database else None,
            "from": self.source,
            "backup_id": self.params()["backup_id"],
            "playbook": self.playbook.name,
            "basic_auth_user": model.AUTH_USER,
            "auth_file": self.staged.auth_file,
            "vhost": self.vhost,
            "plan": self.lines(),
        }


def _derived(inventory, site_name: str, name: str):
    site = inventory.site(site_name)
    staged = model.derive(site, model.check_name(site, name))
    return site, staged, inventory.hosts[staged.env.host]


def plan_create(
    oplog,
    inventory,
    site_name: str,
    *,
    task: str,
    name: str | None = None,
    source: str = "latest",
    copy_target: str | None = None,
) -> CreatePlan:
    """Given a site, a task and latest|fresh|ID, return the plan of its staging copy (reads only); copy_target
    (host|docker) overrides the template's `target`. Raise Refused for production, UsageError for a bad name, no staging
    template, no web block on the staging host, storage it cannot read, or no backup to copy."""
    if model.target_of(inventory.site(site_name), copy_target) == "docker":
        return _docker().plan_create(oplog, inventory, site_name, task=task, name=name, source=source)
    site, staged, host = _derived(inventory, site_name, name or model.default_name(task))
    prod = target(inventory, site.name, "production")
    web.web_config(host)
    _repo_on(host, prod)
    vhost, rows = web.vhost_path(host, site.name, staged.name), oplog.envs()
    mine = (
        site.name,
        staged.name,
        host.name,
        staged.env.path,
        db_summary(staged.env.database),
        vhost,
        staged.auth_file,
    )
    fix = "put {site} and {env} in environments.staging's path, or pick another --name"
    if shared := model.clashes(_inventory_rows(inventory), *mine):
        raise Refused(f"{site.name}/{staged.name} would share {'; '.join(shared)}: {fix}")
    if shared := model.clashes(rows, *mine):
        raise UsageError(f"{site.name}/{staged.name} would share {'; '.join(shared)}: {fix}")
    replaces = any((row["site"], row["name"]) == (site.name, staged.name) for row in rows)
    return CreatePlan(
        "staging-create",
        site.name,
        staged.name,
        task,
        staged,
        host,
        prod,
        playbook_for_site(site),
        source,
        pick_backup(oplog, prod, source),
        vhost,
        replaces,
    )


def _inventory_rows(inventory) -> list[dict]:
    """The inventory's environments (staging templates aside) in the registry's shape, for model.clashes()."""
    return [
        {"site": site.name, "name": env.name, "host": env.host, "path": env.path, "database": db_summary(env.database)}
        for site in inventory.sites.values()
        for env in site.environments.values()
        if env.name != model.TEMPLATE
    ]


def create(oplog, inventory, plan: CreatePlan) -> dict:
    """Apply a create plan as one locked operation (planned again under the lock). Return the copy's summary
    with its one-time passwords; raise if any step fails (the copy then stays registered as `failed`)."""

    def recheck(p: CreatePlan) -> CreatePlan:
        return plan_create(oplog, inventory, p.site, task=p.task, name=p.env, source=p.source, copy_target=p.target)

    apply = _docker().apply_create if plan.target == "docker" else _apply_create
    return execute(oplog, plan, lambda op, p: apply(oplog, op, p), recheck=recheck)


def _apply_create(oplog, op, plan: CreatePlan) -> dict:
    env, name = plan.staged.env, plan.env
    oplog.record_env(
        plan.site,
        name,
        task=plan.task,
        host=plan.host.name,
        path=env.path,
        url=env.url,
        database=db_summary(env.database),
        details={
            "status": "creating",
            "operation_id": op.id,
            "basic_auth_user": model.AUTH_USER,
            "auth_file": plan.staged.auth_file,
            "vhost": plan.vhost,
        },
    )
    try:
        backup = plan.backup or backup_now(oplog, op, plan.prod, plan.task)
        op.artifact("source-backup", backup["backup_id"], details={"snapshots": backup["snapshots"]})
        with connect(plan.host) as conn:
            result = _build(op, conn, plan, backup)
    except BaseException:
        mark_status(oplog, plan, status="failed")
        raise
    # db_backup_id: the base of a content promotion (actions/content.py); a files-only refresh keeps it
    mark_status(oplog, plan, status="ready", backup_id=backup["backup_id"], db_backup_id=backup["backup_id"])
    op.artifact("staging-url", env.url or "", details={"basic_auth_user": model.AUTH_USER, "path": env.path})
    return result | {"backup_id": backup["backup_id"], "task": plan.task}


def mark_status(oplog, plan: StagingPlan, **details) -> None:
    try:
        oplog.update_env(plan.site, plan.env, **details)
    except Exception:  # noqa: BLE001 -- never hide the error that got us here behind an oplog one
        log.warning("could not record %s as %s in the oplog", plan.label, details.get("status"), exc_info=True)


def _build(op, conn, plan: CreatePlan, backup: dict) -> dict:
    env, repo = plan.staged.env, _repo_on(plan.host, plan.prod)
    # the dump loads over a second connection while the files come down: the copy is ready after the longer
    # of the two, not after their sum (boot drills time exactly that: bench/drill.py)
    loading = _Beside(lambda: _load_database(op, None, plan, repo, backup)) if env.database else None
    try:
        with op.step("restore files on the staging host") as step:
            restore_files(
                conn,
                repo,
                backup["snapshots"]["files"],
                plan.staged.path,
                plan.playbook,
                flatten=plan.prod.files_root != plan.prod.env.path,
                size=backup.get("files_size"),
            )
            step.output(f"{env.path} from snapshot {backup['snapshots']['files']}")
    except BaseException:
        if loading:
            loading.join()  # no load left running into a copy that is about to be removed
        raise
    db_result = _adapt_database(op, conn, plan, loading.result()) if loading else {}
    with op.step("switch mail and cron off") as step:
        step.output(", ".join(apply.write_guard_files(conn, plan.playbook, plan.staged.path)) or "nothing to write")
    vhost = _install_web(op, conn, plan)
    return {
        "site": plan.site,
        "env": env.name,
        "url": env.url,
        "path": env.path,
        "host": plan.host.name,
        "basic_auth": {"user": model.AUTH_USER, "password": plan.staged.auth_password.reveal()},
        "vhost": vhost,
        **db_result,
    }


def restore_files(
    conn, repo: Repository, snapshot_id: str, path: str, playbook, flatten: bool, size: int | None = None
) -> None:
    """Restore a production files snapshot as the staging docroot. A releases-layout snapshot holds
    releases/, shared/ and current: its live release is copied out with the shared links dereferenced.
    `size` (the backup's files, if known) is the total of the progress figures."""
    # emptied in place, not removed: the folder keeps its mode and owner, and may be a mount point (a volume)
    conn.run(Command("mkdir", "-p", "--", path).then(Command("find", path, "-mindepth", "1", "-delete")))
    excludes = [arg for pattern in playbook.cache for arg in ("--exclude", "/" + pattern.strip("/"))]
    if not flatten:
        with _restoring(conn, repo, path, size):
            repo.run(conn, "restore", snapshot_id, "--target", path, *excludes, timeout=None)
        return
    scratch = _scratch(conn, path, ".orch-flat.XXXXXX")
    try:
        with _restoring(conn, repo, scratch, size):
            repo.run(
                conn, "restore", snapshot_id, "--target", scratch, "--exclude", "/releases/*/BAD_RELEASE", timeout=None
            )
        sync_into(conn, _live_tree(conn, scratch), path, "--copy-links", *_excludes(playbook.cache))
    finally:
        conn.run(Command("rm", "-rf", "--", scratch), check=False)


def _restoring(conn, repo: Repository, target: str, size: int | None):
    """The block where restic restores into `target`: restic 0.14 says nothing while it restores, so the step's
    figures are the bytes it has written so far (of `size`)."""
    return watching(conn, posixpath.basename(repo.restic), "restore", target, total=size)


def _scratch(conn, beside: str, template: str) -> str:
    """Make a scratch folder beside a docroot (same filesystem, so the final sync moves little); return it."""
    scratch = conn.run(Command("mktemp", "-d", "-p", posixpath.dirname(beside.rstrip("/")), template)).text.strip()
    if not scratch:
        raise OperationFailed(f"could not make a scratch folder beside {beside}")
    return scratch


class _Beside(threading.Thread):
    """Run a function beside the caller; `result()` waits for it and returns its value or raises its error."""

    def __init__(self, function):
        super().__init__(daemon=True)  # an interrupted copy does not wait for it: the process just ends
        self.function, self.value, self.error = function, None, None
        self.start()

    def run(self) -> None:
        try:
            self.value = self.function()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self.error = exc

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.value


def copy_database(op, conn, plan: CopyPlan, repo, backup: dict) -> dict:
    return _adapt_database(op, conn, plan, _load_database(op, conn, plan, repo, backup))


def _load_database(op, conn, plan: CopyPlan, repo, backup: dict) -> dict:
    """Create the copy's database and user and load the dump through the URL replacer (on `conn`, or on a
    connection of its own when None); return the replacer's statistics."""
    if conn is None:
        with connect(plan.host) as own:
            return _load_database(op, own, plan, repo, backup)
    env, playbook = plan.staged.env, plan.playbook
    engine = engine_for(env.database, env.path)
    if engine.replace_dialect is None:
        raise UsageError(f"staging copies of {engine.db.engine} databases are not supported yet")
    admin = engine_for(plan.staged.admin_db, env.path)
    db, name, user = _account(plan.staged)
    with op.step("create the staging database and its user"):
        apply.provision_database(conn, admin, engine, name, user, db.password)
    with op.step("load the dump, replacing production URLs") as step:
        pairs = replacement_pairs(playbook, plan.prod.env.url, env.url)
        stats = apply.load_database(conn, repo, backup["snapshots"]["db"], engine, pairs, backup.get("db_size"))
        step.output(
            f"{stats.get('replacements', 0)} replacements, {stats.get('serialized_fixed', 0)} "
            f"serialized lengths fixed, {stats.get('lines_changed', 0)} lines changed"
        )
        op.artifact("url-replacements", str(stats.get("replacements", 0)), details=stats | {"pairs": len(pairs)})
    return stats


def _adapt_database(op, conn, plan: CopyPlan, stats: dict) -> dict:
    """Point the config files at the loaded copy, sanitize it, reset its passwords; return the summary."""
    env, playbook = plan.staged.env, plan.playbook
    engine = engine_for(env.database, env.path)
    with op.step("point config files at the staging copy") as step:
        step.output("\n".join(apply.rewrite_configs(conn, playbook, env, plan.prod.env)))
    prefix = apply.table_prefix(conn, playbook, plan.staged.path)
    with op.step("sanitize personal data") as step:
        count, skipped = apply.sanitize(conn, playbook, plan.prod.site, engine, prefix)
        step.output(f"{count} statements; skipped: {', '.join(skipped) or 'none'}")
    with op.step("reset passwords to a staging password"):
        password = apply.reset_passwords(conn, playbook, engine, prefix)
    return {"replacements": stats, "table_prefix": prefix, "staging_password": password.reveal() if password else None}


def _account(staged: model.StagingEnv) -> tuple[Database, str, str]:
    """Given a staging environment, return its database, that database's name and its user; raise UsageError
    if it has none of them (derive() names both for every engine a staging copy supports)."""
    db = staged.env.database
    if db is None or db.name is None or db.user is None:
        raise UsageError(f"{staged.env.site}/{staged.name}: the staging copy has no database name and user")
    return db, db.name, db.user


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


def _install_web(op, conn, plan: CreatePlan) -> str:
    env, cfg, auth_file = plan.staged.env, web.web_config(plan.host), plan.staged.auth_file
    server_name = urlsplit(plan.staged.url).hostname
    if server_name is None or auth_file is None:
        raise UsageError(f"{plan.label}: the staging template's url or path names no host or folder for the vhost")
    with op.step("write the vhost (basic auth, noindex) and reload nginx") as step:
        conn.put_bytes(
            web.htpasswd_line(model.AUTH_USER, plan.staged.auth_password.reveal()).encode(), auth_file, mode=0o644
        )
        text = plan.playbook.render_vhost(
            server_name=server_name,
            listen=cfg["listen"],
            root=plan.staged.path,
            php_socket=cfg["php_socket"],
            auth_file=auth_file,
        )
        path = web.install_vhost(conn, plan.host, plan.site, env.name, text)
        step.output(path)
    with op.step("health check through nginx") as step:
        step.output(health_check(plan.staged, cfg, plan.playbook))
    return path


def health_check(staged, cfg, playbook) -> str:
    """Poll the copy through nginx until the new config answers: 200 with the playbook's marker given the
    credentials AND 401 without them, HEALTH_STREAK times in a row (a reload lets old workers answer 404 for a
    moment). Return a summary line; raise OperationFailed with the last answers if that never happens."""
    url, connect_to = staged.env.url.rstrip("/") + playbook.health_path, cfg.get("connect")
    auth = (model.AUTH_USER, staged.auth_password.reveal())
    seen: dict = {}

    def probe() -> bool:
        try:
            seen["auth"] = web.fetch(url, connect_to=connect_to, auth=auth)
            seen["anonymous"] = web.fetch(url, connect_to=connect_to)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset or cut short: not served yet, ask again
            seen["auth"] = seen["anonymous"] = (0, {}, f"{type(exc).__name__}: {exc}")
            return False
        return seen["auth"][0] == 200 and playbook.healthy(seen["auth"][2]) and seen["anonymous"][0] == 401

    if not web.wait_until(probe, timeout=20, interval=0.1, streak=HEALTH_STREAK):
        status, _, body = seen["auth"]
        raise OperationFailed(
            f"{url} answered {status} with basic auth (expected 200 and the playbook's marker: "
            f"{body[:200]!r}) and {seen['anonymous'][0]} without (expected 401)"
        )
    return f"{url}: 200 with basic auth, 401 without, X-Robots-Tag {seen['auth'][1].get('X-Robots-Tag')}"


@dataclass
class RefreshPlan(CopyPlan):
    """Bring production's content (or everything) down again into an existing copy."""

    files: bool
    db: bool
    with_code: bool
    mirrored: dict[str, str]  # plain content folder -> its real path in the copy, checked to stay inside

    def lines(self) -> list[str]:
        env, lines = self.staged.env, source_lines(self)
        if self.files and self.with_code:
            lines.append(f"replace every file in {env.path} but cache, config and staging guard files")
        elif self.files:
            lines.append(f"bring content files into {env.path}; mirror {', '.join(self.mirrored) or 'no folder'}")
        if self.db and env.database is not None:
            lines.append(
                f"reload database {env.database.name}: replace URLs, point config files at the copy, "
                "sanitize, reset passwords"
            )
        return lines + (["switch mail and cron off"] if self.with_code else [])

    def params(self) -> dict:
        return {
            "backup_id": self.backup["backup_id"] if self.backup else None,
            "from": self.source,
            "files": self.files,
            "db": self.db,
            "with_code": self.with_code,
        }


def plan_refresh(
    oplog,
    inventory,
    site_name: str,
    *,
    name: str,
    task: str,
    source: str = "latest",
    files: bool = True,
    db: bool = True,
    with_code: bool = False,
) -> RefreshPlan:
    """Given an existing copy and what to bring down, return the refresh plan (reads only). Raise UsageError if
    the copy is not one orch made ready, a content folder in it is a symlink out of it, or there is no backup."""
    if _in_docker(oplog, inventory, site_name, name):
        return _docker().plan_refresh(
            oplog, inventory, site_name, name=name, task=task, source=source, files=files, db=db, with_code=with_code
        )
    site, staged, host = _derived(inventory, site_name, name)
    prod = target(inventory, site.name, "production")
    row = registered(oplog, site.name, staged.name)
    if status_of(oplog, row) != "ready":
        raise UsageError(
            f"{site.name}/{name} is {status_of(oplog, row)}, not ready: `orch staging destroy` it, then create it again"
        )
    _repo_on(host, prod)
    playbook = playbook_for_site(site)
    mirrored: dict[str, str] = {}
    if files and not with_code:
        plain = [p.strip("/") for p in playbook.content if not any(c in p for c in "*?[")]
        with connect(host) as conn:
            mirrored = dict(zip(plain, resolve_all(conn, staged.env.path, plain), strict=True))
    return RefreshPlan(
        "staging-refresh",
        site.name,
        staged.name,
        task,
        staged,
        host,
        prod,
        playbook,
        source,
        pick_backup(oplog, prod, source),
        files,
        db,
        with_code,
        mirrored,
    )


def refresh(oplog, inventory, plan: RefreshPlan) -> dict:
    """Apply a refresh plan as one locked operation (planned again under the lock). Content files and the
    database are replaced; code on staging (the work being tested) stays unless with_code. The database goes
    through the same replace/sanitize/password steps as on creation. Return a summary."""

    def recheck(p: RefreshPlan) -> RefreshPlan:
        return plan_refresh(
            oplog,
            inventory,
            p.site,
            name=p.env,
            task=p.task,
            source=p.source,
            files=p.files,
            db=p.db,
            with_code=p.with_code,
        )

    apply = _docker().apply_refresh if plan.target == "docker" else _apply_refresh
    return execute(oplog, plan, lambda op, p: apply(oplog, op, p), recheck=recheck)


def _apply_refresh(oplog, op, plan: RefreshPlan) -> dict:
    env = plan.staged.env
    backup = plan.backup or backup_now(oplog, op, plan.prod, plan.task)
    op.artifact("source-backup", backup["backup_id"], details={"snapshots": backup["snapshots"]})
    result = {"site": plan.site, "env": plan.env, "backup_id": backup["backup_id"], "url": env.url}
    with connect(plan.host) as conn:
        repo = _repo_on(plan.host, plan.prod)
        if plan.files:
            with op.step("refresh " + ("all files" if plan.with_code else "content files")) as step:
                step.output(refresh_files(conn, repo, backup["snapshots"]["files"], plan, backup.get("files_size")))
        if plan.db and env.database:
            result |= copy_database(op, conn, plan, repo, backup)
        if plan.with_code:
            with op.step("switch mail and cron off"):
                apply.write_guard_files(conn, plan.playbook, plan.staged.path)
    reloaded = {"db_backup_id": backup["backup_id"]} if plan.db and env.database else {}
    oplog.update_env(plan.site, plan.env, backup_id=backup["backup_id"], **reloaded)
    return result


def refresh_files(conn, repo: Repository, snapshot_id: str, plan: RefreshPlan, size: int | None = None) -> str:
    """Restore the snapshot's content (or everything: `size` bytes, if known) beside the env, then rsync it in.

    Without with_code only the playbook's content paths come down; each plain (glob-free) content folder
    is mirrored exactly (--delete) into its real path, checked by the plan to stay inside the copy, so files
    removed on production disappear on staging too. Cache paths never come down; config files and staging
    guard files are never overwritten. The copy's folder keeps its own mode, owner and group."""
    env, playbook, with_code = plan.staged.env, plan.playbook, plan.with_code
    flatten = plan.prod.files_root != plan.prod.env.path
    scratch = _scratch(conn, plan.staged.path, ".orch-refresh.XXXXXX")
    try:
        includes = (
            [] if with_code or flatten else [a for p in playbook.content for a in ("--include", "/" + p.strip("/"))]
        )
        with _restoring(conn, repo, scratch, None if includes else size):
            repo.run(conn, "restore", snapshot_id, "--target", scratch, *includes, timeout=None)
        source = scratch
        if flatten:  # a releases-layout snapshot: the live release, shared links dereferenced
            source = scratch + "/flat"
            conn.run(Command("rsync", "-a", "--copy-links", "--", _live_tree(conn, scratch) + "/", source + "/"))
        staging_only = [item.path for item in playbook.config] + [*playbook.mail_off.files, *playbook.cron_off.files]
        skip = [*playbook.cache, *staging_only]
        if with_code:
            sync_into(conn, source, plan.staged.path, "--delete", *_excludes(skip))
            return f"{env.path}: everything but cache, config and staging guard files"
        if not flatten:  # the restore held only content (glob patterns included): bring all of it
            sync_into(conn, source, plan.staged.path, *_excludes(skip))
        mirrored = []
        for rel, real in plan.mirrored.items():
            if conn.ok(Command("test", "-d", posixpath.join(source, rel))):
                conn.run(
                    Command(
                        "rsync",
                        "-a",
                        "--delete",
                        *_excludes(skip, rel),
                        "--",
                        posixpath.join(source, rel) + "/",
                        real + "/",
                    ),
                    timeout=None,
                )
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
    return [
        arg
        for pattern in patterns
        if pattern.strip("/").startswith(prefix)
        for arg in ("--exclude", "/" + pattern.strip("/")[len(prefix) :])
    ]


def db_summary(db) -> dict | None:
    return {"engine": db.engine, "name": db.name, "user": db.user, "host": db.host, "port": db.port} if db else None


def registered(oplog, site: str, name: str) -> dict:
    """Return a live registered staging environment (ready, or half made); raise UsageError if none."""
    for row in oplog.envs(site):
        if row["name"] == name:
            return row
    raise UsageError(f"{site}/{name} is not a staging environment orch made (see `orch staging list {site}`)")


def status_of(oplog, row: dict) -> str:
    """Given a registry row, return the copy's status: ready, creating (its create is running) or failed (its
    create failed, or died: a `creating` copy whose operation no longer runs). Copies registered before the
    status existed were registered only once ready."""
    details = row.get("details") or {}
    status = details.get("status", "ready")
    if status == "creating" and details.get("operation_id") is not None:
        try:
            running = oplog.operation(details["operation_id"])["status"] == "running"
        except OrchError:  # the operation is gone from the oplog: nothing runs it any more
            running = False
        return "creating" if running else "failed"
    return status


@dataclass
class DestroyPlan(StagingPlan):
    """Remove a copy: vhost, database and its user, files, basic-auth file(s)."""

    host: Host  # a staging host (docker copies have their own plan)
    row: dict
    auth_files: list[str]

    def lines(self) -> list[str]:
        db, vhost = self.staged.env.database, (self.row.get("details") or {}).get("vhost")
        lines = (
            [f"remove vhost {vhost or web.vhost_path(self.host, self.site, self.env)} and reload nginx"]
            if self.host.web
            else []
        )
        if db is not None and self.staged.admin_db is not None:
            lines.append(f"drop {db.engine} database {db.name} and its user {db.user}")
        return lines + [
            f"delete {self.host.name}:{self.row['path']} and {', '.join(self.auth_files)}",
            f"unregister {self.label}",
        ]

    def params(self) -> dict:
        return {"path": self.row["path"]}


def plan_destroy(oplog, inventory, site_name: str, *, name: str, task: str) -> DestroyPlan:
    """Given a copy, return the plan removing it (reads only): whatever state it is in, ready or half made.
    Raise Refused for production (whatever the registry says) or a registered path other than the template's,
    UsageError if orch did not make it."""
    if _in_docker(oplog, inventory, site_name, name):
        return _docker().plan_destroy(oplog, inventory, site_name, name=name, task=task)
    site, staged, _ = _derived(inventory, site_name, name)
    row = registered(oplog, site.name, staged.name)
    host = inventory.hosts[row["host"]]
    if row["path"] != staged.env.path:
        raise Refused(
            f"{site.name}/{name}: registered path {row['path']} differs from the template's "
            f"{staged.env.path}; refusing to delete either"
        )
    return DestroyPlan(
        "staging-destroy", site.name, staged.name, task, staged, host, row, _auth_files(oplog, site.name, row, staged)
    )


def _auth_files(oplog, site: str, row: dict, staged) -> list[str]:
    """The basic-auth file(s) of a copy: the one its registry row names; for a copy made when the file was named
    after the environment only (`.orch-<env>.htpasswd`), that one too unless another site's live copy of the
    same name may still use it."""
    recorded = (row.get("details") or {}).get("auth_file")
    if recorded:
        return [recorded]
    legacy = posixpath.join(posixpath.dirname(row["path"].rstrip("/")), f".orch-{row['name']}.htpasswd")
    shared = any(other["name"] == row["name"] and other["site"] != site for other in oplog.envs())
    return [staged.auth_file] + ([] if shared else [legacy])


def destroy(oplog, inventory, plan: DestroyPlan) -> dict:
    """Apply a destroy plan as one locked operation (planned again under the lock). Each step tolerates what a
    failed or interrupted create left out. Return a summary."""

    def recheck(p: DestroyPlan) -> DestroyPlan:
        return plan_destroy(oplog, inventory, p.site, name=p.env, task=p.task)

    apply = _docker().apply_destroy if plan.target == "docker" else _apply_destroy
    return execute(oplog, plan, lambda op, p: apply(oplog, op, p), recheck=recheck)


def _apply_destroy(oplog, op, plan: DestroyPlan) -> dict:
    staged, host, path = plan.staged, plan.host, plan.row["path"]
    with connect(host) as conn:
        with op.step("remove the vhost and reload nginx") as step:
            removed = web.remove_vhost(conn, host, plan.site, plan.env) if host.web else False
            step.output("removed" if removed else "no vhost")
        with op.step("drop the database and its user"):
            if staged.env.database and staged.admin_db:
                admin = engine_for(staged.admin_db, staged.env.path)
                _, name, user = _account(staged)
                sql = admin.deprovision_sql(name, user)
                conn.run(admin.script(admin.db.name or admin.ADMIN_DATABASE), stdin=sql.encode())
        with op.step("delete the files") as step:
            conn.run(Command("rm", "-rf", "--", path, *plan.auth_files))
            step.output(", ".join([path, *plan.auth_files]))
    oplog.env_destroyed(plan.site, plan.env)
    return {"site": plan.site, "env": plan.env, "destroyed": True, "path": path}


def listing(oplog, site: str | None = None, inventory=None) -> list[dict]:
    """Return the registered copies (of one site or all), each with its status and age; given the inventory,
    Docker copies also say what their engine reports (state, size) and copies found only by their labels
    there are listed too."""
    rows = [
        row | {"status": status_of(oplog, row), "target": (row.get("details") or {}).get("target", "host")}
        for row in oplog.envs(site)
    ]
    if inventory is not None and inventory.docker:
        rows = _docker().annotate(inventory, rows, site)
    return [row | age(row["created_at"]) for row in rows]


def age(created_at: str | None) -> dict:
    """Given an ISO timestamp (UTC), return {"age_seconds": ..., "age": "3d"|"5h"|"12m"|"40s"}."""
    if not created_at:
        return {"age_seconds": None, "age": ""}
    created = datetime.fromisoformat(created_at)
    seconds = max(0, int((datetime.now(timezone.utc) - created.astimezone(timezone.utc)).total_seconds()))
    return {"age_seconds": seconds, "age": age_text(seconds)}


def _in_docker(oplog, inventory, site_name: str, name: str) -> bool:
    """Whether a copy lives on a Docker host: as registered, or (not registered: a create that died before,
    or one from another oplog) as the site's template says."""
    row = next((r for r in oplog.envs(site_name) if r["name"] == name), None)
    if row is not None:
        return (row.get("details") or {}).get("target") == "docker"
    return model.target_of(inventory.site(site_name)) == "docker"


def _docker():
    from . import staging_docker  # the Docker target builds on this module

    return staging_docker
