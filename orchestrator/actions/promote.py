"""`orch promote`: code flows up, safely.

plan (code files added / changed / removed between the source and production; --dry-run prints it) -> lock ->
the plan decided again under the lock -> mandatory production backup (refuse on failure) -> the promotion's
journal on the host -> build the new release -> point of no return: atomic switch, php-fpm reload, migrations,
health check (status, the playbook's marker, and the NEW revision answered by PHP) -> done, or, on ANY
exception after the first production change, an automatic rollback recorded as `rolled_back` with the reason.
Content never flows up: only files the playbook classifies as code are compared and sent.
"""

from __future__ import annotations

import logging
import posixpath
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from orchestrator.backends.cms.playbook import playbook_for_site
from orchestrator.backends.envs import gitsource, layouts
from orchestrator.backends.envs import staging as staging_model
from orchestrator.backends.remote import Command, connect
from orchestrator.backends.remote.relay import send_files
from orchestrator.errors import OperationFailed, OrchError, UsageError

from .backup import backup_target
from .compare import AroundPromotion
from .plan import Plan, execute
from .release import (
    PromoteOptions,
    health_base,
    health_check,
    layout_for,
    options,
    php_reload_command,
    point_of_no_return,
    reload_php,
    undo_promotion,
)
from .staging import status_of
from .targets import Target, target

log = logging.getLogger("orch.promote")
PLAN_LIST_LIMIT = 500  # file names kept in the oplog per category; counts are always complete
NOT_PROMOTED = (layouts.REVISION_FILE, layouts.REVISION_PHP)  # orch writes these into every release


@dataclass(frozen=True)
class FilePlan:
    """The code files a promotion adds, changes and removes, and the bytes it sends."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    bytes: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "changed": len(self.changed), "removed": len(self.removed)}

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    @property
    def sent(self) -> list[str]:
        return [*self.added, *self.changed]

    def lines(self) -> list[str]:
        return (
            [f"+ {rel}" for rel in self.added]
            + [f"~ {rel}" for rel in self.changed]
            + [f"- {rel}" for rel in self.removed]
        )

    def as_dict(self, limit: int | None = None) -> dict:
        """The plan as JSON-ready data; with `limit`, each list is cut to that many names (counts stay whole)."""
        cut = (lambda names: list(names[:limit])) if limit else list
        return {
            "added": cut(self.added),
            "changed": cut(self.changed),
            "removed": cut(self.removed),
            "counts": self.counts,
            "bytes": self.bytes,
        }


def make_plan(playbook, source_tree: dict, live_tree: dict) -> FilePlan:
    """Given the playbook and {path: (sha256, size)} trees of the source and of production, return the code
    files to add, change and remove (sorted), and the bytes to send. Content, config, caches and the files orch
    writes itself are never part of it."""

    def code(tree: dict) -> dict:
        return {rel: v for rel, v in tree.items() if rel not in NOT_PROMOTED and playbook.classify(rel) == "code"}

    src, live = code(source_tree), code(live_tree)
    added = sorted(set(src) - set(live))
    changed = sorted(rel for rel in set(src) & set(live) if src[rel][0] != live[rel][0])
    removed = sorted(set(live) - set(src))
    return FilePlan(tuple(added), tuple(changed), tuple(removed), sum(src[rel][1] for rel in added + changed))


@dataclass
class PromotePlan(Plan):
    """Which code files go from the source to production, in which layout, with or without migrations."""

    target: Target
    source: str | None  # a test environment's name (--from), or None with a ref
    ref: str | None  # a git ref (--ref)
    label: str  # where the code comes from, as shown: `t14883` or `v2.4.1@1a2b3c4d5e6f`
    migrate: bool
    files: FilePlan | None  # None: compared under the lock only (hashing both trees twice costs seconds)

    def lines(self) -> list[str]:
        head = f"code from {self.label} into the {self.target.site.layout} layout: "
        tail = "" if self.migrate else "; no migrations"
        if self.files is None:
            return [head + "files compared under the lock" + tail]
        counts = self.files.counts
        head += (
            f"{counts['added']} added, {counts['changed']} changed, {counts['removed']} removed "
            f"({self.files.bytes} bytes)"
        )
        return [head + tail, *self.files.lines()] if not self.files.empty else []

    def params(self) -> dict:
        return {"from": self.source, "ref": self.ref, "layout": self.target.site.layout, "migrate": self.migrate}

    def as_dict(self) -> dict:
        return {
            "site": self.site,
            "env": self.env,
            "task": self.task,
            "from": self.label,
            "layout": self.target.site.layout,
            "migrate": self.migrate,
            **(self.files.as_dict() if self.files else {}),
        }


def source_env(oplog, site, name: str):
    """Return the Environment code is promoted from: a staging copy orch made, or one from the inventory.
    Raise UsageError for production, the staging template, or an unknown name."""
    if name in site.environments and name != staging_model.TEMPLATE:
        env = site.environments[name]
        if env.production:
            raise UsageError(f"{site.name}/{name} is production: promote FROM a test environment")
        return env
    for row in oplog.envs(site.name):
        if row["name"] == name:
            if (status := status_of(oplog, row)) != "ready":  # a half-made copy holds no code worth promoting
                raise UsageError(f"{site.name}/{name} is {status}, not ready: promote from a copy that is")
            if (row.get("details") or {}).get("target") == "docker":
                raise UsageError(
                    f"{site.name}/{name} is a Docker copy: promoting from one is not supported yet "
                    "(promote from a staging host copy, or --ref a git tag)"
                )
            return staging_model.derive(site, name).env
    raise UsageError(f"{site.name} has no environment {name!r} (see `orch sites` and `orch staging list`)")


def _check_folder(conn, site, env_name: str, env) -> None:
    """Raise UsageError unless the source environment's folder exists (an empty tree would read as "remove
    all of production's code")."""
    if not conn.ok(Command("test", "-d", env.path)):
        raise UsageError(f"{site.name}/{env_name}: {env.path} does not exist on {env.host}")


