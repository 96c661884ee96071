"""Job queue: the contract (``Job``, ``JobContext``, ``JobQueue``, ``ProgressEvent``,
``CancelToken``), the registry of job kinds, the GPU owner and the local SQLite-journaled
backend. docs/architecture.md ("The job contract") says how to add a kind or a backend."""

from sdcloud.jobs.base import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    JOB_FILE,
    QUEUED,
    RUNNING,
    Handler,
    Job,
    JobContext,
    JobQueue,
)
from sdcloud.jobs.control import CancelToken, Progress, ProgressEvent
from sdcloud.jobs.local import LocalJobQueue
from sdcloud.jobs.registry import GPU_LANE, JobKind, JobKinds

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "FINISHED",
    "GPU_LANE",
    "JOB_FILE",
    "QUEUED",
    "RUNNING",
    "CancelToken",
    "Handler",
    "Job",
    "JobContext",
    "JobKind",
    "JobKinds",
    "JobQueue",
    "LocalJobQueue",
    "Progress",
    "ProgressEvent",
]
