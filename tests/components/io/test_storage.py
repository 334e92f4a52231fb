"""Local and S3 storage behave alike, write atomically, and fail with errors that name the URI."""

from __future__ import annotations

import socket
import subprocess
import time

import boto3
import pytest

from components.io.storage import LocalStorage, S3Storage, StorageError, open_storage


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return open_storage(tmp_path / "out")
    bucket = request.getfixturevalue("s3_bucket")
    return open_storage(f"s3://{bucket}/some/prefix")


def test_open_storage_picks_the_backend(tmp_path, s3_server):
    assert isinstance(open_storage(tmp_path), LocalStorage)
    s3 = open_storage("s3://bkt/a/b/")
    assert isinstance(s3, S3Storage) and s3.bucket == "bkt" and s3.uri("x.tar") == "s3://bkt/a/b/x.tar"
    assert open_storage("s3://bkt").uri("x") == "s3://bkt/x"
    with pytest.raises(StorageError, match="gs://b/p: unsupported"):
        open_storage("gs://b/p")


def test_put_get_list_exists_delete(storage, tmp_path):
    storage.ensure_ready()
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00first" * 1000)
    storage.put_file(src, "v1/a.tar")
    storage.put_bytes(b"second", "v1/b.tar")
    storage.put_bytes(b"{}", "index.json")
    assert src.exists()  # put without move keeps the source

    assert storage.list() == ["index.json", "v1/a.tar", "v1/b.tar"]
    assert storage.list("v1/") == ["v1/a.tar", "v1/b.tar"]
    assert storage.exists("v1/a.tar") and not storage.exists("v1/zzz.tar")
    storage.get_file("v1/a.tar", tmp_path / "back" / "a.bin")
    assert (tmp_path / "back" / "a.bin").read_bytes() == src.read_bytes()

    storage.put_bytes(b"replaced", "v1/b.tar")  # overwrite is a whole-object swap
    assert storage.get_bytes("v1/b.tar") == b"replaced"

    storage.put_file(src, "moved.tar", move=True)
    assert not src.exists() and storage.exists("moved.tar")

    storage.delete("v1/a.tar")
    storage.delete("v1/a.tar")  # deleting twice is fine
    assert storage.list() == ["index.json", "moved.tar", "v1/b.tar"]
    with pytest.raises(StorageError, match=r"v1/a\.tar"):
        storage.get_file("v1/a.tar", tmp_path / "nope")


def test_local_put_leaves_no_temporaries_and_drops_empty_dirs(tmp_path):
    storage = LocalStorage(tmp_path / "out")
    storage.put_bytes(b"x" * 10, "deep/dir/a.tar")
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] == ["a.tar"]
    storage.delete("deep/dir/a.tar")
    assert list((tmp_path / "out").iterdir()) == []  # the emptied version folders went too
    with pytest.raises(StorageError, match="escapes the storage root"):
        storage.put_bytes(b"x", "../outside.txt")


def test_s3_stream_command_streams_an_object(s3_bucket, tmp_path):
    storage = open_storage(f"s3://{s3_bucket}/p")
    payload = bytes(range(256)) * 4096  # 1 MiB, more than one copy block
    storage.put_bytes(payload, "shard.tar")
    out = subprocess.run(storage.stream_command("shard.tar"), shell=True, capture_output=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == payload

    missing = subprocess.run(storage.stream_command("gone.tar"), shell=True, capture_output=True, cwd=tmp_path)
    assert missing.returncode != 0
    assert f"s3://{s3_bucket}/p/gone.tar".encode() in missing.stderr


def test_missing_bucket_is_named(s3_server, monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server)
    storage = open_storage("s3://no-such-bucket/shards")
    missing = "bucket 'no-such-bucket' does not exist"
    with pytest.raises(StorageError, match=rf"s3://no-such-bucket/shards: {missing}"):
        storage.ensure_ready()
    with pytest.raises(StorageError, match=rf"s3://no-such-bucket/shards/x\.tar: {missing}"):
        storage.put_bytes(b"x", "x.tar")


def test_unreachable_endpoint_fails_fast_naming_the_uri(aws_env):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    storage = S3Storage("bucket", "prefix", endpoint_url=dead)
    start = time.monotonic()
    with pytest.raises(StorageError, match=rf"s3://bucket/prefix: cannot reach S3 endpoint {dead}"):
        storage.ensure_ready()
    assert time.monotonic() - start < 10


def test_access_denied_is_reported(start_s3_server):
    """A moto server that enforces IAM, asked with keys it never issued."""
    endpoint = start_s3_server(INITIAL_NO_AUTH_ACTION_COUNT="0")
    storage = S3Storage("locked", "p", endpoint_url=endpoint)
    denied = r"s3://locked/p: access denied \((InvalidAccessKeyId|AccessDenied|403)\)"
    with pytest.raises(StorageError, match=denied):
        storage.ensure_ready()


def test_s3_credentials_come_from_the_environment_only(s3_bucket):
    storage = open_storage(f"s3://{s3_bucket}")
    creds = storage.client._request_signer._credentials
    assert creds.access_key == "testing"  # the session's fake keys, from the environment
    assert "testing" not in storage.stream_command("x.tar")  # keys never ride on a command line
    boto3.client("s3", endpoint_url=storage.endpoint_url).head_bucket(Bucket=s3_bucket)
