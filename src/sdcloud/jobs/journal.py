"""SQLite journal of the job queue: every state change is committed before it is acted on,
so a killed server finds its queued jobs (and the one it was running) on restart.

WAL mode with ``synchronous=NORMAL``: a committed transaction survives the process being
killed; only a power cut can lose the last few commits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sdcloud.jobs.base import DONE, FINISHED, QUEUED, RUNNING, Job

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    payload TEXT NOT NULL,
    result TEXT,
    error TEXT,
    error_status INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
"""

_COLUMNS = "id, kind, state, payload, result, error, error_status, attempts, created, started, finished"


class Journal:
    """Durable job records. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def insert(self, job: Job) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT INTO jobs ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job.id,
                    job.kind,
                    job.state,
                    json.dumps(job.payload),
                    _dump(job.result),
                    job.error,
                    job.error_status,
                    job.attempts,
                    job.created,
                    job.started,
                    job.finished,
                ),
            )

    def update(self, job: Job) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state=?, result=?, error=?, error_status=?, attempts=?, started=?, "
                "finished=? WHERE id=?",
                (
                    job.state,
                    _dump(job.result),
                    job.error,
                    job.error_status,
                    job.attempts,
                    job.started,
                    job.finished,
                    job.id,
                ),
            )

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """One statement on the journal's own connection, for a table of a caller's beside ``jobs``
        in the same file (the fleet's attempts): one connection, so no second writer can find the
        file locked."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def executescript(self, script: str) -> None:
        with self._lock:
            self._db.executescript(script)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def unfinished(self) -> list[Job]:
        """Queued and running jobs, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY seq", (QUEUED, RUNNING)
            ).fetchall()
        return [_job(r) for r in rows]

    def recent_finished(self, limit: int) -> list[Job]:
        marks = ",".join("?" * len(FINISHED))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY seq DESC LIMIT ?",
                (*FINISHED, limit),
            ).fetchall()
        return [_job(r) for r in rows]

    def prune_finished(self, keep: int) -> list[str]:
        """Forget all but the newest ``keep`` finished jobs; return the ids forgotten."""
        marks = ",".join("?" * len(FINISHED))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id FROM jobs WHERE state IN ({marks}) ORDER BY seq DESC LIMIT -1 OFFSET ?",
                (*FINISHED, keep),
            ).fetchall()
            ids = [r[0] for r in rows]
            self._db.executemany("DELETE FROM jobs WHERE id=?", [(i,) for i in ids])
        return ids


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _job(row: tuple) -> Job:
    (id_, kind, state, payload, result, error, error_status, attempts, created, started, finished) = row
    return Job(
        id=id_,
        kind=kind,
        state=state,
        payload=json.loads(payload),
        result=json.loads(result) if result else None,
        error=error,
        error_status=error_status,
        attempts=attempts,
        created=created,
        started=started,
        finished=finished,
        progress=1.0 if state == DONE else 0.0,
    )
