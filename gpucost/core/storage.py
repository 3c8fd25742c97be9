"""Byte storage under the lake's root: a local directory or an S3 prefix.

Both give the one guarantee the lake needs: :meth:`Storage.put_atomic` replaces an object
whole or not at all. Locally that is a write to a hidden temporary file in the same directory,
``fsync``, then ``os.replace`` (atomic on POSIX filesystems). On S3 a single ``PutObject`` is
atomic: readers see the old object or the new one, never a part (S3 strong read-after-write
consistency, December 2020).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from gpucost.core.errors import LakeError

CONTENT_KEY = "gpucost-content-sha256"


class Storage(Protocol):
    """Objects addressed by paths relative to the storage root ("billing/day=.../x.parquet")."""

    root: str

    def url(self, relative: str) -> str:
        """The absolute path or ``s3://`` URL of ``relative``, for Polars readers."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Relative paths of the objects under ``prefix``, sorted."""
        ...

    def read_bytes(self, relative: str) -> bytes:
        """The object's bytes; LakeError when it is absent."""
        ...

    def put_atomic(self, relative: str, data: bytes, content_sha256: str | None = None) -> None:
        """Replace the object whole; record ``content_sha256`` beside it when given."""
        ...

    def content_sha256(self, relative: str) -> str | None:
        """The content checksum recorded by put_atomic, or None when absent or unknown."""
        ...

    def delete(self, relative: str) -> None:
        """Remove the object if it exists."""
        ...

    def exists(self, relative: str) -> bool:
        """Whether the object exists."""
        ...


class LocalStorage:
    """A directory on a local filesystem."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(Path(root).absolute())

    def url(self, relative: str) -> str:
        return str(Path(self.root, relative))

    def list(self, prefix: str) -> list[str]:
        base = Path(self.root, prefix)
        if not base.exists():
            return []
        return sorted(
            str(path.relative_to(self.root))
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )

    def read_bytes(self, relative: str) -> bytes:
        try:
            return Path(self.root, relative).read_bytes()
        except FileNotFoundError:
            raise LakeError(f"{self.url(relative)} does not exist") from None

    def put_atomic(self, relative: str, data: bytes, content_sha256: str | None = None) -> None:
        target = Path(self.root, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Hidden name in the same directory: readers ignore dot files, and rename(2) within a
        # filesystem is atomic. A crash leaves at most this temporary file behind.
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        # The checksum sidecar only ever describes the data file beside it: it goes before the
        # write and comes back after the rename, so a crash in between leaves no sidecar and
        # the next run rewrites instead of trusting a checksum of rows that never landed.
        _sidecar(target).unlink(missing_ok=True)
        try:
            with temporary.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(target)
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_directory(target.parent)
        if content_sha256 is not None:
            _write_sidecar(target, content_sha256)

    def content_sha256(self, relative: str) -> str | None:
        target = Path(self.root, relative)
        if not target.is_file():  # a sidecar without its data file says nothing
            return None
        sidecar = _sidecar(target)
        try:
            return sidecar.read_text(encoding="ascii").strip() or None
        except FileNotFoundError:
            return None

    def delete(self, relative: str) -> None:
        target = Path(self.root, relative)
        target.unlink(missing_ok=True)
        _sidecar(target).unlink(missing_ok=True)

    def exists(self, relative: str) -> bool:
        return Path(self.root, relative).is_file()

    def remove_stale_temporaries(self, prefix: str, name: str) -> int:
        """Delete temporary files a killed writer of ``name`` objects left under ``prefix``.

        Only temporaries of objects called ``name`` (one source's parts) are touched, so a
        concurrent writer of another source keeps its file in progress. Returns how many.
        """
        base = Path(self.root, prefix)
        removed = 0
        if base.exists():
            for path in base.rglob(f".{name}.*.tmp"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _sidecar(target: Path) -> Path:
    return target.with_name(f".{target.name}.sha256")


def _write_sidecar(target: Path, content_sha256: str) -> None:
    # The sidecar is a cache that lets an unchanged rewrite be skipped (see put_atomic for why
    # it is written only after the data file is in place).
    sidecar = _sidecar(target)
    temporary = sidecar.with_name(f"{sidecar.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(content_sha256, encoding="ascii")
    temporary.replace(sidecar)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class S3Storage:
    """An ``s3://bucket/prefix`` root, through a boto3 S3 client."""

    def __init__(self, root: str, client: Any) -> None:
        if not root.startswith("s3://"):
            raise LakeError(f"{root} is not an s3:// URL")
        bucket, _, prefix = root.removeprefix("s3://").partition("/")
        if not bucket:
            raise LakeError(f"{root} names no bucket")
        self.root = root.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def url(self, relative: str) -> str:
        return f"s3://{self.bucket}/{self._key(relative)}"

    def list(self, prefix: str) -> list[str]:
        start = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        except self.client.exceptions.NoSuchBucket:
            raise LakeError(f"bucket {self.bucket} does not exist") from None
        return sorted(key for key in keys if not key.rsplit("/", 1)[-1].startswith("."))

    def read_bytes(self, relative: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(relative))
        except self.client.exceptions.NoSuchKey:
            raise LakeError(f"{self.url(relative)} does not exist") from None
        body: bytes = response["Body"].read()
        return body

    def put_atomic(self, relative: str, data: bytes, content_sha256: str | None = None) -> None:
        metadata = {CONTENT_KEY: content_sha256} if content_sha256 else {}
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(relative), Body=data, Metadata=metadata
        )

    def content_sha256(self, relative: str) -> str | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(relative))
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        value: str | None = head.get("Metadata", {}).get(CONTENT_KEY)
        return value

    def exists(self, relative: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(relative))
        except self.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def delete(self, relative: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(relative))


def open_storage(
    root: str, *, storage_options: Mapping[str, str], s3_client: Any | None = None
) -> LocalStorage | S3Storage:
    """Storage for a ``data_dir``/``out_dir`` setting: a local path or ``s3://``."""
    if root.startswith("s3://"):
        if s3_client is None:
            import boto3

            s3_client = boto3.client(
                "s3",
                endpoint_url=storage_options.get("aws_endpoint_url"),
                region_name=storage_options.get("aws_region"),
            )
        return S3Storage(root, s3_client)
    if "://" in root:
        scheme = root.split("://", 1)[0]
        raise LakeError(
            f"{root}: the {scheme}:// scheme is not supported for the lake yet; "
            "use a local path or s3://"
        )
    return LocalStorage(root)
