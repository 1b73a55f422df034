"""Writing into a site's docroot on its host without harming anything around it.

Two rules every restore and refresh follows:
- a path inside the docroot is resolved component by component on the host before anything is written; a
  component that is a symlink leading out of the docroot is refused (a restore must never write or delete
  through it, whatever the backup holds);
- syncing a tree into the docroot keeps the docroot's own mode, owner and group: the tree restic restored into
  comes from `mktemp -d` (mode 0700), and `rsync -a` would copy that onto the docroot and lock the web server out.
  A tree moved into the place of an empty or missing docroot (`move_into_place`) is given those attributes first.
"""

from __future__ import annotations

import posixpath

from orchestrator.backends.remote import Command
from orchestrator.errors import OperationFailed, UsageError


def is_within(path: str, root: str) -> bool:
    """Given two absolute normalised paths, return whether `path` is `root` or lies below it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def component_paths(root: str, subpath: str) -> list[str]:
    """Given a docroot and a normalised relative path, return the path of each component, outermost first."""
    parts = subpath.split("/")
    return [posixpath.join(root, *parts[: i + 1]) for i in range(len(parts))]


def check_inside(root: str, subpath: str, real: dict[str, str]) -> str:
    """Given a docroot, a normalised relative path in it and the real path (symlinks resolved on the host) of the
    docroot and of each component on the way, return the real path the relative path names.

    Raise UsageError naming the first component that leads outside the docroot (its parent was inside, so that
    component is a symlink pointing out), or if the path leads back to the docroot itself."""
    base = real[root]
    for path in component_paths(root, subpath):
        if not is_within(real[path], base):
            rel = posixpath.relpath(path, root)
            raise UsageError(
                f"{rel} in {root} is a symlink to {real[path]}, outside the site: refusing to "
                "restore through it (replace the link or restore the folder it points to)"
            )
    found = real[component_paths(root, subpath)[-1]]
    if found == base:
        raise UsageError(f"{subpath} in {root} is a symlink to the site's own folder: restore the site instead")
    return found


def real_paths(conn, paths: list[str]) -> dict[str, str]:
    """Given absolute paths on the host, return each one's real path (`realpath -m`: symlinks resolved, missing
    components allowed, a symlink loop left as written); raise UsageError if realpath fails."""
    result = conn.run(Command("realpath", "-z", "-m", "--", *paths), check=False)
    found = [item.decode("utf-8", "surrogateescape") for item in result.stdout.split(b"\0")[:-1]]
    if not result.ok or len(found) != len(paths):
        raise UsageError(f"cannot resolve {paths[-1]} on {conn.name}: {result.stderr.strip() or 'realpath failed'}")
    return dict(zip(paths, found, strict=True))


def resolve_inside(conn, root: str, subpath: str) -> str:
    """Given a docroot and a normalised relative path in it, return the real path on the host that path names;
    raise UsageError if a component of it is a symlink leading outside the docroot."""
    return resolve_all(conn, root, [subpath])[0]


def resolve_all(conn, root: str, subpaths: list[str]) -> list[str]:
    """Like resolve_inside, for several relative paths at once (one command on the host)."""
    paths = [root, *(path for subpath in subpaths for path in component_paths(root, subpath))]
    real = real_paths(conn, list(dict.fromkeys(paths)))
    return [check_inside(root, subpath, real) for subpath in subpaths]


def _attributes(conn, path: str) -> str | None:
    """Return `mode:uid:gid` of a path on the host, None if it does not exist."""
    result = conn.run(Command("stat", "-c", "%a:%u:%g", "--", path), check=False)
    return result.text.strip() if result.ok else None


# Give folder $2 the mode, owner and group of $1 as far as this user may: root gives owner and group, others the
# group at most (and only one they are a member of). The caller compares what took.
_ADOPT = """chmod --reference="$1" -- "$2" || exit
chown --reference="$1" -- "$2" 2>/dev/null || chgrp --reference="$1" -- "$2" 2>/dev/null"""

# sync_into's preparation in one command: prints DEST's mode:uid:gid, then SOURCE's after _ADOPT; nothing when
# DEST does not exist (yet). A second line missing means SOURCE could not be given them (or vanished).
_PREPARE = (
    'before=$(stat -c %a:%u:%g -- "$1" 2>/dev/null) || exit 0\necho "$before"\n' + _ADOPT + '\nstat -c %a:%u:%g -- "$2"'
)


def sync_into(conn, source: str, dest: str, *options: str) -> str:
    """Given a folder on the host and a folder to mirror it into (a docroot), rsync source's content into dest
    with `options` (-a, then e.g. --delete, --exclude ...), keeping dest's own mode, owner and group. Return
    rsync's stdout.

    rsync gives dest the attributes of source's top folder, so source's top folder is given dest's first. When
    this user may not give it dest's group (not a member of it), rsync runs with --no-g: it could not restore
    such a group on the files anyway, and would otherwise hand dest and its files to this user's group.
    Raise OperationFailed if dest's own attributes changed all the same.
    """
    found = conn.run(Command("bash", "-c", _PREPARE, "prepare", dest, source), check=False)
    before, now = ([*found.text.split(), None, None])[:2]
    keep_group: list[str] = []
    if before is not None:
        if not found.ok or now is None:
            raise OperationFailed(f"{source}: could not give it the attributes of {dest}: {found.stderr.strip()}")
        if now.split(":")[2] != before.split(":")[2]:
            keep_group = ["--no-g"]
    out = conn.run(
        Command("rsync", "-a", *keep_group, *options, "--", source.rstrip("/") + "/", dest.rstrip("/") + "/"),
        timeout=None,
    ).text
    after = _attributes(conn, dest)
    if before is not None and after != before:
        raise OperationFailed(f"{dest}: its mode:uid:gid changed from {before} to {after} during the sync")
    return out


# A docroot that is missing, or an empty folder (not a symlink: that stays a symlink), can take a restored tree
# by a rename instead of a second full copy. Prints `missing`, `empty`, or nothing.
_VACANCY = (
    'if [ -L "$1" ]; then :; elif [ ! -e "$1" ]; then echo missing; '
    'elif [ -d "$1" ] && [ -z "$(ls -A -- "$1")" ]; then echo empty; fi'
)

# Given DEST and a TREE beside it (same folder, same filesystem), rename TREE into DEST's place when DEST is still
# vacant (checked again here: this runs under the site lock, the plan was made before it). TREE first gets what
# DEST would have had: an empty DEST's own mode, owner and group (all three must take: a user who may not give
# it DEST's group or owner would change the docroot's, so then nothing is moved), a missing DEST what `mkdir`
# makes (umask; a setgid parent's group came with mktemp already). A DEST carrying an ACL or a security context
# (`ls -ld`'s `+` or `.`) is never replaced: the rename would drop it. `mv -T` is rename(2): it fails rather
# than replace a folder that is no longer empty. Prints `moved` when it moved, else why not.
_MOVE = (
    f"state=$({_VACANCY})"
    + """
