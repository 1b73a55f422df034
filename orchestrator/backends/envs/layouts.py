"""How code is laid out on a production host, and how a promotion switches it.

`releases` (Deployer/Capistrano style), for `path: /var/www/shop`:
    /var/www/shop                 -> shop.releases/current   (a symlink: what the web server serves)
    /var/www/shop.releases/current -> releases/7             (switched atomically: symlink + rename)
    /var/www/shop.releases/releases/7/...                    (code; content and config are symlinks into shared/)
    /var/www/shop.releases/shared/wp-content/uploads, wp-config.php
The web server keeps serving `path` unchanged, so `orch adopt` converts an in-place site without touching its vhost.

`inplace` (legacy docroots): changed files are written beside the docroot and renamed over the old ones, which
are kept in a rollback set (`path.orch-rollback/<operation>/`) so the change can be undone file by file.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from datetime import datetime, timezone

from orchestrator.backends.remote import Command, shipped
from orchestrator.errors import OperationFailed, UsageError

from . import release_tool

REVISION_FILE = "REVISION"
REVISION_PHP = "orch-revision.php"   # served by PHP: proves the new code runs, not cached old code
BAD_MARK = "BAD_RELEASE"


def tool(conn, command: str, args: dict) -> dict:
    """Run a release_tool subcommand on the host with JSON args; return its JSON answer."""
    path = shipped.ensure_script(conn, open(release_tool.__file__, encoding="utf-8").read(), "release-tool")
    result = conn.run(Command("python3", path, command), stdin=json.dumps(args).encode(), check=False, timeout=None)
    if not result.ok:
        raise OperationFailed(f"{conn.name}: release tool `{command}` failed: {result.stderr.strip()[-400:]}")
    return json.loads(result.text)


def code_tree(conn, path: str) -> dict[str, tuple[str, int]]:
    """Return {relative path: (sha256, size)} of the regular files under path (symlinks not followed)."""
    return {rel: tuple(v) for rel, v in tool(conn, "tree", {"path": path})["files"].items()}


def revision_files(revision: dict) -> dict[str, bytes]:
    """The files that tell which release is live: REVISION (JSON) and a PHP file echoing its id."""
    rid = revision["revision"]
    php = (f"<?php\nheader('X-Orch-Revision: {rid}');\nheader('Cache-Control: no-store');\n"
           f"echo '{rid}';\n")
    return {REVISION_FILE: (json.dumps(revision, indent=2) + "\n").encode(), REVISION_PHP: php.encode()}


def new_revision(number: int, task: str, source: str, operation_id: int, changes: int) -> dict:
    now = datetime.now(timezone.utc)
    return {"revision": f"r{number}-{now.strftime('%Y%m%d%H%M%S')}", "release": number, "task": task,
            "source": source, "operation": operation_id, "created": now.isoformat(), "files_changed": changes}


@dataclass
class Releases:
    """The `releases` layout of one environment on one host."""

    conn: object
    path: str

    @property
    def root(self) -> str:
        return self.path.rstrip("/") + ".releases"

    def _release_dir(self, name: str) -> str:
        return posixpath.join(self.root, "releases", name)

    def check(self) -> None:
        if not self.conn.ok(Command("test", "-L", self.path).then(Command("test", "-d", self.root + "/current"))):
            raise UsageError(f"{self.path} is not in the releases layout yet: run `orch adopt SITE --layout releases`")

    def current(self) -> str | None:
        out = self.conn.run(Command("readlink", posixpath.join(self.root, "current")), check=False).text.strip()
        return posixpath.basename(out) if out else None

    def live_dir(self) -> str:
        return self._release_dir(self.current())

    def listing(self) -> list[dict]:
        """Every release with its REVISION data, newest first, marking the current and the bad ones."""
        script = ('cd "$1/releases" 2>/dev/null || exit 0; for d in */; do d=${d%/}; '
                  'printf "%s\\t%s\\t" "$d" "$(test -e "$d/BAD_RELEASE" && echo bad)"; '
                  'tr -d "\\n" < "$d/REVISION" 2>/dev/null; echo; done')
        out = self.conn.run(Command("sh", "-c", script, "orch", self.root)).text
        current, rows = self.current(), []
        for line in out.splitlines():
            name, bad, revision = (line.split("\t", 2) + ["", ""])[:3]
            data = json.loads(revision) if revision.strip().startswith("{") else {}
            status = "current" if name == current else ("bad" if bad else "previous")
            rows.append({**data, "release": name, "status": status})
        return sorted(rows, key=lambda r: int(r["release"]) if r["release"].isdigit() else 0, reverse=True)

    def build(self, revision_data: dict) -> str:
        """Create releases/N as a copy of the current release; return its folder (not yet live)."""
        target = self._release_dir(str(revision_data["release"]))
        self.conn.run(Command("mkdir", "-p", target).then(Command("cp", "-a", self.live_dir() + "/.", target)))
        return target

    def write_revision(self, target: str, revision_data: dict) -> None:
        for name, data in revision_files(revision_data).items():
            self.conn.put_bytes(data, posixpath.join(target, name), mode=0o644)

    def remove(self, target: str, removed: list[str]) -> None:
        if removed:
            names = b"\0".join(rel.encode() for rel in removed) + b"\0"
            self.conn.run(Command("cd", target).then(Command("xargs", "-0", "rm", "-f", "--")), stdin=names)

    def switch(self, release: str) -> None:
        """Point `current` at a release atomically: a new symlink renamed over the old one."""
        tmp = posixpath.join(self.root, "current.orch-new")
        self.conn.run(Command("ln", "-sfn", posixpath.join("releases", release), tmp)
                      .then(Command("mv", "-T", tmp, posixpath.join(self.root, "current"))))

    def mark_bad(self, release: str, reason: str) -> None:
        self.conn.put_bytes((reason + "\n").encode(), posixpath.join(self._release_dir(release), BAD_MARK))

    def previous_good(self, before: str) -> str | None:
        for row in self.listing():
            if row["release"].isdigit() and int(row["release"]) < int(before) and row["status"] != "bad":
                return row["release"]
        return None

    def next_number(self) -> int:
        numbers = [int(r["release"]) for r in self.listing() if r["release"].isdigit()]
        return max(numbers, default=0) + 1

    def prune(self, keep: int) -> list[str]:
        """Delete releases beyond the newest `keep` (never the current one); return their names."""
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
    conn.run(Command("mkdir", "-p", first, posixpath.join(layout.root, "shared"))
             .then(Command("cp", "-a", path + "/.", first)))
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
    conn.run(Command("mkdir", "-p", posixpath.dirname(target)).then(Command("mv", "-T", source, target))
             .then(Command("ln", "-s", link, source)))
    # catch up with writes to the live docroot since the copy (uploads do not stop for us)
    if conn.ok(Command("test", "-d", posixpath.join(live, rel))):
        conn.run(Command("rsync", "-a", posixpath.join(live, rel) + "/", target + "/"))
    return True


@dataclass
class InPlace:
    """The `inplace` layout: the docroot itself is updated, file by file, with a rollback set."""

    conn: object
    path: str

    def live_dir(self) -> str:
        return self.path

    def incoming(self, operation_id: int) -> str:
        return f"{self.path.rstrip('/')}.orch-incoming-{operation_id}"

    def rollback_dir(self, operation_id: int) -> str:
        return posixpath.join(f"{self.path.rstrip('/')}.orch-rollback", str(operation_id))

    def apply(self, operation_id: int, changed: list[str], removed: list[str]) -> dict:
        rollback = self.rollback_dir(operation_id)
        self.conn.run(Command("mkdir", "-p", rollback))
        try:
            return tool(self.conn, "inplace", {"path": self.path, "incoming": self.incoming(operation_id),
                                               "rollback": rollback, "changed": changed, "removed": removed})
        finally:
            self.conn.run(Command("rm", "-rf", "--", self.incoming(operation_id)), check=False)

    def undo(self, operation_id: int) -> dict:
        return tool(self.conn, "undo", {"path": self.path, "rollback": self.rollback_dir(operation_id)})
