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
    assert rows == [["vast-4090", "NVIDIA GeForce RTX 4090", "24.0 GB", "sha256:abcd, sd15.safetensors", "idle",
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
                                           "keys": ["k/late.png"], "info": {}}))
        deadline = time.monotonic() + 10
        while queue.refused_late == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert queue.get(job.id).state == "queued"  # the late answer changed nothing
        for event in ({"type": "started"}, {"type": "result", "keys": ["k/good.png"], "info": {"x": 1}}):
            queue.redis.xadd(P.EVENTS, P.dump({**event, "job": job.id, "fence": new_fence, "worker": "b"}))
        done = queue.wait(job.id, timeout=10)
        assert done.state == "done" and done.attempts == 2 and done.result["worker"] == "b"
        assert done.result["images"] == ["job:00000.png"]
        assert queue.output_file(job.id, "00000.png").read_bytes() == b"good"
        assert queue.attempt_info(job.id)["reasons"] == ["a: stopped answering"]
        assert queue.redis.get(P.FENCE_PREFIX + job.id) is None  # a stale redelivery now finds no fence
    finally:
        queue.stop()
        redis_server.stop()
