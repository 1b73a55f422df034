"""How code is laid out on a production host, and how a promotion switches it and takes it back.

`releases` (Deployer/Capistrano style), for `path: /var/www/shop`:
    /var/www/shop                 -> shop.releases/current   (a symlink: what the web server serves)
    /var/www/shop.releases/current -> releases/7             (switched atomically: symlink + rename)
    /var/www/shop.releases/releases/7/...                    (code; content and config are symlinks into shared/)
    /var/www/shop.releases/shared/wp-content/uploads, wp-config.php
The web server keeps serving `path` unchanged, so `orch adopt` converts an in-place site without touching its vhost.
A release is built as `releases/7.orch-new` and renamed to `releases/7` once complete, so a build cut short is
never taken for a release.

`inplace` (legacy docroots): changed files are written beside the docroot and renamed over the old ones, which
are kept in the promotion's journal so the change can be undone file by file.

Every promotion has a journal on the host, `path.orch-promotions/<id>/` (see release_tool.py), written before
production changes: its id is unique (not an oplog operation id, which repeats across oplogs), and it says what
to undo and how far the promotion got, whichever orch (or oplog) ran it.
"""

from __future__ import annotations

import json
import posixpath
import secrets
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone

from orchestrator.backends.remote import Command, Connector, shipped
from orchestrator.errors import OperationFailed, UsageError

from . import release_tool

REVISION_FILE = "REVISION"
REVISION_PHP = "orch-revision.php"  # served by PHP: proves the new code runs, not cached old code
BAD_MARK = "BAD_RELEASE"
BUILDING = ".orch-new"  # suffix of a release folder still being built
# journal states: production changed (or may have) but the promotion has not ended; an undo has not finished
UNFINISHED = ("switching", "switched", "migrating", "migrated", "undoing")
APPLIED = (*UNFINISHED, "verified")  # what an in-place rollback may undo

_tool_paths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tool(conn: Connector, command: str, args: dict) -> dict:
    """Run a release_tool subcommand on the host with JSON args; return its JSON answer.
    Raise OperationFailed with the tool's one-line error if it fails."""
    if conn not in _tool_paths:  # shipped once per connection: a rollback is timed in round trips
        source = open(release_tool.__file__, encoding="utf-8").read()
        _tool_paths[conn] = shipped.ensure_script(conn, source, "release-tool")
    result = conn.run(
        Command("python3", _tool_paths[conn], command), stdin=json.dumps(args).encode(), check=False, timeout=None
    )
    if not result.ok:
        raise OperationFailed(f"{conn.name}: release tool `{command}` failed: {result.stderr.strip()[-400:]}")
    return json.loads(result.text)


def code_tree(conn: Connector, path: str) -> dict[str, tuple[str, int]]:
    """Return {relative path: (sha256, size)} of the regular files under path (symlinks not followed)."""
    return {rel: tuple(v) for rel, v in tool(conn, "tree", {"path": path})["files"].items()}


def revision_files(revision: dict) -> dict[str, bytes]:
    """The files that tell which release is live: REVISION (JSON) and a PHP file echoing its id."""
    rid = revision["revision"]
    php = f"<?php\nheader('X-Orch-Revision: {rid}');\nheader('Cache-Control: no-store');\necho '{rid}';\n"
    return {REVISION_FILE: (json.dumps(revision, indent=2) + "\n").encode(), REVISION_PHP: php.encode()}


def new_revision(release: str, task: str, source: str, operation_id: int, changes: int) -> dict:
    """Given a release name (a number in the releases layout, a journal id in place), return the revision data
    written into the release. The id carries the time (a journal id has it already)."""
    now = datetime.now(timezone.utc)
    rid = f"r{release}-{now.strftime('%Y%m%d%H%M%S')}" if release.isdigit() else f"r{release}"
    return {
        "revision": rid,
        "release": int(release) if release.isdigit() else release,
        "task": task,
        "source": source,
        "operation": operation_id,
        "created": now.isoformat(),
        "files_changed": changes,
    }


def releases_root(path: str) -> str:
    """Given a docroot path, return the folder of its releases layout (beside it, so the vhost never changes)."""
    return path.rstrip("/") + ".releases"