def _git_commit(site, ref: str) -> tuple[str, str, dict]:
    """Return (mirror folder, commit, repository block) of a ref of the site's repository; raise UsageError if
    the site has no repository or the repository no such ref."""
    repository = site.raw.get("repository")
    if not repository:
        raise UsageError(f"sites/{site.name}.yaml declares no `repository`, so --ref cannot be used")
    git_dir = gitsource.mirror(repository["url"])
    return git_dir, gitsource.resolve(git_dir, ref), repository


def check_source(oplog, inventory, prod: Target, *, env_name: str | None, ref: str | None) -> str:
    """Check that the code to promote is there without reading it; return its label."""
    if env_name is not None:
        env = source_env(oplog, prod.site, env_name)
        with connect(inventory.hosts[env.host]) as conn:
            _check_folder(conn, prod.site, env_name, env)
        return env_name
    _git_dir, commit, _repository = _git_commit(prod.site, ref or "")
    return f"{ref}@{commit[:12]}"


@contextmanager
def open_source(oplog, inventory, prod: Target, prod_conn, *, env_name: str | None, ref: str | None):
    """Yield (connector, folder, label) of the code to promote: a test environment's folder on its host, or
    a git ref unpacked beside production's folder (removed afterwards)."""
    site = prod.site
    if env_name is not None:
        env = source_env(oplog, site, env_name)
        with connect(inventory.hosts[env.host]) as conn:
            _check_folder(conn, site, env_name, env)
            yield conn, env.path, env_name
        return
    git_dir, commit, repository = _git_commit(site, ref or "")
    parent = posixpath.dirname(prod.path.rstrip("/"))
    folder = prod_conn.run(Command("mktemp", "-d", "-p", parent, ".orch-src.XXXXXX")).text.strip()
    try:
        gitsource.send_tree(git_dir, commit, repository.get("subdir"), prod_conn, folder)
        yield prod_conn, folder, f"{ref}@{commit[:12]}"
    finally:
        prod_conn.run(Command("rm", "-rf", "--", folder), check=False)


def refuse_unfinished(layout, site: str) -> None:
    """Raise UsageError if an earlier promotion changed production and never ended (its health unknown)."""
    for journal in layout.unfinished():
        raise UsageError(
            f"{site}: promotion {journal.id} (release {journal.release}, task "
            f"{journal.meta.get('task', '?')}) changed production and never finished (state "
            f"{journal.state}): `orch rollback {site}` takes it back"
        )


def _decide(plan: PromotePlan, conn, source) -> PromotePlan:
    """Given a plan's intent, a connection to production and the opened source, return the plan with the file
    plan computed now; raise an OrchError if the promotion cannot be done."""
    src_conn, path, label = source
    layout = _production(conn, plan.target)
    files = make_plan(
        playbook_for_site(plan.target.site),
        layouts.code_tree(src_conn, path),
        layouts.code_tree(conn, layout.live_dir()),
    )
    return PromotePlan(
        plan.action, plan.site, plan.env, plan.task, plan.target, plan.source, plan.ref, label, plan.migrate, files
    )


