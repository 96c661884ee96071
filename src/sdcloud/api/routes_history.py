"""``/api/history``: browse and search past outputs page by page; ``/api/history/file``: one file
of the outputs folder (never anything outside it). Behind the same auth as every route."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from sdcloud.history import DEFAULT_PER_PAGE, MAX_PER_PAGE, History

router = APIRouter(tags=["sdcloud API"])


def _history(request: Request) -> History:
    return request.app.state.services.history


def file_url(path: str) -> str:
    return f"/api/history/file?path={quote(path, safe='/')}"


@router.get("/history")
def history(request: Request, kind: str = "txt2img", date: str | None = None, q: str = "",
            page: int = Query(0, ge=0, le=100_000),
            per_page: int = Query(DEFAULT_PER_PAGE, ge=1, le=MAX_PER_PAGE)) -> dict[str, Any]:
    """One page of past outputs, newest first. ``kind``: txt2img, img2img, extras, txt2img-grids,
    img2img-grids or save; ``date``: a ``YYYY-MM-DD`` folder (default: the newest) or ``all``;
    ``q``: only images whose infotext holds every word (case-insensitive). Each item has its
    ``path`` (relative to the outputs folder), ``url``, ``infotext``, ``size`` and ``mtime``.
    A search reads at most a few thousand files per request: ``complete`` is false when it
    stopped early (``total`` is then null)."""
    result = _history(request).page(kind, date, q, page, per_page).to_dict()
    for item in result["items"]:
        item["url"] = file_url(item["path"])
    return result


@router.get("/history/file", response_class=FileResponse)
def history_file(request: Request, path: str) -> FileResponse:
    """A file under the outputs folder by its relative ``path`` (as ``/api/history`` lists it).
    Absolute paths, ``..``, and links that lead outside are refused with 400."""
    return FileResponse(_history(request).file(path))
