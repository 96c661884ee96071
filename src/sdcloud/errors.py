"""Typed errors shared by every layer.

Each error carries a message a user can act on. The CLI prints it on one line and exits
non-zero; the API maps ``status`` to the HTTP code and answers JSON. No layer lets a raw
traceback reach the user.
"""

from __future__ import annotations

import re


class SdcloudError(Exception):
    """Base class: ``str(err)`` is the user-facing message, ``status`` the HTTP code."""

    status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(SdcloudError):
    """Input that is malformed or out of the allowed range."""


class NotFound(SdcloudError):
    """A named model, sampler, LoRA, file or job that does not exist."""

    status = 404


class Unsupported(SdcloudError):
    """A file or feature we recognise but cannot handle (SD3, Flux, LyCORIS, ...)."""

    status = 422


class UnsafeFile(SdcloudError):
    """A pickle that needs more than plain tensors to load; it is never executed."""

    status = 422


class CorruptFile(SdcloudError):
    """A truncated or inconsistent file."""

    status = 422


class Cancelled(SdcloudError):
    """Work stopped at the user's request."""

    status = 409


class StoreError(SdcloudError):
    """A persistent store that cannot be reached or written."""

    status = 503


class TooLarge(SdcloudError):
    """Input over a size limit (an upload that unpacks to more than the setting allows)."""

    status = 413


class GenerationFailed(SdcloudError):
    """Generation failed on the device (e.g. out of GPU memory); the server keeps serving."""

    status = 500


class Busy(SdcloudError):
    """The server has as much of this kind of work in hand as it takes; retry shortly."""

    status = 503


class DiskFull(SdcloudError):
    """No space left where the data dir is; the server keeps running and retries work later."""

    status = 507


_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.])(?:/|[A-Za-z]:\\)[^\s'\"]*")


def redact_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last part: library messages name files of
    the server, which a client must not learn (the full text stays in the server log)."""

    def last_part(m: re.Match[str]) -> str:
        path = m.group(0).rstrip("/\\")
        return path.replace("\\", "/").rsplit("/", 1)[-1] or "/"

    return _ABSOLUTE_PATH.sub(last_part, text)
