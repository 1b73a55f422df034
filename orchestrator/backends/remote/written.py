"""How many bytes a running command has written so far, read on its host from /proc (for progress figures
where the command itself says nothing: restic before 0.16 restoring files, `restic dump` into an import)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from orchestrator import progress

from .command import Command

# argv[1]: the program's name, argv[2:]: words that must all be in its argv (not the watchdog's, nor ours: their
# program is python3). Prints the sum of `wchar` over the matching processes of this user (other users'
# /proc/PID/io is not readable, and is none of ours), 0 when none runs (yet).
WRITTEN_SOURCE = """import os, sys
program, want = sys.argv[1].encode(), [w.encode() for w in sys.argv[2:]]
total = 0
for pid in os.listdir("/proc"):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\\0")
        if os.path.basename(argv[0]) == program and all(w in argv for w in want):
            with open("/proc/%s/io" % pid, "rb") as f:
                total += int(dict(l.split(b": ") for l in f.read().splitlines())[b"wchar"])
    except (OSError, ValueError, KeyError):
        pass
print(total)
"""


def bytes_written(conn, program: str, *words: str) -> int:
    """Given a running program's name and words of its argv (its verb and a unique path or id), return the
    bytes its processes on the connector's host have written so far (0 if none runs)."""
    command = Command("python3", "-I", "-S", "-c", WRITTEN_SOURCE, program, *words)
    return int(conn.run(command, timeout=30).text.strip() or 0)


def watching(conn, program: str, *words: str, total: int | None = None) -> AbstractContextManager[None]:
    """Given a program about to run on the connector's host, words of its argv (see bytes_written) and the bytes
    it should write, return a block whose current step's figures are the bytes it has written so far (polled
    twice a second; nothing runs when nobody watches). Once the program has ended (a dump still being loaded
    after `restic dump` finished) the figures stay at the most it wrote, not at the 0 of no process."""
    most = 0

    def measure() -> progress.Figures:
        nonlocal most
        most = max(most, bytes_written(conn, program, *words))
        return progress.Figures(most, total)

    return progress.polling(measure, 0.5)
