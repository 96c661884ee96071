"""``FleetJobQueue``: the API side of scale-out. Jobs of the remote kinds (generation, the
checkpoint tools, LoRA training: every kind of the registry by default) go to workers over
Celery; any other kind runs in this process on the wrapped ``LocalJobQueue``. A job's files
(inputs, outputs, resumable state, a training dataset, the models it reads or makes) pass
through the store, never through Redis (``fleet.assets``).

The SQLite journal (``<state>/fleet.sqlite``) is the source of truth: a job row, plus its
current attempt's ``fence``. Workers answer through the Redis event stream; an event whose
fence is not the job's current one is refused (compare-and-set), so the result of a worker
that was given up on never overwrites the one that counts. A reaper thread re-runs the job
of a worker whose heartbeat stopped, re-routes jobs whose model nobody holds any more, and
re-sends jobs that could not be sent while the broker was down.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, Cancelled, NotFound
from sdcloud.fleet import protocol as P
from sdcloud.fleet.broker import connect, redact
from sdcloud.jobs.base import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job, JobQueue
from sdcloud.jobs.control import ProgressEvent
from sdcloud.jobs.journal import Journal
from sdcloud.jobs.local import LocalJobQueue
from sdcloud.jobs.registry import JobKind

log = logging.getLogger(__name__)

GENERATION_KINDS = P.GENERATION_KINDS
FLEET_KINDS = (*GENERATION_KINDS, "ckpt-merge", "ckpt-convert", "ckpt-prune", "ckpt-lora-bake", "train-lora")
"""The kinds workers run by default: sdcloud's whole registry (``jobs.registry.builtin_kinds``)."""
LOST = "stopped answering"  # the reason the reaper gives for a worker whose heartbeat stopped
REAP_EVERY_S = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT PRIMARY KEY,
    fence TEXT NOT NULL,
    route TEXT,
    worker TEXT,
    dispatched REAL,
    reasons TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
