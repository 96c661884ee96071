"""Durable file writes shared by every layer (engine outputs, checkpoint tools, job records,
storage): write under a temporary name in the target folder, fsync, rename, fsync the folder.
A crash leaves either the old file or the complete new one, never a partial one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives power loss (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_name(dest: Path) -> Path:
    """A hidden, unique sibling of ``dest`` (same folder, so the final rename is atomic)."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_write(dest: Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temp file for writing; on a clean exit it is fsync'd and renamed to ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dest.parent)


def write_text_durable(dest: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically and durably."""
    with atomic_write(dest, "w", encoding="utf-8") as fh:
        fh.write(text)
