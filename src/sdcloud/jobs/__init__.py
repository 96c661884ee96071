"""Job queue: the interface (``JobQueue``, ``Job``) and the local SQLite-journaled backend."""

from sdcloud.jobs.base import CANCELLED, DONE, FAILED, FINISHED, QUEUED, RUNNING, Job, JobContext, JobQueue
from sdcloud.jobs.local import LocalJobQueue

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "FINISHED",
    "QUEUED",
    "RUNNING",
    "Job",
    "JobContext",
    "JobQueue",
    "LocalJobQueue",
]
