"""A checkpoint on a slow mount (Google Drive's FUSE, a network volume) is copied to local disk
once and read from there: loading a 2-7 GB file over FUSE takes minutes and drops with the mount
("Transport endpoint is not connected"); a local read takes seconds. The copy is reused while
the source keeps its size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

# filesystem types that are slow to read a big file from (or can vanish mid-read)
SLOW_FS = ("fuse", "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "davfs", "sshfs", "ceph", "glusterfs")
MODES = ("auto", "always", "off")


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_of(path: Path, mounts: str | None = None) -> tuple[str, str]:
    """(mount point, filesystem type) holding ``path``, from /proc/mounts (or ``mounts``)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "/", "unknown"
    target = str(path.resolve() if mounts is None else path)
    best = ("/", "unknown")
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point, fstype = _unescape(parts[1]), parts[2]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def is_slow_mount(path: Path, mounts: str | None = None) -> bool:
    fstype = mount_of(path, mounts)[1]
    return fstype.split(".")[0] in SLOW_FS


def local_copy(path: Path, cache_dir: Path, *, mode: str = "auto", mounts: str | None = None) -> tuple[Path, str]:
    """(the file to read, what happened). ``mode``: ``auto`` copies from slow mounts only,
    ``always`` copies any file, ``off`` never copies. What happened is ``local`` (read in place),
    ``copied``, ``reused`` (copied before) or ``in place: <why>``."""
    if mode == "off" or not path.is_file():
        return path, "local"
    if mode == "auto" and not is_slow_mount(path, mounts):
        return path, "local"
    st = path.stat()
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    dest = cache_dir / f"{key}-{path.name}"
    meta_file = dest.with_name(dest.name + ".json")
    meta = {"source": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        if dest.is_file() and json.loads(meta_file.read_text()) == meta and dest.stat().st_size == st.st_size:
            return dest, "reused"
    except (OSError, ValueError):
        pass
    cache_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache_dir).free
    if free < st.st_size + (1 << 30):  # keep a gigabyte spare
        return path, f"in place: {free / 1e9:.1f} GB free in {cache_dir}"
    tmp = dest.with_name(dest.name + ".part")
    try:
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        return path, f"in place: copy failed ({err.strerror})"
    meta_file.write_text(json.dumps(meta))
    return dest, "copied"
