"""A store that is a folder: Colab's Drive mount, Paperspace ``/storage``, a RunPod or Vast
volume, any disk. Writes are atomic and fsync'd, so a dropped mount never leaves half a file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sdcloud.errors import StoreError
from sdcloud.storage.base import Store
from sdcloud.storage.errors_fs import describe_os_error
from sdcloud.storage.fileio import copy_durable, temp_name


class LocalStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise StoreError(f"invalid store key {key!r}")
        return self.root.joinpath(*parts)

    def check(self) -> None:
        """Create the store folder only if its parent exists: a missing parent usually means the
        Drive or volume is not mounted, and creating it would put files on the ephemeral disk."""
        try:
            if not self.root.exists():
                if not self.root.parent.is_dir():
                    raise StoreError(f"store {self.root}: folder {self.root.parent} does not exist "
                                     "(is the drive or volume mounted?)")
                self.root.mkdir()
            if not self.root.is_dir():
                raise StoreError(f"store {self.root} is not a folder")
            probe = temp_name(self.root / "probe")
            with open(probe, "wb") as fh:
                fh.write(b"ok")
            probe.unlink()
        except OSError as exc:
            raise describe_os_error(exc, str(self.root)) from None

    def put(self, local: Path, key: str) -> None:
        dest = self._path(key)
        try:
            if not self.root.is_dir():
                raise StoreError(f"store {self.root} is gone (is the drive or volume mounted?)")
            copy_durable(local, dest)
        except OSError as exc:
            raise describe_os_error(exc, str(self.root)) from None

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise describe_os_error(exc, str(self.root)) from None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix.strip("/") else self.root
        try:
            if not base.is_dir():
                return []
            return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*")
                          if p.is_file() and not p.name.endswith(".tmp"))
        except OSError as exc:
            raise describe_os_error(exc, str(self.root)) from None

    def get(self, key: str, local: Path, progress: Callable[[int], None] | None = None) -> None:
        src = self._path(key)
        try:
            copy_durable(src, local, progress)
        except FileNotFoundError:
            raise StoreError(f"{key} is not in store {self.root}") from None
        except OSError as exc:
            raise describe_os_error(exc, str(self.root)) from None
