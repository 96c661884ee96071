"""Who may call the server, and how much they may send.

- ``exposure_auth``: a server reachable beyond this machine (non-loopback bind or a public
  URL) never runs without auth: it gets a generated password unless ``--insecure``.
- ``AuthMiddleware``: HTTP Basic (like A1111's ``--api-auth``) or a bearer token, on every
  path: the UI at ``/``, ``/sdapi``, ``/api``, ``/docs``.
- ``BodyLimitMiddleware``: bodies over ``limits.max_body_bytes`` answer 413 before they are read.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from sdcloud.errors import BadRequest
from sdcloud.settings import Settings, check_auth_entry

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

GENERATED_USER = "sdcloud"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def has_auth(settings: Settings) -> bool:
    return bool(settings.auth or settings.api_token)


def exposure_auth(settings: Settings, *, public_url: bool = False) -> tuple[Settings, str | None]:
    """Settings safe to serve with, and the generated password if one had to be made.

    A loopback-only server may run without auth. Anything else needs ``auth`` or
    ``api_token``; without them a random password for user ``sdcloud`` is generated (the
    caller prints it once), unless ``insecure`` is set.
    """
    exposed = public_url or not is_loopback(settings.host)
    if not exposed or has_auth(settings) or settings.insecure:
        return settings, None
    password = secrets.token_urlsafe(12)
    return settings.replace(auth=(f"{GENERATED_USER}:{password}",)), password


def check_exposure(settings: Settings, *, public_url: bool = False) -> None:
    """Refuse to build an exposed server without auth (a second line behind ``exposure_auth``)."""
    exposed = public_url or not is_loopback(settings.host)
    if exposed and not has_auth(settings) and not settings.insecure:
        raise BadRequest(
            f"refusing to serve on {settings.host} without auth; pass --auth user:pass, "
            "--auth-file, --api-token, or --insecure to accept the risk"
        )


def read_auth_file(text: str) -> tuple[str, ...]:
    """``user:pass`` entries separated by commas or new lines (A1111's --gradio-auth-path form)."""
    entries = tuple(e.strip() for line in text.splitlines() for e in line.split(",") if e.strip())
    for entry in entries:
        check_auth_entry(entry, "--auth-file")
    return entries


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class AuthMiddleware:
    """Every request needs valid HTTP Basic credentials or ``Authorization: Bearer <token>``.
    HTTP Basic with the token as password (any user name) works too, for A1111 clients that
    only know user/password."""

    def __init__(self, app: ASGIApp, credentials: tuple[str, ...], token: str | None) -> None:
        self.app = app
        self.pairs = [tuple(c.split(":", 1)) for c in credentials]
        self.token = token

    def _ok(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token:
            return secrets.compare_digest(value.strip().encode(), self.token.encode())
        if scheme != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            return False
        if not password:  # an empty password is never a login, whatever was configured
            return False
        ok = False
        for u, p in self.pairs:  # no early exit: the time taken does not depend on which entry matched
            ok |= secrets.compare_digest(user.encode(), u.encode()) & secrets.compare_digest(
                password.encode(), p.encode()
            )
        if self.token:
            ok |= secrets.compare_digest(password.encode(), self.token.encode())
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = ""
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        if self._ok(header):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _send_json(
            send,
            401,
            {
                "error": "Unauthorized",
                "detail": "this server needs a user and password (HTTP Basic) or a token",
            },
            [(b"www-authenticate", b'Basic realm="sdcloud"')],
        )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    return await self._refuse(send)
        received = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await _send_json(
            send,
            413,
            {
                "error": "PayloadTooLarge",
                "detail": f"request body is larger than {self.max_bytes} bytes "
                "(setting limits.max_body_bytes)",
            },
            [],
        )


class BodyTooLarge(Exception):
    """Raised while a body streams in past the limit (FastAPI wraps it in its 400; the error
    handler turns that back into 413)."""
