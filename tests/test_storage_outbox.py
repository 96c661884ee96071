"""The outbox: durable locally first, uploaded in the background, resumed after a crash,
patient through outages. Stores are a real folder and a real S3-protocol server (moto) on
127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from sdcloud.settings import Settings
from sdcloud.storage.local import LocalStore
from sdcloud.storage.outbox import Outbox
from sdcloud.storage.s3 import S3Store
from waiting import wait_until

FAST = (0.05, 0.3)  # backoff base/max in seconds


def settings_for(tmp_path: Path) -> Settings:
    s = Settings.load({"data_dir": str(tmp_path / "data")}, env={})
    s.ensure_dirs()
    return s


def make_image(settings: Settings, n: int, seed: int = 1) -> Path:
    folder = settings.outputs_path / "txt2img-images" / "2026-11-27"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{n:05d}-{seed}.png"
    path.write_bytes(b"\x89PNG fake image %d" % n)
    return path


def wait_for(cond, timeout: float = 15.0) -> bool:
    return bool(wait_until(cond, timeout, 0.02, "the outbox"))


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


def test_images_and_infotext_reach_a_folder_store_in_background(tmp_path):
    s = settings_for(tmp_path)
    store = LocalStore(tmp_path / "store")
    store.check()  # start-up check creates the folder (its parent exists)
    box = Outbox(s, store, backoff=FAST)
    box.start()
    img = make_image(s, 0)
    keys = box.add(img, "a cat\nSteps: 4, Seed: 1")
    assert keys == ["outputs/txt2img-images/2026-11-27/00000-1.png",
                    "outputs/txt2img-images/2026-11-27/00000-1.txt"]
    assert img.with_suffix(".txt").read_text() == "a cat\nSteps: 4, Seed: 1"
    assert box.wait_idle(10)
    assert (tmp_path / "store" / keys[0]).read_bytes() == img.read_bytes()
    assert (tmp_path / "store" / keys[1]).read_text() == "a cat\nSteps: 4, Seed: 1"
    st = box.status()
    assert (st["pending"], st["uploaded"], st["healthy"], st["warning"]) == (0, 2, True, None)
    assert box.stop()
    assert img.exists() and img.with_suffix(".txt").exists()  # nothing deleted locally


def test_pending_entries_resume_after_restart(tmp_path):
    s = settings_for(tmp_path)
    store = LocalStore(tmp_path / "store")
    store.check()
    first = Outbox(s, store, backoff=FAST)  # never started: as if the process died at once
    for i in range(5):
        first.add(make_image(s, i), f"prompt {i}")
    first.close()
    second = Outbox(s, store, backoff=FAST)
    assert second.status()["pending"] == 10
    second.start()
    assert second.wait_idle(10)
    assert len(store.list("outputs")) == 10
    second.close()


class GatedStore(LocalStore):
    """A folder store whose uploads wait on a gate: stands in for a slow network, which is the
    only thing that cannot be produced for real on loopback without long timeouts."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()

    def put_many(self, items):
        self.gate.wait(30)
        super().put_many(items)


def test_add_never_waits_for_a_slow_store(tmp_path):
    s = settings_for(tmp_path)
    store = GatedStore(tmp_path / "store")
    store.check()
    box = Outbox(s, store, backoff=FAST)
    box.start()
    t0 = time.monotonic()
    for i in range(10):
        box.add(make_image(s, i), f"prompt {i}")
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"10 adds took {elapsed:.2f}s while the store was stuck"
    assert box.status()["pending"] == 20
    store.gate.set()
    assert box.wait_idle(10)
    assert len(store.list("outputs")) == 20
    box.close()


def test_folder_store_that_vanishes_keeps_local_writes_and_drains_when_back(tmp_path, caplog):
    s = settings_for(tmp_path)
    root = tmp_path / "drive" / "sd"
    root.mkdir(parents=True)
    store = LocalStore(root)
    box = Outbox(s, store, backoff=FAST)
    box.start()
    box.add(make_image(s, 0), "p0")
    assert box.wait_idle(10)
    shutil.rmtree(tmp_path / "drive")  # the Drive mount drops
    with caplog.at_level("WARNING", logger="sdcloud.storage"):
        for i in range(1, 4):
            box.add(make_image(s, i), f"p{i}")
        assert wait_for(lambda: box.status()["healthy"] is False)
    st = box.status()
    assert st["pending"] == 6 and "is gone" in st["last_error"]
    assert "kept on local disk" in st["warning"]
    assert any("images stay on local disk" in r.message for r in caplog.records)
    assert all((s.outputs_path / "txt2img-images/2026-11-27" / f"{i:05d}-1.png").exists() for i in range(4))
    root.mkdir(parents=True)  # remounted
    assert box.wait_idle(10)
    assert box.status()["healthy"] is True and box.status()["warning"] is None
    assert len(store.list("outputs")) == 6  # the 6 pending; the first 2 were in the old folder
    box.close()