def new_journal_id() -> str:
    """Return a promotion journal id: sortable by time, and unique whichever orch or oplog made it."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Journal:
    """One promotion's journal as found on the host."""

    id: str
    state: str
    meta: dict = field(default_factory=dict)

    @property
    def release(self) -> str:
        return str(self.meta.get("release", self.id))

    @property
    def unfinished(self) -> bool:
        return self.state in UNFINISHED


@dataclass
class _Layout:
    """What both layouts share: the promotion journals beside the docroot."""

    conn: Connector
    path: str

    @property
    def journal_root(self) -> str:
        return self.path.rstrip("/") + ".orch-promotions"

    def journal_dir(self, journal_id: str) -> str:
        return posixpath.join(self.journal_root, journal_id)

    def begin(self, journal_id: str, meta: dict) -> None:
        """Create the promotion's journal (state `prepared`) before anything is built or changed."""
        tool(self.conn, "begin", {"journal": self.journal_dir(journal_id), "meta": meta})

    def journals(self) -> list[Journal]:
        """Every promotion journal on the host, oldest first."""
        found = tool(self.conn, "journals", {"root": self.journal_root})["journals"]
        return [Journal(j["id"], j["state"], j["meta"]) for j in found]

    def journal(self, journal_id: str) -> Journal | None:
        return next((j for j in self.journals() if j.id == journal_id), None)

    def unfinished(self) -> list[Journal]:
        """Journals of promotions that changed production (or may have) and never ended, oldest first."""
        return [j for j in self.journals() if j.unfinished]

    def state(self, journal_id: str, state: str) -> Command:
        """The command that sets a journal's state atomically (chained into the change it describes)."""
        folder = self.journal_dir(journal_id)
        tmp = posixpath.join(folder, "STATE.tmp")
        return (
            Command("printf", "%s\\n", state)
            .to_file(tmp)
            .then(Command("mv", "-f", tmp, posixpath.join(folder, "STATE")))
        )

    def set_state(self, journal_id: str, state: str) -> None:
        self.conn.run(self.state(journal_id, state))

    def prune_journals(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` journals, never an unfinished one; return their ids."""
        old = [j.id for j in self.journals()[:-keep] if not j.unfinished]
        if old:
            self.conn.run(Command("rm", "-rf", "--", *[self.journal_dir(jid) for jid in old]))
        return old


@dataclass
class Releases(_Layout):
    """The `releases` layout of one environment on one host."""

    @property
    def root(self) -> str:
        return releases_root(self.path)

    def _release_dir(self, name: str) -> str:
        return posixpath.join(self.root, "releases", name)

    def check(self) -> None:
        if not self.conn.ok(Command("test", "-L", self.path).then(Command("test", "-d", self.root + "/current"))):
            raise UsageError(f"{self.path} is not in the releases layout yet: run `orch adopt SITE --layout releases`")

    def unfinished(self) -> list[Journal]:
        """Unfinished promotions whose release is live: one cut short before its switch, or after it switched
        back, left nothing of itself in production."""
        current = self.current()
        return [j for j in super().unfinished() if j.release == current]

    def current(self) -> str | None:
        out = self.conn.run(Command("readlink", posixpath.join(self.root, "current")), check=False).text.strip()
        return posixpath.basename(out) if out else None

    def live_dir(self) -> str:
        current = self.current()
        if current is None:
            raise UsageError(f"{self.root}/current is missing: the releases layout is broken (see `orch releases`)")
        return self._release_dir(current)

    def listing(self) -> list[dict]:
        """Every release with its REVISION data, newest first, marking the current and the bad ones; the current
        one is `unverified` while a promotion to it has not ended (its health was never checked)."""
        script = (
            'cd "$1/releases" 2>/dev/null || exit 0; for d in */; do d=${d%/}; '
            'printf "%s\\t%s\\t" "$d" "$(test -e "$d/BAD_RELEASE" && echo bad)"; '
            'tr -d "\\n" < "$d/REVISION" 2>/dev/null; echo; done'
        )
        out = self.conn.run(Command("sh", "-c", script, "orch", self.root)).text
        current, rows = self.current(), []
        unverified = {j.release for j in self.unfinished()}  # the current one, if its promotion never ended
        for line in out.splitlines():
            name, bad, revision = (line.split("\t", 2) + ["", ""])[:3]
            if not name.isdigit():
                continue  # a build cut short (N.orch-new): never a release
            data = json.loads(revision) if revision.strip().startswith("{") else {}
            status = (
                ("unverified" if name in unverified else "current")
                if name == current
                else ("bad" if bad else "previous")
            )
            rows.append({**data, "release": name, "status": status})
        return sorted(rows, key=lambda r: int(r["release"]), reverse=True)

    def build(self, release: str) -> str:
        """Create releases/N.orch-new as a copy of the current release; return its folder (not yet live)."""
        target = self._release_dir(release + BUILDING)
        self.conn.run(
            Command("rm", "-rf", "--", target)
            .then(Command("mkdir", "-p", target))
            .then(Command("cp", "-a", self.live_dir() + "/.", target))
        )
        return target

    def finish_build(self, release: str) -> None:
        """Give a complete build its release name (still not live)."""
        self.conn.run(Command("mv", "-T", self._release_dir(release + BUILDING), self._release_dir(release)))

    def write_revision(self, target: str, revision_data: dict) -> None:
        for name, data in revision_files(revision_data).items():
            self.conn.put_bytes(data, posixpath.join(target, name), mode=0o644)

    def remove(self, target: str, removed: list[str]) -> None:
        if removed:
            names = b"\0".join(rel.encode() for rel in removed) + b"\0"
            self.conn.run(Command("cd", target).then(Command("xargs", "-0", "rm", "-f", "--")), stdin=names)

    def _switch_command(self, release: str) -> Command:
        tmp = posixpath.join(self.root, "current.orch-new")
        return Command("ln", "-sfn", posixpath.join("releases", release), tmp).then(
            Command("mv", "-T", tmp, posixpath.join(self.root, "current"))
        )

    def switch_to(self, release: str) -> None:
        """Point `current` at a release atomically: a new symlink renamed over the old one."""
        self.conn.run(self._switch_command(release))

    def switch(self, journal: Journal) -> str:
        """The promotion's switch, journaled in the same command: `switching`, the rename, `switched`."""
        self.conn.run(
            self.state(journal.id, "switching")
            .then(self._switch_command(journal.release))
            .then(self.state(journal.id, "switched"))
        )
        return f"current -> releases/{journal.release}"

    def undo(self, journal: Journal, reason: str) -> str:
        """Put the release from before the promotion back and mark the promoted one bad (safe to repeat)."""
        previous = journal.meta["previous"]
        bad = posixpath.join(self._release_dir(journal.release), BAD_MARK)
        self.conn.run(
            self.state(journal.id, "undoing")
            .then(self._switch_command(previous))
            .then(Command("printf", "%s\\n", reason).to_file(bad))
            .then(self.state(journal.id, "undone"))
        )
        return f"current -> releases/{previous}; release {journal.release} marked bad"

    def abandon(self, journal: Journal) -> str:
        """Remove what a promotion that never switched left behind (its build)."""
        self.conn.run(
            Command("rm", "-rf", "--", self._release_dir(journal.release + BUILDING)).then(
                self.state(journal.id, "abandoned")
            )
        )
        return f"unfinished build of release {journal.release} removed"

    def mark_bad(self, release: str, reason: str) -> None:
        self.conn.put_bytes((reason + "\n").encode(), posixpath.join(self._release_dir(release), BAD_MARK))

    def previous_good(self, before: str) -> str | None:
        for row in self.listing():
            if int(row["release"]) < int(before) and row["status"] != "bad":
                return row["release"]
        return None

    def next_number(self) -> int:
        """The next release number: above every release and every build cut short (never reuse a name)."""
        out = self.conn.run(Command("ls", "-1", posixpath.join(self.root, "releases")), check=False).text
        numbers = [int(name.split(".")[0]) for name in out.split() if name.split(".")[0].isdigit()]
        return max(numbers, default=0) + 1

    def prune(self, keep: int) -> list[str]:
        """Delete releases beyond the newest `keep` (never the current one) and builds cut short; return their
        names."""
        current = self.current()
        old = [r["release"] for r in self.listing()][keep:]
        old = [name for name in old if name != current]
        for name in old:
            self.conn.run(Command("rm", "-rf", "--", self._release_dir(name)))
        return old


def adopt(conn, path: str, shared: list[str]) -> dict:
    """Convert an in-place docroot into the releases layout without a moment where `path` is missing.

    The docroot is copied into releases/1, shared paths are moved into shared/ and linked back; then `path`
    and a symlink to the new tree are swapped in one renameat2(RENAME_EXCHANGE). The old folder is kept as
    `<path>.releases/pre-adopt` for a manual way back.
    """
    layout = Releases(conn, path)
    if conn.ok(Command("test", "-L", path)):
        raise UsageError(f"{path} is already a symlink (releases layout?)")
    first = layout._release_dir("1")
    conn.run(
        Command("mkdir", "-p", first, posixpath.join(layout.root, "shared")).then(
            Command("cp", "-a", path + "/.", first)
        )
    )
    linked = [rel for rel in shared if _share(conn, layout, first, path, rel)]
    conn.run(Command("ln", "-sfn", "releases/1", posixpath.join(layout.root, "current")))
    swap = path.rstrip("/") + ".orch-adopt"
    conn.run(Command("ln", "-sfn", posixpath.basename(layout.root) + "/current", swap))
    tool(conn, "exchange", {"a": swap, "b": path})
    conn.run(Command("mv", "-T", swap, posixpath.join(layout.root, "pre-adopt")))
    return {"root": layout.root, "release": "1", "shared": linked}


def _share(conn, layout: Releases, release: str, live: str, rel: str) -> bool:
    """Move one content/config path of the new release into shared/ and link it back (relative link)."""
    rel = rel.strip("/")
    source = posixpath.join(release, rel)
    if not conn.ok(Command("test", "-e", source)):
        return False
    target = posixpath.join(layout.root, "shared", rel)
    depth = rel.count("/") + 2  # from releases/N/<rel's folder> up to the layout root
    link = "/".join([".."] * depth) + "/shared/" + rel
    conn.run(
        Command("mkdir", "-p", posixpath.dirname(target))
        .then(Command("mv", "-T", source, target))
        .then(Command("ln", "-s", link, source))
    )
    # catch up with writes to the live docroot since the copy (uploads do not stop for us)
    if conn.ok(Command("test", "-d", posixpath.join(live, rel))):
        conn.run(Command("rsync", "-a", posixpath.join(live, rel) + "/", target + "/"))
    return True


@dataclass
class InPlace(_Layout):
    """The `inplace` layout: the docroot itself is updated, file by file, with the old files in the journal."""

    def live_dir(self) -> str:
        return self.path

    def incoming(self, journal_id: str) -> str:
        return posixpath.join(self.journal_dir(journal_id), "incoming")

    def switch(self, journal: Journal, changed: list[str], removed: list[str]) -> str:
        """Rename the staged files into the docroot, each move journaled before it is made."""
        done = tool(
            self.conn,
            "inplace",
            {"path": self.path, "journal": self.journal_dir(journal.id), "changed": changed, "removed": removed},
        )
        return f"{len(done['replaced'])} replaced, {len(done['added'])} added, {len(done['removed'])} removed"

    def undo(self, journal: Journal, reason: str = "") -> str:
        """Put back every move the journal records (safe to repeat); say what was restored and deleted."""
        done = tool(self.conn, "undo", {"path": self.path, "journal": self.journal_dir(journal.id)})
        return f"{len(done['restored'])} files restored, {len(done['deleted'])} new files removed"

    def abandon(self, journal: Journal) -> str:
        self.conn.run(Command("rm", "-rf", "--", self.incoming(journal.id)).then(self.state(journal.id, "abandoned")))
        return "staged files removed"

    def applied(self) -> list[Journal]:
        """The promotions whose changes are in the docroot now (not undone), oldest first."""
        return [j for j in self.journals() if j.state in APPLIED]
