"""The outbox: finished images are durable on local disk and in a journal before the job counts
as done; a background thread copies them to the store with retries and backoff.

Generation never waits on the network: ``add`` only fsyncs and writes one SQLite row (WAL,
``synchronous=FULL``). A crash at any point loses nothing: on the next start the pending rows
are uploaded again under the same keys, so the store never holds duplicates. Nothing is ever
deleted locally.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, SdcloudError
from sdcloud.storage.base import Store, join_key
from sdcloud.storage.fileio import fsync_dir, write_text_durable

log = logging.getLogger("sdcloud.storage")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | uploaded | missing
    added REAL NOT NULL,
    uploaded REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS entries_state ON entries(state, id);
"""


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """Durable queue of files to copy to ``store``.

    ``settings_or_state``: a ``Settings`` (journal in ``state_path``, keys relative to
    ``outputs_path``) or a folder for the journal (then pass ``root``). ``store=None`` means no
    store is configured: ``add`` still makes the files durable, nothing is queued.
    """

    def __init__(self, settings_or_state: Any, store: Store | None, *, root: Path | None = None,
                 backoff: tuple[float, float] = (1.0, 60.0), poll: float = 5.0) -> None:
        if isinstance(settings_or_state, (str, Path)):
            state_dir = Path(settings_or_state)
            self.root = Path(root) if root is not None else None
        else:
            state_dir = settings_or_state.state_path
            self.root = Path(root) if root is not None else settings_or_state.outputs_path
        state_dir.mkdir(parents=True, exist_ok=True)
        self.journal = state_dir / "outbox.sqlite"
        self.store = store
        self.backoff_base, self.backoff_max = backoff
        self.poll = poll
        self._db = sqlite3.connect(self.journal, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._wake = threading.Event()  # new work queued
        self._kick = threading.Event()  # cut a backoff short (start, flush, stop)
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._healthy: bool | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_upload_at: float | None = None
        self._failures = 0
        self.on_change: Callable[[dict[str, Any]], None] | None = None

    # Recording -----------------------------------------------------------------------------
    def key_for(self, path: Path) -> str:
        """The store key of a local file: ``outputs/<path relative to the outputs folder>``."""
        p = Path(path).absolute()
        if self.root is not None:
            try:
                return join_key("outputs", p.relative_to(self.root.absolute()).as_posix())
            except ValueError:
                pass
        return join_key("outputs", "other", p.name)

    def add(self, path: Path | str, infotext: Path | str | None = None) -> list[str]:
        """Make ``path`` (and its infotext) durable locally and journal them for upload.

        ``infotext`` is a sidecar file path, or the infotext itself (then written next to the
        image as ``<stem>.txt``, A1111's sidecar name). Returns once both are safe on local
        disk; returns the store keys queued (empty without a store).
        """
        image = Path(path)
        if not image.is_file():
            raise BadRequest(f"outbox: {image} does not exist")
        files = [image]
        if infotext is not None:
            side = Path(infotext) if isinstance(infotext, Path) or (
                "\n" not in infotext and len(infotext) < 4096 and os.path.isfile(infotext)) else None
            if side is None:
                side = image.with_suffix(".txt")
                write_text_durable(side, str(infotext))
            files.append(side)
        for f in files:
            _fsync_file(f)
        fsync_dir(image.parent)
        if self.store is None:
            return []
        now = time.time()
        keys = [self.key_for(f) for f in files]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for f, key in zip(files, keys, strict=True):
                    self._db.execute(
                        "INSERT INTO entries(key, path, added) VALUES (?, ?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET path=excluded.path, state='pending', "
                        "added=excluded.added, attempts=0, last_error=NULL",
                        (key, str(f.absolute()), now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._wake.set()
        return keys

    # Background uploader -------------------------------------------------------------------
    def start(self) -> None:
        """Start the uploader thread (pending entries from earlier runs go first)."""
        if self.store is None or (self._thread and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sdcloud-outbox", daemon=True)
        self._thread.start()
        self._wake.set()

    def stop(self, flush: bool = True, timeout: float = 30.0) -> bool:
        """Stop the uploader; with ``flush`` first wait up to ``timeout`` s for the queue to
        drain. Returns True when nothing is left pending (left-overs resume on next start)."""
        if flush and self._thread is not None:
            self._kick.set()  # retry now rather than after a long backoff
            self._wake.set()
            self.wait_idle(timeout)
        self._stop.set()
        self._kick.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.backoff_max))
            self._thread = None
        return self.pending_count() == 0

    def close(self) -> None:
        self.stop(flush=False)
        self._db.close()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending (True) or ``timeout`` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self.pending_count() > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(timeout=0.2 if left is None else min(0.2, left))
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._failures:
                delay = min(self.backoff_max, self.backoff_base * 2 ** (self._failures - 1))
                self._kick.wait(delay)
                self._kick.clear()
                if self._stop.is_set():
                    break
            try:
                batch = self._next_batch()
                if not batch:
                    self._wake.wait(self.poll)
                    self._wake.clear()
                    continue
                self._upload(batch)
            except sqlite3.Error as exc:  # the journal's disk is full or gone: keep trying
                self._failures += 1
                self._last_error = f"outbox journal {self.journal}: {exc}"
                log.warning(self._last_error)

    def _next_batch(self) -> list[tuple[int, str, Path]]:
        assert self.store is not None
        with self._lock:
            rows = self._db.execute("SELECT id, key, path FROM entries WHERE state='pending' "
                                    "ORDER BY id LIMIT ?", (self.store.batch_size,)).fetchall()
        return [(i, k, Path(p)) for i, k, p in rows]

    def _upload(self, batch: list[tuple[int, str, Path]]) -> None:
        assert self.store is not None
        present = [(i, k, p) for i, k, p in batch if p.is_file()]
        missing = [i for i, _, p in batch if not p.is_file()]
        if missing:
            self._set_state(missing, "missing", "deleted locally before it was uploaded")
        if not present:
            return
        try:
            self.store.put_many([(p, k) for _, k, p in present])
        except Exception as exc:  # noqa: BLE001 - any failure means: keep it, retry later
            msg = str(exc) if isinstance(exc, SdcloudError) else f"{type(exc).__name__}: {exc}"
            self._failed([i for i, _, _ in present], msg)
            return
        now = time.time()
        with self._lock:
            self._db.executemany("UPDATE entries SET state='uploaded', uploaded=?, last_error=NULL "
                                 "WHERE id=?", [(now, i) for i, _, _ in present])
        if self._healthy is False:
            log.warning("store %s is back; uploading the images kept on local disk", self.store.url)
        self._healthy = True
        self._failures = 0
        self._last_upload_at = now
        self._changed()

    def _failed(self, ids: list[int], msg: str) -> None:
        assert self.store is not None
        with self._lock:
            self._db.executemany("UPDATE entries SET attempts=attempts+1, last_error=? WHERE id=?",
                                 [(msg, i) for i in ids])
        if self._healthy is not False:
            log.warning("%s; images stay on local disk and upload when the store is back", msg)
        self._healthy = False
        self._last_error = msg
        self._last_error_at = time.time()
        self._failures += 1
        self._changed()

    def _set_state(self, ids: list[int], state: str, msg: str) -> None:
        with self._lock:
            self._db.executemany("UPDATE entries SET state=?, last_error=? WHERE id=?",
                                 [(state, msg, i) for i in ids])

    def _changed(self) -> None:
        with self._idle:
            self._idle.notify_all()
        if self.on_change is not None:
            self.on_change(self.status())

    # Reporting -----------------------------------------------------------------------------
    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM entries WHERE state='pending'")
                       .fetchone()[0])

    def status(self) -> dict[str, Any]:
        """What ``/api/storage``, ``sdcloud storage status`` and the UI show."""
        with self._lock:
            counts = dict(self._db.execute("SELECT state, COUNT(*) FROM entries GROUP BY state")
                          .fetchall())
            oldest = self._db.execute("SELECT MIN(added) FROM entries WHERE state='pending'").fetchone()[0]
            if self._last_error is None:
                row = self._db.execute("SELECT last_error FROM entries WHERE state='pending' AND "
                                       "last_error IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
                journal_error = row[0] if row else None
            else:
                journal_error = self._last_error
        pending = int(counts.get("pending", 0))
        warning = None
        if self.store is not None and self._healthy is False:
            warning = (f"store {self.store.url} is unavailable ({journal_error}); {pending} file(s) "
                       "kept on local disk will upload when it is back")
        return {
            "store": self.store.url if self.store else None,
            "healthy": self._healthy,
            "running": bool(self._thread and self._thread.is_alive()),
            "pending": pending,
            "uploaded": int(counts.get("uploaded", 0)),
            "missing": int(counts.get("missing", 0)),
            "oldest_pending_age_s": round(time.time() - oldest, 1) if oldest else None,
            "last_error": journal_error,
            "last_error_at": self._last_error_at,
            "last_upload_at": self._last_upload_at,
            "warning": warning,
        }
