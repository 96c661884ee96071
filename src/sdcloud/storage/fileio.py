"""Durable copies for the stores (the write primitives live in ``sdcloud.durable``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from sdcloud.durable import atomic_write, fsync_dir, temp_name, write_text_durable

__all__ = ["CHUNK", "copy_durable", "fsync_dir", "temp_name", "write_text_durable"]

CHUNK = 1 << 20


def copy_durable(src: Path, dest: Path, progress: Callable[[int], None] | None = None) -> None:
    """Copy ``src`` to ``dest`` so that ``dest`` is either absent, the old file, or complete."""
    with open(src, "rb") as fin, atomic_write(dest) as fout:
        if progress is None:
            shutil.copyfileobj(fin, fout, CHUNK)
        else:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
                progress(len(chunk))
