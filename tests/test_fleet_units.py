"""Scale-out pieces without workers: the fence compare-and-set against a real redis-server,
the Celery settings, store keys, broker URL handling, the Workers panel rows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleet_helpers import HAVE_REDIS, RedisServer

pytest.importorskip("celery")

from sdcloud.errors import BadRequest  # noqa: E402
from sdcloud.fleet import protocol as P  # noqa: E402
from sdcloud.fleet.broker import BrokerError, LocalRedis, check_url, connect, redact  # noqa: E402
from sdcloud.fleet.worker import image_key  # noqa: E402
from sdcloud.ui.workers_panel import worker_rows  # noqa: E402

needs_redis = pytest.mark.skipif(not HAVE_REDIS, reason="redis-server not installed (scripts/test.sh installs it)")


def test_celery_settings_follow_the_reference() -> None:
    conf = P.celery_config("redis://127.0.0.1:1/0")
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"  # never pickle
    transport = conf["broker_transport_options"]
    assert transport["visibility_timeout"] >= 900 and transport["unacked_restore_throttle"] == 1
    assert transport["queue_order_strategy"] == "priority"
    assert "broker_use_ssl" in P.celery_config("rediss://:pw@h:6380/0")


def test_image_keys_are_fixed_by_the_job() -> None:
    a = image_key("txt2img", "0123456789abcdef", 1_800_000_000.0, 1, "png")
    assert a == image_key("txt2img", "0123456789abcdef", 1_800_000_000.0, 1, "png")
    assert a == "outputs/txt2img-images/2027-01-15/0123456789ab-01.png"


def test_affinity_keys_and_queue_names() -> None:
    assert P.model_keys("sd15.safetensors", "ab" * 32) == ["sha256:abababababababab", "name:sd15.safetensors"]
    assert P.model_queue("name:my model/v2") == "sdcloud.m.name:my_model_v2"


def test_broker_urls_are_checked_and_redacted() -> None:
    assert redact("rediss://user:hunter2@h:6380/0") == "rediss://user:***@h:6380/0"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
    with pytest.raises(BadRequest, match="redis://"):
        check_url("amqp://guest:guest@h//")
    with pytest.raises(BrokerError, match="cannot reach broker redis://:\\*\\*\\*@127.0.0.1:1/0"):
        connect("redis://:pw@127.0.0.1:1/0", timeout=1)


def test_worker_rows_for_the_panel() -> None:
    rows = worker_rows([{"name": "vast-4090", "gpu": "NVIDIA GeForce RTX 4090", "vram_gb": 24.0,
                         "models": ["sha256:abcd", "name:sd15.safetensors"], "job": None, "jobs_done": 12,
                         "jobs_failed": 1, "images_per_hour": 1234.5, "cost_per_hour": 0.4}])
    assert rows == [["vast-4090", "NVIDIA GeForce RTX 4090", "24.0 GB", "sha256:abcd, sd15.safetensors", "Idle",
                     12, 1, "1,234", "0.40"]]


@needs_redis
def test_local_broker_has_a_password_and_aof(tmp_path: Path) -> None:
    local = LocalRedis(tmp_path / "redis")
    url = local.start()
    try:
        assert "127.0.0.1" in url and local.password in url
        client = connect(url)
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        with pytest.raises(BrokerError, match="needs a password|refused the login"):
            connect(f"redis://127.0.0.1:{local.port}/0")
        assert (tmp_path / "redis" / "url").stat().st_mode & 0o077 == 0
    finally:
        local.stop()


@needs_redis
def test_a_late_result_from_a_given_up_attempt_is_refused(tmp_path: Path) -> None:
    """The API side alone, fed events as a worker would send them."""
    from sdcloud.fleet.queue import FleetJobQueue
    from sdcloud.jobs.local import LocalJobQueue
    from sdcloud.storage.local import LocalStore

    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    store = LocalStore(tmp_path / "store")
    queue = FleetJobQueue(tmp_path / "state", redis_server.url, store, LocalJobQueue(tmp_path / "state", {}),
                          worker_timeout=60)
    queue.start()
    try:
        job = queue.submit("txt2img", {"request": {}, "model": "demo"})
        fence = queue.redis.get(P.FENCE_PREFIX + job.id).decode()
        queue.redis.xadd(P.EVENTS, P.dump({"type": "started", "job": job.id, "fence": fence, "worker": "a"}))
        deadline = time.monotonic() + 10
        while queue.get(job.id).state != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with queue._lock:  # what the reaper does when worker a goes silent: a new attempt
            queue._attempt_failed(queue._active[job.id], "a: stopped answering", retry=True)
        new_fence = queue.redis.get(P.FENCE_PREFIX + job.id).decode()
        assert new_fence != fence and queue.get(job.id).state == "queued"
        (tmp_path / "store" / "k").mkdir(parents=True)
        (tmp_path / "store" / "k" / "late.png").write_bytes(b"late")
        (tmp_path / "store" / "k" / "good.png").write_bytes(b"good")
        queue.redis.xadd(P.EVENTS, P.dump({"type": "result", "job": job.id, "fence": fence, "worker": "a",
                                           "result": {"images": ["job:00000.png"], "info": {}},
                                           "files": {"00000.png": "k/late.png"}}))
        deadline = time.monotonic() + 10
        while queue.refused_late == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert queue.get(job.id).state == "queued"  # the late answer changed nothing
        for event in ({"type": "started"}, {"type": "result", "result": {"images": ["job:00000.png"], "info": {"x": 1}},
                                            "files": {"00000.png": "k/good.png"}}):
            queue.redis.xadd(P.EVENTS, P.dump({**event, "job": job.id, "fence": new_fence, "worker": "b"}))
        done = queue.wait(job.id, timeout=10)
        assert done.state == "done" and done.attempts == 2 and done.result["worker"] == "b"
        assert done.result["images"] == ["job:00000.png"] and done.result["keys"] == ["k/good.png"]
        assert queue.output_file(job.id, "00000.png").read_bytes() == b"good"
        assert queue.attempt_info(job.id)["reasons"] == ["a: stopped answering"]
        assert queue.redis.get(P.FENCE_PREFIX + job.id) is None  # a stale redelivery now finds no fence
    finally:
        queue.stop()
        redis_server.stop()


def test_the_inputs_a_job_reads_and_where_they_go(tmp_path: Path) -> None:
    from sdcloud.catalog import Catalog
    from sdcloud.engine.demo import write_demo_checkpoint
    from sdcloud.fleet.assets import FrontAssets, WorkerAssets, inputs_of
    from sdcloud.settings import Settings
    from sdcloud.storage.local import LocalStore

    merge = {"a": "x", "b": "demo", "c": None, "bake_vae": "v", "loras": []}
    assert inputs_of("ckpt-merge", merge) == [("checkpoint", "a", "x"), ("vae", "bake_vae", "v")]  # demo: no file
    bake = {"model": "x", "loras": [{"name": "l1", "ratio": 1.0}]}
    assert inputs_of("ckpt-lora-bake", bake) == [("checkpoint", "model", "x"), ("lora", "loras.0", "l1")]
    assert inputs_of("txt2img", {"model": "x"}) == []

    front_settings = Settings(data_dir=tmp_path / "front")
    front_settings.ensure_dirs()
    write_demo_checkpoint(front_settings.checkpoints_path / "x.safetensors", seed=1)
    (tmp_path / "store").mkdir()
    store = LocalStore(tmp_path / "store")
    dataset = tmp_path / "ds" / "5_cat"
    dataset.mkdir(parents=True)
    (dataset / "1.png").write_bytes(b"png")
    (dataset / "1.txt").write_text("a cat")
    front = FrontAssets(front_settings, Catalog(front_settings), store)
    payload = front.prepare("job1", "ckpt-convert", {"model": "x", "output": "y.safetensors"})
    assert payload["model"] == "x.safetensors" and store.size("models/Stable-diffusion/x.safetensors")
    train = front.prepare("job2", "train-lora", {"model": "x", "dataset": str(tmp_path / "ds")})
    assert train["dataset_key"] == "fleet/jobs/job2/dataset"
    assert store.list("fleet/jobs/job2/dataset") == ["fleet/jobs/job2/dataset/5_cat/1.png",
                                                      "fleet/jobs/job2/dataset/5_cat/1.txt"]

    worker_settings = Settings(data_dir=tmp_path / "worker")
    worker_settings.ensure_dirs()
    worker = WorkerAssets(worker_settings, Catalog(worker_settings), store)
    worker.fetch_inputs("train-lora", train, tmp_path / "work")
    assert (worker_settings.checkpoints_path / "x.safetensors").is_file()  # pulled: the worker lacked it
    assert Path(train["dataset"], "5_cat", "1.txt").read_text() == "a cat"
    with pytest.raises(Exception, match="the store has none under models/Lora/nope"):
        worker.ensure("lora", "nope")
    # the front fetches a worker's output into its model folder; a name that is a path is ignored
    (tmp_path / "store" / "models" / "Lora").mkdir(parents=True)
    (tmp_path / "store" / "models" / "Lora" / "made.safetensors").write_bytes(b"lora")
    front.take_models([{"folder": "Lora", "name": "made.safetensors", "key": "models/Lora/made.safetensors"},
                       {"folder": "Lora", "name": "../evil.safetensors", "key": "models/Lora/made.safetensors"}])
    assert (front_settings.lora_path / "made.safetensors").read_bytes() == b"lora"
    assert not (front_settings.lora_path.parent / "evil.safetensors").exists()


def test_a_workers_live_preview_is_a_small_jpeg() -> None:
    import base64
    import io

    from PIL import Image

    from sdcloud.fleet.worker import preview_jpeg
    from sdcloud.image_files import encode_image

    noise = Image.frombytes("RGB", (640, 480), __import__("os").urandom(640 * 480 * 3))
    jpeg = preview_jpeg(encode_image(noise))
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) <= P.PREVIEW_MAX_BYTES
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG" and max(im.size) <= P.PREVIEW_MAX_SIDE
    assert base64.b64decode(base64.b64encode(jpeg)) == jpeg


@needs_redis
def test_progress_preview_and_live_reports_reach_the_job(tmp_path: Path) -> None:
    """The front takes a worker's progress, its preview from the attempt's Redis key (never
    from the stream) and its live extras; a stale attempt's preview is not shown."""
    from sdcloud.fleet.queue import FleetJobQueue
    from sdcloud.jobs.local import LocalJobQueue
    from sdcloud.storage.local import LocalStore

    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    lives: list[dict] = []
    queue = FleetJobQueue(tmp_path / "state", redis_server.url, LocalStore(tmp_path / "store"),
                          LocalJobQueue(tmp_path / "state", {}), worker_timeout=60,
                          on_live=lambda job, live: lives.append({"job": job.id, **live}))
    queue.start()
    try:
        job = queue.submit("txt2img", {"request": {}, "model": "demo"})
        fence = queue.redis.get(P.FENCE_PREFIX + job.id).decode()
        queue.redis.set(P.preview_key(job.id, "stale"), b"old")
        queue.redis.set(P.preview_key(job.id, fence), b"\xff\xd8jpeg")
        for event in ({"type": "started"},
                      {"type": "progress", "fence": "stale", "preview": True, "live": {"losses": [[1, 9.0]]},
                       "progress": {"step": 9, "total": 10}},
                      {"type": "progress", "preview": True, "live": {"losses": [[1, 0.5]]},
                       "progress": {"step": 3, "total": 10, "job_no": 0, "job_count": 1}}):
            queue.redis.xadd(P.EVENTS, P.dump({"job": job.id, "fence": fence, "worker": "a", **event}))
        deadline = time.monotonic() + 10
        while queue.get(job.id).step != 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        seen = queue.get(job.id)
        assert seen.state == "running" and seen.steps == 10 and seen.progress == 0.3
        assert seen.eta_seconds is not None and seen.eta_seconds >= 0
        assert seen.preview == "/9hqcGVn"  # base64 of the key's bytes
        assert lives == [{"job": job.id, "losses": [[1, 0.5]]}]
    finally:
        queue.stop()
        redis_server.stop()


