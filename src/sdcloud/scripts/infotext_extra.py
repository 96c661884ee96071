"""Adding A1111's script keys (``Script: X/Y/Z plot, X Type: Steps, ...``) to an infotext."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sdcloud.infotext import quote


def append_params(infotext: str, params: Sequence[Sequence[Any]]) -> str:
    """``infotext`` with ``Key: value`` pairs added to the end of its parameters line (values
    quoted as A1111 quotes them)."""
    extra = ", ".join(f"{k}: {quote(v)}" for k, v in params if v not in (None, ""))
    if not extra:
        return infotext
    if not infotext:
        return extra
    return f"{infotext}, {extra}"
