"""SQLite: an online backup (consistent while the site writes) taken on the host, streamed to stdout."""

from __future__ import annotations

import posixpath

from orchestrator.backends.remote import Command

from .base import Engine

# Our own constant scripts; values only ever arrive as positional parameters ("$1"...), quoted by Command.
BACKUP_SCRIPT = """set -e
tmp=$(mktemp "${TMPDIR:-/tmp}/orch-sqlite.XXXXXX")
trap 'rm -f "$tmp"' EXIT
python3 - "$1" "$tmp" <<'PY'
import sqlite3, sys
src = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()
PY
cat "$tmp"
"""
# The stream is checked before it replaces anything: a `restic dump` that failed (a wrong key, a locked or
# unreachable repository, a forgotten snapshot) gives an empty or cut stream, and an empty file would pass an
# integrity check. The restored file gets the live one's mode (and owner, as root): mktemp makes it 0600.
RESTORE_SCRIPT = """set -e
tmp=$(mktemp "$1.orch-restore.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
python3 - "$tmp" <<'PY'
import sqlite3, sys
with open(sys.argv[1], "rb") as f:
    if f.read(16) != b"SQLite format 3\\x00":
        sys.exit("the restored stream is no SQLite database (empty or cut short): the database is left as it was")
try:
    result = sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0]
except sqlite3.DatabaseError as exc:
    result = str(exc)
if result != "ok":
    sys.exit("the restored database is damaged (" + result + "): the database is left as it was")
PY
if [ -e "$1" ]; then chmod --reference="$1" "$tmp"; chown --reference="$1" "$tmp" 2>/dev/null || true; fi
mv -f "$tmp" "$1"
"""
QUERY_SCRIPT = """python3 - "$@" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
if sys.argv[2] == "tables":
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table' "
                              "AND name NOT LIKE 'sqlite_%' ORDER BY name"):
        print(name)
else:
    for table in sys.argv[3:]:
        quoted = '"' + table.replace('"', '""') + '"'
        print(table + "\\t" + str(db.execute("SELECT COUNT(*) FROM " + quoted).fetchone()[0]))
PY
"""


class SQLite(Engine):
    dump_filename = "database.sqlite"

    def path(self, database: str | None = None) -> str:
        path = database or self.db.path or self.db.name
        return path if posixpath.isabs(path) or not self.env_path else posixpath.join(self.env_path, path)

    def describe(self) -> str:
        return f"database {self.path()} (sqlite)"

    def ping(self) -> Command:
        return Command("sh", "-c", QUERY_SCRIPT, "orch-sqlite", self.path(), "tables").to_file("/dev/null")

    def dump(self) -> Command:
        return Command("sh", "-c", BACKUP_SCRIPT, "orch-sqlite-backup", self.path())

    def restore(self, database: str | None = None) -> Command:
        return Command("sh", "-c", RESTORE_SCRIPT, "orch-sqlite-restore", self.path(database))

    def create(self, database: str) -> Command:
        return Command("true")  # restore() creates the file

    def drop(self, database: str) -> Command:
        return Command("rm", "-f", "--", self.path(database))

    def list_tables(self, database: str | None = None) -> Command:
        return Command("sh", "-c", QUERY_SCRIPT, "orch-sqlite", self.path(database), "tables")

    def count_rows(self, tables: list[str], database: str | None = None) -> Command:
        return Command("sh", "-c", QUERY_SCRIPT, "orch-sqlite", self.path(database), "count", *tables)