def test_a_remote_trainings_curve_and_samples_on_the_front(tmp_path: Path) -> None:
    from sdcloud.jobs.training import TrainRunner
    from sdcloud.settings import Settings

    settings = Settings(data_dir=tmp_path)
    runner = TrainRunner(settings)
    store: dict[str, bytes] = {"k/step-000002.png": b"png2", "k/step-000004.png": b"png4", "k/x": b"x"}

    def fetch(key: str, dest: Path) -> None:
        dest.write_bytes(store[key])

    runner.take_live("j", {"name": "cat", "phase": "training", "losses": [[1, 0.9], [2, 0.8]],
                           "samples": [{"step": 2, "name": "step-000002.png", "key": "k/step-000002.png"}]}, fetch)
    runner.take_live("j", {"losses": [[3, 0.7], [4, 0.6]],
                           "samples": [{"step": 4, "name": "step-000004.png", "key": "k/step-000004.png"}]}, fetch)
    # the worker died; another resumed from the state saved at step 2
    runner.take_live("j", {"losses": [[3, 0.65]], "samples": [{"step": 3, "name": "../x.png", "key": "k/x"}]}, fetch)
    live = runner.live["j"]
    assert live["losses"] == [[1, 0.9], [2, 0.8], [3, 0.65]]
    assert [s["step"] for s in live["samples"]] == [2, 3]  # step 4's sample was of the lost attempt
    folder = settings.outputs_path / "train-samples" / "cat"
    assert [Path(s["path"]) for s in live["samples"]] == [folder / "step-000002.png", folder / "x.png"]
    assert (folder / "step-000002.png").read_bytes() == b"png2"