"""


def _first(rows: list[tuple[object, ...]]) -> tuple[Any, ...] | None:
    return rows[0] if rows else None


class FleetJobQueue(JobQueue):
    """``remote_kinds``: what workers run; ``kinds`` (kind -> ``JobKind``): lanes and attempts
    (a kind runs at most ``max(kind.max_attempts, max_attempts)`` times: workers are lost more
    often than a local process); ``prepare(job_id, kind, payload) -> payload`` puts a job's
    inputs in the store before it is sent; ``take_models(models)`` fetches the models a job
    made (``fleet.assets.FrontAssets``); ``on_live(job, live)`` takes what a worker reports
    live about a job beside its progress (a training's new loss points and samples)."""

    is_fleet = True  # Services tells the fleet from a local queue by this (no import of this module)

    def __init__(self, state_path: Path, broker_url: str, store: Any, local: LocalJobQueue, *,
                 worker_timeout: float = 15.0, max_attempts: int = 3,
                 model_keys: Callable[[str | None], list[str]] | None = None,
                 model_sha256: Callable[[str | None], str | None] | None = None,
                 on_stop: Callable[[], None] | None = None,
                 remote_kinds: Iterable[str] = FLEET_KINDS,
                 kinds: Mapping[str, JobKind] | None = None,
                 prepare: Callable[[str, str, dict[str, Any]], dict[str, Any]] | None = None,
                 take_models: Callable[[list[dict[str, Any]]], None] | None = None,
                 on_live: Callable[[Job, dict[str, Any]], None] | None = None) -> None:
        self.state_path = state_path
        self.broker_url = broker_url
        self.store = store
        self.local = local
        self.worker_timeout = worker_timeout
        self.max_attempts = max_attempts
        self.model_keys = model_keys or (lambda name: [f"name:{name}"] if name else [])
        self.model_sha256 = model_sha256 or (lambda name: None)
        self.on_stop = on_stop
        self.remote_kinds = frozenset(remote_kinds)
        self.kinds = dict(kinds or {})
        self.prepare = prepare
        self.take_models = take_models
        self.on_live = on_live
        self.journal = Journal(state_path / "fleet.sqlite")
        self._db = self.journal  # the attempts table lives beside the jobs, on the journal's one connection
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._active: dict[str, Job] = {}
        self._order: list[str] = []
        self._callbacks: dict[str, list[Callable[[Job], None]]] = {}
        self._cancel_requested: set[str] = set()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.refused_late = 0  # results/events refused because their fence was stale
        self._live_cache: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self._elsewhere: dict[str, float] = {}  # running job -> when its worker was first seen on another
        self.redis = connect(broker_url)
        self.app = P.make_app(broker_url)

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.local.start()
        self.redis.hset(P.CONFIG_KEY, mapping={"store": getattr(self.store, "url", ""),
                                               "heartbeat_timeout": str(self.worker_timeout)})
        # a new journal reads the event stream from its current end (what is there belongs to
        # another front's jobs); the position is kept, so a restart resumes from it
        self._db.execute("INSERT OR IGNORE INTO meta (k, v) VALUES ('last_event', ?)", (self._stream_tail(),))
        with self._lock:
            for job in self.journal.unfinished():
                self._active[job.id] = job
                if job.state == QUEUED:
                    self._order.append(job.id)
            self._renumber()
            # after a restart, queued jobs get fresh fences and are sent again: a message that
            # survived in Redis meets a changed fence and is dropped by the worker, so each job
            # runs once whether or not the broker kept its copy
            for job_id in list(self._order):
                self._dispatch(self._active[job_id])
        self._stopping.clear()
        for target, name in ((self._events, "sdcloud-fleet-events"), (self._reaper, "sdcloud-fleet-reaper")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        self.local.stop(timeout)
        if self.on_stop is not None:
            self.on_stop()

    # interface -------------------------------------------------------------------------
    def submit(self, kind: str, payload: dict[str, Any], files: dict[str, bytes] | None = None) -> Job:
        if kind not in self.remote_kinds:
            return self.local.submit(kind, payload, files)
        job = Job(id=uuid.uuid4().hex, kind=kind, payload=dict(payload))
        if kind in GENERATION_KINDS:
            sha = self.model_sha256(payload.get("model"))
            if sha:  # lets a worker that lacks the model find it by content in the store
                job.payload["model_sha256"] = sha
        if self.prepare is not None:  # the models and dataset a job reads go to the store
            job.payload = self.prepare(job.id, kind, job.payload)
        if files:  # inputs go to the store; workers fetch them from there (never through Redis)
            keys = {}
            with tempfile.TemporaryDirectory() as tmp:
                for name, data in files.items():
                    if "/" in name or name in ("", ".", ".."):
                        raise BadRequest(f"bad input file name '{name}'")
                    path = Path(tmp) / name
                    path.write_bytes(data)
                    key = P.job_key(job.id, "in", name)
                    self.store.put(path, key)
                    keys[name] = key
            job.payload["input_keys"] = keys
        with self._lock:
            self.journal.insert(job)
            self._db.execute("INSERT INTO attempts (job_id, fence) VALUES (?, ?)", (job.id, ""))
            self._active[job.id] = job
            self._order.append(job.id)
            self._renumber()
            self._dispatch(job)
            self._changed.notify_all()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._active.get(job_id)
        if job is None:
            job = self.journal.get(job_id)
        if job is None:
            return self.local.get(job_id)
        return job

    def list(self, finished_limit: int = 20) -> list[Job]:
        with self._lock:
            running = [j for j in self._active.values() if j.state == RUNNING]
            queued = [self._active[i] for i in self._order]
        local = self.local.list(finished_limit)
        local_active = [j for j in local if not j.finished_state]
        finished = [j for j in local if j.finished_state] + self.journal.recent_finished(finished_limit)
        finished.sort(key=lambda j: j.finished or 0, reverse=True)
        return running + local_active + queued + finished[:finished_limit]

    def cancel(self, job_id: str) -> Job:
        with self._lock:
            job = self._active.get(job_id)
            if job is None:
                pass
            elif job.state == QUEUED:
                self._order.remove(job_id)
                self._safe(lambda: self.redis.delete(P.FENCE_PREFIX + job_id))
                self._finish(job, CANCELLED, "cancelled while queued", Cancelled.status)
                return job
            else:
                self._cancel_requested.add(job_id)
                self._safe(lambda: self.redis.set(P.CANCEL_PREFIX + job_id, "cancel", ex=3600))
                return job
        return self.get(job_id) if self.journal.get(job_id) else self.local.cancel(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            job = self._active.get(job_id)
            if job is None and self.journal.get(job_id) is None:
                return self.local.wait(job_id, timeout)
            while job is not None and not job.finished_state:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(left)
        return job or self.get(job_id)

    def add_done_callback(self, job_id: str, callback: Callable[[Job], None]) -> None:
        with self._lock:
            if job_id in self._active:
                self._callbacks.setdefault(job_id, []).append(callback)
                return
        if self.journal.get(job_id) is None:
            self.local.add_done_callback(job_id, callback)
        else:
            callback(self.get(job_id))

    def running(self) -> list[Job]:
        with self._lock:
            mine = [j for j in self._active.values() if j.state == RUNNING]
        return sorted(mine + self.local.running(), key=lambda j: j.started or 0)

    def interrupt(self, job_id: str | None = None) -> None:
        if job_id is None or job_id in self._active:
            self._signal_running("interrupt", job_id)
        if job_id is None or job_id not in self._active:
            self.local.interrupt(job_id)

    def skip(self, job_id: str | None = None) -> None:
        if job_id is None or job_id in self._active:
            self._signal_running("skip", job_id)
        if job_id is None or job_id not in self._active:
            self.local.skip(job_id)

    def output_file(self, job_id: str, name: str) -> Path:
        if self.journal.get(job_id) is None:
            return self.local.output_file(job_id, name)
        path = self._out(job_id) / name
        if "/" in name or not path.is_file():
            raise NotFound(f"job '{job_id}' has no output '{name}'")
        return path

    # fleet views -------------------------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        """Live workers as they announce themselves (expired announcements are gone)."""
        out = []
        for key in self.redis.scan_iter(match=P.WORKER_PREFIX + "*", count=200):
            raw = self.redis.get(key)
            if raw:
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue
        now = time.time()
        self._live_cache = (time.monotonic(), [dict(w) for w in out])  # routing sees what was just read
        for w in out:
            hours = max(1e-9, (now - w.get("started", now)) / 3600)
            w["images_per_hour"] = round(w.get("images_done", 0) / hours, 1) if hours > 1 / 360 else None
            w["cost_per_hour"] = w.get("price_per_hour")
        return sorted(out, key=lambda w: w.get("name", ""))

    def _live(self) -> list[dict[str, Any]]:
        """Live workers for routing: the reaper's snapshot (at most a second old), else a fresh one."""
        at, live = self._live_cache
        if time.monotonic() - at > 2 * REAP_EVERY_S:
            live = self.workers()
            self._live_cache = (time.monotonic(), live)
        return live

    def attempt_info(self, job_id: str) -> dict[str, Any]:
        row = _first(self._db.execute("SELECT fence, route, worker, reasons FROM attempts WHERE job_id=?",
                               (job_id,)))
        if row is None:
            raise NotFound(f"job '{job_id}' is not a fleet job")
        return {"route": row[1], "worker": row[2], "reasons": json.loads(row[3])}

    # dispatch ----------------------------------------------------------------------------
    def _lane(self, kind: str) -> str:
        spec = self.kinds.get(kind)
        return spec.lane if spec else P.GPU_LANE

    def _max_attempts(self, kind: str) -> int:
        spec = self.kinds.get(kind)
        return max(self.max_attempts, spec.max_attempts if spec else 0)

    def _route(self, job: Job, live: list[dict[str, Any]] | None) -> str:
        lane = self._lane(job.kind)
        if lane != P.GPU_LANE:
            return P.lane_queue(lane)
        model = job.payload.get("model") if job.kind in GENERATION_KINDS else None
        keys = self.model_keys(model)
        holders = {k for w in (live or []) for k in w.get("models", [])}
        for key in keys:
            if key in holders:
                return P.model_queue(key)
        return P.ANY_QUEUE

    def _dispatch(self, job: Job, route: str | None = None) -> None:
        """New fence, then the message (caller holds the lock). A broker that is down leaves the
        job queued with no message; the reaper sends it once the broker answers."""
        fence = uuid.uuid4().hex
        self._db.execute("UPDATE attempts SET fence=?, dispatched=NULL, route=NULL WHERE job_id=?",
                         (fence, job.id))
        try:
            route = route or self._route(job, self._live())
            self.redis.set(P.FENCE_PREFIX + job.id, fence, ex=7 * 86400)
            self.app.send_task(P.TASK, args=[{"job_id": job.id, "fence": fence, "kind": job.kind,
                                              "payload": job.payload, "created": job.created,
                                              "attempt": job.attempts + 1}],
                               queue=route, priority=int(job.payload.get("priority", 5)),
                               retry=False)
        except Exception as err:  # noqa: BLE001  (redis/kombu errors: broker down)
            log.warning("job %s not sent yet (broker %s: %s); will retry", job.id, redact(self.broker_url),
                        type(err).__name__)
            return
        self._db.execute("UPDATE attempts SET dispatched=?, route=? WHERE job_id=?", (time.time(), route, job.id))

    # events from workers -------------------------------------------------------------------
    def _events(self) -> None:
        row = _first(self._db.execute("SELECT v FROM meta WHERE k='last_event'"))
        last = row[0] if row else "0-0"
        while not self._stopping.is_set():
            try:
                batch = self.redis.xread({P.EVENTS: last}, count=100, block=500)
            except Exception as err:  # noqa: BLE001
                log.debug("event stream: %s", err)
                self._stopping.wait(1.0)
                continue
            for _stream, entries in batch or []:
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    try:
                        self._apply(P.load(fields))
                    except Exception:
                        log.exception("bad fleet event %s", last)
                self._db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('last_event', ?)", (last,))

    def _stream_tail(self) -> str:
        """The id of the newest event in the stream ("0-0" when there is none or the broker is down)."""
        try:
            tail = self.redis.xrevrange(P.EVENTS, count=1)
        except Exception:  # noqa: BLE001  broker down: nothing of ours can be in the stream yet
            return "0-0"
        if not tail:
            return "0-0"
        entry = tail[0][0]
        return entry.decode() if isinstance(entry, bytes) else entry

    def _current(self, event: dict[str, Any]) -> Job | None:
        """The job if the event's fence is its current one (compare-and-set), else None."""
        job = self._active.get(event.get("job", ""))
        row = _first(self._db.execute("SELECT fence FROM attempts WHERE job_id=?", (event.get("job"),)))
        if job is None or row is None or row[0] != event.get("fence"):
            if event.get("type") in ("result", "failed"):
                self.refused_late += 1
                log.warning("refused a late %s for job %s from %s (attempt given up on)", event.get("type"),
                            event.get("job"), event.get("worker"))
            return None
        return job

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        preview = None
        if kind in ("progress", "result") and (event.get("live") or event.get("preview")):
            # a preview from its Redis key, samples from the store: without holding the lock
            with self._lock:
                job = self._current(event)
            if job is None:
                return
            if event.get("preview"):
                preview = self._preview(event)
            if event.get("live") and self.on_live is not None:
                try:
                    self.on_live(job, event["live"])
                except Exception:  # noqa: BLE001  a missed sample never fails the job
                    log.exception("job %s: live report not taken", job.id)
        if kind == "result":  # fetch the files without holding the lock (a remote store is slow)
            with self._lock:
                if self._current(event) is None:
                    return
            try:
                self._fetch(event["job"], event)
            except Exception as err:  # noqa: BLE001  the store lost or refused a file: run it again
                log.warning("job %s: could not fetch its result from the store: %s", event.get("job"), err)
                event = {**event, "type": "failed", "retry": True, "status": 503,
                         "reason": f"its result could not be fetched from the store ({type(err).__name__})"}
                kind = "failed"
        with self._lock:
            job = self._current(event)  # checked again: the attempt may have been given up meanwhile
            if job is None:
                return
            if kind == "started":
                if job.id in self._order:
                    self._order.remove(job.id)
                job.state, job.position, job.started = RUNNING, 0, time.time()
                job.attempts += 1
                job.progress, job.step, job.steps, job.eta_seconds = 0.0, 0, 0, None
                self._db.execute("UPDATE attempts SET worker=? WHERE job_id=?", (event.get("worker"), job.id))
                self.journal.update(job)
                self._renumber()
            elif kind == "progress":
                job.apply(ProgressEvent.from_dict({**(event.get("progress") or {}), "preview": preview}))
            elif kind == "result":
                self._take_result(job, event)
            elif kind == "failed":
                self._attempt_failed(job, f"{event.get('worker')}: {event.get('reason')}",
                                     retry=bool(event.get("retry", True)),
                                     status=int(event.get("status") or 500))
            self._changed.notify_all()

    def _preview(self, event: dict[str, Any]) -> str | None:
        """The attempt's latest live preview (a small JPEG the worker keeps in Redis), as base64."""
        import base64

        try:
            data = self.redis.get(P.preview_key(event["job"], event["fence"]))
        except Exception as err:  # noqa: BLE001  broker away: the next one will do
            log.debug("preview of job %s: %s", event.get("job"), type(err).__name__)
            return None
        return base64.b64encode(data).decode("ascii") if data else None

    def _fetch(self, job_id: str, event: dict[str, Any]) -> None:
        """Copy a result's files from the store into the job's output folder (same names, so the
        handler's ``job:<name>`` keys stay valid), and the models it made into the model folders."""
        out = self._out(job_id)
        out.mkdir(parents=True, exist_ok=True)
        for name, key in (event.get("files") or {}).items():
            if "/" in name or name in ("", ".", ".."):
                raise BadRequest(f"a worker named an output '{name}'")
            self.store.get(key, out / name)
        if event.get("models") and self.take_models is not None:
            self.take_models(event["models"])

    def _take_result(self, job: Job, event: dict[str, Any]) -> None:
        result = dict(event.get("result") or {})
        if job.kind in GENERATION_KINDS:  # where the images are in the store, and who made them
            files = event.get("files") or {}
            result["keys"] = [files[n] for k in result.get("images") or [] if (n := k.split(":", 1)[-1]) in files]
            result["worker"] = event.get("worker")
        job.result = result
        job.interrupted = bool(event.get("interrupted"))
        if job.id in self._cancel_requested:
            self._finish(job, CANCELLED, "cancelled while running", Cancelled.status)
        else:
            job.progress = 1.0
            self._finish(job, DONE, None, None)

    def _attempt_failed(self, job: Job, reason: str, *, retry: bool, status: int = 500) -> None:
        row = _first(self._db.execute("SELECT reasons FROM attempts WHERE job_id=?", (job.id,)))
        reasons = json.loads(row[0]) + [reason]
        self._db.execute("UPDATE attempts SET reasons=? WHERE job_id=?", (json.dumps(reasons), job.id))
        if job.id in self._cancel_requested:
            self._finish(job, CANCELLED, "cancelled while running", Cancelled.status)
        elif retry and job.attempts < self._max_attempts(job.kind):
            log.warning("job %s attempt %d failed (%s); sending it again", job.id, job.attempts, reason)
            job.state, job.started = QUEUED, None
            job.progress, job.step, job.steps = 0.0, 0, 0
            self.journal.update(job)
            self._order.insert(0, job.id)  # it waited its turn once already
            self._renumber()
            self._dispatch(job, route=P.ANY_QUEUE if self._lane(job.kind) == P.GPU_LANE else None)
        elif retry and all(LOST in r for r in reasons):
            self._finish(job, FAILED, f"the worker stopped while this job was running, {job.attempts} times; it "
                         f"was not retried again ({'; '.join(reasons)})", status)
        elif retry:
            self._finish(job, FAILED, f"failed on {job.attempts} attempts: " + "; ".join(reasons), status)
        else:
            self._finish(job, FAILED, reason.split(": ", 1)[-1], status)

    def _finish(self, job: Job, state: str, error: str | None, status: int | None) -> None:
        job.state, job.error, job.error_status = state, error, status
        job.finished, job.position, job.preview = time.time(), None, None
        self._db.execute("UPDATE attempts SET fence='' WHERE job_id=?", (job.id,))
        self.journal.update(job)
        self._active.pop(job.id, None)
        if job.id in self._order:
            self._order.remove(job.id)
        self._cancel_requested.discard(job.id)
        self._elsewhere.pop(job.id, None)
        self._renumber()
        callbacks = self._callbacks.pop(job.id, [])
        self._safe(lambda: self.redis.delete(P.FENCE_PREFIX + job.id, P.CANCEL_PREFIX + job.id))
        self._changed.notify_all()
        for cb in callbacks:
            try:
                cb(job)
            except Exception:
                log.exception("job callback failed")

    # reaper ------------------------------------------------------------------------------
    def _reaper(self) -> None:
        while not self._stopping.wait(REAP_EVERY_S):
            try:
                self._reap()
            except Exception as err:  # noqa: BLE001  broker down: nothing is decided until it is back
                log.debug("reaper: %s", err)

    def _reap(self) -> None:
        live = self.workers()
        self._live_cache = (time.monotonic(), live)
        by_name = {w["name"]: w for w in live}
        holders = {k for w in live for k in w.get("models", [])}
        now = time.time()
        with self._lock:
            for job in list(self._active.values()):
                row = _first(self._db.execute("SELECT worker, dispatched, route FROM attempts WHERE job_id=?",
                                       (job.id,)))
                worker, dispatched, route = row
                if job.state == RUNNING:
                    w = by_name.get(worker)
                    if w is not None and w.get("job") != job.id:
                        first = self._elsewhere.setdefault(job.id, now)  # its answer may still be on its way
                    else:
                        self._elsewhere.pop(job.id, None)
                        first = now
                    moved_on = w is not None and now - first > self.worker_timeout
                    if w is None or moved_on:  # dead, or restarted under the same name
                        self._elsewhere.pop(job.id, None)
                        why = (f"{LOST}: alive but no longer runs it (restarted?)" if moved_on else
                               f"{LOST} (no heartbeat for {self.worker_timeout:g} s)")
                        self._attempt_failed(job, f"{worker}: {why}", retry=True)
                elif dispatched is None:
                    self._dispatch(job)
                elif (route and route.startswith(P.model_queue("")) and now - dispatched > 2 * P.HEARTBEAT_S
                      and not any(P.model_queue(k) == route for k in holders)):
                    log.info("job %s: no live worker holds its model any more; re-routing", job.id)
                    self._dispatch(job, route=P.ANY_QUEUE)
            self._changed.notify_all()

    # helpers -----------------------------------------------------------------------------
    def _signal_running(self, what: str, job_id: str | None = None) -> None:
        with self._lock:
            ids = [j.id for j in self._active.values() if j.state == RUNNING and job_id in (None, j.id)]
        for job_id in ids:
            self._safe(lambda j=job_id: self.redis.set(P.CANCEL_PREFIX + j, what, ex=3600))

    def _safe(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            log.warning("broker call failed: %s", type(err).__name__)

    def _out(self, job_id: str) -> Path:
        return self.state_path / "jobs" / job_id / "out"

    def _renumber(self) -> None:
        for pos, job_id in enumerate(self._order, start=1):
            self._active[job_id].position = pos
