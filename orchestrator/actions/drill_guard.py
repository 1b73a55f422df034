"""The guard of one boot drill: `python -m orchestrator.actions.drill_guard INVENTORY SITE COPY TASK PID`.

The drill starts it in its own session and stops it once the copy is removed. Should the drill's process die
first (kill -9, a crash, the machine's OOM killer), the guard reaps its operation in the oplog (marking it
interrupted and freeing the site's lock) and removes the throwaway copy as an operation of the same task.
"""

from __future__ import annotations

import logging
import sys
import time

POLL = 0.5  # seconds between looks at the drill's process
RETRY = 10  # seconds between attempts while the site is locked by someone else
GIVE_UP = 30 * 60  # the next drill of the site removes what is still left then

log = logging.getLogger("orch.drill")


def watch(inventory_path: str, site: str, copy: str, task: str, pid: int) -> int:
    """Wait for process `pid` to end, then remove the copy if it is still registered. Return an exit code."""
    from orchestrator.oplog import process

    while process.pid_alive(pid):
        time.sleep(POLL)
    from orchestrator.config import load_inventory
    from orchestrator.errors import LockHeld
    from orchestrator.oplog import Oplog

    from .drill import remove_copy

    inventory = load_inventory(inventory_path)
    oplog = Oplog.from_inventory(inventory)
    oplog.reap()  # the dead drill's operation becomes `interrupted` and its lock reclaimable
    deadline = time.monotonic() + GIVE_UP
    while True:
        try:
            remove_copy(oplog, inventory, site, copy, task=task)
            return 0
        except LockHeld:
            if time.monotonic() > deadline:
                return 3
            time.sleep(RETRY)


if __name__ == "__main__":
    inventory_path, site, copy, task, pid = sys.argv[1:6]
    sys.exit(watch(inventory_path, site, copy, task, int(pid)))