case $state in
missing) chmod "$(printf %o $((0777 & ~$(umask))))" -- "$2" || exit ;;
empty)
    case $(ls -ld -- "$1") in ??????????[+.]*) echo "it has an ACL"; exit 0 ;; esac
"""
    + _ADOPT
    + """
    [ "$(stat -c %a:%u:%g -- "$1")" = "$(stat -c %a:%u:%g -- "$2")" ] || { echo "cannot give it the owner"; exit 0; } ;;
*) echo "not vacant"; exit 0 ;;
esac
mv -T -- "$2" "$1" 2>&1 && echo moved || true"""
)


def vacancy(conn, path: str) -> str | None:
    """Given a docroot, return `missing` or `empty` when a restored tree may be renamed into its place, None when
    it holds something or is a symlink (it is then synced into)."""
    return conn.run(Command("bash", "-c", _VACANCY, "vacancy", path)).text.strip() or None


def move_into_place(conn, tree: str, dest: str) -> bool:
    """Given a restored tree and a docroot beside it (same folder), rename the tree into the docroot's place if the
    docroot is still missing or empty, with the mode, owner and group it had (missing: those `mkdir` gives).
    Return whether it moved; when not (the docroot got content meanwhile, a symlink, an ACL, an owner this user
    cannot give), nothing changed and the caller syncs instead."""
    out = conn.run(Command("bash", "-c", _MOVE, "move", dest, tree)).text
    return out.strip().endswith("moved")
