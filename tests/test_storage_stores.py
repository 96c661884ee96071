"""Store URLs and the backends: a local folder and a real S3-protocol server (moto's server
mode) on 127.0.0.1, started by these tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdcloud.errors import BadRequest, StoreError
from sdcloud.storage import open_store, parse_store_url
from sdcloud.storage.local import LocalStore
from sdcloud.storage.s3 import S3Store


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def make_bucket(endpoint: str, name: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    fs.mkdir(name)


# URL parsing -------------------------------------------------------------------------------
@pytest.mark.parametrize("url, scheme, location, prefix, repo_type", [
    ("/content/drive/MyDrive/sd", "file", "/content/drive/MyDrive/sd", "", "model"),
    ("file:///workspace/out", "file", "/workspace/out", "", "model"),
    ("hf://alice/sd-outputs", "hf", "alice/sd-outputs", "", "model"),
    ("hf://datasets/alice/sd-outputs/run1", "hf", "alice/sd-outputs", "run1", "dataset"),
    ("s3://my-bucket/sd/outputs/", "s3", "my-bucket", "sd/outputs", "model"),
])
def test_store_urls_parse(url, scheme, location, prefix, repo_type):
    u = parse_store_url(url)
    assert (u.scheme, u.location, u.prefix, u.repo_type) == (scheme, location, prefix, repo_type)


@pytest.mark.parametrize("url, words", [
    ("gs://bucket/x", "unknown store scheme 'gs://'"),
    ("hf://alice", "expected hf://<user>/<repo>"),
    ("hf://spaces/alice/app", "a Space is not a store"),
    ("s3://Bad_Bucket/x", "not a valid bucket name"),
])
def test_bad_store_urls_say_what_to_use(url, words):
    with pytest.raises(BadRequest) as err:
        parse_store_url(url)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


# Local folder store --------------------------------------------------------------------------
def test_local_store_roundtrip(tmp_path):
    store = open_store(str(tmp_path / "drive" / "sd"))
    (tmp_path / "drive").mkdir()
    store.check()
    src = tmp_path / "a.png"
    src.write_bytes(b"png-bytes")
    store.put(src, "outputs/txt2img-images/2026-11-27/00000-1.png")
    assert store.size("outputs/txt2img-images/2026-11-27/00000-1.png") == 9
    assert store.size("outputs/nope.png") is None
    assert store.list("outputs") == ["outputs/txt2img-images/2026-11-27/00000-1.png"]
    back = tmp_path / "back.png"
    store.get("outputs/txt2img-images/2026-11-27/00000-1.png", back)
    assert back.read_bytes() == b"png-bytes"
    # no temp files are left in the store
    assert [p.name for p in (tmp_path / "drive" / "sd").rglob("*") if p.is_file()] == ["00000-1.png"]


def test_local_store_refuses_to_create_an_unmounted_drive(tmp_path):
    """A missing parent means the Drive/volume is not mounted: creating the folder would put
    the user's images on the ephemeral disk, so it must be an error."""
    store = LocalStore(tmp_path / "drive" / "MyDrive" / "sd")
    with pytest.raises(StoreError, match="is the drive or volume mounted"):
        store.check()
    assert not (tmp_path / "drive").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_local_store_permission_denied_is_one_line(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="permission denied"):
            LocalStore(root).check()
    finally:
        root.chmod(0o700)


def test_dropped_fuse_mount_and_quota_messages():
    import errno

    from sdcloud.storage.errors_fs import describe_os_error

    dropped = describe_os_error(OSError(errno.ENOTCONN, "Transport endpoint is not connected"), "/d")
    assert "dropped mount" in str(dropped) and "remount" in str(dropped)
    full = describe_os_error(OSError(errno.ENOSPC, "No space left on device"), "/d")
    assert "full or over quota" in str(full)
    quota = describe_os_error(OSError(getattr(errno, "EDQUOT", 122), "Disk quota exceeded"), "/d")
    assert "full or over quota" in str(quota)
    denied = describe_os_error(PermissionError(errno.EACCES, "Permission denied"), "/d")
    assert "permission denied" in str(denied)


# S3 ----------------------------------------------------------------------------------------
def test_s3_store_roundtrip(s3_endpoint, aws_env, tmp_path):
    make_bucket(s3_endpoint, "roundtrip")
    store = open_store("s3://roundtrip/sd", endpoint=s3_endpoint)
    store.check()
    src = tmp_path / "a.png"
    src.write_bytes(b"x" * 1000)
    store.put_many([(src, "outputs/a.png"), (src, "outputs/sub/b.png")])
    assert store.size("outputs/a.png") == 1000
    assert store.size("outputs/missing.png") is None
    assert store.list("outputs") == ["outputs/a.png", "outputs/sub/b.png"]
    back = tmp_path / "back.png"
    store.get("outputs/sub/b.png", back)
    assert back.read_bytes() == b"x" * 1000


def test_s3_missing_bucket_is_one_clear_line(s3_endpoint, aws_env):
    with pytest.raises(StoreError) as err:
        S3Store("no-such-bucket", endpoint=s3_endpoint).check()
    assert "bucket 'no-such-bucket' does not exist" in str(err.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_unreachable_endpoint_is_one_clear_line(aws_env):
    endpoint = f"http://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(StoreError) as err:
        S3Store("bucket", endpoint=endpoint).check()
    assert "cannot reach store" in str(err.value)
    assert time.monotonic() - t0 < 20


def test_s3_connection_error_with_403_in_the_port_is_not_called_a_credentials_problem():
    from botocore.exceptions import EndpointConnectionError

    err = S3Store("bucket", endpoint="http://127.0.0.1:40393")._error(
        EndpointConnectionError(endpoint_url="http://127.0.0.1:40393/bucket"), "check")
    assert "cannot reach store" in str(err)


def test_s3_wrong_credentials_is_one_clear_line(aws_env, tmp_path):
    """moto enforces IAM auth when INITIAL_NO_AUTH_ACTION_COUNT is set, so this uses its own
    server process (the setting is process-wide)."""
    port = _free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        with pytest.raises(StoreError) as err:
            S3Store("bucket", endpoint=f"http://127.0.0.1:{port}").check()
        assert "refused the credentials" in str(err.value)
        assert "testing" not in str(err.value)  # the secret never reaches the message
    finally:
        proc.terminate()
        proc.wait(timeout=10)
