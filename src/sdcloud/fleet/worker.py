"""``sdcloud worker``: one process per GPU that pulls jobs over Celery: generation, the
checkpoint tools and LoRA training (every kind of the registry, ``jobs.registry``).

Outbound connections only (Redis, the store). Settings from the reference: solo pool (the
model stays resident in this process), prefetch 1, ``acks_late`` + ``reject_on_worker_lost``.
A heartbeat thread keeps ``sdcloud:worker:<name>`` alive (GPU, VRAM, models held, kinds and
lanes, current job); the API re-runs the job of a worker whose heartbeat stops.

A job: check the fence (a stale redelivery is dropped), report ``started``, make sure its
inputs are here (a model, the LoRAs and embeddings its prompts use, the checkpoint tools'
inputs, a training dataset: fetched from the store, see ``fleet.assets``), run the same
handler as a local job, put every file of its output folder in the store (images under a
key fixed by the job, so a second run overwrites and never duplicates), and report the keys.
A job's ``state_dir`` is mirrored to the store while it runs, so the next attempt, on any
worker, resumes from it. While it runs, its live preview goes to a Redis key (a small JPEG,
at most once a second) and a training's new loss points and samples go with its progress
events (the samples through the store).
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
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sdcloud.catalog import DEMO_MODELS
from sdcloud.errors import NotFound, SdcloudError, redact_paths
from sdcloud.fleet import protocol as P
from sdcloud.fleet.broker import connect
from sdcloud.jobs.base import Handler, Job, JobContext, job_file_name
from sdcloud.jobs.control import CancelToken, ProgressEvent
from sdcloud.jobs.registry import JobKind
from sdcloud.settings import Settings

log = logging.getLogger("sdcloud.worker")

PROGRESS_EVERY_S = 0.25
CANCEL_POLL_S = 0.25  # a cancel/interrupt/skip reaches the job this fast; the state is mirrored every 2 polls
EVENT_RETRY_S = 300.0  # an event waits this long for a restarted broker before it is dropped


def image_key(kind: str, job_id: str, created: float, index: int, ext: str) -> str:
    """Where image ``index`` of a job lands in the store: fixed by the job, so any number of
    runs of the same job leave one copy."""
    day = time.strftime("%Y-%m-%d", time.gmtime(created))
    return f"outputs/{kind}-images/{day}/{job_id[:12]}-{index:02d}.{ext}"


class WorkerRuntime:
    """``handlers``/``kinds`` (kind -> ``JobKind``, for lanes) replace the registry's kinds
    (tests run the contract suite's kinds this way; such a worker builds no engine).
    ``lanes``: which lanes' jobs to take (default: every lane of its kinds; ``--lane train``
    makes a box that only trains)."""

    def __init__(self, settings: Settings, broker_url: str, store: Any, *, name: str | None = None,
                 models: list[str] | None = None, price_per_hour: float | None = None,
                 max_pixels: int | None = None, engine: Any = None,
                 handlers: Mapping[str, Handler] | None = None, kinds: Mapping[str, JobKind] | None = None,
                 lanes: list[str] | None = None) -> None:
        from sdcloud.catalog import Catalog
        from sdcloud.fleet.assets import WorkerAssets
        from sdcloud.jobs.gpu import GpuOwner

        self.settings = settings
        self.broker_url = broker_url
        self.redis = connect(broker_url)
        self.store = store
        self.persistence = SimpleNamespace(store=store)  # what the registry's factories read
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.price_per_hour = price_per_hour
        self.catalog = Catalog(settings)
        self.gpu = GpuOwner()
        self.on_saved = None  # images go to the store from here, not through an outbox
        self.generation_observers: list[Any] = []
        self.engine: Any = None
        self.host: Any = None
        if handlers is None or engine is not None:
            from sdcloud.jobs.generation import EngineHost

            if engine is None:
                from sdcloud.engine.engine import Engine

                engine = Engine(settings)
            self.engine = engine
            self.host = EngineHost(engine, self.gpu)
        self.hashes = self.engine.hashes if self.engine is not None else None
        if handlers is None:
            from sdcloud.jobs.registry import builtin_kinds

            registry = builtin_kinds()
            self.handlers = registry.build(self)
            self.kinds = {k.name: k for k in registry}
        else:
            self.handlers = dict(handlers)
            self.kinds = dict(kinds or {})
        self.lanes = sorted(set(lanes) if lanes else {self._lane(k) for k in self.handlers} | {P.GPU_LANE})
        self.assets = WorkerAssets(settings, self.catalog, store, on_models=self.refresh)
        self.preloaded = list(models or [])
        self._held: tuple[str | None, float, list[str]] | None = None
        self.consumer: Any = None  # the Celery consumer, once the worker is ready
        if self.host is not None:
            for model in self.preloaded:
                self.host.ensure_model(model)
        self.gpu_name, self.vram_gb = _device_info(self.engine)
        self.max_pixels = max_pixels or _default_max_pixels(self.vram_gb)
        cfg = {k.decode(): v.decode() for k, v in self.redis.hgetall(P.CONFIG_KEY).items()}
        self.heartbeat_ttl = float(cfg.get("heartbeat_timeout") or 15.0)
        self.started = time.time()
        self.jobs_done = self.images_done = self.jobs_failed = 0
        self.job: str | None = None
        self._stop = threading.Event()
        self._hb: threading.Thread | None = None

    def _lane(self, kind: str) -> str:
        spec = self.kinds.get(kind)
        return spec.lane if spec else P.GPU_LANE

    def refresh(self) -> None:
        """Rescan the model folders (a checkpoint tool wrote one, or one was pulled)."""
        self.catalog.refresh()
        if self.engine is not None:
            self.engine.catalog.refresh()

    def queues(self) -> list[str]:
        """The Celery queues this worker takes jobs from."""
        out = [P.lane_queue(lane) for lane in self.lanes if lane != P.GPU_LANE]
        if P.GPU_LANE in self.lanes:
            out += [P.ANY_QUEUE] + sorted({P.model_queue(k) for k in self.held_models()})
        return out

    # announcement ------------------------------------------------------------------------
    def held_models(self) -> list[str]:
        """Affinity keys of what this worker holds: checkpoints on its disk, the loaded model,
        and demo models it was started with (the disk scan is redone at most every 30 s)."""
        now = time.monotonic()
        loaded = self.host.model_key if self.host is not None else None
        if self._held is not None and self._held[0] == loaded and now - self._held[1] < 30:
            return self._held[2]
        keys = self._scan_held()
        self._held = (loaded, now, keys)
        return keys

    def _scan_held(self) -> list[str]:
        keys: list[str] = []
        if self.engine is not None:
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
        cur = self.engine.current if self.engine is not None else None
        return {
            "name": self.name,
            "host": socket.gethostname(),
            "gpu": self.gpu_name,
            "vram_gb": self.vram_gb,
            "models": self.held_models(),
            "loaded": (self.host.model_key if self.host is not None else None) or (cur.name if cur else None),
            "capabilities": {"kinds": sorted(self.handlers), "lanes": self.lanes, "max_pixels": self.max_pixels},
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
        token = CancelToken()
        watch = _JobWatch(self, job_id, token, tmp / "state")
        try:
            event = self._execute(msg, tmp, base, token, watch)
            self.jobs_done += 1
            self.images_done += len(event.get("images", []))
        except SdcloudError as err:
            self.jobs_failed += 1
            retry = err.status >= 500 or isinstance(err, (NotFound, NoRoom))
            event = {**base, "type": "failed", "reason": err.message, "retry": retry, "status": err.status}
        except Exception as err:  # a bug or a device failure: report it, keep serving
            log.exception("job %s failed", job_id)
            self.jobs_failed += 1
            first = redact_paths(str(err).strip().splitlines()[0][:300]) if str(err).strip() else ""
            event = {**base, "type": "failed", "reason": f"internal error: {type(err).__name__}: {first}",
                     "retry": True, "status": 500}
        finally:
            watch.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        event.pop("images", None)
        self.emit(event)
        self.job = None
        self._subscribe_held()
        return event["type"]

    def _subscribe_held(self) -> None:
        """Take the jobs of every model held now, including one pulled for the last job (runs in
        the consumer's own thread: the solo pool runs tasks there)."""
        if self.consumer is None or P.GPU_LANE not in self.lanes:
            return
        for key in self.held_models():
            queue = P.model_queue(key)
            try:
                if not self.consumer.task_consumer.consuming_from(queue):
                    self.consumer.add_task_queue(queue)
            except Exception as err:  # noqa: BLE001  affinity is an optimisation: never fail a job on it
                log.warning("could not subscribe to %s: %s", queue, err)

    def _execute(self, msg: dict[str, Any], tmp: Path, base: dict[str, Any], token: CancelToken,
                 watch: _JobWatch) -> dict[str, Any]:
        from sdcloud.jobs.local import _check_encodable

        job_id, kind = msg["job_id"], msg["kind"]
        handler = self.handlers.get(kind)
        if handler is None:
            raise NoRoom(f"this worker does not run '{kind}' jobs (it runs {', '.join(sorted(self.handlers))})")
        payload = dict(msg["payload"])
        generation = kind in P.GENERATION_KINDS
        if generation:
            req = payload.get("request") or {}
            pixels = int(req.get("width", 512)) * int(req.get("height", 512)) * int(req.get("batch_size", 1))
            if req.get("enable_hr"):
                pixels = int(pixels * float(req.get("hr_scale") or 2.0) ** 2)
            if pixels > self.max_pixels:
                raise NoRoom(f"needs {pixels:,} pixels per batch; this worker's {self.gpu_name} fits at most "
                             f"{self.max_pixels:,}")
            self._ensure_model(payload.get("model"), payload.get("model_sha256"))
            self.assets.ensure_networks(payload)  # the LoRAs/embeddings its prompts name
            payload["save_images"] = False  # images go to the store, not an outputs folder
        else:
            self.assets.fetch_inputs(kind, payload, tmp / "work")
        inputs, out, state = tmp / "in", tmp / "out", tmp / "state"
        for folder in (inputs, out, state):
            folder.mkdir()
        for name, key in (payload.get("input_keys") or {}).items():
            self.store.get(key, inputs / name)
        job = Job(id=job_id, kind=kind, payload=payload, attempts=int(msg.get("attempt") or 1))
        if job.attempts > 1:  # an earlier attempt (on any worker) may have left state to resume from
            watch.pull_state()
        watch.start()
        live = _LiveExtras(self, job_id, getattr(handler, "live", None))
        last = [0.0]
        previews = _Previews(self, job_id, msg["fence"])

        def report(p: ProgressEvent) -> None:
            now = time.monotonic()
            fresh = previews.offer(p.preview)  # at most one a second, into its Redis key
            if now - last[0] >= PROGRESS_EVERY_S or p.step == p.total or fresh:
                last[0] = now
                event = {**base, "type": "progress", "progress": {**p.to_dict(), "preview": None}}
                if fresh:
                    event["preview"] = True
                extras = live.take()
                if extras:
                    event["live"] = extras
                self.emit(event, durable=False)

        try:
            result = handler(JobContext(job, inputs, out, token, report, state_dir=state))
        except BaseException:
            live.close()
            raise
        finally:
            previews.clear()
        _check_encodable(result)
        watch.stop()
        extras = live.take(final=True)
        images = [job_file_name(k) for k in (result.get("images") or [])] if generation else []
        created = float(msg.get("created") or time.time())
        files: dict[str, str] = {}
        for i, name in enumerate(images):
            if name and (out / name).is_file():
                files[name] = image_key(kind, job_id, created, i, Path(name).suffix.lstrip("."))
        for path in sorted(out.iterdir()):
            if path.is_file() and path.name not in files:
                files[path.name] = P.job_key(job_id, "out", path.name)
        for name, key in files.items():
            self.store.put(out / name, key)
        models = [] if generation else self.assets.outputs(kind, payload, result)
        event = {**base, "type": "result", "result": result, "files": files, "models": models,
                 "interrupted": token.interrupted, "images": images}
        if extras:
            event["live"] = extras
        return event

    def _ensure_model(self, name: str | None, sha256: str | None) -> None:
        """Have ``name`` on this worker: demo, on disk, or fetched from the store."""
        if name is None or name in DEMO_MODELS:
            return
        self.assets.ensure("checkpoint", name, sha256)


def preview_jpeg(preview: str) -> bytes:
    """A progress event's preview (base64 image) as a small JPEG: at most ``PREVIEW_MAX_SIDE``
    pixels a side and ``PREVIEW_MAX_BYTES`` bytes."""
    import io

    from sdcloud.image_files import decode_base64

    image = decode_base64(preview, "preview").convert("RGB")
    image.thumbnail((P.PREVIEW_MAX_SIDE, P.PREVIEW_MAX_SIDE))
    for quality in (80, 60, 40, 25):
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        if buf.tell() <= P.PREVIEW_MAX_BYTES:
            break
        image.thumbnail((image.width * 3 // 4 or 1, image.height * 3 // 4 or 1))
    return buf.getvalue()


class _Previews:
    """A running job's latest live preview, kept in its Redis key (never in the event stream),
    rewritten at most every ``PREVIEW_EVERY_S`` seconds."""

    def __init__(self, runtime: WorkerRuntime, job_id: str, fence: str) -> None:
        self.runtime, self.key = runtime, P.preview_key(job_id, fence)
        self.last = -P.PREVIEW_EVERY_S
        self.sent = False

    def offer(self, preview: str | None) -> bool:
        """True when ``preview`` became the job's preview (the front reads the key then)."""
        now = time.monotonic()
        if preview is None or now - self.last < P.PREVIEW_EVERY_S:
            return False
        self.last = now
        try:
            self.runtime.redis.set(self.key, preview_jpeg(preview), ex=P.PREVIEW_TTL_S)
        except Exception as err:  # noqa: BLE001  a preview is never worth failing a job over
            log.debug("preview not sent: %s", type(err).__name__)
            return False
        self.sent = True
        return True

    def clear(self) -> None:
        if self.sent:
            try:
                self.runtime.redis.delete(self.key)
            except Exception:  # noqa: BLE001  it expires anyway
                pass


class _LiveExtras:
    """What a handler keeps live about a job beside its progress (``TrainRunner.live``: the
    loss curve and sample images), sent to the front as it grows: new loss points, and each
    new sample image put in the store (``fleet/jobs/<id>/samples/``)."""

    def __init__(self, runtime: WorkerRuntime, job_id: str, source: Any) -> None:
        self.runtime, self.job_id = runtime, job_id
        self.source = source if isinstance(source, dict) else None
        if self.source is not None:
            self.source.pop(job_id, None)  # an earlier attempt here: this one reports from its own start
        self.last_step = -1
        self.samples = 0

    def take(self, *, final: bool = False) -> dict[str, Any] | None:
        live = self.source.get(self.job_id) if self.source is not None else None
        if not live:
            return None
        out: dict[str, Any] = {k: live[k] for k in ("phase", "it_s", "eta_s", "name") if k in live}
        out["losses"] = [list(x) for x in live.get("losses") or [] if x[0] > self.last_step]
        if out["losses"]:
            self.last_step = out["losses"][-1][0]
        samples = []
        for s in (live.get("samples") or [])[self.samples:]:
            path = Path(s["path"])
            if not path.is_file():
                continue
            key = P.job_key(self.job_id, "samples", path.name)
            try:
                self.runtime.store.put(path, key)
            except Exception as err:  # noqa: BLE001  the curve goes on; the sample is missed
                log.warning("job %s: sample %s not stored: %s", self.job_id, path.name, type(err).__name__)
                continue
            samples.append({"step": s["step"], "name": path.name, "key": key})
        self.samples = len(live.get("samples") or [])
        out["samples"] = samples
        if final:
            self.close()
        return out

    def close(self) -> None:
        if self.source is not None:
            self.source.pop(self.job_id, None)


class _JobWatch:
    """While a job runs: turns the API's cancel/interrupt/skip requests into its ``CancelToken``
    and mirrors its ``state_dir`` to the store (``fleet/jobs/<id>/state/``), so a later attempt
    on any worker finds it (``pull_state``)."""

    def __init__(self, runtime: WorkerRuntime, job_id: str, token: CancelToken, state_dir: Path) -> None:
        self.runtime, self.job_id, self.token, self.state_dir = runtime, job_id, token, state_dir
        self.prefix = P.job_key(job_id, "state")
        self._seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def pull_state(self) -> None:
        store = self.runtime.store
        for key in store.list(self.prefix):
            rel = key[len(self.prefix):].strip("/")
            if rel and not any(p in ("", ".", "..") for p in rel.split("/")):
                dest = self.state_dir.joinpath(*rel.split("/"))
                dest.parent.mkdir(parents=True, exist_ok=True)
                store.get(key, dest)
                st = dest.stat()
                self._seen[rel] = (st.st_size, st.st_mtime_ns)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sdcloud-job-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(30)
        self._thread = None
        self.sync_state()  # the last word of the job's state

    def _loop(self) -> None:
        n = 0
        while not self._stop.wait(CANCEL_POLL_S):
            self.check_cancel()
            n += 1
            if n % 2 == 0:
                self.sync_state()

    def check_cancel(self) -> None:
        try:
            what = self.runtime.redis.get(P.CANCEL_PREFIX + self.job_id)
        except Exception:  # noqa: BLE001  broker away: the job goes on
            return
        if what == b"skip":
            self.runtime.redis.delete(P.CANCEL_PREFIX + self.job_id)
            self.token.skip()
        elif what == b"cancel":
            self.token.cancel()
        elif what:
            self.token.interrupt()

    def sync_state(self) -> None:
        if not self.state_dir.is_dir():
            return
        try:
            for path in sorted(self.state_dir.rglob("*")):
                if not path.is_file():
                    continue
                rel = path.relative_to(self.state_dir).as_posix()
                st = path.stat()
                if self._seen.get(rel) != (st.st_size, st.st_mtime_ns):
                    self.runtime.store.put(path, f"{self.prefix}/{rel}")
                    self._seen[rel] = (st.st_size, st.st_mtime_ns)
        except Exception as err:  # noqa: BLE001  a file changing under us: the next sync catches up
            log.warning("job %s: state not mirrored yet (%s)", self.job_id, type(err).__name__)


class NoRoom(SdcloudError):
    """The job does not fit this worker's GPU; another worker may take it."""

    status = 507


def _device_info(engine: Any) -> tuple[str, float | None]:
    device = getattr(engine, "device", None) if engine is not None else None
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

    queues = runtime.queues()

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
