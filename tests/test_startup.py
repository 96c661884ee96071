"""A first session in under a minute: the start-up timeline (serve prints it, /api/session
reports it), checkpoints copied once from a slow mount to local disk, hashes restored from the
store, and torch.compile's cache kept with the session."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from sdcloud.checkpoints.hashing import HashCache
from sdcloud.checkpoints.local_copy import is_slow_mount, local_copy, mount_of
from sdcloud.settings import Settings
from sdcloud.startup import PHASES, StartupTimeline, check_install, process_started_at

MOUNTS = """\
overlay / overlay rw 0 0
/dev/sda1 /content ext4 rw 0 0
drive /content/drive fuse.drive rw 0 0
server:/vol /workspace nfs4 rw 0 0
/dev/sdb1 /content/drive\\040local ext4 rw 0 0
"""


def test_timeline_records_phases_in_order_and_the_first_image_once():
    t = StartupTimeline(started_at=time.time() - 1.0)
    with t.phase("imports", detail="torch"):
        pass
    with t.phase("install_check") as info:
        info["detail"] = "ok"
    with t.phase("imports", detail="again"):  # a phase keeps its first timing
        pass
    assert t.mark_first_image("00000.png") and not t.mark_first_image("00001.png")
    d = t.to_dict()
    assert [p["name"] for p in d["phases"]] == ["install_check", "imports", "first_image"]
    assert d["phases"][1]["detail"] == "torch"
    assert all(p["start_s"] >= 1.0 for p in d["phases"])  # counted from the process start
    assert d["first_image_s"] >= d["ready_s"] >= 1.0
    assert set(PHASES) >= {p["name"] for p in d["phases"]}


def test_process_start_is_in_the_past():
    started = process_started_at()
    assert started <= time.time()
    assert time.time() - started < 3600 * 24


def test_install_check_names_versions():
    versions = check_install(ui=True)
    assert {"torch", "diffusers", "gradio"} <= set(versions)


def test_slow_mounts_are_recognised():
    assert mount_of(Path("/content/drive/MyDrive/models/x.safetensors"), MOUNTS) == ("/content/drive", "fuse.drive")
    assert is_slow_mount(Path("/content/drive/MyDrive/x"), MOUNTS)
    assert is_slow_mount(Path("/workspace/models/x"), MOUNTS)
    assert not is_slow_mount(Path("/content/sdcloud/x"), MOUNTS)
    assert not is_slow_mount(Path("/content/drive local/x"), MOUNTS)  # escaped space in /proc/mounts


def test_checkpoint_copied_once_then_reused(tmp_path):
    src = tmp_path / "drive" / "model.safetensors"
    src.parent.mkdir()
    src.write_bytes(os.urandom(1 << 16))
    cache = tmp_path / "cache"
    path, how = local_copy(src, cache, mode="always")
    assert how == "copied" and path.parent == cache and path.read_bytes() == src.read_bytes()
    again, how = local_copy(src, cache, mode="always")
    assert (again, how) == (path, "reused")
    src.write_bytes(os.urandom(1 << 16))  # the source changed: copy again
    os.utime(src, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert local_copy(src, cache, mode="always")[1] == "copied"
    assert path.read_bytes() == src.read_bytes()
    assert local_copy(src, cache, mode="off") == (src, "local")
    assert local_copy(src, cache, mode="auto", mounts="/dev/sda1 / ext4 rw 0 0\n") == (src, "local")
    assert not list(cache.glob("*.part"))


def test_engine_loads_from_the_local_copy_and_records_the_hash_for_the_original(tmp_path):
    from sdcloud.engine.demo import write_demo_checkpoint
    from sdcloud.engine.engine import Engine

    settings = Settings(data_dir=tmp_path / "data", local_cache_dir=tmp_path / "local", model_copy="always")
    settings.ensure_dirs()
    original = settings.checkpoints_path / "demo15.safetensors"
    write_demo_checkpoint(original, "sd15")
    engine = Engine(settings)
    assert engine.fetch_local("demo15") == "copied"
    assert Engine(settings).fetch_local("demo15") == "reused"  # the next session on this machine
    info = engine.load_model("demo15")
    assert info.path == str(original)  # the model is still the original file for users and infotexts
    assert HashCache(settings.state_path / "hashes.json").get(original, compute=False).sha256 == info.sha256
    assert engine.fetch_local("demo") == "built in memory"


def test_hashes_travel_with_the_session(tmp_path):
    """Machine A hashed its checkpoint; machine B gets the hashes from the store with the
    session and does not read the file to hash it."""
    from sdcloud.storage.stores import open_store
    from sdcloud.storage.sync import pull_session, push_session

    a = Settings(data_dir=tmp_path / "a")
    a.ensure_dirs()
    blob = os.urandom(1 << 16)
    (a.checkpoints_path / "m.safetensors").write_bytes(blob)
    (a.lora_path / "l.safetensors").write_bytes(blob[:1000])
    hashes_a = HashCache(a.state_path / "hashes.json")
    sha = hashes_a.get(a.checkpoints_path / "m.safetensors").sha256
    hashes_a.get(a.lora_path / "l.safetensors")
    (tmp_path / "store").mkdir()
    store = open_store(str(tmp_path / "store"))
    push_session(a, store, checkpoints=True, report=lambda _: None)

    b = Settings(data_dir=tmp_path / "b")
    b.ensure_dirs()
    result = pull_session(b, store, checkpoints="store", report=lambda _: None)
    assert result["checkpoints_fetched"] == 1 and result["hashes_restored"] == 2
    cached = HashCache(b.state_path / "hashes.json").get(b.checkpoints_path / "m.safetensors", compute=False)
    assert cached is not None and cached.sha256 == sha
    # a file of another size gets nothing (its recorded hashes would be wrong)
    c = Settings(data_dir=tmp_path / "c")
    c.ensure_dirs()
    (c.checkpoints_path / "m.safetensors").write_bytes(blob[:100])
    assert pull_session(c, store, checkpoints="none", report=lambda _: None)["hashes_restored"] == 1


def test_compile_cache_is_guarded(tmp_path):
    from sdcloud.engine.compile_cache import cache_file, load_artifacts, save_artifacts, supported

    assert load_artifacts(tmp_path).startswith(("no cache yet", "not supported"))
    if not supported():
        pytest.skip("this torch has no cache artifacts")
    bad = cache_file(tmp_path)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a cache")
    assert load_artifacts(tmp_path).startswith("not used")  # refused, not raised
    saved = save_artifacts(tmp_path)  # nothing compiled in this process: nothing or a valid blob
    assert saved is None or saved.stat().st_size > 0


@pytest.mark.slow
def test_serve_prints_the_timeline_and_api_session_reports_it(tmp_path):
    from conftest import launch

    server = launch(tmp_path / "data")
    try:
        with server.client() as client:
            startup = client.get("/api/session").json()["startup"]
            names = [p["name"] for p in startup["phases"]]
            assert names == ["install_check", "imports", "store_restore", "model_fetch", "model_load"]
            assert startup["first_image_s"] is None and startup["ready_s"] > 0
            # A1111's API default save_images=false: the image is made, not saved, and it counts
            answer = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64,
                                                             "steps": 2})
            assert answer.status_code == 200 and answer.json()["images"]
            assert not list((tmp_path / "data" / "outputs").rglob("*.png"))  # nothing saved
            startup = client.get("/api/session").json()["startup"]  # recorded before the answer
            assert startup["first_image_s"] is not None and startup["first_image_s"] >= startup["ready_s"]
            first = next(p for p in startup["phases"] if p["name"] == "first_image")
            assert first["detail"] == "txt2img (not saved)"
            answer = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64,
                                                             "steps": 2, "save_images": True})
            assert answer.status_code == 200
            assert client.get("/api/session").json()["startup"] == startup  # the first image only
        log = server.log()
        assert "ready" in log and "install check" in log and "model load" in log
        assert "first image ready" in log
        json.dumps(startup)
    finally:
        server.stop()
