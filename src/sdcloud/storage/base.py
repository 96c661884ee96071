"""The one interface every persistent store implements.

Keys are POSIX-style relative paths (``outputs/txt2img-images/2026-11-27/00000-1.png``);
each backend maps them under its own root/prefix. Adding a backend means one new module with
a ``Store`` subclass and one line in ``stores.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path


class Store(ABC):
    """A place files survive the machine. All methods raise ``StoreError`` on failure."""

    #: How many files ``put_many`` should get at once (the Hub batches them into one commit).
    batch_size: int = 16

    @property
    @abstractmethod
    def url(self) -> str:
        """The store's URL without any secret, for messages and status."""

    @abstractmethod
    def check(self) -> None:
        """Verify the store is reachable and writable now; raise ``StoreError`` saying what to fix."""

    @abstractmethod
    def put(self, local: Path, key: str) -> None:
        """Copy ``local`` to ``key``; return only once the store has confirmed it."""

    def put_many(self, items: Iterable[tuple[Path, str]]) -> None:
        """Copy several files; all-or-error (a partial failure raises and the caller retries all)."""
        for local, key in items:
            self.put(local, key)

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Size in bytes of ``key``, or ``None`` when it is not there."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (recursive), sorted."""

    @abstractmethod
    def get(self, key: str, local: Path, progress: Callable[[int], None] | None = None) -> None:
        """Copy ``key`` to ``local`` (written to a temp name, fsync'd, renamed)."""


def join_key(*parts: str) -> str:
    """Join key parts with ``/``, dropping empty parts and stray slashes."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