def _production(conn, prod: Target):
    """Return production's layout, checked: adopted if it says `releases`, no promotion left unfinished."""
    layout = layout_for(conn, prod)
    refuse_unfinished(layout, prod.site.name)
    return layout


def plan_promote(
    oplog,
    inventory,
    site_name: str,
    *,
    source: str | None,
    ref: str | None,
    task: str,
    migrate: bool = True,
    compare: bool = True,
) -> PromotePlan:
    """Given a site and where its code comes from (`source` env or git `ref`), return the promotion's plan
    (reads only). Without `compare`, every guard is checked but the files are left to be compared under the
    lock (where they are compared anyway). Raise UsageError if the promotion cannot be made as asked."""
    if (source is None) == (ref is None):
        raise UsageError("give exactly one of --from ENV or --ref TAG_OR_SHA")
    prod = target(inventory, site_name, "production")
    health_base(prod, "a promotion")
    draft = PromotePlan(
        "promote", prod.site.name, "production", task, prod, source, ref, source or ref or "", migrate, None
    )
    with connect(prod.host) as conn:
        if not compare:
            _production(conn, prod)
            draft.label = check_source(oplog, inventory, prod, env_name=source, ref=ref)
            return draft
        with open_source(oplog, inventory, prod, conn, env_name=source, ref=ref) as src:
            return _decide(draft, conn, src)


def promote(oplog, inventory, plan: PromotePlan) -> dict:
    """Given a plan, promote: lock, decide the file plan again, back up, build, switch, check; return the
    outcome. Raise OperationFailed when the promotion did not happen (nothing changed) or was rolled back."""
    with ExitStack() as stack:
        conn = stack.enter_context(connect(plan.target.host))
        opened = {}

        def recheck(p: PromotePlan) -> PromotePlan:  # under the lock: sources and production as they are now
            opened["source"] = stack.enter_context(
                open_source(oplog, inventory, p.target, conn, env_name=p.source, ref=p.ref)
            )
            return _decide(p, conn, opened["source"])

        return execute(
            oplog, plan, lambda op, p: _Promotion(oplog, op, p, conn, opened["source"]).run(), recheck=recheck
        )


