"""Job lifecycle → webhook events: ``job.queued``, ``job.started``, ``job.progress`` (throttled),
``job.succeeded``, ``job.failed`` (a cancelled job is ``job.failed`` with its reason).

It watches the queue through the ``JobQueue`` interface only, so it works the same for the
local queue and the Celery fleet. Jobs carry their URL in ``payload["webhook"]``; after a
restart the unfinished ones are picked up again from the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sdcloud.errors import NotFound
from sdcloud.jobs.base import DONE, RUNNING, Job, JobQueue
from sdcloud.webhooks.delivery import WebhookSender

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0
POLL_S = 0.2


def event_data(job: Job) -> dict[str, Any]:
    """What every event carries: the job, its progress, and once done its images (store keys
    and API URLs) and infotexts."""
    data: dict[str, Any] = {
        "job_id": job.id,
        "kind": job.kind,
        "state": job.state,
        "attempt": job.attempts,
        "progress": round(job.progress, 4),
        "step": job.step,
        "steps": job.steps,
    }
    if job.state == DONE and job.result is not None:
        paths = job.result.get("images") or job.result.get("paths") or []
        info = job.result.get("info") or {}
        data["images"] = [f"/api/jobs/{job.id}/images/{i}" for i in range(len(paths))]
        data["image_keys"] = list(job.result.get("keys") or [])
        data["infotexts"] = list(info.get("infotexts") or [])
        data["interrupted"] = bool(job.result.get("interrupted", False))
    if job.error:
        data["error"] = job.error
    return data


class JobWebhooks:
    """Follows jobs that have a webhook URL and turns their changes into events."""

    def __init__(self, queue: JobQueue, sender: WebhookSender, *, progress_every: float = PROGRESS_EVERY_S) -> None:
        self.queue = queue
        self.sender = sender
        self.progress_every = progress_every
        self._lock = threading.Lock()
        self._watch: dict[str, dict[str, Any]] = {}  # job id -> {url, started, last_progress_t, last_progress}
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def queued(self, job: Job, url: str) -> None:
        """A job with a webhook was just submitted."""
        self.sender.send(url, "job.queued", event_data(job), job.id)
        with self._lock:
            self._watch[job.id] = {"url": url, "started": False, "t": 0.0, "p": -1.0}

    def start(self) -> None:
        for job in self.queue.list(finished_limit=0):  # resume after a restart
            url = job.payload.get("webhook")
            if url:
                with self._lock:
                    self._watch.setdefault(job.id, {"url": url, "started": job.state == RUNNING,
                                                    "t": 0.0, "p": -1.0})
        self.sender.start()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="sdcloud-job-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
        self._poll()  # events of jobs that finished while stopping
        self.sender.stop()

    def _loop(self) -> None:
        while not self._stopping.wait(POLL_S):
            try:
                self._poll()
            except Exception:  # never let a bad row stop the events of other jobs
                log.exception("job webhooks poll failed")

    def _poll(self) -> None:
        with self._lock:
            watched = list(self._watch.items())
        for job_id, w in watched:
            try:
                job = self.queue.get(job_id)
            except NotFound:
                with self._lock:
                    self._watch.pop(job_id, None)
                continue
            url = w["url"]
            if job.state == RUNNING or (job.finished_state and job.started and not w["started"]):
                if not w["started"]:
                    w["started"] = True
                    self.sender.send(url, "job.started", event_data(job), job.id)
                now = time.monotonic()
                if (job.state == RUNNING and job.progress > w["p"] and job.progress < 1.0
                        and now - w["t"] >= self.progress_every and job.step > 0):
                    w["t"], w["p"] = now, job.progress
                    self.sender.send(url, "job.progress", event_data(job), job.id)
            if job.finished_state:
                event = "job.succeeded" if job.state == DONE else "job.failed"
                self.sender.send(url, event, event_data(job), job.id)
                with self._lock:
                    self._watch.pop(job_id, None)
