"""Turn OS errors from a store path into one line that says what to do.

A Drive FUSE mount that dropped answers ``ENOTCONN`` ("Transport endpoint is not connected"),
a full disk or an exhausted quota answers ``ENOSPC``/``EDQUOT``.
"""

from __future__ import annotations

import errno

from sdcloud.errors import StoreError

_EDQUOT = getattr(errno, "EDQUOT", 122)


def describe_os_error(exc: OSError, where: str) -> StoreError:
    """A ``StoreError`` naming the cause and the fix for ``exc`` raised while using ``where``."""
    code = exc.errno
    if code == errno.ENOTCONN:
        return StoreError(f"store {where} is a dropped mount (Transport endpoint is not connected); "
                          "remount it (Colab: drive.mount('/content/drive', force_remount=True)); "
                          "images stay on local disk and upload when it is back")
    if code in (errno.ENOSPC, _EDQUOT):
        return StoreError(f"store {where} is full or over quota; free space or buy more; "
                          "images stay on local disk and upload when there is room")
    if code in (errno.EACCES, errno.EPERM):
        return StoreError(f"store {where}: permission denied; make it writable for this user")
    if code == errno.EROFS:
        return StoreError(f"store {where} is read-only; choose a writable folder")
    if code == errno.ENOENT:
        return StoreError(f"store {where} does not exist (is the drive or volume mounted?)")
    return StoreError(f"store {where}: {exc.strerror or exc}")
