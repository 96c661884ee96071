"""``sdcloud serve --store``: saved images reach the store through the outbox, ``/api/storage``
reports it, the session is restored at start, and a server killed with -9 mid-batch loses and
duplicates nothing. Real servers (subprocesses) over real HTTP; the S3 store is moto's server
mode on 127.0.0.1, started here."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from conftest import launch
from waiting import wait_until

GEN = {"prompt": "a red cube", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler",
       "save_images": True, "send_images": False}
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def wait_for(check, timeout: float = 30.0, what: str = "condition"):
    return wait_until(check, timeout, 0.2, what)


def local_outputs(data_dir: Path) -> dict[str, bytes]:
    root = data_dir / "outputs"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.png")}


def test_saved_images_reach_a_folder_store_and_status_reports_them(start_server, tmp_path):
    store = tmp_path / "drive"
    # a session saved earlier: a style and a LoRA come back when the server starts
    (store / "session" / "config").mkdir(parents=True)
    (store / "session" / "config" / "styles.csv").write_text("name,prompt,negative_prompt\nnoir,{prompt} film noir,\n")
    (store / "session" / "Lora").mkdir(parents=True)
    (store / "session" / "Lora" / "tiny.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    server = start_server("--store", str(store))
    with server.client() as c:
        styles = [s["name"] for s in c.get("/sdapi/v1/prompt-styles").json()]
        assert styles == ["noir"]
        assert (server.data_dir / "models" / "Lora" / "tiny.safetensors").is_file()
        r = c.post("/sdapi/v1/txt2img", json={**GEN, "batch_size": 2})
        assert r.status_code == 200, r.text
        status = wait_for(lambda: (s := c.get("/api/storage").json())["pending"] == 0 and s, what="upload")
    saved = local_outputs(server.data_dir)
    assert len(saved) == 3  # two images and their grid, as A1111 saves them
    assert status["store"] == str(store) and status["healthy"] is True
    assert status["uploaded"] == 3 and status["last_error"] is None
    assert status["restore"]["restored"] == 2
    for rel, data in saved.items():
        copy = store / "outputs" / rel
        assert copy.read_bytes() == data
        assert "a red cube" in Image.open(io.BytesIO(data)).info["parameters"]


def test_without_a_store_storage_says_so_and_images_stay_local(start_server):
    server = start_server()
    with server.client() as c:
        assert c.post("/sdapi/v1/txt2img", json=GEN).status_code == 200
        status = c.get("/api/storage").json()
    assert status["store"] is None and status["pending"] == 0
    assert isinstance(status["warnings"], list)
    assert len(local_outputs(server.data_dir)) == 1


@pytest.mark.slow
def test_a_store_that_cannot_be_used_stops_serve_with_one_line(tmp_path):
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "sdcloud.cli", "--data-dir", str(data), "serve", "--model", "demo",
                        "--nowebui", "--port", "1", "--store", str(tmp_path / "missing" / "drive")],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1
    assert r.stderr.startswith("sdcloud: ") and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


# S3 --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server():
    """moto's S3 server in its own process (so it outlives nothing of ours) with a bucket."""
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **AWS})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(endpoint), 30, "moto server")
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True,
                               use_listings_cache=False)
        fs.mkdir("shots")
        yield endpoint, fs
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(endpoint: str) -> bool:
    try:
        httpx.get(endpoint, timeout=1)
        return True
    except httpx.TransportError:
        return False


def _bucket_files(fs) -> dict[str, bytes]:
    fs.invalidate_cache()
    prefix = "shots/run/outputs/"
    return {k[len(prefix):]: fs.cat_file(k) for k in fs.find(prefix)}


