"""Code from git for `orch promote --ref`: a mirror on the orchestrator, `git archive` streamed to the host."""

from __future__ import annotations

import hashlib
import re

from orchestrator.backends.remote import Command, LocalConnector
from orchestrator.backends.remote.hostkeys import state_dir
from orchestrator.backends.remote.relay import relay
from orchestrator.errors import RemoteError, UsageError

REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}\Z")


def mirror(url: str) -> str:
    """Clone or update the orchestrator's bare mirror of a repository; return its path."""
    path = state_dir() / "git" / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".git")
    local = LocalConnector("orchestrator")
    if path.exists():
        local.run(
            Command("git", "--git-dir", path, "fetch", "--prune", "--tags", "origin", "+refs/heads/*:refs/heads/*"),
            timeout=600,
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        local.run(Command("git", "clone", "--mirror", "--", url, path), timeout=1800)
    return str(path)


def resolve(git_dir: str, ref: str) -> str:
    """Return the commit a tag/branch/sha names; raise UsageError if the repository has no such ref."""
    if not REF.match(ref) or ".." in ref:
        raise UsageError(f"--ref {ref!r} is not a tag, branch or commit name")
    try:
        out = (
            LocalConnector()
            .run(Command("git", "--git-dir", git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"))
            .text
        )
    except RemoteError:
        raise UsageError(f"the repository has no ref {ref!r}") from None
    return out.strip()


def send_tree(git_dir: str, commit: str, subdir: str | None, conn, dest: str) -> None:
    """Unpack the commit's tree (or its subdir) into dest on the host, streamed as tar."""
    tree = f"{commit}:{subdir.strip('/')}" if subdir else commit
    conn.run(Command("mkdir", "-p", dest))
    relay(
        LocalConnector(),
        Command("git", "--git-dir", git_dir, "archive", "--format=tar", tree),
        conn,
        Command("tar", "-C", dest, "-xf", "-"),
    )
