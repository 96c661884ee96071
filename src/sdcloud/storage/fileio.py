"""Durable file writes: temp name in the target folder, fsync, rename, fsync the folder."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from sdcloud.durable import fsync_dir

CHUNK = 1 << 20


def temp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")


def copy_durable(src: Path, dest: Path, progress: Callable[[int], None] | None = None) -> None:
    """Copy ``src`` to ``dest`` so that ``dest`` is either absent, the old file, or complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            if progress is None:
                shutil.copyfileobj(fin, fout, CHUNK)
            else:
                while chunk := fin.read(CHUNK):
                    fout.write(chunk)
                    progress(len(chunk))
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def write_text_durable(dest: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically and durably."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
