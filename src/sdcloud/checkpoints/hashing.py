"""A1111/Civitai hashes, computed in one read pass and cached by (path, size, mtime).

- ``sha256``: full file (A1111 "Model hash" = first 10 hex; Civitai AutoV2).
- ``autov1``: sha256 of the 64 KiB at offset 1 MiB, first 8 hex (A1111 legacy hash).
- ``addnet``: sha256 of the data after the safetensors header (kohya ``sshs_model_hash``;
  A1111 "Lora hashes" use its first 12 hex).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

BLOCK = 1024 * 1024


@dataclass(frozen=True)
class FileHashes:
    sha256: str
    autov1: str
    addnet: str | None  # None for files that are not safetensors

    @property
    def short(self) -> str:
        """A1111 model hash / Civitai AutoV2 (10 hex)."""
        return self.sha256[:10]

    @property
    def lora_short(self) -> str:
        """A1111 ``Lora hashes`` value (12 hex of the addnet hash, else of the sha256)."""
        return (self.addnet or self.sha256)[:12]


def compute_hashes(path: str | Path, progress: Callable[[int], None] | None = None) -> FileHashes:
    """Read the file once and compute every hash. ``progress(n)`` gets bytes read per block."""
    path = Path(path)
    full = hashlib.sha256()
    v1 = hashlib.sha256()
    addnet: hashlib._Hash | None = None
    data_start = -1
    with path.open("rb") as fh:
        head = fh.read(8)
        if path.suffix.lower() == ".safetensors" and len(head) == 8:
            data_start = 8 + struct.unpack("<Q", head)[0]
            addnet = hashlib.sha256()
        fh.seek(0)
        pos = 0
        while True:
            block = fh.read(BLOCK)
            if not block:
                break
            full.update(block)
            end = pos + len(block)
            lo, hi = max(pos, 0x100000), min(end, 0x110000)
            if lo < hi:
                v1.update(block[lo - pos:hi - pos])
            if addnet is not None and end > data_start:
                addnet.update(block[max(0, data_start - pos):])
            pos = end
            if progress:
                progress(len(block))
    return FileHashes(
        sha256=full.hexdigest(),
        autov1=v1.hexdigest()[:8] if pos >= 0x100000 else "NOFILE",
        addnet=addnet.hexdigest() if addnet is not None else None,
    )


class HashCache:
    """JSON cache of ``FileHashes`` keyed by absolute path, valid while size and mtime match."""

    def __init__(self, cache_file: Path) -> None:
        self.cache_file = cache_file
        self._lock = threading.Lock()
        self._seen_mtime: int | None = None
        self._data: dict[str, dict] = self._read()

    def _read(self) -> dict[str, dict]:
        try:
            self._seen_mtime = self.cache_file.stat().st_mtime_ns
            data = json.loads(self.cache_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _changed_on_disk(self) -> bool:
        try:
            return self.cache_file.stat().st_mtime_ns != self._seen_mtime
        except FileNotFoundError:
            return False

    def get(self, path: str | Path, *, compute: bool = True,
            progress: Callable[[int], None] | None = None) -> FileHashes | None:
        path = Path(path).resolve()
        st = path.stat()
        key = str(path)
        with self._lock:
            entry = self._data.get(key)
        valid = entry and entry.get("size") == st.st_size and entry.get("mtime") == st.st_mtime_ns
        if not valid and self._changed_on_disk():
            # another writer (a session restore, a merge in another process) may have it
            with self._lock:
                entry = self._read().get(key) or entry
                if entry:
                    self._data[key] = entry
        if entry and entry.get("size") == st.st_size and entry.get("mtime") == st.st_mtime_ns:
            return FileHashes(**entry["hashes"])
        if not compute:
            return None
        hashes = compute_hashes(path, progress)
        with self._lock:
            self._data[key] = {"size": st.st_size, "mtime": st.st_mtime_ns, "hashes": asdict(hashes)}
            self._save()
        return hashes

    def put(self, path: str | Path, hashes: FileHashes) -> None:
        """Record hashes computed elsewhere (e.g. while a merge wrote the file)."""
        path = Path(path).resolve()
        st = path.stat()
        with self._lock:
            self._data[str(path)] = {"size": st.st_size, "mtime": st.st_mtime_ns, "hashes": asdict(hashes)}
            self._save()

    def _save(self) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_suffix(".tmp")
        merged = {**self._read(), **self._data}  # keep the files other writers added meanwhile
        self._data = merged
        tmp.write_text(json.dumps(merged, indent=1, sort_keys=True))
        os.replace(tmp, self.cache_file)
        self._seen_mtime = self.cache_file.stat().st_mtime_ns
