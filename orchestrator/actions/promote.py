"""`orch promote`, `orch rollback`, `orch releases`, `orch adopt`: code flows up, safely.

promote: lock -> mandatory production backup (refuse on failure) -> plan (code files added / changed /
removed between the source environment and production; --dry-run stops here) -> build the new release ->
atomic switch -> migrations -> health check (status, the playbook's marker, and the NEW revision answered by
PHP) -> done, or automatic rollback recorded as `rolled_back` with the reason. Content never flows up:
only files the playbook classifies as code are compared and sent.
"""
from __future__ import annotations

import json
import logging
import posixpath
import time
from contextlib import contextmanager

from orchestrator.backends.cms.playbook import playbook_for_site
from orchestrator.backends.envs import gitsource, layouts, web
from orchestrator.backends.envs import staging as staging_model
from orchestrator.backends.remote import Command, connect
from orchestrator.backends.remote.relay import relay
from orchestrator.errors import OperationFailed, OrchError, UsageError
from orchestrator.oplog.run import locked_operation

from .backup import backup_target
from .restore import restore_database
from .targets import Target, target

log = logging.getLogger("orch.promote")
PLAN_LIST_LIMIT = 500  # file names kept in the oplog per category; counts are always complete


def source_env(oplog, inventory, site, name: str):
    """Return the Environment code is promoted from: a staging copy orch made, or one from the inventory."""
    if name in site.environments and name != staging_model.TEMPLATE:
        env = site.environments[name]
        if env.production:
            raise UsageError(f"{site.name}/{name} is production: promote FROM a test environment")
        return env
    if any(row["name"] == name for row in oplog.envs(site.name)):
        return staging_model.derive(site, name).env
    raise UsageError(f"{site.name} has no environment {name!r} (see `orch sites` and `orch staging list`)")


def layout_for(conn, prod: Target):
    if prod.site.layout == "releases":
        layout = layouts.Releases(conn, prod.env.path)
        layout.check()
        return layout
    return layouts.InPlace(conn, prod.env.path)


def make_plan(playbook, source_tree: dict, live_tree: dict) -> dict:
    """Compare code files of source and production; return added/changed/removed with counts and sizes."""
    def code(tree):
        return {rel: v for rel, v in tree.items() if playbook.classify(rel) == "code"
                and rel not in (layouts.REVISION_FILE, layouts.REVISION_PHP)}
    src, live = code(source_tree), code(live_tree)
    added = sorted(set(src) - set(live))
    changed = sorted(rel for rel in set(src) & set(live) if src[rel][0] != live[rel][0])
    removed = sorted(set(live) - set(src))
    return {"added": added, "changed": changed, "removed": removed,
            "counts": {"added": len(added), "changed": len(changed), "removed": len(removed)},
            "bytes": sum(src[rel][1] for rel in added + changed)}


def plan_for_oplog(plan: dict) -> dict:
    return {k: (v[:PLAN_LIST_LIMIT] if isinstance(v, list) else v) for k, v in plan.items()}


def _send(src_conn, src_path: str, dst_conn, dst_path: str, files: list[str]) -> None:
    """Copy files (relative paths) from one host's folder into another's, streamed as tar through here."""
    if not files:
        return
    names = b"\0".join(f.encode() for f in files) + b"\0"
    dst_conn.run(Command("mkdir", "-p", dst_path))
    relay(src_conn, Command("tar", "-C", src_path, "--null", "-T", "-", "-cf", "-"),
          dst_conn, Command("tar", "-C", dst_path, "-xpf", "-", "--unlink-first"), src_stdin=names)


def reload_php(conn, prod: Target) -> str:
    """Reload php-fpm when the host says how (OPcache must not serve replaced files; in place, a restored file
    can even carry the same mtime second as the cached one, so only a reload is certain)."""
    command = (prod.host.web or {}).get("php_reload") or []
    if command:
        conn.run(Command(*command))
        return "; php-fpm reloaded"
    return ""


def live_revision(conn, layout) -> str | None:
    """The revision id in the live tree's REVISION file (None before orch's first release)."""
    result = conn.run(Command("cat", posixpath.join(layout.live_dir(), layouts.REVISION_FILE)), check=False)
    try:
        return json.loads(result.text)["revision"] if result.ok else None
    except (ValueError, KeyError):
        return None


def health_check(prod: Target, playbook, revision: str | None) -> str:
    """Poll the production URL(s) until they answer as configured AND PHP serves the new revision.

    Raise OperationFailed with what was last seen when the timeout passes."""
    cfg = prod.site.promote or {}
    base, connect_to = prod.env.url.rstrip("/"), (prod.host.web or {}).get("connect")
    deadline = time.monotonic() + float(cfg.get("health_timeout", 30))
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            last = _health_once(base, connect_to, cfg, playbook, revision)
            if last is None:
                return f"{base}: {', '.join(cfg.get('health_paths', ['/']))} healthy, revision {revision or '?'} live"
        except OSError as exc:
            last = f"{base}: {exc}"
        time.sleep(0.5)
    raise OperationFailed(f"health check failed: {last}")