class _Promotion:
    """One promotion under its lock: backup, journal, build, then the point of no return."""

    def __init__(self, oplog, op, plan: PromotePlan, conn, source):
        self.oplog, self.op, self.plan, self.conn = oplog, op, plan, conn
        self.src_conn, self.src_path, _ = source
        self.prod: Target = plan.target
        self.opts: PromoteOptions = options(self.prod)
        self.playbook = playbook_for_site(self.prod.site)
        self.layout = layout_for(conn, self.prod)
        self.files: FilePlan = plan.files or FilePlan()  # decided under the lock (recheck): always set here
        self.migrated = False

    def run(self) -> dict:
        files = self.files
        self.op.artifact(
            "plan",
            f"{sum(files.counts.values())} files",
            size=files.bytes,
            details=files.as_dict(PLAN_LIST_LIMIT) | {"source": self.plan.label},
        )
        if files.empty:
            return {"site": self.prod.site.name, "status": "unchanged", "from": self.plan.label, **files.as_dict()}
        look = AroundPromotion(self.oplog, self.op, self.prod, self.opts.visual_threshold)
        look.before()  # production's screenshots, before anything changes
        backup = self._backup()
        self.journal = self._begin(backup)
        self._build()
        with point_of_no_return(self.op, self.undo):
            with self.op.step("switch") as step:
                started = time.monotonic()
                done = self._switch() + f" in {time.monotonic() - started:.3f}s"
                step.output(done + reload_php(self.conn, self.prod))
            self._migrate()
            with self.op.step("health check") as step:
                step.output(health_check(self.prod, self.opts, self.playbook, self.revision["revision"]))
            look.after()  # above promote.visual_threshold: rolled back like a failed health check
        self.layout.set_state(self.journal.id, "verified")
        self.op.artifact("revision", self.revision["revision"], details=self.revision)
        return {
            "site": self.prod.site.name,
            "status": "ok",
            "revision": self.revision["revision"],
            "release": str(self.revision["release"]),
            "backup_id": backup["backup_id"],
            "from": self.plan.label,
            **files.counts,
            **self._prune(),
        }

    def _backup(self) -> dict:
        with self.op.step("mandatory production backup") as step:
            try:
                backup = backup_target(self.oplog, self.prod, task=self.plan.task, lock=False)
            except OrchError as exc:
                raise OperationFailed(f"promotion refused, production unchanged: the backup failed: {exc}") from exc
            self.op.artifact("pre-promotion-backup", backup["backup_id"], details=backup["snapshots"])
            step.output(f"backup {backup['backup_id']}")
        return backup

    def _begin(self, backup: dict) -> layouts.Journal:
        """Record the promotion's journal, in the oplog and then on the host, before anything is built."""
        journal_id = layouts.new_journal_id()
        release, previous = journal_id, None  # in place, a promotion is its journal
        if isinstance(self.layout, layouts.Releases):
            release, previous = str(self.layout.next_number()), self.layout.current()
        self.revision = layouts.new_revision(
            release, self.plan.task, self.plan.label, self.op.id, sum(self.files.counts.values())
        )
        self.migration = self._migration()
        meta = {
            "layout": self.prod.site.layout,
            "release": release,
            "revision": self.revision["revision"],
            "previous": previous,
            "task": self.plan.task,
            "created": self.revision["created"],
            "operation": self.op.id,
            "source": self.plan.label,
            "migration": self.migration is not None,
            "backup": backup["backup_id"],
            "db_snapshot": backup["snapshots"].get("db"),
            "php_reload": bool(php_reload_command(self.prod)),
        }
        self.op.artifact("journal", journal_id, details=meta)  # first: a reaper finds it even if we die next
        self.layout.begin(journal_id, meta)
        return layouts.Journal(journal_id, "prepared", meta)

    def _migration(self) -> Command | None:
        if not self.plan.migrate:
            return None
        return self.playbook.choose_migration(self.prod.path, self.prod.env.url or "", self.conn.ok)

    def _build(self) -> None:
        """Put the new files in place beside production (nothing live changes); clean up if that fails."""
        files = self.files
        with self.op.step("build the new release") as step:
            try:
                if isinstance(self.layout, layouts.Releases):
                    folder = self.layout.build(self.journal.release)
                    send_files(self.src_conn, self.src_path, self.conn, folder, files.sent, files.bytes)
                    self.layout.remove(folder, list(files.removed))
                    self.layout.write_revision(folder, self.revision)
                    self.layout.finish_build(self.journal.release)
                    step.output(f"release {self.journal.release} (from release {self.journal.meta['previous']})")
                else:
                    folder = self.layout.incoming(self.journal.id)
                    send_files(self.src_conn, self.src_path, self.conn, folder, files.sent, files.bytes)
                    for name, data in layouts.revision_files(self.revision).items():
                        self.conn.put_bytes(data, posixpath.join(folder, name), mode=0o644)
                    step.output(f"{len(files.sent)} files staged in {folder}")
            except BaseException:
                try:
                    self.layout.abandon(self.journal)
                except Exception:  # noqa: BLE001 -- the build's own failure is the one to report
                    log.warning(
                        "%s: could not remove the unfinished build of promotion %s",
                        self.prod.label,
                        self.journal.id,
                        exc_info=True,
                    )
                raise

    def _switch(self) -> str:
        if isinstance(self.layout, layouts.Releases):
            done = self.layout.switch(self.journal)
            if not php_reload_command(self.prod):  # $realpath_root serves the new code, but OPcache keeps every
                log.warning(
                    "%s: hosts.%s.web.php_reload is not set: OPcache keeps every old release until it is full",
                    self.prod.label,
                    self.prod.host.name,
                )
            return done
        return self.layout.switch(self.journal, [*self.files.sent, *NOT_PROMOTED], list(self.files.removed))

    def _migrate(self) -> None:
        with self.op.step("migrations") as step:
            command = self.migration
            if command is None:
                step.skip("--no-migrate" if not self.plan.migrate else "the playbook has no migration for this site")
                return
            self.layout.set_state(self.journal.id, "migrating")
            self.migrated = True
            result = self.conn.run(command, check=False, timeout=600)
            step.output(result.text[-1000:] + result.stderr[-1000:])
            if not result.ok:
                raise OperationFailed(f"migration failed (exit {result.exit_status}): {result.stderr.strip()[-300:]}")
            self.layout.set_state(self.journal.id, "migrated")

    def undo(self, reason: str) -> str:
        done = undo_promotion(self.conn, self.prod, self.layout, self.journal, reason, migrated=self.migrated)
        self.op.artifact("rollback", self.revision["revision"], details={"reason": reason, "journal": self.journal.id})
        return done

    def _prune(self) -> dict:
        """Keep `keep_releases` releases (releases layout) and promotion journals (both layouts)."""
        keep = self.opts.keep_releases
        pruned = {"pruned_journals": self.layout.prune_journals(keep)}
        if isinstance(self.layout, layouts.Releases):
            pruned["pruned_releases"] = self.layout.prune(keep)
        return pruned
