"""Numbers a client sent, converted without surprises: ``1e400`` parses as infinity in JSON and
in ``float()``, and ``int(inf)`` raises ``OverflowError`` (a 500 if nothing catches it). These
turn every such value into a ``BadRequest`` that names the field."""

from __future__ import annotations

import math
from typing import Any

from sdcloud.errors import BadRequest


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def finite_float(value: Any, what: str) -> float:
    """``value`` as a finite float; 400 for text that is not a number, infinity, NaN or a number
    too large for a float (``1e400``, a 400-digit integer)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"{what} must be a number, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise BadRequest(f"{what} must be a finite number, got {_shown(value)}")
    return number


def whole_number(value: Any, what: str) -> int:
    """``value`` as an int (``512.0`` and ``"512"`` too); 400 where :func:`finite_float` is."""
    if isinstance(value, int):
        return int(value)
    return int(finite_float(value, what))


def is_finite_number(text: Any) -> bool:
    """Whether ``text`` reads as a finite number (``"1e400"`` and ``"nan"`` do not)."""
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError, OverflowError):
        return False