def _health_once(base, connect_to, cfg, playbook, revision) -> str | None:
    """One round of checks; return what is wrong, or None when healthy."""
    for path in cfg.get("health_paths", ["/"]):
        status, _, body = web.fetch(base + path, connect_to=connect_to)
        if status != cfg.get("expect_status", 200):
            return f"{path} answered {status}: {body[:160]!r}"
        if path == "/" and not playbook.healthy(body):
            return f"{path} lacks the playbook's health marker"
    if revision is None:
        return None
    status, _, body = web.fetch(f"{base}/{layouts.REVISION_PHP}", connect_to=connect_to)
    if status != 200 or body.strip() != revision:
        return f"/{layouts.REVISION_PHP} answered {status} {body.strip()[:60]!r}, expected {revision}"
    return None


@contextmanager
def open_source(oplog, inventory, site, prod: Target, prod_conn, *, env_name: str | None, ref: str | None):
    """Yield (connector, folder, label) of the code to promote: a test environment's folder on its host, or
    a git ref unpacked beside production's folder (removed afterwards)."""
    if ref is None:
        env = source_env(oplog, inventory, site, env_name)
        with connect(inventory.hosts[env.host]) as conn:
            yield conn, env.path, env_name
        return
    repository = site.raw.get("repository")
    if not repository:
        raise UsageError(f"sites/{site.name}.yaml declares no `repository`, so --ref cannot be used")
    git_dir = gitsource.mirror(repository["url"])
    commit = gitsource.resolve(git_dir, ref)
    parent = posixpath.dirname(prod.env.path.rstrip("/"))
    folder = prod_conn.run(Command("mktemp", "-d", "-p", parent, ".orch-src.XXXXXX")).text.strip()
    try:
        gitsource.send_tree(git_dir, commit, repository.get("subdir"), prod_conn, folder)
        yield prod_conn, folder, f"{ref}@{commit[:12]}"
    finally:
        prod_conn.run(Command("rm", "-rf", "--", folder), check=False)


def preview(oplog, inventory, site_name: str, source: str | None, ref: str | None = None) -> dict:
    """The exact file plan of a promotion, computed without changing anything (--dry-run)."""
    site = inventory.site(site_name)
    prod, playbook = target(inventory, site.name, "production"), playbook_for_site(site)
    with connect(prod.host) as conn, \
            open_source(oplog, inventory, site, prod, conn, env_name=source, ref=ref) as (src_conn, path, label):
        plan = make_plan(playbook, layouts.code_tree(src_conn, path),
                         layouts.code_tree(conn, layout_for(conn, prod).live_dir()))
    return {"site": site.name, "from": label, "layout": site.layout, "dry_run": True, **plan}


def promote(oplog, inventory, site_name: str, *, source: str | None, task: str, migrate: bool = True,
            ref: str | None = None) -> dict:
    """Promote code from a test environment (`source`) or a git `ref` to production; return the outcome.
    Raise OperationFailed when the promotion did not happen (nothing changed) or was rolled back."""
    site = inventory.site(site_name)
    prod, playbook = target(inventory, site.name, "production"), playbook_for_site(site)
    params = {"from": source, "ref": ref, "layout": site.layout, "migrate": migrate}
    with locked_operation(oplog, site=site.name, env="production", task=task, action="promote",
                          params=params) as op, connect(prod.host) as conn:
        layout = layout_for(conn, prod)
        with op.step("mandatory production backup") as step:
            try:
                backup = backup_target(oplog, prod, task=task, lock=False)
            except OrchError as exc:
                raise OperationFailed(f"promotion refused, production unchanged: the backup failed: {exc}") from exc
            op.artifact("pre-promotion-backup", backup["backup_id"], details=backup["snapshots"])
            step.output(f"backup {backup['backup_id']}")
        with open_source(oplog, inventory, site, prod, conn, env_name=source, ref=ref) as (src_conn, path, label):
            with op.step(f"plan: compare code files with {label}") as step:
                live = layouts.code_tree(conn, layout.live_dir())
                plan = make_plan(playbook, layouts.code_tree(src_conn, path), live)
                step.output(f"{plan['counts']} {plan['bytes']} bytes")
                op.artifact("plan", f"{sum(plan['counts'].values())} files", size=plan["bytes"],
                            details=plan_for_oplog(plan) | {"source": label})
            if not any(plan["counts"].values()):
                return {"site": site.name, "status": "unchanged", "backup_id": backup["backup_id"], **plan}
            runner = _ReleasesRun if isinstance(layout, layouts.Releases) else _InPlaceRun
            return runner(op, layout, conn, src_conn, path, prod, playbook, plan, task, label, migrate,
                          backup).run() | {"backup_id": backup["backup_id"], "from": label}


