"""Run the URL replacer ON the staging host, inside the dump pipeline (restic dump | replace | mysql).

The dump then never travels to the orchestrator. The replacer module is pure standard library but for one
import of orch's error type, so the shipped script is its source with that import swapped for a local class,
plus a small `main`: `python3 SCRIPT PAIRS_JSON DIALECT [WORKERS]` (workers: replace.default_workers()). It
is written once per content hash under the host user's cache folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.backends.remote import Command, shipped

from . import replace

IMPORT_LINE = "from orchestrator.errors import UsageError\n"
STATS_PREFIX = "ORCH-REPLACE-STATS "
MAIN = f"""

def _orch_main():
    import dataclasses, gc, json, sys
    pairs = [tuple(pair) for pair in json.loads(sys.argv[1])]
    gc.disable()  # the replacer makes no reference cycles; collecting would walk its tuples (4 % of the time)
    keep_freed_memory()
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else default_workers()  # a PostgreSQL dump takes one
    stats = replace_stream(sys.stdin.buffer, sys.stdout.buffer, pairs, dialect=sys.argv[2], workers=workers)
    sys.stdout.flush()
    sys.stderr.write({STATS_PREFIX!r} + json.dumps(dataclasses.asdict(stats)) + "\\n")


if __name__ == "__main__":
    _orch_main()
"""


def script_source() -> str:
    """Return the standalone replacer script (Python 3.10+, standard library only)."""
    source = Path(replace.__file__).read_text(encoding="utf-8")
    if IMPORT_LINE not in source:
        raise RuntimeError("replace.py no longer imports UsageError as expected; update hostscript.py")
    return source.replace(IMPORT_LINE, "class UsageError(ValueError):\n    pass\n") + MAIN


def ensure_script(conn) -> str:
    """Make sure the replacer script is on the host; return its path there."""
    return shipped.ensure_script(conn, script_source(), "replace")


def replace_command(script_path: str, pairs: list[tuple[str, str]], dialect: str) -> Command:
    """Return the pipeline stage that replaces URLs on stdin -> stdout, reporting stats on stderr."""
    return Command("python3", script_path, json.dumps(pairs), dialect)


def parse_stats(stderr: str) -> dict:
    """Find the replacer's stats line in a pipeline's stderr."""
    for line in reversed(stderr.splitlines()):
        if line.startswith(STATS_PREFIX):
            return json.loads(line[len(STATS_PREFIX) :])
    return {}
