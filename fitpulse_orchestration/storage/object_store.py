"""Object storage behind one interface.

Keys are ``/``-separated relative paths (``landing/events/2026-10-03/14.ndjson.gz``). The local
implementation maps them under a root directory; the S3 implementation under
``s3://bucket/prefix/``. Writes are atomic for readers: the local store writes a temporary file
and renames it, S3 ``PutObject`` is atomic by itself.
"""

from __future__ import annotations

import abc
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class ObjectNotFoundError(FileNotFoundError):
    """Raised when a key does not exist in the store."""


def _check_key(key: str) -> str:
    """Reject keys that are not plain relative paths (S3 and files must agree on them)."""
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(
            f"invalid object key {key!r}: keys are relative paths of non-empty segments "
            "without '.', '..' or a leading, trailing or doubled '/'"
        )
    return key


def _check_prefix(prefix: str) -> str:
    """A listing prefix is empty or a key, optionally ending in '/'."""
    if prefix:
        _check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class ObjectStore(abc.ABC):
    """A flat key -> bytes store with prefix listing."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing any previous value."""

    @abc.abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key``, replacing any previous value.

        The file is read in parts, never whole into memory.
        """

    @abc.abstractmethod
    def put_new(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` only if ``key`` holds nothing; False when it did.

        Atomic: of two writers racing for one key, exactly one succeeds (append-only logs
        rely on it).
        """

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the bytes under ``key``; raise ``ObjectNotFoundError`` if absent."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Return whether ``key`` holds an object."""

    @abc.abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Return every key under ``prefix``, sorted."""

    @abc.abstractmethod
    def list_versions(self, prefix: str = "") -> dict[str, str]:
        """Every key under ``prefix`` with a token of the object's current version.

        The token changes whenever the object is replaced by other bytes, and comes with the
        listing itself (no read of any object): what a caller compares to tell that an object
        was rewritten under the same key.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """Return a human-readable location of ``key`` (a path or ``s3://`` URI)."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` and return how many were deleted."""
        keys = self.list_keys(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def iter_keys(self, prefix: str = "", suffix: str = "") -> Iterator[str]:
        """Yield the keys under ``prefix`` that end with ``suffix``."""
        for key in self.list_keys(prefix):
            if key.endswith(suffix):
                yield key


class LocalObjectStore(ObjectStore):
    """Objects as files under ``root`` (the embedded default)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _staged(self, key: str, data: bytes | Path) -> tuple[Path, Path]:
        """``data`` written to a temporary file beside ``key``'s file: (path, temporary).

        ``data``: bytes, or a file whose contents are copied in parts.
        """
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
        try:
            with os.fdopen(fd, "wb") as fh:
                if isinstance(data, Path):
                    with data.open("rb") as source:
                        shutil.copyfileobj(source, fh)
                else:
                    fh.write(data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path, Path(tmp)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write through a temporary file and rename, so readers never see partial objects."""
        self._replace(*self._staged(key, data))

    def put_file(self, key: str, path: Path) -> None:
        """Copy the file through a temporary file and rename, as ``put_bytes``."""
        self._replace(*self._staged(key, path))

    @staticmethod
    def _replace(path: Path, tmp: Path) -> None:
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_new(self, key: str, data: bytes) -> bool:
        """Write a temporary file and hard-link it into place (``link`` fails if it exists)."""
        path, tmp = self._staged(key, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def get_bytes(self, key: str) -> bytes:
        """Read the file for ``key``."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFoundError(f"no object {key!r} in {self.root}") from exc

    def exists(self, key: str) -> bool:
        """Return whether the file for ``key`` exists."""
        return self._path(key).is_file()

    def _walk(self, prefix: str) -> Iterator[tuple[str, str]]:
        """``(key, path)`` of every file under the prefix's directory part that matches it."""
        _check_prefix(prefix)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                path = os.path.join(dirpath, name)
                rel = Path(path).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    yield rel, path

    def list_keys(self, prefix: str = "") -> list[str]:
        """Walk the directory tree under the prefix's directory part."""
        return sorted(key for key, _path in self._walk(prefix))

    def list_versions(self, prefix: str = "") -> dict[str, str]:
        """The file's inode, size and modification time in nanoseconds.

        ``put_bytes`` renames a new file into place, so a rewrite changes the inode and the
        modification time even when the size stays.
        """
        versions = {}
        for key, path in self._walk(prefix):
            try:
                st = os.stat(path)
            except FileNotFoundError:  # deleted between the walk and the stat
                continue
            versions[key] = f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"
        return dict(sorted(versions.items()))

    def delete(self, key: str) -> None:
        """Remove the file for ``key`` if present (a directory is not an object)."""
        path = self._path(key)
        if path.is_file():
            path.unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        """Return the absolute file path of ``key``."""
        return str(self._path(key))


class S3ObjectStore(ObjectStore):
    """Objects in an S3 bucket under ``prefix`` (any S3-compatible endpoint)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._injected = client is not None
        self._pid = os.getpid()
        self._made = client if client is not None else self._new_client()

    def _new_client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self._endpoint_url, region_name=self._region_name)

    @property
    def _client(self) -> Any:
        """The S3 client of this process.

        A forked worker (``fitpulse serve``) builds its own: its parent's pooled HTTP
        connections are the same sockets, and two processes writing on one would mix their
        requests. An injected client is kept as given.
        """
        if not self._injected and self._pid != os.getpid():
            self._made = self._new_client()
            self._pid = os.getpid()
        return self._made

    def _full(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes) -> None:
        """Upload ``data`` with a single ``PutObject``."""
        self._client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        """Upload the file with boto3's managed transfer (multipart for a large file)."""
        self._client.upload_file(str(path), self.bucket, self._full(key))

    def put_new(self, key: str, data: bytes) -> bool:
        """A conditional ``PutObject`` (``If-None-Match: *``); S3 answers 412 when it exists."""
        from botocore.exceptions import ClientError

        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=data, IfNoneMatch="*"
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return False
            raise
        return True

    def get_bytes(self, key: str) -> bytes:
        """Download the object, mapping S3's NoSuchKey to ``ObjectNotFoundError``."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
        except self._client.exceptions.NoSuchKey as exc:
            raise ObjectNotFoundError(f"no object {key!r} in s3://{self.bucket}") from exc
        body: bytes = response["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        """Issue a HEAD request for ``key``."""
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def _listing(self, prefix: str) -> Iterator[dict[str, Any]]:
        """The ``ListObjectsV2`` entries under ``prefix``, every page."""
        _check_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            yield from page.get("Contents", [])

    def _key(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def list_keys(self, prefix: str = "") -> list[str]:
        """Page through ``ListObjectsV2`` and strip the store prefix."""
        return sorted(self._key(obj["Key"]) for obj in self._listing(prefix))

    def list_versions(self, prefix: str = "") -> dict[str, str]:
        """The listing's ETag and size of each object (a digest of its bytes, for S3)."""
        return dict(
            sorted(
                (self._key(obj["Key"]), f"{obj['ETag'].strip(chr(34))}-{obj['Size']:x}")
                for obj in self._listing(prefix)
            )
        )

    def delete(self, key: str) -> None:
        """Delete ``key`` (S3 treats a missing key as success)."""
        self._client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def uri(self, key: str) -> str:
        """Return the ``s3://`` URI of ``key``."""
        return f"s3://{self.bucket}/{self._full(key)}"
