"""Host-side helper for deployments, shipped to the host and run with its python3 (standard library only).

Subcommands read one JSON document on stdin and print one JSON document:
  tree     {"path"}                                  -> {"files": {rel: [sha256, size]}}  (regular files only,
                                                        symlinks not followed: shared content stays out)
  inplace  {"path", "incoming", "rollback", "changed", "removed"}
           moves each changed file from `incoming` into `path` by rename (the old one kept in `rollback`),
           moves removed files into `rollback`; writes rollback/MANIFEST.json  -> {"replaced", "added", "removed"}
  undo     {"path", "rollback"}                      -> puts a rollback set back  -> {"restored", "deleted"}
  exchange {"a", "b"}                                -> atomically swaps two paths (renameat2 RENAME_EXCHANGE)
"""
import ctypes
import hashlib
import json
import os
import sys


def tree(args):
    root, files = args["path"], {}
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


def _move(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.rename(src, dst)


def inplace(args):
    root, incoming, rollback = args["path"], args["incoming"], args["rollback"]
    replaced, added = [], []
    for rel in args["changed"]:
        target = os.path.join(root, rel)
        if os.path.lexists(target):
            os.makedirs(os.path.dirname(os.path.join(rollback, "files", rel)), exist_ok=True)
            os.link(target, os.path.join(rollback, "files", rel))  # the old version, kept for undo
            replaced.append(rel)
        else:
            added.append(rel)
        _move(os.path.join(incoming, rel), target)  # rename: readers see old or new, never half a file
    removed = []
    for rel in args["removed"]:
        target = os.path.join(root, rel)
        if os.path.lexists(target):
            _move(target, os.path.join(rollback, "files", rel))
            removed.append(rel)
    manifest = {"replaced": replaced, "added": added, "removed": removed}
    with open(os.path.join(rollback, "MANIFEST.json"), "w") as fh:
        json.dump(manifest, fh)
    return manifest


def undo(args):
    root, rollback = args["path"], args["rollback"]
    with open(os.path.join(rollback, "MANIFEST.json")) as fh:
        manifest = json.load(fh)
    for rel in manifest["added"]:
        target = os.path.join(root, rel)
        if os.path.lexists(target):
            os.unlink(target)
    for rel in manifest["replaced"] + manifest["removed"]:
        _move(os.path.join(rollback, "files", rel), os.path.join(root, rel))
    return {"restored": manifest["replaced"] + manifest["removed"], "deleted": manifest["added"]}


def exchange(args):
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, args["a"].encode(), at_fdcwd, args["b"].encode(), rename_exchange) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return {"exchanged": [args["a"], args["b"]]}


if __name__ == "__main__":
    command = {"tree": tree, "inplace": inplace, "undo": undo, "exchange": exchange}[sys.argv[1]]
    json.dump(command(json.load(sys.stdin)), sys.stdout)
