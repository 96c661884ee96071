"""``LocalJobQueue``: worker threads run jobs FIFO, one per lane, journaled in SQLite under the
state folder.

Files of a job live in ``<state>/jobs/<id>/in`` (inputs given to ``submit``), ``.../out`` (what
the handler returns) and ``.../state`` (a resumable job's own state, kept across attempts).
A job found running at start-up was cut off by a crash: it is run again until its kind's
``max_attempts`` (the first run and one retry unless the kind says otherwise), then failed
with the reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, Cancelled, NotFound, SdcloudError
from sdcloud.jobs.base import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Handler, Job, JobContext, JobQueue
from sdcloud.jobs.control import CancelToken, ProgressEvent
from sdcloud.jobs.journal import Journal
from sdcloud.jobs.registry import GPU_LANE, JobKind

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # the first run and one retry after a crash, unless the kind says otherwise
KEEP_FINISHED = 500  # finished jobs (and their files) remembered


class LocalJobQueue(JobQueue):
    """``handlers``: kind -> handler. ``kinds`` (optional): the ``JobKind`` of each, for its lane
    and ``max_attempts``; a kind without one runs in the GPU lane with ``MAX_ATTEMPTS``."""

    def __init__(
        self,
        state_path: Path,
        handlers: Mapping[str, Handler],
        *,
        kinds: Mapping[str, JobKind] | None = None,
        keep_finished: int = KEEP_FINISHED,
    ) -> None:
        self.root = state_path / "jobs"
        self.handlers = dict(handlers)
        self.kinds = dict(kinds or {})
        self.keep_finished = keep_finished
        self.journal = Journal(state_path / "queue.sqlite")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._active: dict[str, Job] = {}  # queued + running, by id
        self._order: list[str] = []  # queued ids, FIFO
        self._running: dict[str, Job] = {}  # by id, in start order
        self._tokens: dict[str, CancelToken] = {}
        self._callbacks: dict[str, list[Callable[[Job], None]]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def _lane(self, kind: str) -> str:
        spec = self.kinds.get(kind)
        return spec.lane if spec else GPU_LANE

    def _max_attempts(self, kind: str) -> int:
        spec = self.kinds.get(kind)
        return spec.max_attempts if spec else MAX_ATTEMPTS

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            for job in self.journal.unfinished():
                if job.state == RUNNING:
                    if job.attempts >= self._max_attempts(job.kind):
                        self._finish_failed_restart(job)
                        continue
                    job.state = QUEUED
                    self.journal.update(job)
                self._active[job.id] = job
                self._order.append(job.id)
            self._renumber()
            self._stopping = False
            lanes = sorted({GPU_LANE, *(self._lane(k) for k in self.handlers)})
            self._threads = [threading.Thread(target=self._work, args=(lane,), name=f"sdcloud-jobs-{lane}",
                                              daemon=True) for lane in lanes]
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopping = True
            self._changed.notify_all()
            threads = self._threads
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._threads = []

    def _finish_failed_restart(self, job: Job) -> None:
        job.state = FAILED
        job.error = (
            f"the server stopped while this job was running, {job.attempts} times; it was not retried again"
        )
        job.error_status = 500
        job.finished = time.time()
        self.journal.update(job)
        shutil.rmtree(self._dir(job.id) / "in", ignore_errors=True)
        shutil.rmtree(self._dir(job.id) / "state", ignore_errors=True)

    # interface -------------------------------------------------------------------------
    def submit(self, kind: str, payload: dict[str, Any], files: dict[str, bytes] | None = None) -> Job:
        if kind not in self.handlers:
            raise BadRequest(f"unknown job kind '{kind}'; known: {', '.join(sorted(self.handlers))}")
        job = Job(id=uuid.uuid4().hex, kind=kind, payload=payload)
        if files:
            inputs = self._dir(job.id) / "in"
            inputs.mkdir(parents=True)
            for name, data in files.items():
                _write_durably(inputs / _safe_name(name), data)
        with self._lock:
            self.journal.insert(job)
            self._active[job.id] = job
            self._order.append(job.id)
            self._renumber()
            self._changed.notify_all()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._active.get(job_id)
        if job is None:
            job = self.journal.get(job_id)
        if job is None:
            raise NotFound(f"job '{job_id}' not found; see /api/queue for the current jobs")
        return job

    def list(self, finished_limit: int = 20) -> list[Job]:
        with self._lock:
            active = list(self._running.values()) + [self._active[i] for i in self._order]
        return active + self.journal.recent_finished(max(0, finished_limit))

    def cancel(self, job_id: str) -> Job:
        with self._lock:
            job = self._active.get(job_id)
            if job is not None and job.state == QUEUED:
                self._order.remove(job_id)
                del self._active[job_id]
                job.state = CANCELLED
                job.error = "cancelled while queued"
                job.error_status = Cancelled.status
                job.finished = time.time()
                job.position = None
                self.journal.update(job)
                self._renumber()
                callbacks = self._callbacks.pop(job_id, [])
                self._changed.notify_all()
            elif job is not None and job.state == RUNNING and job_id in self._tokens:
                self._tokens[job_id].cancel()
                return job
            else:
                job = None
        if job is None:  # finished or unknown: nothing to cancel (get() takes the lock itself)
            return self.get(job_id)
        shutil.rmtree(self._dir(job_id), ignore_errors=True)
        _call(callbacks, job)
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            job = self._active.get(job_id)
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
        callback(self.get(job_id))

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running.values())

    def interrupt(self, job_id: str | None = None) -> None:
        for token in self._tokens_for(job_id):
            token.interrupt()

    def skip(self, job_id: str | None = None) -> None:
        for token in self._tokens_for(job_id):
            token.skip()

    def _tokens_for(self, job_id: str | None) -> list[CancelToken]:
        with self._lock:
            if job_id is None:
                return list(self._tokens.values())
            return [self._tokens[job_id]] if job_id in self._tokens else []

    def output_file(self, job_id: str, name: str) -> Path:
        path = self._dir(job_id) / "out" / _safe_name(name)
        if not path.is_file():
            raise NotFound(f"job '{job_id}' has no output '{name}'")
        return path

    # worker ----------------------------------------------------------------------------
    def _dir(self, job_id: str) -> Path:
        return self.root / _safe_name(job_id)

    def _renumber(self) -> None:
        for pos, job_id in enumerate(self._order, start=1):
            self._active[job_id].position = pos

    def _next(self, lane: str) -> Job | None:
        with self._lock:
            while True:
                if self._stopping:
                    return None
                job_id = next((i for i in self._order if self._lane(self._active[i].kind) == lane), None)
                if job_id is not None:
                    break
                self._changed.wait()
            self._order.remove(job_id)
            job = self._active[job_id]
            job.state = RUNNING
            job.position = 0
            job.attempts += 1
            job.started = time.time()
            job.progress, job.step, job.steps, job.eta_seconds, job.preview = 0.0, 0, 0, None, None
            job.metrics = {}
            self.journal.update(job)
            self._running[job.id] = job
            self._tokens[job.id] = CancelToken()
            self._renumber()
            self._changed.notify_all()
            return job

    def _work(self, lane: str) -> None:
        while True:
            job = self._next(lane)
            if job is None:
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        folder = self._dir(job.id)
        out, state_dir = folder / "out", folder / "state"
        out.mkdir(parents=True, exist_ok=True)
        state_dir.mkdir(parents=True, exist_ok=True)
        token = self._tokens[job.id]
        ctx = JobContext(job, folder / "in", out, token, lambda e: self._report(job, e), state_dir=state_dir)
        result: dict[str, Any] | None = None
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                raise BadRequest(f"this server does not run '{job.kind}' jobs; known: "
                                 f"{', '.join(sorted(self.handlers))}")
            result = handler(ctx)
            state, error, status = DONE, None, None
        except SdcloudError as err:
            state, error, status = FAILED, err.message, err.status
            if isinstance(err, Cancelled):
                state = CANCELLED
        except Exception as err:  # a bug or a library failure: report it, keep serving
            log.exception("job %s (%s) failed", job.id, job.kind)
            state, error, status = FAILED, f"internal error: {type(err).__name__}: {err}", 500
        shutil.rmtree(folder / "in", ignore_errors=True)
        shutil.rmtree(state_dir, ignore_errors=True)  # finished: nothing left to resume
        with self._lock:
            if token.cancelled:
                state = CANCELLED if state == DONE else state
                error = error or "cancelled while running"
                status = status or Cancelled.status
            job.interrupted = token.interrupted
            job.state, job.error, job.error_status, job.result = state, error, status, result
            job.finished = time.time()
            job.position = None
            job.preview = None
            if state == DONE:
                job.progress = 1.0
            self.journal.update(job)
            del self._running[job.id]
            del self._tokens[job.id]
            del self._active[job.id]
            callbacks = self._callbacks.pop(job.id, [])
            self._changed.notify_all()
        self._prune()
        _call(callbacks, job)

    def _report(self, job: Job, event: ProgressEvent) -> None:
        job.apply(event)

    def _prune(self) -> None:
        for job_id in self.journal.prune_finished(self.keep_finished):
            shutil.rmtree(self._dir(job_id), ignore_errors=True)


def _safe_name(name: str) -> str:
    """File names come from our own code, but never let one climb out of its folder."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise NotFound(f"no such file '{name}'")
    return name


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _call(callbacks: list[Callable[[Job], None]], job: Job) -> None:
    for cb in callbacks:
        try:
            cb(job)
        except Exception:  # a waiter that went away must not stop the worker
            log.exception("job callback failed")
