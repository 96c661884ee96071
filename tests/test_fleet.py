"""Scale-out end to end: a real redis-server (loopback, AOF, password), ``sdcloud serve
--broker`` and three real ``sdcloud worker`` processes on the demo models.

One fleet per module (start-up is the expensive part): w1 and w2 hold ``demo``, w3 holds
``demo-xl``. The tests run in order against it: 60 jobs answered once; affinity; kill -9 of
a worker mid-job (the later tests run on the two left); a Redis restart mid-run; a job no
worker can fit failing with its reasons; a job's webhooks; a merge and a LoRA training run on
workers (the training's worker killed mid-run: it resumes on another from the store, its loss
curve and samples shown by the front); live progress and previews; a prompt's LoRA pulled by a
worker from the store. Most of
the time is the start-up of the four processes (torch + demo model).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import launch, wait_ready
from fleet_helpers import HAVE_REDIS, RedisServer, WorkerProcess, wait_jobs, wait_workers

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAVE_REDIS, reason="redis-server not installed "
                                                    "(scripts/test.sh installs it)")]
pytest.importorskip("celery")

TINY = {"prompt": "a fox", "width": 64, "height": 64, "steps": 1, "sampler_name": "Euler"}
WORKER_TIMEOUT = "8"  # seconds without a heartbeat before a worker's job is re-run
MAX_PIXELS = "70000"  # every worker refuses jobs larger than ~256x256
TRAIN_STEP_DELAY = "0.4"  # seconds per training step on the workers: room to kill one mid-run


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.redis = RedisServer(root / "redis")
        self.redis.start()
        self.store = root / "store"
        self.store.mkdir()
        # a checkpoint the API's catalog knows and the store holds, but no worker: pulled on demand
        from sdcloud.engine.demo import write_demo_checkpoint

        ckpts = root / "api" / "models" / "Stable-diffusion"
        ckpts.mkdir(parents=True)
        write_demo_checkpoint(ckpts / "tiny.safetensors", seed=3)
        (self.store / "models" / "Stable-diffusion").mkdir(parents=True)
        (self.store / "models" / "Stable-diffusion" / "tiny.safetensors").write_bytes(
            (ckpts / "tiny.safetensors").read_bytes())
        (ckpts / "ghost.safetensors").write_bytes((ckpts / "tiny.safetensors").read_bytes())  # not in the store
        write_demo_checkpoint(ckpts / "other.safetensors", seed=4)  # not in the store: a merge puts it there
        self.server = launch(root / "api", "--broker", self.redis.url, "--store", str(self.store),
                             "--webhook-allow-private", wait=False,
                             env={"SDCLOUD_WORKER_TIMEOUT": WORKER_TIMEOUT, "SDCLOUD_MAX_ATTEMPTS": "3"})
        self.workers: dict[str, WorkerProcess] = {}
        for name, model in (("w1", "demo"), ("w2", "demo"), ("w3", "demo-xl")):  # start beside the server
            self.add(name, model)
        wait_ready(self.server)
        self.client = self.server.client()
        wait_workers(self.client, set(self.workers))

    def add(self, name: str, model: str) -> WorkerProcess:
        self.workers[name] = WorkerProcess(self.root / name, self.redis.url, name, "--model", model,
                                           "--store", str(self.store),
                                           "--max-pixels", MAX_PIXELS, "--price-per-hour", "0.35",
                                           env={"SDCLOUD_TEST_TRAIN_STEP_DELAY": TRAIN_STEP_DELAY})
        return self.workers[name]

    def submit(self, **fields: Any) -> str:
        r = self.client.post("/api/txt2img", json={**TINY, **fields})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def store_images(self) -> list[str]:
        return sorted(p.relative_to(self.store).as_posix() for p in (self.store / "outputs").rglob("*.png"))

    def close(self) -> None:
        self.client.close()
        for w in self.workers.values():
            w.kill()
        self.server.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    yield f
    f.close()


def test_workers_announce_gpu_models_and_rates(fleet: Fleet) -> None:
    workers = {w["name"]: w for w in fleet.client.get("/api/workers").json()["workers"]}
    assert set(workers) == {"w1", "w2", "w3"}
    assert workers["w1"]["models"] == ["name:demo"] and workers["w3"]["models"] == ["name:demo-xl"]
    assert workers["w1"]["gpu"] == "cpu" and workers["w1"]["capabilities"]["max_pixels"] == int(MAX_PIXELS)
    assert workers["w2"]["cost_per_hour"] == 0.35
    out = subprocess.run([sys.executable, "-m", "sdcloud.cli", "workers", "--broker", fleet.redis.url],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "w1" in out.stdout and "holds name:demo-xl" in out.stdout and "0.35/h" in out.stdout
    assert fleet.redis.password not in out.stdout + out.stderr


def test_sixty_jobs_answered_once_by_the_workers_holding_the_model(fleet: Fleet) -> None:
    ids = [fleet.submit(seed=1000 + i) for i in range(60)]
    jobs = wait_jobs(fleet.client, ids, timeout=150)
    assert [j["state"] for j in jobs] == ["done"] * 60
    assert all(j["attempts"] == 1 for j in jobs)
    by_worker = Counter(j["result"]["worker"] for j in jobs)
    assert set(by_worker) <= {"w1", "w2"} and by_worker["w1"] > 0 and by_worker["w2"] > 0, by_worker
    keys = [k for j in jobs for k in j["result"]["keys"]]
    assert len(keys) == len(set(keys)) == 60
    assert set(keys) <= set(fleet.store_images())
    seeds = {j["result"]["info"]["all_seeds"][0] for j in jobs}
    assert seeds == set(range(1000, 1060))
    r = fleet.client.get(jobs[0]["result"]["images"][0])
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"


def test_affinity_sends_a_models_jobs_to_its_holder(fleet: Fleet) -> None:
    ids = [fleet.submit(override_settings={"sd_model_checkpoint": "demo-xl"}) for _ in range(4)]
    ids += [fleet.submit() for _ in range(4)]
    jobs = wait_jobs(fleet.client, ids)
    assert [j["result"]["worker"] for j in jobs[:4]] == ["w3"] * 4
    assert {j["result"]["worker"] for j in jobs[4:]} <= {"w1", "w2"}
    assert all(j["result"]["info"]["sd_model_name"] == "demo-xl" for j in jobs[:4])
    loaded = {w["name"]: w["loaded"] for w in fleet.client.get("/api/workers").json()["workers"]}
    assert loaded == {"w1": "demo", "w2": "demo", "w3": "demo-xl"}  # no worker had to switch models


def test_sync_a1111_route_and_progress_through_workers(fleet: Fleet) -> None:
    r = fleet.client.post("/sdapi/v1/txt2img", json={**TINY, "batch_size": 2, "seed": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 2 and json.loads(body["info"])["all_seeds"] == [7, 8]
    # img2img: the init image goes to the store, the worker fetches it from there
    r = fleet.client.post("/sdapi/v1/img2img", json={**TINY, "init_images": [body["images"][0]],
                                                     "denoising_strength": 0.5, "steps": 2})
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 1 and "Denoising strength: 0.5" in json.loads(r.json()["info"])["infotexts"][0]
    assert any(k.startswith("fleet/jobs/") for k in
               (p.relative_to(fleet.store).as_posix() for p in fleet.store.rglob("init-0.png")))


def test_a_job_on_a_worker_shows_progress_and_a_live_preview(fleet: Fleet) -> None:
    import base64
    import io

    from PIL import Image

    job_id = fleet.submit(steps=60, width=96, height=96, batch_size=2, seed=11)
    deadline = time.monotonic() + 60
    seen: dict[str, Any] = {}
    while not (seen.get("preview") and seen.get("job")):
        progress = fleet.client.get("/sdapi/v1/progress").json()
        job = fleet.client.get(f"/api/jobs/{job_id}").json()
        if progress["current_image"] and progress["state"]["job"] == f"task({job_id})":
            seen["preview"] = progress
        if job["state"] == "running" and job["step"] > 0:
            seen["job"] = job
        assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.05)
    progress, job = seen["preview"], seen["job"]
    assert progress["state"]["sampling_steps"] >= 60 and 0 < progress["state"]["sampling_step"]
    assert 0 < progress["progress"] < 1 and progress["eta_relative"] >= 0
    assert job["steps"] >= 60 and 0 < job["progress"] < 1 and job["eta_seconds"] is not None
    data = base64.b64decode(progress["current_image"])
    assert len(data) <= 48 * 1024
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and max(im.size) <= 256
    # the preview lives in one Redis key per attempt, not in the event stream
    import redis

    r = redis.Redis.from_url(fleet.redis.url)
    assert all(b"current_image" not in f[b"e"] and len(f[b"e"]) < 4096 for _, f in r.xrange("sdcloud:events"))
    [job] = wait_jobs(fleet.client, [job_id])
    assert job["state"] == "done"
    assert not list(r.scan_iter(match=f"sdcloud:preview:{job_id}:*"))  # gone with the job
    r.close()


def test_kill_9_mid_job_runs_again_elsewhere_without_duplicates(fleet: Fleet) -> None:
    job_id = fleet.submit(steps=40, width=96, height=96, batch_size=2, seed=5)
    deadline = time.monotonic() + 60
    while True:
        job = fleet.client.get(f"/api/jobs/{job_id}").json()
        if job["state"] == "running" and job["step"] > 0:
            break
        assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.05)
    victim = next(w["name"] for w in fleet.client.get("/api/workers").json()["workers"] if w["job"] == job_id)
    fleet.workers[victim].kill()
    killed = time.monotonic()
    [job] = wait_jobs(fleet.client, [job_id], timeout=60)
    took = time.monotonic() - killed
    assert job["state"] == "done" and job["attempts"] == 2, job
    assert job["result"]["worker"] != victim
    assert took < 30, f"recovered in {took:.1f} s"
    mine = [k for k in fleet.store_images() if f"/{job_id[:12]}-" in k]
    assert len(mine) == 2  # one copy of each of the two images
    assert {w["name"] for w in fleet.client.get("/api/workers").json()["workers"]} == set(fleet.workers) - {victim}
    fleet.workers.pop(victim).kill()  # the next tests run on the two left (saves a worker start-up)


def test_redis_restart_mid_run_loses_nothing(fleet: Fleet) -> None:
    ids = [fleet.submit(seed=5000 + i, steps=4) for i in range(16)]
    deadline = time.monotonic() + 60
    while sum(fleet.client.get(f"/api/jobs/{i}").json()["state"] == "done" for i in ids) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    fleet.redis.restart()
    ids += [fleet.submit(seed=6000 + i) for i in range(4)]
    jobs = wait_jobs(fleet.client, ids, timeout=120)
    assert [j["state"] for j in jobs] == ["done"] * 20, [j.get("error") for j in jobs]
    keys = [k for j in jobs for k in j["result"]["keys"]]
    assert len(set(keys)) == 20
    store = fleet.store_images()
    assert all(sum(f"/{i[:12]}-" in k for k in store) == 1 for i in ids)


def test_a_job_no_worker_can_fit_fails_with_the_reasons(fleet: Fleet) -> None:
    job_id = fleet.submit(width=512, height=512)
    [job] = wait_jobs(fleet.client, [job_id], timeout=60)
    assert job["state"] == "failed"
    assert job["error"].startswith("failed on 3 attempts:")
    assert job["error"].count("fits at most 70,000") == 3


def test_webhooks_carry_image_keys_from_workers(fleet: Fleet) -> None:
    from sdcloud.webhooks import verify
    from test_webhooks import Receiver

    receiver = Receiver()
    try:
        job_id = fleet.submit(webhook_url=receiver.url)
        [job] = wait_jobs(fleet.client, [job_id])
        deadline = time.monotonic() + 30
        while not any(json.loads(b)["type"] == "job.succeeded" for _, b in receiver.ok()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        secret = (fleet.root / "api" / ".sdcloud" / "webhook-secret").read_text().strip()
        for headers, body in receiver.ok():
            verify(secret, headers, body)
        done = next(json.loads(b) for _, b in receiver.ok() if json.loads(b)["type"] == "job.succeeded")
        assert done["data"]["image_keys"] == job["result"]["keys"]
    finally:
        receiver.close()


def test_cancel_a_queued_job_never_runs_it(fleet: Fleet) -> None:
    blockers = [fleet.submit(steps=150, width=96, height=96)] + [fleet.submit(steps=20) for _ in range(3)]
    victim = fleet.submit(seed=424242)  # more jobs ahead than workers: it waits
    r = fleet.client.post(f"/api/queue/{victim}/cancel")
    assert r.json()["state"] == "cancelled"
    deadline = time.monotonic() + 60
    while fleet.client.get(f"/api/jobs/{blockers[0]}").json()["step"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    fleet.client.post(f"/api/queue/{blockers[0]}/cancel")  # running on a worker: stopped between steps
    jobs = wait_jobs(fleet.client, blockers)
    assert jobs[0]["state"] == "cancelled" and jobs[0]["error"] == "cancelled while running"
    assert [j["state"] for j in jobs[1:]] == ["done"] * 3
    time.sleep(1)
    assert not any(f"/{victim[:12]}-" in k for k in fleet.store_images())


def test_a_worker_pulls_a_model_it_lacks_from_the_store(fleet: Fleet) -> None:
    job_id = fleet.submit(override_settings={"sd_model_checkpoint": "tiny"})
    [job] = wait_jobs(fleet.client, [job_id], timeout=90)
    assert job["state"] == "done", job["error"]
    assert job["result"]["info"]["sd_model_name"] == "tiny"
    puller = job["result"]["worker"]
    assert (fleet.root / puller / "models" / "Stable-diffusion" / "tiny.safetensors").is_file()
    deadline = time.monotonic() + 20  # the next heartbeat announces the pulled model
    while not any("name:tiny.safetensors" in w["models"] and w["name"] == puller
                  for w in fleet.client.get("/api/workers").json()["workers"]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    again = wait_jobs(fleet.client, [fleet.submit(override_settings={"sd_model_checkpoint": "tiny"})
                                     for _ in range(3)])
    assert [j["result"]["worker"] for j in again] == [puller] * 3  # now routed to the worker holding it
    missing = fleet.submit(override_settings={"sd_model_checkpoint": "ghost"})
    [job] = wait_jobs(fleet.client, [missing], timeout=90)
    assert job["state"] == "failed"
    assert "no model 'ghost.safetensors'" in job["error"] and job["error"].count("store has none") == 3


def test_a_merge_runs_on_a_worker_with_its_inputs_and_output_through_the_store(fleet: Fleet) -> None:
    r = fleet.client.post("/api/ckpt/merge", json={"a": "tiny", "b": "other", "output": "fleetmix",
                                                   "alpha": 0.3, "dtype": "fp32"})
    assert r.status_code == 202, r.text
    [job] = wait_jobs(fleet.client, [r.json()["id"]], timeout=120)
    assert job["state"] == "done", job["error"]
    assert job["result"]["output"] == "fleetmix.safetensors" and job["result"]["merged"] > 0
    ran_on = [n for n in fleet.workers
              if (fleet.root / n / "models" / "Stable-diffusion" / "fleetmix.safetensors").is_file()]
    assert len(ran_on) == 1  # made on one worker, not on the front
    models = fleet.store / "models" / "Stable-diffusion"
    assert (models / "other.safetensors").is_file()  # the front put the input the store lacked
    front = fleet.root / "api" / "models" / "Stable-diffusion" / "fleetmix.safetensors"
    assert front.read_bytes() == (models / "fleetmix.safetensors").read_bytes()  # the output came back
    import hashlib

    assert hashlib.sha256(front.read_bytes()).hexdigest() == job["result"]["sha256"]
    names = [m["model_name"] for m in fleet.client.get("/sdapi/v1/sd-models").json()]
    assert "fleetmix" in names


def test_training_resumes_on_another_worker_from_the_store(fleet: Fleet, tmp_path: Path) -> None:
    from training_data import make_dataset

    src = make_dataset(tmp_path / "src") / "5_sks cat"
    files = [("files", (p.name, p.read_bytes())) for p in sorted(src.iterdir())]
    r = fleet.client.post("/api/train/datasets/fleetcat", params={"folder": "5_sks cat"}, files=files)
    assert r.status_code == 200, r.text
    body = {"dataset": "fleetcat", "model": "demo", "name": "fleetcat",
            "options": {"steps": 12, "rank": 4, "alpha": 4, "lr": 1e-2, "resolution": 64, "batch": 2,
                        "save_state_every": 2, "sample_every": 4, "sample_steps": 2}}
    r = fleet.client.post("/api/train", json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while (job := fleet.client.get(f"/api/jobs/{job_id}").json())["step"] < 6:
        assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.1)
    assert job["metrics"]["loss"] > 0  # the loss reaches the front as for a local run
    before = fleet.client.get(f"/api/train/{job_id}").json()  # the curve and samples, as for a local run
    assert before["phase"] == "training" and len(before["losses"]) >= 4, before
    assert [s["step"] for s in before["samples"]] == [4]
    victim = next(w["name"] for w in fleet.client.get("/api/workers").json()["workers"] if w["job"] == job_id)
    fleet.workers.pop(victim).kill()
    [job] = wait_jobs(fleet.client, [job_id], timeout=180)
    assert job["state"] == "done" and job["attempts"] == 2, job
    assert job["result"]["resumed_from"] >= 2 and job["result"]["steps"] == 12  # not from scratch
    train = fleet.client.get(f"/api/train/{job_id}").json()
    steps = [p[0] for p in train["losses"]]
    assert steps == sorted(set(steps)) and steps[-1] == 12, steps
    assert [p for p in train["losses"] if p[0] <= job["result"]["resumed_from"]] == \
        [p for p in before["losses"] if p[0] <= job["result"]["resumed_from"]]  # the first attempt's curve kept
    assert [s["step"] for s in train["samples"]] == [4, 8, 12]
    for sample in train["samples"]:
        r = fleet.client.get(sample["url"])
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    assert any(p.name.startswith("step-") for p in (fleet.store / "train" / "fleetcat").iterdir())
    assert any(k.startswith(f"fleet/jobs/{job_id}/dataset/") for k in
               (p.relative_to(fleet.store).as_posix() for p in fleet.store.rglob("*.png")))
    lora = fleet.root / "api" / "models" / "Lora" / "fleetcat.safetensors"
    assert lora.read_bytes() == (fleet.store / "models" / "Lora" / "fleetcat.safetensors").read_bytes()
    assert "fleetcat" in [x["name"] for x in fleet.client.get("/sdapi/v1/loras").json()]
    # the trained LoRA baked into a checkpoint, on a worker: it reads both through the store
    r = fleet.client.post("/api/ckpt/lora-bake", json={"model": "tiny", "loras": [{"name": "fleetcat", "ratio": 0.5}],
                                                       "output": "tinycat"})
    assert r.status_code == 202, r.text
    [bake] = wait_jobs(fleet.client, [r.json()["id"]], timeout=120)
    assert bake["state"] == "done" and bake["result"]["applied"]["fleetcat.safetensors"] > 0, bake
    assert (fleet.root / "api" / "models" / "Stable-diffusion" / "tinycat.safetensors").is_file()


def test_a_prompts_lora_goes_to_the_worker_through_the_store(fleet: Fleet) -> None:
    import hashlib

    front = fleet.root / "api" / "models" / "Lora"
    data = (front / "fleetcat.safetensors").read_bytes()  # trained by the test above
    (front / "frontonly.safetensors").write_bytes(data)  # on the front only: no worker, not in the store
    job_id = fleet.submit(prompt="a fox <lora:frontonly:0.8>")
    [job] = wait_jobs(fleet.client, [job_id], timeout=90)
    assert job["state"] == "done", job["error"]
    assert 'Lora hashes: "frontonly: ' in job["result"]["info"]["infotexts"][0]  # applied, not skipped
    assert (fleet.store / "models" / "sha256" / hashlib.sha256(data).hexdigest()).read_bytes() == data
    assert (fleet.root / job["result"]["worker"] / "models" / "Lora" / "frontonly.safetensors").read_bytes() == data
    # a LoRA nobody has is skipped as a local job skips it (A1111 does too): the job is done,
    # with the warning in the result's comments and infotext
    [job] = wait_jobs(fleet.client, [fleet.submit(prompt="a fox <lora:nowhere:1> <lora:frontonly:0.5>")], timeout=90)
    assert job["state"] == "done" and job["attempts"] == 1, job
    info = job["result"]["info"]
    assert info["comments"] == "Networks not found: nowhere\n", info
    assert 'Networks not found: nowhere' in info["infotexts"][0] and 'Lora hashes: "frontonly: ' in info["infotexts"][0]


def test_bad_broker_urls_are_one_line_errors(fleet: Fleet, tmp_path: Path) -> None:
    wrong = fleet.redis.url.replace(fleet.redis.password, "wrong-password")
    dead = f"redis://127.0.0.1:{fleet.redis.port + 1 if fleet.redis.port < 65535 else 1}/0"
    cases = [
        (["worker", "--broker", wrong], "refused the login"),
        (["worker", "--broker", dead], "cannot reach broker"),
        (["worker", "--broker", "http://x"], "must look like redis://"),
        (["serve", "--broker", dead, "--port", "1"], "cannot reach broker"),
        # database 1 of the same redis: no server announced a store there, and none is given
        (["worker", "--broker", fleet.redis.url[:-2] + "/1"], "this worker needs a store for its images"),
    ]
    for args, expected in cases:
        out = subprocess.run([sys.executable, "-m", "sdcloud.cli", "--data-dir", str(tmp_path), *args],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode != 0
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], out.stderr
        assert "wrong-password" not in out.stderr


def test_single_box_mode_imports_neither_celery_nor_redis(tmp_path: Path) -> None:
    code = ("import sys; from sdcloud.settings import Settings; from sdcloud.api.app import create_app; "
            f"create_app(Settings(data_dir=__import__('pathlib').Path({str(tmp_path)!r})), ui=False); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'redis', 'kombu')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_serve_broker_local_starts_its_own_redis_for_local_workers(tmp_path: Path) -> None:
    server = launch(tmp_path / "api", "--broker", "local")
    worker = None
    try:
        url_file = tmp_path / "api" / ".sdcloud" / "redis" / "url"
        assert url_file.stat().st_mode & 0o077 == 0 and "@127.0.0.1:" in url_file.read_text()
        assert "appendonly yes" in (tmp_path / "api" / ".sdcloud" / "redis" / "redis.conf").read_text()
        worker = WorkerProcess(tmp_path / "api", "local", "solo", "--model", "demo")  # same --data-dir
        with server.client() as client:
            wait_workers(client, {"solo"})
            r = client.post("/api/txt2img", json=TINY)
            [job] = wait_jobs(client, [r.json()["id"]])
            assert job["state"] == "done" and job["result"]["worker"] == "solo"
        assert "started a private redis-server on 127.0.0.1" in server.log()
    finally:
        if worker is not None:
            worker.kill()
        server.stop()
    out = subprocess.run(["pgrep", "-f", str(tmp_path / "api" / ".sdcloud" / "redis" / "redis.conf")],
                         capture_output=True, text=True)
    assert out.stdout.strip() == ""  # serve stopped its redis-server with it
