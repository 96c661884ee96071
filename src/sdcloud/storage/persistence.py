"""A process's side of storage: the persistent store checked at start-up, the outbox every
saved image goes through, and the session restored from the store when the server starts.

With no store configured nothing here touches the network: saved images are already fsync'd
by ``sdcloud.outputs`` and ``/api/storage`` says ``store: null`` plus any warning about
outputs sitting on ephemeral disk.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sdcloud.errors import SdcloudError
from sdcloud.settings import Settings

log = logging.getLogger("sdcloud.storage")


def _say(message: str) -> None:
    print(f"sdcloud: {message}", file=sys.stderr, flush=True)


class Persistence:
    """Store + outbox for one server. Opening it checks the store (a bad URL, missing bucket or
    wrong credentials is a one-line ``SdcloudError`` here, before any image is made)."""

    def __init__(self, settings: Settings) -> None:
        from sdcloud.storage.health import open_checked_store, persistence_warnings

        self.settings = settings
        self.store = open_checked_store(settings)
        self.outbox: Any = None
        if self.store is not None:
            from sdcloud.storage.outbox import Outbox

            self.outbox = Outbox(settings, self.store)
        try:
            self.warnings = persistence_warnings(settings)
        except (OSError, SdcloudError) as err:  # detection is advice; never stop a server for it
            self.warnings = [f"could not tell whether the outputs folder is persistent: {err}"]
        for warning in self.warnings:
            _say(f"WARNING: {warning}")
        self.restore: dict[str, Any] = {"state": "none" if self.store is None else "pending"}
        self._pull_thread: threading.Thread | None = None

    def pull_session(self) -> None:
        """Restore settings, presets, LoRAs, embeddings and VAEs from the store (small files;
        local files win). Checkpoints follow in the background from ``start``."""
        if self.store is None:
            return
        from sdcloud.storage.sync import pull_session

        try:
            small = pull_session(self.settings, self.store, checkpoints="none", report=log.info)
        except (OSError, SdcloudError) as err:
            self.restore = {"state": "failed", "error": str(err)}
            _say(f"WARNING: session restore from {self.store.url} failed: {err}")
            return
        if small["restored"]:
            _say(f"restored {small['restored']} session file(s) from {self.store.url}")
        self.restore = {"state": "checkpoints", **small}

    def start(self, on_checkpoints: Callable[[], None] | None = None) -> None:
        """Start the uploader (journal entries of earlier runs go first) and fetch missing
        checkpoints in a background thread, so the server answers meanwhile; ``on_checkpoints``
        runs once they are in place (to rescan the model folder)."""
        if self.outbox is not None:
            self.outbox.start()
        if self.store is None or self.restore.get("state") != "checkpoints" or self._pull_thread:
            return
        small = dict(self.restore)

        def fetch_checkpoints() -> None:
            from sdcloud.storage.sync import pull_session

            try:
                big = pull_session(self.settings, self.store, checkpoints="auto", report=log.info,
                                   progress=False)
            except (OSError, SdcloudError) as err:
                self.restore = {**self.restore, "state": "failed", "error": str(err)}
                _say(f"WARNING: fetching checkpoints from {self.store.url} failed: {err}")
                return
            self.restore = {**small, "state": "done", "checkpoints_fetched": big["checkpoints_fetched"],
                            "checkpoints_missing": big["checkpoints_missing"]}
            if big["checkpoints_fetched"]:
                _say(f"fetched {big['checkpoints_fetched']} checkpoint(s) from {self.store.url}")
            if big["checkpoints_fetched"] and on_checkpoints is not None:
                on_checkpoints()

        self._pull_thread = threading.Thread(target=fetch_checkpoints, name="sdcloud-session-pull",
                                             daemon=True)
        self._pull_thread.start()

    def add(self, paths: Iterable[str | Path]) -> None:
        """Journal saved images for upload (their infotext is inside the PNG); returns once the
        journal rows are durable. Without a store the images are already durable: nothing to do."""
        if self.outbox is None:
            return
        for path in paths:
            self.outbox.add(path)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every queued file to reach the store (True when none is left)."""
        if self.outbox is None:
            return True
        return self.outbox.wait_idle(timeout)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the uploader after trying to drain it; what is left uploads on the next start."""
        if self.outbox is None:
            return True
        done = self.outbox.stop(flush=True, timeout=timeout)
        if not done:
            _say(f"WARNING: {self.outbox.pending_count()} file(s) not yet in {self.store.url}; "
                 "they stay on local disk and upload on the next start (or run 'sdcloud storage drain')")
        return done

    def status(self) -> dict[str, Any]:
        """``/api/storage``: the outbox's status, the start-up warnings and the session restore."""
        if self.outbox is not None:
            out = dict(self.outbox.status())
        else:
            out = {"store": None, "healthy": None, "running": False, "pending": 0, "uploaded": 0,
                   "missing": 0, "last_error": None, "warning": None}
        out["warnings"] = list(self.warnings)
        out["restore"] = dict(self.restore)
        return out
