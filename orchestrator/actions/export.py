"""`orch export`: one backup as a single `.tar.zst` (files + database dump) for a client who asks for it.

Nothing is staged on disk anywhere: on the host `restic dump` streams the files snapshot as a tar and the
dump as raw bytes; here the tar is re-streamed with the dump appended as one more member, compressed with
zstd and uploaded to the bucket with multipart upload; a presigned link is returned. An export changes no
site, so it takes no site lock; it is planned (`--dry-run` prints the plan) and recorded like any operation.
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
import time
from dataclasses import dataclass

import zstandard

from orchestrator.backends.remote import connect
from orchestrator.backends.remote.relay import remote_stream
from orchestrator.backends.storage import s3
from orchestrator.errors import UsageError

from . import catalog
from .plan import Plan, execute
from .targets import Target


def dump_member(t: Target, conn, snapshot_id: str) -> tarfile.TarInfo:
    """Return the TarInfo of the dump file inside the db snapshot (its size comes from `restic ls`)."""
    out = t.repository.run(conn, "ls", "--json", snapshot_id).text
    node = next(json.loads(line) for line in out.splitlines() if f'"path":"/{t.db_engine.dump_filename}"' in line)
    info = tarfile.TarInfo(f"database/{t.db_engine.dump_filename}")
    info.size, info.mtime, info.mode = node["size"], int(time.time()), 0o600
    return info


def write_archive(t: Target, conn, snapshots: dict, sink) -> int:
    """Write files + dump as a zstd-compressed tar into `sink`; return the number of members."""
    members = 0
    compressor = zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(sink, closefd=False)
    with tarfile.open(fileobj=compressor, mode="w|", format=tarfile.PAX_FORMAT) as out:
        with remote_stream(conn, t.repository.command("dump", snapshots["files"], "/")) as files:
            with tarfile.open(fileobj=files, mode="r|") as tar_in:
                for member in tar_in:
                    member.name = "files/" + member.name.lstrip("./")
                    out.addfile(member, tar_in.extractfile(member) if member.isfile() else None)
                    members += 1
        if "db" in snapshots and t.engine:
            info = dump_member(t, conn, snapshots["db"])
            dump = t.repository.command("dump", snapshots["db"], "/" + t.engine.dump_filename)
            with remote_stream(conn, dump) as data:
                out.addfile(info, data)
                members += 1
    compressor.close()
    return members


@dataclass
class ExportPlan(Plan):
    """Which backup goes where in the bucket, and how long its link stays valid."""

    target: Target
    backup: dict
    key: str
    expires_seconds: int

    def lines(self) -> list[str]:
        parts = "files + database dump" if "db" in self.backup["snapshots"] and self.target.engine else "files"
        return [
            f"stream backup {self.backup['backup_id']} ({parts}) as one .tar.zst to "
            f"s3://{self.target.backup_storage.bucket}/{self.key}",
            f"sign a download link valid {self.expires_seconds // 86400} day(s)",
        ]

    def params(self) -> dict:
        return {"backup_id": self.backup["backup_id"]}


def plan_export(t: Target, *, backup_id: str, task: str, expires_seconds: int) -> ExportPlan:
    """Given a target and a backup id (or 'latest'), return the export plan (reads only); raise UsageError if
    the site's storage is not S3 or there is no such complete backup."""
    if t.storage is None or t.storage.type != "s3":
        raise UsageError(f"site {t.site.name}: export needs an s3 backup storage (it uploads the archive there)")
    with connect(t.host) as conn:
        chosen = catalog.resolve(catalog.list_backups(t, conn), backup_id)
    prefix = "/".join(p.strip("/") for p in (t.storage.prefix, "exports", t.site.name) if p)
    key = f"{prefix}/{t.site.name}-{t.env.name}-{chosen['backup_id']}.tar.zst"
    return ExportPlan("export", t.site.name, t.env.name, task, t, chosen, key, expires_seconds)


def export(oplog, plan: ExportPlan) -> dict:
    """Apply an export plan (the backup resolved again first: it may have been pruned). Return
    {'backup_id', 'bucket', 'key', 'size', 'url', 'expires_seconds'}."""

    def recheck(p: ExportPlan) -> ExportPlan:
        return plan_export(p.target, backup_id=p.backup["backup_id"], task=p.task, expires_seconds=p.expires_seconds)

    return execute(oplog, plan, _apply, recheck=recheck, lock=False)


def _apply(op, plan: ExportPlan) -> dict:
    t, chosen, key = plan.target, plan.backup, plan.key
    with connect(t.host) as conn, op.step("stream tar.zst to the bucket") as step:
        read_fd, write_fd = os.pipe()
        result: dict = {}
        writer = threading.Thread(target=_write_then_close, args=(t, conn, chosen["snapshots"], write_fd, result))
        writer.start()
        with open(read_fd, "rb") as source:
            s3.upload_stream(t.storage, key, source)
        writer.join()
        if "error" in result:
            s3.delete_object(t.storage, key)  # the upload saw EOF early: never leave a truncated archive
            raise result["error"]
        size = s3.object_size(t.storage, key)
        step.output(f"{result['members']} entries, {size} bytes -> s3://{t.backup_storage.bucket}/{key}")
    url = s3.presigned_url(t.storage, key, plan.expires_seconds)
    op.artifact(
        "export", key, size=size, details={"backup_id": chosen["backup_id"], "expires_seconds": plan.expires_seconds}
    )
    return {
        "backup_id": chosen["backup_id"],
        "bucket": t.backup_storage.bucket,
        "key": key,
        "size": size,
        "url": url,
        "expires_seconds": plan.expires_seconds,
    }


def _write_then_close(t, conn, snapshots, write_fd, result):
    with open(write_fd, "wb") as sink:
        try:
            result["members"] = write_archive(t, conn, snapshots, sink)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller after the upload ends
            result["error"] = exc
