"""The job queue's contract: what the HTTP API and the UI submit, watch and cancel, and what
a job handler gets while it runs (docs/architecture.md, "The job contract").

``LocalJobQueue`` (worker threads, SQLite journal) is the default backend; a distributed
backend implements the same ``JobQueue`` interface and passes ``tests/test_jobs_contract.py``.
Nothing here knows about HTTP, torch or PIL.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdcloud.errors import NotFound
from sdcloud.jobs.control import CancelToken, Progress, ProgressEvent

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED = (DONE, FAILED, CANCELLED)
JOB_FILE = "job:"
"""Prefix of a result key that names a file in the job's own output folder (``job:00000.png``,
read with ``JobQueue.output_file``); every other key is relative to the outputs folder
(``txt2img-images/2026-01-01/00000-42.png``), the same key the persistent store uses."""


@dataclass
class Job:
    """One unit of work. ``payload`` and ``result`` are JSON-able dicts.

    ``position`` is 1-based among queued jobs, 0 while running, ``None`` once finished.
    ``error_status`` is the HTTP status matching ``error`` (4xx for bad input found while
    running, 500 for a device failure). ``step``/``steps``/``job_no``/``job_count``/``preview``/
    ``metrics`` are the latest ``ProgressEvent`` (``event``); ``preview`` is raw base64 PNG.
    """

    id: str
    kind: str
    state: str = QUEUED
    payload: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    error_status: int | None = None
    attempts: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    position: int | None = None
    progress: float = 0.0
    step: int = 0
    steps: int = 0
    job_no: int = 0
    job_count: int = 0
    eta_seconds: float | None = None
    preview: str | None = None  # latest preview while running (base64 PNG), if the handler made one
    metrics: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def finished_state(self) -> bool:
        return self.state in FINISHED

    @property
    def event(self) -> ProgressEvent:
        """The latest progress, as the serialisable event."""
        return ProgressEvent(self.step, self.steps, self.job_no, self.job_count, self.preview, dict(self.metrics))

    def apply(self, event: ProgressEvent, now: float | None = None) -> None:
        """Take a progress event (the queue backends call this for their handlers' reports)."""
        self.step, self.steps, self.job_no, self.job_count = event.step, event.total, event.job_no, event.job_count
        self.progress = event.fraction
        if event.preview is not None:
            self.preview = event.preview
        if event.metrics:
            self.metrics = dict(event.metrics)
        if self.started and self.progress > 0:
            elapsed = (now if now is not None else time.time()) - self.started
            self.eta_seconds = round(elapsed / self.progress - elapsed, 2)

    def to_dict(self) -> dict[str, Any]:
        """Public JSON view (no payload: it may hold large prompts and file names)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "position": self.position,
            "progress": round(self.progress, 4),
            "step": self.step,
            "steps": self.steps,
            "job_no": self.job_no,
            "job_count": self.job_count,
            "eta_seconds": self.eta_seconds,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "attempts": self.attempts,
            "metrics": dict(self.metrics),
            "error": self.error,
            "result": self.result,
        }


class JobContext:
    """What a handler gets while it runs a job.

    - ``payload``: the JSON-able dict given to ``submit``; ``input_path(name)``: a file given
      to ``submit(files=...)``.
    - ``output_dir``: the job's own folder for files it returns (result key ``job:<name>``,
      see ``output_key``); kept across attempts, removed when the job is forgotten.
    - ``state_dir``: the job's folder for resumable state (checkpoints of a training run); it
      survives a crash and the retry, and is removed once the job has finished.
    - ``attempt``: 1 for the first run, 2 for the retry after a crash, ...
    - ``cancel``: the ``CancelToken`` to check between steps (``interrupted``, ``take_skip()``).
    - ``report(event)``: a ``ProgressEvent`` (or the engine's ``Progress``) for the watchers.
    """

    def __init__(
        self,
        job: Job,
        input_dir: Path,
        output_dir: Path,
        cancel: CancelToken,
        report: Callable[[ProgressEvent], None],
        *,
        state_dir: Path | None = None,
    ) -> None:
        self.job = job
        self.input_dir = input_dir
        self.output_dir = output_dir
        self.state_dir = state_dir if state_dir is not None else output_dir.parent / "state"
        self.cancel = cancel
        self._report = report

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def attempt(self) -> int:
        return max(1, self.job.attempts)

    def input_path(self, name: str) -> Path:
        """Path of a file given to ``submit(files=...)``."""
        return self.input_dir / name

    @staticmethod
    def output_key(name: str) -> str:
        """The result key for ``output_dir / name``."""
        return JOB_FILE + name

    def report(self, progress: ProgressEvent | Progress) -> None:
        event = progress if isinstance(progress, ProgressEvent) else ProgressEvent.from_progress(progress)
        self._report(event)


Handler = Callable[[JobContext], dict]


def job_file_name(key: str) -> str | None:
    """``00000.png`` for the key ``job:00000.png``; None for an outputs-folder key."""
    return key[len(JOB_FILE):] if key.startswith(JOB_FILE) else None


def outputs_file(outputs_root: Path, key: str) -> Path:
    """The file an outputs-folder result key names (``NotFound`` for a key that leaves it)."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or "\0" in key or any(p in ("", ".", "..") for p in parts):
        raise NotFound(f"no such output '{key}'")
    return outputs_root.joinpath(*parts)


class JobQueue(abc.ABC):
    """Jobs run FIFO within their lane, one at a time per lane (``jobs.registry.JobKind``)."""

    @abc.abstractmethod
    def submit(self, kind: str, payload: dict[str, Any], files: dict[str, bytes] | None = None) -> Job:
        """Queue a job. ``files`` (name -> bytes) are stored next to it, not kept in RAM."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job:
        """The job, or ``sdcloud.errors.NotFound``."""

    @abc.abstractmethod
    def list(self, finished_limit: int = 20) -> list[Job]:
        """Running and queued jobs in run order, then up to ``finished_limit`` finished ones."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> Job:
        """Drop a queued job, or stop a running one (its finished images are kept)."""

    @abc.abstractmethod
    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has finished (or ``timeout`` seconds passed); return it."""

    @abc.abstractmethod
    def add_done_callback(self, job_id: str, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` once the job has finished (at once if it already has)."""

    @abc.abstractmethod
    def running(self) -> list[Job]:
        """The jobs being run now (one per lane at most), oldest start first."""

    @abc.abstractmethod
    def interrupt(self, job_id: str | None = None) -> None:
        """Stop a running job between steps (all running jobs when ``job_id`` is None); it
        finishes as done with what it made so far."""

    @abc.abstractmethod
    def skip(self, job_id: str | None = None) -> None:
        """Skip the current batch of a running job (of every running job when None)."""

    @abc.abstractmethod
    def output_file(self, job_id: str, name: str) -> Path:
        """A file the job wrote to its output folder (``NotFound`` if there is none)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Recover the journal and start running jobs."""

    @abc.abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; wait up to ``timeout`` for the running one."""