class _Run:
    """One promotion after its backup and plan: build, switch, migrate, check; roll back on failure."""

    def __init__(self, op, layout, conn, src_conn, src_path, prod, playbook, plan, task, source, migrate, backup):
        self.op, self.layout, self.conn, self.src_conn, self.prod = op, layout, conn, src_conn, prod
        self.src_path = src_path
        self.playbook, self.plan, self.migrate, self.backup = playbook, plan, migrate, backup
        self.revision = layouts.new_revision(self._number(), task, source, op.id, sum(plan["counts"].values()))
        self.migrated = False

    def run(self) -> dict:
        with self.op.step("build the new release") as step:
            step.output(self.build())
        with self.op.step("switch") as step:
            started = time.monotonic()
            step.output(self.switch() + f" in {time.monotonic() - started:.3f}s")
        try:
            self._migrate()
            with self.op.step("health check") as step:
                step.output(health_check(self.prod, self.playbook, self.revision["revision"]))
        except OrchError as failure:
            self._roll_back(str(failure))
        self.op.artifact("revision", self.revision["revision"], details=self.revision)
        return {"site": self.prod.site.name, "status": "ok", "revision": self.revision["revision"],
                **self.plan["counts"], "release": str(self.revision["release"])}

    def _migrate(self) -> None:
        with self.op.step("migrations") as step:
            if not self.migrate:
                step.skip("--no-migrate")
                return
            command = self.playbook.choose_migration(self.prod.env.path, self.prod.env.url or "", self.conn.ok)
            if command is None:
                step.skip("the playbook has no migration for this site")
                return
            self.migrated = True
            result = self.conn.run(command, check=False, timeout=600)
            step.output(result.text[-1000:] + result.stderr[-1000:])
            if not result.ok:
                raise OperationFailed(f"migration failed (exit {result.exit_status}): {result.stderr.strip()[-300:]}")

    def _roll_back(self, reason: str) -> None:
        with self.op.step("automatic rollback") as step:
            step.output(self.undo(reason))
            policy = (self.prod.site.promote or {}).get("restore_db_on_rollback")
            if self.migrated and policy and "db" in self.backup["snapshots"]:
                step.output(restore_database(self.conn, self.prod, self.backup["snapshots"]["db"]))
        self.op.artifact("rollback", self.revision["revision"], details={"reason": reason})
        self.op.finish("rolled_back", error=reason)
        raise OperationFailed(f"promotion rolled back: {reason}")


class _ReleasesRun(_Run):
    def _number(self) -> int:
        return self.layout.next_number()

    def build(self) -> str:
        self.previous = self.layout.current()
        self.target = self.layout.build(self.revision)
        _send(self.src_conn, self.src_path, self.conn, self.target, self.plan["added"] + self.plan["changed"])
        self.layout.remove(self.target, self.plan["removed"])
        self.layout.write_revision(self.target, self.revision)
        return f"{self.target} (from release {self.previous})"

    def switch(self) -> str:
        self.layout.switch(str(self.revision["release"]))
        reloaded = reload_php(self.conn, self.prod)
        if not reloaded:  # $realpath_root serves the new code, but every old release stays cached (bench/README.md)
            log.warning("%s: hosts.%s.web.php_reload is not set: OPcache keeps every old release until it is full",
                        self.prod.label, self.prod.host.name)
        return f"current -> releases/{self.revision['release']}" + reloaded

    def undo(self, reason: str) -> str:
        self.layout.switch(self.previous)
        self.layout.mark_bad(str(self.revision["release"]), reason)
        return (f"current -> releases/{self.previous}; release {self.revision['release']} marked bad"
                + reload_php(self.conn, self.prod))

    def run(self) -> dict:
        result = super().run()
        keep = (self.prod.site.promote or {}).get("keep_releases", 5)
        removed = self.layout.prune(keep)
        return result | {"pruned_releases": removed}


class _InPlaceRun(_Run):
    def _number(self) -> int:
        return int(time.time())

    def build(self) -> str:
        incoming = self.layout.incoming(self.op.id)
        _send(self.src_conn, self.src_path, self.conn, incoming, self.plan["added"] + self.plan["changed"])
        for name, data in layouts.revision_files(self.revision).items():
            self.conn.put_bytes(data, posixpath.join(incoming, name), mode=0o644)
        return f"{len(self.plan['added']) + len(self.plan['changed'])} files staged in {incoming}"

    def switch(self) -> str:
        changed = self.plan["added"] + self.plan["changed"] + [layouts.REVISION_FILE, layouts.REVISION_PHP]
        done = self.layout.apply(self.op.id, changed, self.plan["removed"])
        return (f"{len(done['replaced'])} replaced, {len(done['added'])} added, {len(done['removed'])} removed"
                + reload_php(self.conn, self.prod))

    def undo(self, reason: str) -> str:
        done = self.layout.undo(self.op.id)
        return (f"{len(done['restored'])} files restored, {len(done['deleted'])} new files removed"
                + reload_php(self.conn, self.prod))