@pytest.mark.slow
def test_kill_9_mid_batch_loses_and_duplicates_nothing_in_s3(s3_server, tmp_path):
    """20 jobs of one image each with an S3 store; SIGKILL the server once some are done; start it
    again: every image a job reported done is in the bucket, byte for byte (infotext inside),
    each exactly once, and the restarted server finishes the rest."""
    endpoint, fs = s3_server
    data = tmp_path / "data"
    flags = ("--store", "s3://shots/run", "--store-endpoint", endpoint)
    server = launch(data, *flags, env=AWS)
    try:
        with server.client() as c:
            ids = [c.post("/api/txt2img", json={**GEN, "seed": 1000 + i}).json()["id"] for i in range(20)]

            def done_jobs() -> dict[str, list[str]]:
                jobs = {j["id"]: j for j in c.get("/api/queue", params={"finished": 100}).json()["jobs"]}
                return {i: jobs[i] for i in ids if jobs.get(i, {}).get("state") == "done"}

            wait_for(lambda: len(done_jobs()) >= 3, 240, "three finished jobs")
            reported = set(done_jobs())
        server.kill()
        assert 3 <= len(reported) < 20, "the kill must land mid-batch"
        server = launch(data, *flags, env=AWS)
        with server.client() as c:
            def all_finished() -> list[dict]:
                jobs = [c.get(f"/api/jobs/{i}").json() for i in ids]
                return jobs if all(j["state"] in ("done", "failed", "cancelled") for j in jobs) else []

            assert {j["state"] for j in wait_for(all_finished, 300, "all jobs")} == {"done"}
            wait_for(lambda: c.get("/api/storage").json()["pending"] == 0, 60, "outbox drained")
    finally:
        server.stop()
    in_bucket = _bucket_files(fs)
    local = local_outputs(data)
    bucket_seeds = [_seed(b) for b in in_bucket.values()]
    # every job finished: each seed made it to the bucket
    assert set(bucket_seeds) == set(range(1000, 1020))
    # what the first server reported done is in the bucket exactly once, byte for byte
    for job_id in reported:
        seed = 1000 + ids.index(job_id)
        copies = [k for k, b in in_bucket.items() if _seed(b) == seed]
        assert len(copies) == 1, f"seed {seed}: {copies}"
        assert in_bucket[copies[0]] == local[copies[0]]
        assert "a red cube" in Image.open(io.BytesIO(in_bucket[copies[0]])).info["parameters"]
    # keys mirror the outputs folder; nothing in the bucket that is not on local disk
    assert set(in_bucket) <= set(local)
    assert len(bucket_seeds) == len(set(bucket_seeds)), "an image was stored twice"
    # a kill between writing a PNG and recording the job's saved result leaves that one file on
    # local disk only (the job was not reported done and reruns); nothing else is left behind
    assert len(set(local) - set(in_bucket)) <= 1


def _seed(png: bytes) -> int:
    return int(Image.open(io.BytesIO(png)).info["parameters"].split("Seed: ")[1].split(",")[0])


def test_a_job_whose_images_were_saved_before_a_crash_finishes_without_generating_again(tmp_path):
    """The runner records a job's saved result in its folder; the retry after a crash finds it
    and journals the same files again instead of making a second copy. The engine here is None:
    any attempt to generate would fail the test."""
    import json

    from sdcloud.engine.types import CancelToken
    from sdcloud.jobs.base import Job, JobContext
    from sdcloud.jobs.generation import SAVED_RECORD, EngineHost, GenerationRunner
    from sdcloud.settings import Settings

    settings = Settings.load({"data_dir": tmp_path})
    image = tmp_path / "outputs" / "txt2img-images" / "2026-01-01" / "00000-7.png"
    image.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(image)
    out_dir = tmp_path / "job" / "out"
    out_dir.mkdir(parents=True)
    record = {"paths": [str(image)], "info": {"seed": 7}, "interrupted": False}
    (out_dir / SAVED_RECORD).write_text(json.dumps(record))
    journaled: list = []
    job = Job(id="j", kind="txt2img", payload={"request": {"prompt": "x"}, "save_images": True})
    ctx = JobContext(job, tmp_path / "job" / "in", out_dir, CancelToken(), lambda p: None)
    result = GenerationRunner(settings, EngineHost(None), on_saved=journaled.append)(ctx)
    assert result == record
    assert journaled == [[image]]
