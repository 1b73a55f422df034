"""Run a program as a person at a terminal would: stdout and stderr on a pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time


def run_on_terminal(argv: list[str], env: dict, timeout: float = 300, columns: int = 120) -> tuple[int, str]:
    """Given argv and its environment, run it with stdout and stderr on a pseudo-terminal `columns` wide (stdin
    closed); return its exit code and everything it wrote there. Kill it past `timeout` seconds."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not data:
                break
            out += data
        else:
            proc.kill()
    finally:
        os.close(master)
    return proc.wait(timeout=10), out.decode(errors="replace")
