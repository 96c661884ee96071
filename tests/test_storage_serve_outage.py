"""Outage during ``sdcloud serve``: the S3 service (moto's server mode on 127.0.0.1, in this
process so its buckets survive a stop/start on the same port) goes away while jobs run; the
jobs all succeed, ``/api/storage`` warns, and every image arrives once the service is back."""

from __future__ import annotations

import socket
import uuid

import pytest

from conftest import launch
from waiting import wait_until

GEN = {"prompt": "a blue sphere", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler",
       "save_images": True, "send_images": False}
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def wait_for(check, timeout: float, what: str):
    return wait_until(check, timeout, 0.2, what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


@pytest.mark.slow
def test_s3_outage_while_serving_warns_fails_no_job_and_drains(tmp_path, monkeypatch):
    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = start_moto(port)
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)
    bucket = f"serve-outage-{uuid.uuid4().hex[:8]}"  # moto's state is per process: a fresh bucket
    fs.mkdir(bucket)
    data = tmp_path / "data"
    server = launch(data, "--store", f"s3://{bucket}/run", "--store-endpoint", endpoint, env=AWS)
    try:
        with server.client() as c:
            def finished(ids):
                jobs = [c.get(f"/api/jobs/{i}").json() for i in ids]
                return jobs if all(j["state"] in ("done", "failed", "cancelled") for j in jobs) else None

            first = [c.post("/api/txt2img", json={**GEN, "seed": i}).json()["id"] for i in range(2)]
            wait_for(lambda: finished(first), 120, "first jobs")
            wait_for(lambda: c.get("/api/storage").json()["pending"] == 0, 30, "first uploads")
            s3.stop()  # the S3 service goes away
            during = [c.post("/api/txt2img", json={**GEN, "seed": 10 + i}).json()["id"] for i in range(3)]
            jobs = wait_for(lambda: finished(during), 180, "jobs during the outage")
            assert {j["state"] for j in jobs} == {"done"}  # no failed job
            status = wait_for(lambda: (s := c.get("/api/storage").json())["healthy"] is False and s, 60,
                              "a warning")
            assert "kept on local disk" in status["warning"] and status["pending"] >= 1
            s3 = start_moto(port)  # back, same port, same buckets
            status = wait_for(lambda: (s := c.get("/api/storage").json())["pending"] == 0 and s, 120,
                              "the queue to drain")
            assert status["healthy"] is True
        local = {p.relative_to(data / "outputs").as_posix(): p.read_bytes()
                 for p in (data / "outputs").rglob("*.png")}
        fs.invalidate_cache()
        prefix = f"{bucket}/run/outputs/"
        in_bucket = {k[len(prefix):]: fs.cat_file(k) for k in fs.find(prefix)}
        assert len(local) == 5 and in_bucket == local
    finally:
        server.stop()
        s3.stop()
