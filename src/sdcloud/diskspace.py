"""Free space in the data dir: the 507 answer for a full disk and the warning before it.

Messages name the data dir by its folder name only, never its absolute path (a response
must not tell a client how the server's disk is laid out)."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from sdcloud.errors import DiskFull

MB = 1024 * 1024


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT from a write, or SQLite's "database or disk is full"."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower():
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_disk_full(cause)


def free_mb(path: Path) -> int | None:
    """Free megabytes on the filesystem holding ``path`` (its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free // MB
        except OSError:
            continue
    return None


def disk_full(data_dir: Path) -> DiskFull:
    free = free_mb(data_dir)
    amount = "?" if free is None else str(free)
    return DiskFull(f"disk full: {amount} MB free in {data_dir.name or 'the data dir'}; free space and retry")


def low_space_warning(data_dir: Path, min_free_mb: int) -> str | None:
    """A one-line warning when the data dir's filesystem has less than ``min_free_mb`` free."""
    free = free_mb(data_dir)
    if free is None or free >= min_free_mb:
        return None
    return (
        f"only {free} MB free in {data_dir.name or 'the data dir'} (warning below {min_free_mb} MB, "
        "setting limits.min_free_mb): saving images and queueing jobs will fail when it is full"
    )
