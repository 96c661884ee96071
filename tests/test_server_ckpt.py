"""``/api/ckpt/*`` over real HTTP against a real ``sdcloud serve``, on demo checkpoints: inspect
and hash answer at once; merge and prune run as queued jobs whose result shows up in
``/sdapi/v1/sd-models`` and generates; bad input is 4xx JSON and queues nothing."""

from __future__ import annotations

import hashlib

import pytest

from conftest import launch
from sdcloud.engine.demo import write_demo_checkpoint
from sdcloud.jobs import FINISHED
from waiting import wait_until

pytestmark = pytest.mark.slow  # a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("ckpt-server")
    folder = data / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    write_demo_checkpoint(folder / "one.safetensors", "sd15", seed=1)
    write_demo_checkpoint(folder / "two.safetensors", "sd15", seed=2)
    write_demo_checkpoint(folder / "xl.safetensors", "sdxl", seed=3)
    srv = launch(data)
    yield srv
    srv.stop()


def finished(c, job_id: str, timeout: float = 120) -> dict:
    return wait_until(lambda: (j := c.get(f"/api/jobs/{job_id}").json())["state"] in FINISHED and j,
                      timeout, 0.2, f"job {job_id} to finish")


def test_inspect_and_hash_answer_at_once_without_server_paths(server):
    with server.client() as c:
        r = c.post("/api/ckpt/inspect", json={"model": "one"})
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["path"] == "one.safetensors" and report["format"] == "safetensors"
        assert report["family"] == "sd1" and report["has_vae"] and report["parameters"] > 0
        assert str(server.data_dir) not in r.text
        h = c.post("/api/ckpt/hash", json={"name": "one.safetensors"}).json()
    data = (server.data_dir / "models" / "Stable-diffusion" / "one.safetensors").read_bytes()
    assert h["sha256"] == hashlib.sha256(data).hexdigest() and h["short"] == h["sha256"][:10]


def test_merge_runs_as_a_job_and_the_result_generates(server):
    with server.client() as c:
        r = c.post("/api/ckpt/merge", json={"a": "one", "b": "two [abc]", "alpha": 0.3, "output": "blend"})
        assert r.status_code == 202, r.text
        job = finished(c, r.json()["id"])
        assert job["state"] == "done", job
        assert job["kind"] == "ckpt-merge" and job["progress"] == 1.0
        assert job["result"]["output"] == "blend.safetensors" and job["result"]["arch"]
        titles = [m["title"] for m in c.get("/sdapi/v1/sd-models").json()]
        assert any(t.startswith("blend") for t in titles), titles
        h = c.post("/api/ckpt/hash", json={"name": "blend"}).json()
        assert h["sha256"] == job["result"]["sha256"]
        gen = c.post("/sdapi/v1/txt2img", json={"prompt": "merged", "width": 64, "height": 64, "steps": 2,
                                                 "override_settings": {"sd_model_checkpoint": "blend"}})
        assert gen.status_code == 200, gen.text
        assert "Model: blend" in gen.json()["info"]
        pruned = c.post("/api/ckpt/prune", json={"model": "blend", "output": "blend-pruned.safetensors",
                                                  "dtype": "fp16"})
        assert pruned.status_code == 202, pruned.text
        assert finished(c, pruned.json()["id"])["state"] == "done"
    assert (server.data_dir / "models" / "Stable-diffusion" / "blend-pruned.safetensors").is_file()


@pytest.mark.parametrize("path, body, status, words", [
    ("merge", {"a": "one", "b": "nope", "output": "x"}, 404, "checkpoint 'nope' not found"),
    ("merge", {"a": "one", "b": "xl", "output": "x"}, 400, "architectures differ"),
    ("merge", {"a": "one", "b": "two", "output": "../../escape"}, 400, "plain file name"),
    ("merge", {"a": "one", "b": "two", "output": "two.safetensors"}, 400, "already exists"),
    ("merge", {"a": "one", "b": "two", "method": "add_difference", "output": "x"}, 400, "third model"),
    ("merge", {"a": "one", "b": "two", "c": "", "method": "ties", "output": "x"}, 400, "third model"),
    ("merge", {"a": "/etc/passwd", "b": "two", "output": "x"}, 404, "not found"),
    ("lora-bake", {"model": "one", "loras": [{"name": "missing"}], "output": "x"}, 404, "lora 'missing'"),
    ("inspect", {"model": "../../../etc/passwd"}, 404, "not found"),
])
def test_bad_input_is_4xx_json_and_queues_nothing(server, path, body, status, words):
    with server.client() as c:
        before = len(c.get("/api/queue", params={"finished": 500}).json()["jobs"])
        r = c.post(f"/api/ckpt/{path}", json=body)
        assert r.status_code == status, r.text
        assert words in r.json()["detail"]
        assert len(c.get("/api/queue", params={"finished": 500}).json()["jobs"]) == before
    assert not (server.data_dir / "escape.safetensors").exists()


def test_a_cancelled_tool_job_leaves_no_output(server, tmp_path):
    """The runner checks the job's cancel token at each progress report (the queue sets it on
    cancel): the tool stops and nothing appears under the output name."""
    from sdcloud.catalog import Catalog
    from sdcloud.engine.types import CancelToken
    from sdcloud.errors import Cancelled
    from sdcloud.jobs.base import Job, JobContext
    from sdcloud.jobs.ckpt import CheckpointRunner
    from sdcloud.settings import Settings

    settings = Settings.load({"data_dir": server.data_dir})
    token = CancelToken()
    token.interrupt()
    job = Job(id="x", kind="ckpt-merge", payload={"a": "one", "b": "two", "output": "never"})
    ctx = JobContext(job, tmp_path / "in", tmp_path / "out", token, lambda p: None)
    with pytest.raises(Cancelled):
        CheckpointRunner(settings, Catalog(settings))(ctx)
    folder = server.data_dir / "models" / "Stable-diffusion"
    assert not (folder / "never.safetensors").exists()
    assert not [p for p in folder.iterdir() if "never" in p.name]  # no temp file left either
