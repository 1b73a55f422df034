"""Stream one command's stdout into another command's stdin, across two connectors (host -> here -> host),
without a temp file anywhere."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

from orchestrator import progress

from .command import Command

TAR_BLOCK = 512


@contextmanager
def remote_stream(conn, command: Command, stdin: bytes | None = None):
    """Yield a readable pipe fed by `command`'s stdout in a background thread; re-raise its failure at exit."""
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def pump():
        with open(write_fd, "wb") as sink:
            try:
                conn.run(command, stdin=stdin, stdout=sink, timeout=None)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader's thread
                errors.append(exc)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    with open(read_fd, "rb") as source:
        yield source
        source.read()  # drain, so the producer can finish
    thread.join()
    if errors:
        raise errors[0]


def relay(
    src_conn,
    src_command: Command,
    dst_conn,
    dst_command: Command,
    *,
    src_stdin: bytes | None = None,
    size: int | None = None,
):
    """Run src_command on one host and pipe its output into dst_command on another; return dst's Result. The
    bytes relayed (of `size`, the stream's expected length) are the current step's progress figures."""
    with remote_stream(src_conn, src_command, src_stdin) as source:
        return dst_conn.run(dst_command, stdin=progress.reading(source, size), timeout=None)


def send_files(src_conn, src_path: str, dst_conn, dst_path: str, files: list[str], size: int | None = None) -> None:
    """Copy files (paths relative to src_path) from one host's folder into another's, as a tar stream through
    here; each arrives under its relative path in dst_path (folders made as needed, a file there replaced).
    `size`, the files' total bytes if known, gives the progress figures their total."""
    dst_conn.run(Command("mkdir", "-p", dst_path))
    if not files:
        return
    names = b"\0".join(f.encode() for f in files) + b"\0"
    relay(
        src_conn,
        Command("tar", "-C", src_path, "--null", "-T", "-", "-cf", "-"),
        dst_conn,
        Command("tar", "-C", dst_path, "-xpf", "-", "--unlink-first"),
        src_stdin=names,
        size=None if size is None else tar_size(size, len(files)),
    )


def tar_size(size: int, count: int) -> int:
    """Given files' total bytes and their number, return about how long their tar stream is: a header block
    each, half a block of padding each on average, two end blocks."""
    return size + count * TAR_BLOCK * 3 // 2 + 2 * TAR_BLOCK
