"""The support task every operation is logged against, and what a task number looks like."""

from __future__ import annotations

import re

# Digits only, matched whole: `-1`, `abc`, `14883; rm -rf /` and `777\n` are not tasks. (`$` would accept a
# trailing newline: `re.match("^[0-9]+$", "777\n")` matches, and the oplog would store a task nobody finds.)
TASK = re.compile(r"[0-9]{1,20}")
UNATTENDED = "scheduler"  # scheduled runs of a site that has no `task` are logged against this


def is_task(value: str) -> bool:
    """Given a text, return whether it is a task number."""
    return TASK.fullmatch(value) is not None
