"""Standard Webhooks signatures (https://www.standardwebhooks.com/): the same scheme Svix,
Stripe-style receivers and the ``standardwebhooks`` libraries verify.

``webhook-signature: v1,<base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))>``, where the key
is the base64 part of a ``whsec_...`` secret (or the UTF-8 bytes of any other secret string).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

TOLERANCE_S = 300  # receivers refuse messages older (or newer) than five minutes


class SignatureError(ValueError):
    """A webhook whose headers or signature do not check out."""


def new_secret() -> str:
    """A fresh ``whsec_`` secret (24 random bytes, base64)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except ValueError:
            pass
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def headers_for(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
        "content-type": "application/json",
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
           tolerance: int = TOLERANCE_S) -> None:
    """Check a received webhook as a receiver should; raise ``SignatureError`` if it fails."""
    low = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, ts_text, sigs = low["webhook-id"], low["webhook-timestamp"], low["webhook-signature"]
        ts = int(ts_text)
    except (KeyError, ValueError):
        raise SignatureError("missing or malformed webhook-id / webhook-timestamp / webhook-signature") from None
    if abs((time.time() if now is None else now) - ts) > tolerance:
        raise SignatureError("webhook-timestamp is outside the tolerance window")
    expected = sign(secret, msg_id, ts, body)
    if not any(hmac.compare_digest(expected, s) for s in sigs.split()):
        raise SignatureError("no matching v1 signature")
