"""restic repositories, driven on the site's host: one repository per site (a prefix per site in a bucket).

Backup data flows host -> repository directly; the orchestrator only sends commands and reads JSON back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from orchestrator.backends.remote import Command, Connector
from orchestrator.errors import OrchError, RemoteError

# restic says "unable to open config file ... Is there a repository" for any failure to open; only these are absence
NOT_A_REPO = re.compile(
    r"unable to open config file: .*(specified (key|bucket) does not exist|NoSuchKey|NoSuchBucket|"
    r"no such file or directory)",
    re.I,
)
BAD_CREDENTIALS = re.compile(
    r"signature we calculated does not match|Access Key Id you provided does not exist|"
    r"InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|Access Denied",
    re.I,
)
WRONG_PASSWORD = re.compile(r"wrong password|no key found", re.I)
# restic creates the bucket on `init`; two first backups into a new bucket race to create it
BUCKET_RACE = re.compile(
    r"BucketAlreadyOwnedByYou|BucketAlreadyExists|already own it|bucket name is not available", re.I
)


class RepositoryError(OrchError):
    """The repository cannot be reached, opened, or written."""


class MissingRepository(RepositoryError):
    """There is no restic repository at the storage's location for this site (never made, or deleted)."""


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        match = re.search(r"restic (\d+)\.(\d+)\.(\d+)", text)
        if not match:
            raise RepositoryError(f"cannot tell restic's version from {text.strip()[:80]!r}")
        return cls(*map(int, match.groups()))

    @property
    def stdin_from_command(self) -> bool:
        """restic >= 0.17 runs the dump itself and refuses to save a snapshot when it fails."""
        return (self.major, self.minor) >= (0, 17)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def repository_url(storage, site: str) -> str:
    """Return the restic repository location of a site on a storage."""
    if storage.type == "s3":
        prefix = "/".join(p.strip("/") for p in (storage.prefix, site) if p)
        return f"s3:{storage.endpoint.rstrip('/')}/{storage.bucket}/{prefix}"
    return f"{storage.path.rstrip('/')}/{site}"


class Repository:
    """One site's restic repository, as seen from the host that runs restic."""

    def __init__(self, storage, site: str, restic: str = "restic"):
        self.storage, self.site, self.restic = storage, site, restic
        self.url = repository_url(storage, site)

    def describe(self) -> str:
        """Return how errors name this repository: `storage NAME (URL)`."""
        return f"storage {self.storage.name} ({self.url})"

    def command(self, *args) -> Command:
        """Return `restic ARGS` with the repository, password and S3 keys in the environment."""
        env = {
            "RESTIC_REPOSITORY": self.url,
            "RESTIC_PASSWORD": self.storage.password,
            "AWS_ACCESS_KEY_ID": self.storage.access_key,
            "AWS_SECRET_ACCESS_KEY": self.storage.secret_key,
        }
        if self.storage.type == "s3" and self.storage.region:
            env["AWS_DEFAULT_REGION"] = self.storage.region
        return Command(self.restic, *args).env(**env)

    def run(self, conn: Connector, *args, stdin=None, stdout=None, timeout=None, on_stderr=None, on_stdout=None):
        """Run restic on a connector; turn failures into a RepositoryError naming the storage."""
        try:
            return conn.run(
                self.command(*args),
                stdin=stdin,
                stdout=stdout,
                timeout=timeout,
                on_stderr=on_stderr,
                on_stdout=on_stdout,
            )
        except RemoteError as exc:
            raise self.explain(str(args[0]), exc.exit_status, exc.stderr) from None

    def explain(self, action: str, exit_status: int | None, stderr: str) -> RepositoryError:
        """Given what restic was asked to do (`backup`, `init`...) and how it failed, return the error naming
        this storage, with restic's own reason (its `Fatal:` line when it wrote one)."""
        lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
        fatal = [line for line in lines if line.startswith("Fatal:")]
        reason = " | ".join((fatal or lines)[-2:]) or f"exit {exit_status}"
        if WRONG_PASSWORD.search(stderr):
            return RepositoryError(f"{self.describe()}: wrong repository password")
        if BAD_CREDENTIALS.search(stderr):
            return RepositoryError(
                f"{self.describe()}: the S3 server refused our credentials (storage."
                f"{self.storage.name}.access_key, secret_key): {reason}"
            )
        if NOT_A_REPO.search(stderr) and action != "init":
            return MissingRepository(f"{self.describe()}: no restic repository there ({reason})")
        return RepositoryError(f"{self.describe()}: restic {action} failed: {reason}")

    def version(self, conn: Connector) -> Version:
        return Version.parse(conn.run(Command(self.restic, "version")).text)

    def ensure(self, conn: Connector) -> str:
        """Open the repository, initialising it on first use. Return 'ok' or 'created'."""
        probe = conn.run(self.command("cat", "config"), check=False, timeout=120)
        if probe.ok:
            return "ok"
        problem = self.explain("cat config", probe.exit_status, probe.stderr)
        if not isinstance(problem, MissingRepository):
            raise problem
        try:
            self.run(conn, "init", timeout=120)
        except RepositoryError as exc:
            if not BUCKET_RACE.search(str(exc)):
                raise
            self.run(conn, "init", timeout=120)  # another site's first backup created the bucket meanwhile
        return "created"

    def unlock_stale(self, conn: Connector) -> None:
        """Remove only stale locks (restic's default for `unlock`): a live backup elsewhere keeps its lock."""
        self.run(conn, "unlock", timeout=120)

    def snapshots(self, conn: Connector, *tags: str) -> list[dict]:
        """Return the repository's snapshots (restic JSON), optionally only those carrying all `tags`."""
        args = ["snapshots", "--json"] + (["--tag", ",".join(tags)] if tags else [])
        return json.loads(self.run(conn, *args, timeout=300).text or "[]")

    def forget(self, conn: Connector, snapshot_ids: list[str], prune: bool = False) -> None:
        if snapshot_ids:
            self.run(conn, "forget", *(["--prune"] if prune else []), *snapshot_ids, timeout=3600)

    def tag_add(self, conn: Connector, snapshot_ids: list[str], tag: str) -> None:
        if snapshot_ids:
            self.run(conn, "tag", "--add", tag, *snapshot_ids, timeout=300)

    def tag_remove(self, conn: Connector, snapshot_ids: list[str], tag: str) -> None:
        if snapshot_ids:
            self.run(conn, "tag", "--remove", tag, *snapshot_ids, timeout=300)


def parse_summary(stdout: str) -> dict:
    """Given `restic backup --json` output, return its summary message (snapshot_id, data_added, ...)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{") and '"message_type":"summary"' in line.replace(" ", ""):
            return json.loads(line)
    raise RepositoryError("restic finished without a summary (no snapshot was saved)")
