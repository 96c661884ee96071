"""``/api/train`` over real HTTP against a real ``sdcloud serve`` on the demo model: upload a dataset,
check it, train as a queued job with live losses and samples, use the LoRA at once, cancel a run
(its state is kept, no LoRA), and bad input is 4xx JSON that queues nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import launch
from training_data import make_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("train-server")
    srv = launch(data, env={"SDCLOUD_TEST_TRAIN_STEP_DELAY": "0.05"})
    yield srv
    srv.stop()


def _wait(c, job_id: str, until, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/api/train/{job_id}").json()
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id}: {job}")


def _upload(c, tmp_path: Path) -> None:
    src = make_dataset(tmp_path / "src") / "5_sks cat"
    files = [("files", (p.name, p.read_bytes())) for p in sorted(src.iterdir())]
    r = c.post("/api/train/datasets/mychar", params={"folder": "5_sks cat"}, files=files)
    assert r.status_code == 200, r.text
    assert r.json()["saved"] == 8


def test_train_as_a_job_with_losses_samples_and_the_lora_usable_at_once(server, tmp_path: Path) -> None:
    with server.client() as c:
        _upload(c, tmp_path)
        report = c.get("/api/train/datasets/mychar/check", params={"resolution": 64}).json()
        assert report["ok"] and report["images"] == 4 and report["buckets"] == {"64x64": 4}
        body = {"dataset": "mychar", "model": "demo", "name": "mychar",
                "options": {"steps": 6, "rank": 4, "alpha": 4, "lr": 1e-2, "resolution": 64, "batch": 2,
                            "sample_every": 3, "sample_steps": 2, "sample_prompt": "sks cat"}}
        r = c.post("/api/train", json=body)
        assert r.status_code == 202, r.text
        job = _wait(c, r.json()["id"], lambda j: j["state"] in ("done", "failed", "cancelled"))
        assert job["state"] == "done", job
        assert [s for s, _ in job["losses"]] == [1, 2, 3, 4, 5, 6]
        assert job["result"]["lora"] == "mychar.safetensors" and job["result"]["steps"] == 6
        assert [s["step"] for s in job["samples"]] == [3, 6]
        png = c.get(job["samples"][1]["url"])
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        assert "mychar" in [x["name"] for x in c.get("/sdapi/v1/loras").json()]
        gen = c.post("/sdapi/v1/txt2img", json={"prompt": "sks cat <lora:mychar:0.8>", "steps": 2, "width": 64,
                                                 "height": 64})
        assert gen.status_code == 200, gen.text
        assert "Lora hashes" in gen.json()["info"]


def test_cancel_keeps_the_state_and_writes_no_lora(server) -> None:
    with server.client() as c:
        body = {"dataset": "mychar", "model": "demo", "name": "long",
                "options": {"steps": 5000, "rank": 4, "resolution": 64, "batch": 2, "save_state_every": 0}}
        r = c.post("/api/train", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        running = _wait(c, job_id, lambda j: j["step"] >= 2 or j["state"] != "running" and j["state"] != "queued")
        assert running["state"] == "running", running
        c.post(f"/api/queue/{job_id}/cancel")
        job = _wait(c, job_id, lambda j: j["state"] in ("done", "failed", "cancelled"))
        assert job["state"] == "cancelled" and "--resume" in job["error"], job
    assert not (server.data_dir / "models" / "Lora" / "long.safetensors").exists()
    assert list((server.data_dir / ".sdcloud" / "train" / "long").glob("step-*/meta.json"))


def test_a_txt2img_submitted_during_a_training_finishes_before_it(server, tmp_path: Path) -> None:
    """Training and generation share the GPU through the one queue and GPU owner: the training
    yields between steps, so a generation does not wait for the whole run."""
    with server.client() as c:
        if "mychar" not in [d["name"] for d in c.get("/api/train/datasets").json()["datasets"]]:
            _upload(c, tmp_path)
        body = {"dataset": "mychar", "model": "demo", "name": "shared",
                "options": {"steps": 2000, "rank": 4, "resolution": 64, "batch": 2, "save_state_every": 0}}
        r = c.post("/api/train", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        running = _wait(c, job_id, lambda j: j["step"] >= 2 or j["state"] not in ("running", "queued"))
        assert running["state"] == "running", running
        gen = c.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 2, "width": 64, "height": 64,
                                                 "seed": 1}, timeout=120)
        assert gen.status_code == 200, gen.text
        assert len(gen.json()["images"]) == 1
        during = c.get(f"/api/train/{job_id}").json()
        assert during["state"] == "running" and during["step"] < 2000, during  # the image came first
        later = _wait(c, job_id, lambda j: j["step"] > during["step"] + 2 or j["state"] != "running")
        assert later["state"] == "running", later  # and the training goes on after it
        c.post(f"/api/queue/{job_id}/cancel")
        job = _wait(c, job_id, lambda j: j["state"] in ("done", "failed", "cancelled"))
        assert job["state"] == "cancelled", job


@pytest.mark.parametrize("body, status, message", [
    ({"dataset": "nope", "name": "x"}, 404, "dataset 'nope' not found"),
    ({"dataset": "../etc", "name": "x"}, 400, "plain folder name"),
    ({"dataset": "mychar", "name": "x", "options": {"rank": 0}}, 400, "--rank must be > 0"),
    ({"dataset": "mychar", "name": "x", "model": "missing", "options": {"resolution": 64}}, 404, "missing"),
    ({"dataset": "mychar", "name": "x", "options": {"ranks": 4}}, 400, "unknown training option 'ranks'"),
    ({"dataset": "mychar", "name": "x", "preset": "huge"}, 400, "unknown memory preset"),
])
def test_bad_requests_are_4xx_json(server, body: dict, status: int, message: str) -> None:
    with server.client() as c:
        before = len(c.get("/api/queue").json()["jobs"])
        r = c.post("/api/train", json=body)
        assert r.status_code == status, r.text
        assert message in r.json()["detail"] if "detail" in r.json() else message in r.text
        assert len(c.get("/api/queue").json()["jobs"]) == before


@pytest.mark.parametrize("options, message", [
    ('{"noise_offset": 1e400}', "option 'noise_offset' must be a finite number (got inf)"),  # JSON overflow
    ('{"lr": Infinity}', "option 'lr' must be a finite number (got inf)"),
    ('{"prior_loss_weight": NaN}', "option 'prior_loss_weight' must be a finite number (got nan)"),
    ('{"alpha": -Infinity}', "option 'alpha' must be a finite number (got -inf)"),
    ('{"min_snr_gamma": 1' + '0' * 400 + '}', "option 'min_snr_gamma' is too large"),
    ('{"steps": 1' + '0' * 30 + '}', "option 'steps' is too large"),
])
def test_non_finite_or_overflowing_numbers_are_4xx(server, options: str, message: str) -> None:
    """Raw JSON as clients may send it (Python's json reads 1e400 as inf and accepts NaN):
    refused up front, nothing queued."""
    with server.client() as c:
        before = len(c.get("/api/queue").json()["jobs"])
        body = '{"dataset": "mychar", "name": "x", "options": ' + options + '}'
        r = c.post("/api/train", content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["detail"] == message
        assert len(c.get("/api/queue").json()["jobs"]) == before
