"""What the API and the workers agree on: the Celery app's settings, queue names, Redis keys
and the events a worker sends back. Messages are JSON (never pickle); images never go
through Redis, only store keys.

A message (Celery task ``sdcloud.generate``, one JSON argument): ``job_id``, ``fence``,
``kind``, ``payload``, ``created``, ``attempt`` (1 for the first run). Any registered kind
travels this way; the queue is the job's lane (``sdcloud.lane.<lane>``) or, for the GPU lane,
its model's queue (``sdcloud.m.<key>``) or ``sdcloud.any``.

Events (Redis stream ``sdcloud:events``, one entry per event, field ``e`` = JSON):
``started`` {job, fence, worker}, ``progress`` {job, fence, progress: ProgressEvent dict
without preview, preview: true when a new live preview is in its Redis key, live: the job's
live extras (training: new loss points and samples)}, ``result`` {job, fence, worker, result
(the handler's dict), files {name in the job's output folder: store key}, models [{folder,
name, key}] (checkpoints or LoRAs the job made, in the store), live, interrupted}, ``failed``
{job, fence, worker, reason, retry, status}. The API applies one only if ``fence`` is still
the job's current fence (compare-and-set), so a late answer from a worker already given up
on is refused.

Live previews never go through the stream: the worker keeps the latest one, a small JPEG
(at most ``PREVIEW_MAX_SIDE`` pixels a side and ``PREVIEW_MAX_BYTES``), in the key
``preview_key(job, fence)``, rewritten at most every ``PREVIEW_EVERY_S`` seconds; a
training's sample images go to the store (``job_key(job, "samples", name)``).
"""

from __future__ import annotations

import json
import re
from typing import Any

TASK = "sdcloud.generate"
ANY_QUEUE = "sdcloud.any"
EVENTS = "sdcloud:events"
EVENTS_MAXLEN = 100_000
WORKER_PREFIX = "sdcloud:worker:"  # + name -> JSON announcement, expires without heartbeats
FENCE_PREFIX = "sdcloud:fence:"  # + job id -> the fence a worker must hold to run it
CANCEL_PREFIX = "sdcloud:cancel:"  # + job id -> present while a cancel is requested
PREVIEW_PREFIX = "sdcloud:preview:"  # + job id + ":" + fence -> the latest live preview (JPEG bytes)
CONFIG_KEY = "sdcloud:config"  # hash the API writes: store URL (no secrets), heartbeat timeout
HEARTBEAT_S = 2.0
PREVIEW_EVERY_S = 1.0  # a worker rewrites a job's preview at most this often
PREVIEW_MAX_SIDE = 256
PREVIEW_MAX_BYTES = 48 * 1024
PREVIEW_TTL_S = 120  # a preview outlives its job only briefly
VISIBILITY_TIMEOUT_S = 3600  # above the slowest job (model pull + load + hires batch)


GPU_LANE = "gpu"
GENERATION_KINDS = ("txt2img", "img2img")  # their images get keys fixed by the job (one copy each)
JOB_PREFIX = "fleet/jobs/"  # + job id + /in/, /out/, /state/, /dataset/: a job's files in the store


def preview_key(job_id: str, fence: str) -> str:
    """The Redis key of a job attempt's live preview (per fence: a worker given up on cannot
    overwrite the preview of the attempt that counts)."""
    return f"{PREVIEW_PREFIX}{job_id}:{fence}"


def lane_queue(lane: str) -> str:
    """The Celery queue of a lane other than the GPU lane (``train``: LoRA training)."""
    return "sdcloud.lane." + re.sub(r"[^A-Za-z0-9_.-]", "_", lane)


def job_key(job_id: str, part: str, name: str = "") -> str:
    """Where a job's ``in``/``out``/``state``/``dataset`` files live in the store."""
    return f"{JOB_PREFIX}{job_id}/{part}" + (f"/{name}" if name else "")


def model_queue(key: str) -> str:
    """The Celery queue of jobs for one model (affinity key ``sha256:...`` or ``name:...``)."""
    return "sdcloud.m." + re.sub(r"[^A-Za-z0-9_.:-]", "_", key)


def model_keys(name: str, sha256: str | None) -> list[str]:
    """Affinity keys of a model: its content hash when known, and its name."""
    keys = [f"sha256:{sha256[:16]}"] if sha256 else []
    return keys + [f"name:{name}"]


def celery_config(broker_url: str) -> dict[str, Any]:
    """Settings from shared/reference/scaleout.md §3.2, each for a measured reason."""
    transport = {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "unacked_restore_interval": 5,  # kombu's default sweep is ~100 s
        "unacked_restore_throttle": 1,
        "queue_order_strategy": "priority",
        "priority_steps": list(range(10)),
        "sep": ":",
    }
    conf: dict[str, Any] = {
        "broker_url": broker_url,
        "result_backend": None,
        "task_ignore_result": True,  # results travel as events; the API's journal is the record
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": False,
        "broker_transport_options": transport,
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": ANY_QUEUE,
        "task_create_missing_queues": True,
        "worker_soft_shutdown_timeout": 30,  # spot SIGTERM: give the job back before dying
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_send_task_events": False,
        "worker_enable_remote_control": False,  # no broadcast queues: fewer keys, no pidbox
    }
    if broker_url.startswith("rediss://"):
        import ssl

        conf["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return conf


def make_app(broker_url: str) -> Any:
    from celery import Celery

    app = Celery("sdcloud")
    app.conf.update(celery_config(broker_url))
    return app


def dump(event: dict[str, Any]) -> dict[str, str]:
    return {"e": json.dumps(event, separators=(",", ":"))}


def load(fields: dict[Any, Any]) -> dict[str, Any]:
    raw = fields.get(b"e") or fields.get("e")
    return json.loads(raw)
