"""Gradio event payloads that name a file by URL (``{"path": "http://...", "meta": {"_type":
"gradio.FileData"}}``) would make Gradio download it. Here such a payload is refused unless
``--allow-url-images`` is on; when it is on, the file is fetched by our own downloader (address
checked on the connected socket, whole-download deadline, size cap) into Gradio's upload folder
and the payload names that local copy instead."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from sdcloud.api.security import ASGIApp, Receive, Scope, Send, _send_json
from sdcloud.errors import BadRequest
from sdcloud.settings import Settings

_API_PREFIXES = ("/sdapi/", "/api/", "/docs", "/openapi.json", "/redoc")
_MAX_DEPTH = 64


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://", "//"))


def url_files(data: Any) -> list[dict[str, Any]]:
    """The file payloads in ``data`` whose ``path`` is a URL (walked iteratively, bounded depth)."""
    found: list[dict[str, Any]] = []
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            continue
        if isinstance(item, dict):
            if "path" in item and _is_url(item.get("path")):
                found.append(item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return found


def _fetch_into_uploads(item: dict[str, Any], settings: Settings) -> None:
    from sdcloud.api.image_input import fetch_url_image

    url = str(item["path"]).strip()
    data = fetch_url_image(url, settings, "file")
    from gradio.utils import get_upload_folder  # only for a fetched file: the UI is loaded then


    name = Path(url.split("?", 1)[0].rstrip("/")).name or "file"
    name = "".join(c for c in name if c.isalnum() or c in "._-")[:100] or "file"
    folder = Path(get_upload_folder()) / secrets.token_hex(16)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    item["path"] = str(folder / name)
    item["url"] = None
    item["size"] = len(data)


class UIFileURLGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or str(scope.get("path", "")).startswith(_API_PREFIXES)
        ):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", ()))
        if b"json" not in headers.get(b"content-type", b"").lower():
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            data = json.loads(body) if len(body) < 65536 else await run_in_threadpool(json.loads, body)
        except (ValueError, RecursionError):
            data = None
        files = url_files(data) if data is not None else []
        if files:
            try:
                if not self.settings.allow_url_images:
                    raise BadRequest(
                        "a file in this request is a URL; URL files are off (start the server with "
                        "--allow-url-images, or upload the file)"
                    )
                for item in files:
                    await run_in_threadpool(_fetch_into_uploads, item, self.settings)
            except BadRequest as err:
                detail = err.message
                return await _send_json(
                    send, 400, {"error": "BadRequest", "detail": detail, "body": "", "errors": detail}, []
                )
            body = json.dumps(data).encode()
            scope = {
                **scope,
                "headers": [(k, v) for k, v in scope.get("headers", ()) if k != b"content-length"]
                + [(b"content-length", str(len(body)).encode())],
            }
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