def test_locally_deleted_file_is_reported_not_retried_forever(tmp_path):
    s = settings_for(tmp_path)
    (tmp_path / "store").mkdir()
    box = Outbox(s, LocalStore(tmp_path / "store"), backoff=FAST)
    img = make_image(s, 0)
    box.add(img)
    img.unlink()
    box.start()
    assert box.wait_idle(10)
    assert box.status()["missing"] == 1
    box.close()


def test_s3_outage_during_generation_all_images_arrive(tmp_path, aws_env, caplog):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = start_moto(port)
    try:
        import s3fs

        bucket = f"outage-{uuid.uuid4().hex[:8]}"  # moto's state is per process: a fresh bucket
        s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir(bucket)
        s = settings_for(tmp_path)
        store = S3Store(bucket, "sd", endpoint=endpoint)
        store.check()
        box = Outbox(s, store, backoff=FAST)
        box.start()
        box.add(make_image(s, 0), "p0")
        assert box.wait_idle(10)
        server.stop()  # the S3 service goes away mid-session
        with caplog.at_level("WARNING", logger="sdcloud.storage"):
            t0 = time.monotonic()
            for i in range(1, 6):
                box.add(make_image(s, i), f"p{i}")
            assert time.monotonic() - t0 < 2.0
            assert wait_for(lambda: box.status()["healthy"] is False, 30)
        assert "cannot reach store" in box.status()["warning"]
        server = start_moto(port)  # same in-process state, so earlier objects are still there
        assert box.wait_idle(30)
        keys = store.list("outputs")
        assert len(keys) == 12 and len(set(keys)) == 12
        box.close()
    finally:
        server.stop()


CHILD = r"""
import sys, time
from pathlib import Path
from sdcloud.settings import Settings
from sdcloud.storage.outbox import Outbox
from sdcloud.storage.s3 import S3Store
s = Settings.load({"data_dir": sys.argv[1]}, env={})
s.ensure_dirs()
box = Outbox(s, S3Store(sys.argv[3], "sd", endpoint=sys.argv[2]), backoff=(0.05, 0.3))
box.start()
folder = s.outputs_path / "txt2img-images" / "2026-11-27"
folder.mkdir(parents=True, exist_ok=True)
for i in range(20):
    time.sleep(0.05)  # "generation"
    p = folder / f"{i:05d}-7.png"
    p.write_bytes(b"img %d" % i)
    box.add(p, f"prompt {i}\nSteps: 2, Seed: 7")
    print(f"done {p.name}", flush=True)
time.sleep(60)
"""


def test_kill_9_mid_batch_loses_nothing_and_duplicates_nothing(tmp_path, aws_env):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = start_moto(port)
    try:
        import s3fs

        bucket = f"crash-{uuid.uuid4().hex[:8]}"
        s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir(bucket)
        data = tmp_path / "data"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data), endpoint, bucket],
                                stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        done = []
        assert proc.stdout is not None
        while len(done) < 11:
            line = proc.stdout.readline()
            assert line, "child exited early"
            done.append(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # restart: a fresh outbox on the same data folder drains what was journaled
        s = Settings.load({"data_dir": str(data)}, env={})
        store = S3Store(bucket, "sd", endpoint=endpoint)
        box = Outbox(s, store, backoff=FAST)
        box.start()
        assert box.wait_idle(30)
        keys = store.list("outputs")
        assert len(keys) == len(set(keys))
        for name in done:
            png = f"outputs/txt2img-images/2026-11-27/{name}"
            assert png in keys
            assert png[:-4] + ".txt" in keys
            assert store.size(png) == (s.outputs_path / "txt2img-images/2026-11-27" / name).stat().st_size
        box.close()
    finally:
        server.stop()
