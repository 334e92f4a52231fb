"""Where stage outputs live: a local directory or an S3 prefix, behind one small interface.

Names are '/'-separated paths relative to the storage root ("v1/train-000000.tar").
Every write is atomic: a reader sees the old object or the new one, never half of one
(local: a rename, or a copy through components.io.atomic; S3: a PUT is atomic).

S3 credentials come only from the environment / boto3's default chain; the endpoint from the
`endpoint_url` argument, else S3_ENDPOINT_URL, else AWS_ENDPOINT_URL (MinIO, moto, ...).
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import sys
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

# Suffix of a file staged before it is published (put_bytes, the shard writer); a crashed run may leave one behind.
TMP_SUFFIX = ".partial"


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and the cause."""


class Storage(ABC):
    """A flat namespace of immutable-ish objects under one root URI."""

    root_uri: str

    @abstractmethod
    def ensure_ready(self) -> None:
        """Fail fast with a clear error if the root cannot be written (missing bucket, no access...)."""

    @abstractmethod
    def put_file(self, local_path: str | Path, name: str, *, move: bool = False) -> None:
        """Publish a local file as `name` atomically; with move=True the local file is consumed."""

    @abstractmethod
    def get_file(self, name: str, local_path: str | Path) -> None:
        """Download `name` to `local_path` (atomically on the local side)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All names that start with `prefix`, sorted."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove `name`; a missing name is not an error."""

    @abstractmethod
    def uri(self, name: str) -> str:
        """A URI for `name` that a person can paste (path or s3://bucket/key)."""

    def put_bytes(self, data: bytes, name: str) -> None:
        with tempfile.NamedTemporaryFile(delete=False, suffix=TMP_SUFFIX) as tmp:
            tmp.write(data)
        self.put_file(tmp.name, name, move=True)

    def get_bytes(self, name: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp_dir:
            local = Path(tmp_dir) / "object"
            self.get_file(name, local)
            return local.read_bytes()


def _replace_into(src: Path, dest: Path, *, move: bool) -> None:
    """Atomically make `dest` hold the bytes of `src` (a rename when possible, else copy + rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if move:
        try:
            os.replace(src, dest)
            return
        except OSError:
            pass  # another filesystem (EXDEV): fall back to copy + rename below
    from components.io.atomic import atomic_file  # not at top level: see _cat_main

    with atomic_file(dest) as tmp:
        shutil.copyfile(src, tmp)
    if move:
        Path(src).unlink(missing_ok=True)


class LocalStorage(Storage):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.root_uri = str(self.root)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise StorageError(f"{self.root_uri}: name {name!r} escapes the storage root")
        return path

    def ensure_ready(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.root_uri}: cannot create output directory: {exc}") from exc
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"{self.root_uri}: output directory is not writable")

    def put_file(self, local_path: str | Path, name: str, *, move: bool = False) -> None:
        _replace_into(Path(local_path), self._path(name), move=move)

    def get_file(self, name: str, local_path: str | Path) -> None:
        src = self._path(name)
        if not src.is_file():
            raise StorageError(f"{self.uri(name)}: no such file")
        _replace_into(src, Path(local_path), move=False)

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        names = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(n for n in names if n.startswith(prefix))

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def delete(self, name: str) -> None:
        path = self._path(name)
        path.unlink(missing_ok=True)
        # Drop directories the deletion left empty, so old shard versions vanish entirely.
        parent = path.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def uri(self, name: str) -> str:
        return str(self._path(name))


def _s3_client(endpoint_url: str | None, *, connect_timeout: float, max_attempts: int):
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=60,
        # botocore's standard mode retries transient errors (throttling, 5xx, dropped connections)
        # with exponential backoff and jitter.
        retries={"mode": "standard", "max_attempts": max_attempts},
        # MinIO / moto / on-prem endpoints want path-style addressing; AWS itself keeps the default.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None):
        if not bucket:
            raise StorageError("s3://: bucket name is empty")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or os.environ.get("S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
        self.root_uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = _s3_client(self.endpoint_url, connect_timeout=5, max_attempts=5)

    @functools.cached_property
    def probe_client(self):
        """For the up-front check only: a dead endpoint is reported in seconds, not after the full retry budget."""
        return _s3_client(self.endpoint_url, connect_timeout=2, max_attempts=2)

    def _key(self, name: str) -> str:
        return self.prefix + name.lstrip("/")

    def _error(self, exc: Exception, uri: str) -> StorageError:
        """Translate a boto error into one sentence that names the URI and what to check."""
        from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError

        where = f" at endpoint {self.endpoint_url}" if self.endpoint_url else ""
        if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
            endpoint = self.endpoint_url or "(AWS default)"
            return StorageError(f"{uri}: cannot reach S3 endpoint {endpoint}: {exc}")
        if isinstance(exc, NoCredentialsError):
            return StorageError(f"{uri}: no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket" or (code == "404" and uri == self.root_uri):  # head_bucket says only "404"
                return StorageError(f"{uri}: bucket '{self.bucket}' does not exist{where}")
            if code in ("NoSuchKey", "404"):
                return StorageError(f"{uri}: no such object{where}")
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"):
                return StorageError(f"{uri}: access denied ({code}){where}: check the credentials and bucket policy")
        return StorageError(f"{uri}: S3 error{where}: {exc}")

    def ensure_ready(self) -> None:
        """Read-only check that the endpoint answers, the bucket exists and the keys may use it."""
        try:
            self.probe_client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._error(exc, self.root_uri) from exc

    def put_file(self, local_path: str | Path, name: str, *, move: bool = False) -> None:
        try:
            self.client.upload_file(str(local_path), self.bucket, self._key(name))
        except Exception as exc:
            cause = exc.__cause__ or exc.__context__ or exc  # boto3's S3UploadFailedError wraps the real one
            raise self._error(cause, self.uri(name)) from exc
        if move:
            Path(local_path).unlink(missing_ok=True)

    def get_file(self, name: str, local_path: str | Path) -> None:
        from components.io.atomic import atomic_file  # not at top level: see _cat_main

        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_file(local_path) as tmp:
                self.client.download_file(self.bucket, self._key(name), str(tmp))
        except Exception as exc:
            raise self._error(exc, self.uri(name)) from exc

    def list(self, prefix: str = "") -> list[str]:
        names = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            ):
                names += [obj["Key"][len(self.prefix) :] for obj in page.get("Contents", [])]
        except Exception as exc:
            raise self._error(exc, self.root_uri) from exc
        return sorted(names)

    def exists(self, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return True
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return False
            raise self._error(exc, self.uri(name)) from exc
        except Exception as exc:
            raise self._error(exc, self.uri(name)) from exc

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            raise self._error(exc, self.uri(name)) from exc

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def stream_command(self, name: str) -> str:
        """A shell command that writes the object to stdout (for webdataset's `pipe:` URLs).

        Credentials reach the child through the inherited environment, never the command line.
        """
        # -P: don't put this module's directory first on sys.path (its files could shadow stdlib names).
        script = str(Path(__file__).resolve())
        args = [sys.executable, "-P", script, "cat", self.endpoint_url or "-", self.bucket, self._key(name)]
        return " ".join(shlex.quote(a) for a in args)


def open_storage(uri: str | Path, *, endpoint_url: str | None = None) -> Storage:
    """`s3://bucket/prefix` -> S3Storage, anything else -> LocalStorage (a directory path)."""
    uri = str(uri)
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        return S3Storage(bucket, prefix, endpoint_url=endpoint_url)
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported storage URI (use a local path or s3://bucket/prefix)")
    return LocalStorage(uri)


def _cat_main(endpoint: str, bucket: str, key: str) -> None:
    """Stream one S3 object to stdout; what `S3Storage.stream_command` runs in a child process.

    This module imports nothing from the project at top level, so running it by path works from
    any working directory.
    """
    storage = S3Storage(bucket, "", endpoint_url=None if endpoint == "-" else endpoint)
    try:
        body = storage.client.get_object(Bucket=bucket, Key=key)["Body"]
        shutil.copyfileobj(body, sys.stdout.buffer, 1 << 20)
    except Exception as exc:
        sys.exit(str(storage._error(exc, f"s3://{bucket}/{key}")))


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "cat":
        sys.exit("usage: storage.py cat ENDPOINT|- BUCKET KEY")
    _cat_main(*sys.argv[2:])
