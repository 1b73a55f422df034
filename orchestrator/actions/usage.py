"""`orch usage`: bytes stored per site, read from the storage itself (boto3 for S3, du for local paths)."""

from __future__ import annotations

from orchestrator.backends.remote import Command, connect
from orchestrator.backends.storage.restic import repository_url
from orchestrator.errors import OrchError

from .targets import target


def site_usage(inventory, site) -> dict:
    """Return {'site', 'storage', 'bytes', 'objects', 'error'} for one site's repository."""
    storage = inventory.storage.get(site.backup.storage) if site.backup.storage else None
    row = {
        "site": site.name,
        "storage": storage.name if storage else None,
        "bytes": None,
        "objects": None,
        "repository": repository_url(storage, site.name) if storage else None,
        "error": None,
    }
    if storage is None:
        return row | {"error": "no backup storage"}
    try:
        if storage.type == "s3":
            from orchestrator.backends.storage.s3 import prefix_usage

            prefix = "/".join(p.strip("/") for p in (storage.prefix, site.name) if p) + "/"
            row["bytes"], row["objects"] = prefix_usage(storage, prefix)
        else:
            env = "production" if "production" in site.environments else next(iter(site.environments))
            t = target(inventory, site.name, env)
            with connect(t.host) as conn:
                out = conn.run(Command("du", "-sb", "--", row["repository"]), check=False).text
            row["bytes"] = int(out.split()[0]) if out.strip() else 0
    except OrchError as exc:
        row["error"] = str(exc)
    return row


def usage(inventory) -> list[dict]:
    return [site_usage(inventory, site) for site in inventory.sites.values()]
