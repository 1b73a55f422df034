"""Host-side helper for deployments, shipped to the host and run with its python3 (standard library only).

Subcommands read one JSON document on stdin and print one JSON document:
  tree     {"path"}                        -> {"files": {rel: [sha256, size]}}  (regular files only, symlinks not
                                              followed: shared content stays out)
  begin    {"journal", "meta"}             -> creates a promotion's journal folder (never an existing one)
  inplace  {"path", "journal", "changed", "removed"}
           renames each changed file from journal/incoming into `path` (the old one kept in journal/files),
           moves removed files into journal/files                  -> {"replaced", "added", "removed"}
  undo     {"path", "journal"}             -> puts back what the journal says was moved -> {"restored", "deleted"}
  journals {"root"}                        -> {"journals": [{"id", "state", "meta"}...]}, oldest first
  exchange {"a", "b"}                      -> atomically swaps two paths (renameat2 RENAME_EXCHANGE)

A promotion's journal is a folder named by a unique id (never reused, whichever oplog ran the promotion):
  META.json   what the promotion is (layout, release, previous release, revision, task, operation...)
  STATE       prepared | switching | switched | migrating | migrated | verified | undoing | undone | abandoned
  JOURNAL     in place: one JSON line per move, written (and flushed) BEFORE the move is made
  files/      in place: the replaced and removed files, for undo
  incoming/   in place: the new files, renamed into the docroot one by one
`inplace` and `undo` hold an flock on the journal, so an undo waits for an apply still running on the host
(its orchestrator gone) instead of racing it. Every undo step checks what is there, so an undo interrupted at
any point can simply be run again.
"""

import ctypes
import fcntl
import hashlib
import json
import os
import shutil
import sys

STATE, META, JOURNAL, LOCK = "STATE", "META.json", "JOURNAL", "LOCK"


def tree(args):
    root, files = args["path"], {}
    if not os.path.isdir(root):  # an empty tree would read as "every file removed"
        raise FileNotFoundError(2, "no such folder", root)
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in names:
            full = os.path.join(folder, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            digest = hashlib.sha256()
            with open(full, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            files[os.path.relpath(full, root)] = [digest.hexdigest(), os.path.getsize(full)]
    return {"files": files}


def write_state(journal, state):
    """Replace the journal's STATE atomically (a reader sees the old word or the new one, never half)."""
    tmp = os.path.join(journal, STATE + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(state + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, os.path.join(journal, STATE))


def read_state(journal):
    try:
        with open(os.path.join(journal, STATE)) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return "prepared"  # begin died between mkdir and its first STATE: nothing was changed


def begin(args):
    journal = args["journal"]
    os.makedirs(os.path.dirname(journal), exist_ok=True)
    os.mkdir(journal)  # FileExistsError, never a silent reuse of another promotion's journal
    with open(os.path.join(journal, META), "w") as fh:
        json.dump(args["meta"], fh)
    write_state(journal, "prepared")
    return {"journal": journal}


def _locked(journal):
    """Hold the journal's flock (blocking): an apply and an undo of one journal never run at once."""
    fh = open(os.path.join(journal, LOCK), "a")
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


class _Journal:
    """Appends one JSON line per move; each line is flushed before the move it announces is made."""

    def __init__(self, journal):
        self.fh = open(os.path.join(journal, JOURNAL), "a")
        self.synced = False

    def note(self, **entry):
        self.fh.write(json.dumps(entry) + "\n")
        self.fh.flush()  # survives this process dying: the page cache is the kernel's
        if not self.synced:  # and the first one survives the host crashing too
            os.fsync(self.fh.fileno())
            self.synced = True

    def close(self):
        os.fsync(self.fh.fileno())
        self.fh.close()


def _make_parents(log, root, rel):
    """Create the missing folders above root/rel, each announced in the journal first (undo removes them)."""
    missing, folder = [], os.path.dirname(rel)
    while folder and not os.path.isdir(os.path.join(root, folder)):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):
        log.note(mkdir=folder)
        os.mkdir(os.path.join(root, folder))


def _park(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.rename(src, dst)


def inplace(args):
    root, journal = args["path"], args["journal"]
    incoming, files = os.path.join(journal, "incoming"), os.path.join(journal, "files")
    lock = _locked(journal)
    write_state(journal, "switching")
    log = _Journal(journal)
    replaced, added, removed = [], [], []
    for rel in args["changed"]:
        target = os.path.join(root, rel)
        if os.path.lexists(target):
            log.note(replace=rel)
            os.makedirs(os.path.dirname(os.path.join(files, rel)), exist_ok=True)
            os.link(target, os.path.join(files, rel))  # the old version, kept for undo
            replaced.append(rel)
        else:
            _make_parents(log, root, rel)
            log.note(add=rel)
            added.append(rel)
        os.rename(os.path.join(incoming, rel), target)  # readers see old or new, never half a file
    for rel in args["removed"]:
        target = os.path.join(root, rel)
        if os.path.lexists(target):
            log.note(remove=rel)
            _park(target, os.path.join(files, rel))
            removed.append(rel)
    log.close()
    write_state(journal, "switched")
    shutil.rmtree(incoming, ignore_errors=True)  # kept after a failure: undo reads it (see `add` there)
    lock.close()
    return {"replaced": replaced, "added": added, "removed": removed}


def _same_file(a, b):
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _entries(journal):
    try:
        with open(os.path.join(journal, JOURNAL)) as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            break  # a line cut by a crash: its move was never made
    return entries


def undo(args):
    """Undo the journal's moves, newest first; each step looks at what is there, so running it again is safe."""
    root, journal = args["path"], args["journal"]
    incoming, files = os.path.join(journal, "incoming"), os.path.join(journal, "files")
    lock = _locked(journal)
    write_state(journal, "undoing")
    restored, deleted = [], []
    for entry in reversed(_entries(journal)):
        ((kind, rel),) = entry.items()
        target, kept = os.path.join(root, rel), os.path.join(files, rel)
        if kind in ("replace", "remove"):
            if _same_file(kept, target):  # linked, not yet replaced: the target is still the old file
                os.unlink(kept)
            elif os.path.lexists(kept):
                _park(kept, target)
                restored.append(rel)
        elif kind == "add":
            # moved in only if it left incoming/ (announced, then the process died: nothing to take back)
            if not os.path.lexists(os.path.join(incoming, rel)) and os.path.lexists(target):
                os.unlink(target)
                deleted.append(rel)
        elif kind == "mkdir":
            try:
                os.rmdir(target)
            except OSError:
                pass  # not empty (someone wrote there since) or already gone: leave it
    write_state(journal, "undone")
    shutil.rmtree(incoming, ignore_errors=True)
    lock.close()
    return {"restored": sorted(restored), "deleted": sorted(deleted)}


def journals(args):
    root, found = args["root"], []
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        names = []
    for name in names:
        folder = os.path.join(root, name)
        try:
            with open(os.path.join(folder, META)) as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            meta = {}
        found.append({"id": name, "state": read_state(folder), "meta": meta})
    return {"journals": found}


def exchange(args):
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, args["a"].encode(), at_fdcwd, args["b"].encode(), rename_exchange) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return {"exchanged": [args["a"], args["b"]]}


COMMANDS = {"tree": tree, "begin": begin, "inplace": inplace, "undo": undo, "journals": journals, "exchange": exchange}

if __name__ == "__main__":
    try:
        json.dump(COMMANDS[sys.argv[1]](json.load(sys.stdin)), sys.stdout)
    except OSError as exc:  # one line for the operator (the path says where), not a traceback
        sys.exit(f"{type(exc).__name__}: {exc}")
