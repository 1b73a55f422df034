"""boto3 for the S3 side restic does not cover: bucket creation, reachability, usage, exports, presigned links."""

from __future__ import annotations

import boto3
import botocore.exceptions
from botocore.config import Config

from orchestrator.errors import OrchError


class StorageError(OrchError):
    """A storage target is unreachable, refuses our credentials, or lacks its bucket."""


def client(storage):
    """Given an inventory s3 Storage, return a boto3 client for it (path-style, v4 signatures, short timeouts)."""
    return boto3.client(
        "s3",
        endpoint_url=storage.endpoint,
        region_name=storage.region or "us-east-1",
        aws_access_key_id=storage.access_key.reveal() if storage.access_key else None,
        aws_secret_access_key=storage.secret_key.reveal() if storage.secret_key else None,
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 2},
        ),
    )


def explain(storage, exc: Exception) -> StorageError:
    """Turn a boto3/botocore failure into one line naming the storage and the reason."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        reason = f"{err.get('Code', '?')}: {err.get('Message') or 'request refused'}"
    elif isinstance(exc, botocore.exceptions.EndpointConnectionError):
        reason = f"endpoint {storage.endpoint} unreachable"
    else:
        reason = str(exc)
    return StorageError(f"storage {storage.name} (s3 {storage.endpoint}, bucket {storage.bucket}): {reason}")


def ensure_bucket(storage) -> str:
    """Check the bucket is reachable with our credentials; create it if allowed. Return 'ok' or 'created'.

    Idempotent: when a concurrent orch (another site's first backup) creates it between our look and our
    create, the bucket is there and ours, which is all we asked for."""
    s3 = client(storage)
    try:
        try:
            s3.head_bucket(Bucket=storage.bucket)
            return "ok"
        except botocore.exceptions.ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket") or not storage.create_bucket:
                raise
        try:
            s3.create_bucket(Bucket=storage.bucket)
            return "created"
        except botocore.exceptions.ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
            s3.head_bucket(Bucket=storage.bucket)  # created meanwhile: fine if we can reach it (not someone else's)
            return "ok"
    except Exception as exc:  # noqa: BLE001 - reported with the storage's name
        raise explain(storage, exc) from None


def _code(exc: botocore.exceptions.ClientError) -> str | None:
    return exc.response.get("Error", {}).get("Code")


def prefix_usage(storage, prefix: str) -> tuple[int, int]:
    """Return (bytes, objects) stored under a key prefix of the storage's bucket."""
    s3 = client(storage)
    total = count = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                total += obj["Size"]
                count += 1
    except Exception as exc:  # noqa: BLE001
        raise explain(storage, exc) from None
    return total, count


def upload_stream(storage, key: str, fileobj, part_size: int = 16 << 20) -> None:
    """Upload a readable stream to the storage's bucket as `key` with multipart upload (no temp file)."""
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=2)
    try:
        client(storage).upload_fileobj(fileobj, storage.bucket, key, Config=config)
    except Exception as exc:  # noqa: BLE001
        raise explain(storage, exc) from None


def presigned_url(storage, key: str, expires_seconds: int) -> str:
    """Return a time-limited download link for an object."""
    return client(storage).generate_presigned_url(
        "get_object", Params={"Bucket": storage.bucket, "Key": key}, ExpiresIn=expires_seconds
    )


def object_size(storage, key: str) -> int:
    return client(storage).head_object(Bucket=storage.bucket, Key=key)["ContentLength"]


def delete_object(storage, key: str) -> None:
    client(storage).delete_object(Bucket=storage.bucket, Key=key)
