"""The job queue's contract: what the HTTP API and the UI submit, watch and cancel.

``LocalJobQueue`` (one worker thread, SQLite journal) is the default backend; a distributed
backend implements the same ``JobQueue`` interface. Nothing here knows about HTTP.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdcloud.engine.types import CancelToken, Progress

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED = (DONE, FAILED, CANCELLED)


@dataclass
class Job:
    """One unit of work. ``payload`` and ``result`` are JSON-able dicts.

    ``position`` is 1-based among queued jobs, 0 while running, ``None`` once finished.
    ``error_status`` is the HTTP status matching ``error`` (4xx for bad input found while
    running, 500 for a device failure).
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
    preview: Any = None  # latest preview (a PIL image) while running, if the handler made one
    interrupted: bool = False

    @property
    def finished_state(self) -> bool:
        return self.state in FINISHED

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
            "error": self.error,
            "result": self.result,
        }


class JobContext:
    """What a handler gets while it runs a job: its inputs, a folder for outputs, progress
    reporting and the cancel token checked between steps."""

    def __init__(
        self,
        job: Job,
        input_dir: Path,
        output_dir: Path,
        cancel: CancelToken,
        report: Callable[[Progress], None],
    ) -> None:
        self.job = job
        self.input_dir = input_dir
        self.output_dir = output_dir
        self.cancel = cancel
        self._report = report

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    def input_path(self, name: str) -> Path:
        """Path of a file given to ``submit(files=...)``."""
        return self.input_dir / name

    def report(self, progress: Progress) -> None:
        self._report(progress)


Handler = Callable[[JobContext], dict]


class JobQueue(abc.ABC):
    """FIFO queue of jobs run one at a time on the GPU."""

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
    def running(self) -> Job | None:
        """The job being run now, if any."""

    @abc.abstractmethod
    def interrupt(self) -> None:
        """Stop the running job between steps; it finishes as done with the images made so far."""

    @abc.abstractmethod
    def skip(self) -> None:
        """Skip the running job's current batch."""

    @abc.abstractmethod
    def output_file(self, job_id: str, name: str) -> Path:
        """A file the job wrote to its output folder (``NotFound`` if there is none)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Recover the journal and start running jobs."""

    @abc.abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; wait up to ``timeout`` for the running one."""
