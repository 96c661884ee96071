"""The running server's cost meter and session guard (``--price-per-hour``, ``--budget``,
``--max-hours``, the platform's session limit).

The guard ticks in a background thread. Before the earliest limit it warns (stderr,
``/api/session``, the UI); at the stop it stops taking jobs and lets the running one finish
(queued jobs stay in the journal for the next start), waits for the outbox to reach the store,
then calls ``on_exit(code)``, which ``sdcloud serve`` points at uvicorn's graceful exit.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from sdcloud.jobs import JobQueue
from sdcloud.settings import Settings
from sdcloud.storage.persistence import Persistence

POLL_S = 1.0


def _say(message: str) -> None:
    print(f"sdcloud: {message}", file=sys.stderr, flush=True)


class SessionControl:
    def __init__(self, settings: Settings, queue: JobQueue, persistence: Persistence,
                 clock: Callable[[], float] | None = None) -> None:
        from sdcloud.cloud.session import session_guard_for

        self.queue = queue
        self.on_exit: Callable[[int], None] | None = None
        self.exit_code: int | None = None
        self.guard = session_guard_for(
            settings,
            on_warn=lambda message, _left: _say(f"WARNING: {message}"),
            drain_jobs=self._drain,
            flush_outbox=persistence.flush,
            exit=self._exit,
            log=_say,
            clock=clock,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.guard.run, args=(self._stop, POLL_S),
                                         name="sdcloud-session-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching the clock (the server is shutting down for another reason)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=POLL_S * 2)

    def snapshot(self) -> dict[str, Any]:
        """``/api/session``: elapsed time, spend, price and its source, the next limit, warning."""
        return self.guard.snapshot()

    def _drain(self, timeout: float) -> bool:
        self.queue.stop(timeout)
        return not self.queue.running()

    def _exit(self, code: int) -> None:
        self.exit_code = code
        if self.on_exit is not None:
            self.on_exit(code)
