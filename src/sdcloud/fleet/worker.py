"""``sdcloud worker``: one process per GPU that pulls generation jobs over Celery.

Outbound connections only (Redis, the store). Settings from the reference: solo pool (the
model stays resident in this process), prefetch 1, ``acks_late`` + ``reject_on_worker_lost``.
A heartbeat thread keeps ``sdcloud:worker:<name>`` alive (GPU, VRAM, models held, current
job); the API re-runs the job of a worker whose heartbeat stops.

A job: check the fence (a stale redelivery is dropped), report ``started``, make sure the
model is here (else fetch it from the store: ``models/sha256/<hash>`` or
``models/Stable-diffusion/<name>``), generate with the same runner as local jobs, put each
image in the store under a key fixed by the job (a second run overwrites, never duplicates),
and report the keys.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sdcloud.catalog import DEMO_MODELS
from sdcloud.errors import NotFound, SdcloudError
from sdcloud.fleet import protocol as P
from sdcloud.fleet.broker import connect
from sdcloud.jobs.base import Job, JobContext, job_file_name
from sdcloud.jobs.control import CancelToken
from sdcloud.settings import Settings

log = logging.getLogger("sdcloud.worker")

PROGRESS_EVERY_S = 0.25
EVENT_RETRY_S = 300.0  # an event waits this long for a restarted broker before it is dropped


def image_key(kind: str, job_id: str, created: float, index: int, ext: str) -> str:
    """Where image ``index`` of a job lands in the store: fixed by the job, so any number of
    runs of the same job leave one copy."""
    day = time.strftime("%Y-%m-%d", time.gmtime(created))
    return f"outputs/{kind}-images/{day}/{job_id[:12]}-{index:02d}.{ext}"


class WorkerRuntime:
    def __init__(self, settings: Settings, broker_url: str, store: Any, *, name: str | None = None,
                 models: list[str] | None = None, price_per_hour: float | None = None,
                 max_pixels: int | None = None, engine: Any = None) -> None:
        from sdcloud.catalog import Catalog
        from sdcloud.jobs.generation import EngineHost, GenerationRunner

        self.settings = settings
        self.broker_url = broker_url
        self.redis = connect(broker_url)
        self.store = store
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.price_per_hour = price_per_hour
        if engine is None:
            from sdcloud.engine.engine import Engine

            engine = Engine(settings)
        self.engine = engine
        self.host = EngineHost(engine)
        self.catalog = Catalog(settings)
        self.runner = GenerationRunner(settings, self.host)
        self.preloaded = list(models or [])
        self._held: tuple[str | None, float, list[str]] | None = None
        self.consumer: Any = None  # the Celery consumer, once the worker is ready
        for model in self.preloaded:
            self.host.ensure_model(model)
        self.gpu, self.vram_gb = _device_info(engine)
        self.max_pixels = max_pixels or _default_max_pixels(self.vram_gb)
        cfg = {k.decode(): v.decode() for k, v in self.redis.hgetall(P.CONFIG_KEY).items()}
        self.heartbeat_ttl = float(cfg.get("heartbeat_timeout") or 15.0)
        self.started = time.time()
        self.jobs_done = self.images_done = self.jobs_failed = 0
        self.job: str | None = None
        self._stop = threading.Event()
        self._hb: threading.Thread | None = None

    # announcement ------------------------------------------------------------------------
    def held_models(self) -> list[str]:
        """Affinity keys of what this worker holds: checkpoints on its disk, the loaded model,
        and demo models it was started with (the disk scan is redone at most every 30 s)."""
        now = time.monotonic()
        loaded = self.host.model_key
        if self._held is not None and self._held[0] == loaded and now - self._held[1] < 30:
            return self._held[2]
        keys = self._scan_held()
        self._held = (loaded, now, keys)
        return keys

    def _scan_held(self) -> list[str]:
        keys: list[str] = []
        for m in self.catalog.checkpoints():
            cached = self.engine.hashes.get(m.path, compute=False) if m.path.is_file() else None
            keys += P.model_keys(m.name, cached.sha256 if cached else None)
        cur = self.engine.current
        if cur is not None:
            keys += P.model_keys(self.host.model_key or cur.name, cur.sha256)
        for name in self.preloaded:
            if name in DEMO_MODELS:
                keys += P.model_keys(name, None)
        return sorted(set(keys))

    def announcement(self) -> dict[str, Any]:
        cur = self.engine.current
        return {
            "name": self.name,
            "host": socket.gethostname(),
            "gpu": self.gpu,
            "vram_gb": self.vram_gb,
            "models": self.held_models(),
            "loaded": self.host.model_key or (cur.name if cur else None),
            "capabilities": {"kinds": ["txt2img", "img2img"], "max_pixels": self.max_pixels},
            "price_per_hour": self.price_per_hour,
            "state": "busy" if self.job else "idle",
            "job": self.job,
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "images_done": self.images_done,
            "started": self.started,
            "seen": time.time(),
        }

    def beat(self) -> None:
        ttl = self.redis.hget(P.CONFIG_KEY, "heartbeat_timeout")  # the server may start after us
        if ttl:
            self.heartbeat_ttl = float(ttl)
        self.redis.set(P.WORKER_PREFIX + self.name, json.dumps(self.announcement()),
                       px=int(self.heartbeat_ttl * 1000))

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(P.HEARTBEAT_S):
            try:
                self.beat()
            except Exception as err:  # noqa: BLE001  broker away: keep trying, the job goes on
                log.warning("heartbeat failed: %s", type(err).__name__)

    def start_heartbeat(self) -> None:
        self.beat()
        self._hb = threading.Thread(target=self._heartbeat_loop, name="sdcloud-heartbeat", daemon=True)
        self._hb.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self.redis.delete(P.WORKER_PREFIX + self.name)
        except Exception:  # noqa: BLE001
            pass

    # events ------------------------------------------------------------------------------
    def emit(self, event: dict[str, Any], *, durable: bool = True) -> None:
        """Send one event; results and failures wait out a broker restart, progress does not."""
        deadline = time.monotonic() + (EVENT_RETRY_S if durable else 0)
        while True:
            try:
                self.redis.xadd(P.EVENTS, P.dump({**event, "worker": self.name}), maxlen=P.EVENTS_MAXLEN,
                                approximate=True)
                return
            except Exception as err:  # noqa: BLE001
                if time.monotonic() > deadline:
                    log.warning("event %s for job %s lost: %s", event.get("type"), event.get("job"), err)
                    return
                time.sleep(0.5)

    def _current_fence(self, job_id: str) -> str | None:
        deadline = time.monotonic() + EVENT_RETRY_S
        while True:
            try:
                raw = self.redis.get(P.FENCE_PREFIX + job_id)
                return raw.decode() if raw else None
            except Exception:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    # one job -----------------------------------------------------------------------------
    def run(self, msg: dict[str, Any]) -> str:
        job_id, fence = msg["job_id"], msg["fence"]
        if self._current_fence(job_id) != fence:
            log.info("job %s: stale message (job re-sent, finished or cancelled); dropped", job_id)
            return "stale"
        self.job = job_id
        try:
            self.beat()
        except Exception:  # noqa: BLE001
            pass
        base = {"job": job_id, "fence": fence}
        self.emit({**base, "type": "started"})
        tmp = Path(tempfile.mkdtemp(prefix=f"sdcloud-job-{job_id[:8]}-"))
        try:
            event = self._generate(msg, tmp, base)
            self.jobs_done += 1
            self.images_done += len(event.get("keys", []))
        except SdcloudError as err:
            self.jobs_failed += 1
            retry = err.status >= 500 or isinstance(err, (NotFound, NoRoom))
            event = {**base, "type": "failed", "reason": err.message, "retry": retry, "status": err.status}
        except Exception as err:  # a bug or a device failure: report it, keep serving
            log.exception("job %s failed", job_id)
            self.jobs_failed += 1
            event = {**base, "type": "failed", "reason": f"internal error: {type(err).__name__}: {err}",
                     "retry": True, "status": 500}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.emit(event)
        self.job = None
        self._subscribe_held()
        return event["type"]

    def _subscribe_held(self) -> None:
        """Take the jobs of every model held now, including one pulled for the last job (runs in
        the consumer's own thread: the solo pool runs tasks there)."""
        if self.consumer is None:
            return
        for key in self.held_models():
            queue = P.model_queue(key)
            try:
                if not self.consumer.task_consumer.consuming_from(queue):
                    self.consumer.add_task_queue(queue)
            except Exception as err:  # noqa: BLE001  affinity is an optimisation: never fail a job on it
                log.warning("could not subscribe to %s: %s", queue, err)

    def _generate(self, msg: dict[str, Any], tmp: Path, base: dict[str, Any]) -> dict[str, Any]:
        payload = dict(msg["payload"])
        req = payload.get("request") or {}
        pixels = int(req.get("width", 512)) * int(req.get("height", 512)) * int(req.get("batch_size", 1))
        if req.get("enable_hr"):
            pixels = int(pixels * float(req.get("hr_scale") or 2.0) ** 2)
        if pixels > self.max_pixels:
            raise NoRoom(f"needs {pixels:,} pixels per batch; this worker's {self.gpu} fits at most "
                         f"{self.max_pixels:,}")
        self._ensure_model(payload.get("model"), payload.get("model_sha256"))
        inputs, out = tmp / "in", tmp / "out"
        inputs.mkdir()
        out.mkdir()
        for name, key in (payload.get("input_keys") or {}).items():
            self.store.get(key, inputs / name)
        payload.update(save_images=False, preview_every=0)  # images go to the store, not an outputs folder
        job = Job(id=msg["job_id"], kind=msg["kind"], payload=payload)
        token = CancelToken()
        last = [0.0, 0.0]

        def report(p: Any) -> None:  # a ProgressEvent
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S or p.step == p.total:
                last[0] = now
                self.emit({**base, "type": "progress", "step": p.step, "steps": p.total, "job_no": p.job_no,
                           "job_count": p.job_count}, durable=False)
            if now - last[1] >= PROGRESS_EVERY_S:
                last[1] = now
                self._check_cancel(msg["job_id"], token)

        result = self.runner(JobContext(job, inputs, out, token, report, state_dir=tmp / "state"))
        files = [out / (job_file_name(k) or Path(k).name) for k in result.get("images") or []]
        keys = []
        for i, path in enumerate(files):
            key = image_key(msg["kind"], msg["job_id"], float(msg.get("created") or time.time()), i,
                            path.suffix.lstrip("."))
            self.store.put(path, key)
            keys.append(key)
        return {**base, "type": "result", "keys": keys, "info": result["info"],
                "interrupted": result.get("interrupted", False)}

    def _check_cancel(self, job_id: str, token: CancelToken) -> None:
        try:
            what = self.redis.get(P.CANCEL_PREFIX + job_id)
        except Exception:  # noqa: BLE001
            return
        if what == b"skip":
            self.redis.delete(P.CANCEL_PREFIX + job_id)
            token.skip()
        elif what:
            token.interrupt()

    def _ensure_model(self, name: str | None, sha256: str | None) -> None:
        """Have ``name`` on this worker: demo, on disk, or fetched from the store."""
        if name is None or name in DEMO_MODELS:
            return
        self.catalog.refresh()
        try:
            self.catalog.resolve("checkpoint", name)
            return
        except NotFound:
            pass
        if self.store is None:
            raise NotFound(f"this worker has no model '{name}' and no store to pull it from")
        keys = ([f"models/sha256/{sha256}"] if sha256 else []) + [f"models/Stable-diffusion/{name}"]
        for key in keys:
            if self.store.size(key) is not None:
                dest = self.settings.checkpoints_path.joinpath(*name.split("/"))
                dest.parent.mkdir(parents=True, exist_ok=True)
                log.info("pulling model %s from the store (%s)", name, key)
                self.store.get(key, dest)
                self.catalog.refresh()
                self.engine.catalog.refresh()
                return
        raise NotFound(f"this worker has no model '{name}' and the store has none under "
                       f"{' or '.join(keys)}")


class NoRoom(SdcloudError):
    """The job does not fit this worker's GPU; another worker may take it."""

    status = 507


def _device_info(engine: Any) -> tuple[str, float | None]:
    device = getattr(engine, "device", None)
    if device is not None and device.type == "cuda":
        import torch

        props = torch.cuda.get_device_properties(device)
        return props.name, round(props.total_memory / 2**30, 1)
    return (device.type if device is not None else "cpu"), None


def _default_max_pixels(vram_gb: float | None) -> int:
    """A generous fit limit by VRAM (SD1.5 fp16 at 1024x1024 batch 4 needs about 12 GB)."""
    if vram_gb is None:
        return 4096 * 4096
    return int(max(1.0, vram_gb) / 12 * 4 * 1024 * 1024 * 1.5)


def run_worker(runtime: WorkerRuntime, *, loglevel: str = "WARNING") -> None:
    """Consume jobs until stopped (SIGTERM: finish or give back the running job)."""
    app = P.make_app(runtime.broker_url)

    @app.task(name=P.TASK, acks_late=True, reject_on_worker_lost=True)
    def generate(msg: dict[str, Any]) -> str:
        return runtime.run(msg)

    queues = [P.ANY_QUEUE] + sorted({P.model_queue(k) for k in runtime.held_models()})

    from celery import signals

    def keep_consumer(sender: Any = None, **_: Any) -> None:
        runtime.consumer = sender  # to subscribe to the queue of a model pulled later

    signals.worker_ready.connect(keep_consumer, weak=False)
    runtime.start_heartbeat()
    try:
        worker = app.Worker(hostname=f"{runtime.name}@{socket.gethostname()}", pool_cls="solo", concurrency=1,
                            queues=queues, loglevel=loglevel, without_gossip=True, without_mingle=True,
                            without_heartbeat=True, quiet=True, optimization="fair")
        worker.start()
    finally:
        runtime.stop()