def test_a_prompts_lora_goes_by_content_and_a_missing_one_is_left_to_the_engine(tmp_path: Path) -> None:
    from sdcloud.catalog import Catalog
    from sdcloud.fleet.assets import FrontAssets, WorkerAssets, lora_tags
    from sdcloud.settings import Settings
    from sdcloud.storage.local import LocalStore

    payload = {"request": {"prompt": "a <lora:style:0.8> fox, mytoken", "negative_prompt": "<lyco:bad:1>",
                           "hr_prompt": ""}}
    assert lora_tags(payload) == ["style", "bad"]
    front_settings = Settings(data_dir=tmp_path / "front")
    front_settings.ensure_dirs()
    (front_settings.lora_path / "style.safetensors").write_bytes(b"lora-bytes")
    (front_settings.embeddings_path / "mytoken.pt").write_bytes(b"embedding")
    (front_settings.embeddings_path / "unused.pt").write_bytes(b"other")
    (tmp_path / "store").mkdir()
    store = LocalStore(tmp_path / "store")
    front = FrontAssets(front_settings, Catalog(front_settings), store)
    sent = front.prepare("job", "txt2img", payload)
    import hashlib

    sha = hashlib.sha256(b"lora-bytes").hexdigest()
    assert sent["networks"][0] == {"kind": "lora", "tag": "style", "name": "style.safetensors", "sha256": sha}
    assert [n["tag"] for n in sent["networks"]] == ["style", "mytoken"]  # 'bad': not here; 'unused': not used
    assert (tmp_path / "store" / "models" / "sha256" / sha).read_bytes() == b"lora-bytes"

    worker_settings = Settings(data_dir=tmp_path / "worker")
    worker_settings.ensure_dirs()
    worker = WorkerAssets(worker_settings, Catalog(worker_settings), store)
    worker.ensure_networks(sent)  # 'bad' is nowhere: no error, the engine skips it as locally
    assert not (worker_settings.lora_path / "bad.safetensors").exists()
    assert (worker_settings.lora_path / "style.safetensors").read_bytes() == b"lora-bytes"
    (worker_settings.lora_path / "bad.safetensors").write_bytes(b"worker's own")
    worker.ensure_networks(sent)
    assert (worker_settings.lora_path / "style.safetensors").read_bytes() == b"lora-bytes"  # pulled by content
    assert (worker_settings.embeddings_path / "mytoken.pt").read_bytes() == b"embedding"
    assert (worker_settings.lora_path / "bad.safetensors").read_bytes() == b"worker's own"
