"""Every error answers JSON: ``{"error": <kind>, "detail": <message>, "body": "", "errors": <text>}``,
the keys A1111's API uses. Bad input is 4xx; 5xx means a device failure or a bug."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sdcloud.api.security import BodyTooLarge
from sdcloud.diskspace import disk_full, is_disk_full
from sdcloud.errors import SdcloudError, redact_paths

log = logging.getLogger(__name__)

_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Cancelled",
    413: "PayloadTooLarge",
    422: "Unsupported",
    500: "GenerationFailed",
    503: "Busy",
    507: "DiskFull",
}


def error_body(kind: str, detail: Any, errors: str | None = None) -> dict[str, Any]:
    return {
        "error": kind,
        "detail": detail,
        "body": "",
        "errors": errors if errors is not None else str(detail),
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact_paths(text.splitlines()[0][:300]) if text else "see the server log"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SdcloudError)
    async def sdcloud_error(_request: Request, exc: SdcloudError) -> JSONResponse:
        kind = (
            _NAMES.get(exc.status, type(exc).__name__)
            if type(exc).__name__ == "JobError"
            else type(exc).__name__
        )
        return JSONResponse(error_body(kind, exc.message), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(str(x) for x in d['loc'])}: {d['msg']}" for d in details[:5])
        return JSONResponse(error_body("RequestValidationError", details, summary), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, BodyTooLarge):
            return JSONResponse(error_body("PayloadTooLarge", "request body is too large"), status_code=413)
        kind = _NAMES.get(exc.status_code, "HTTPException")
        return JSONResponse(
            error_body(kind, exc.detail), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_disk_full(exc):
            log.error("disk full while answering %s: %s", request.url.path, exc)
            full = disk_full(request.app.state.services.settings.data_dir)
            return JSONResponse(error_body("DiskFull", full.message), status_code=full.status)
        if isinstance(exc, UnicodeEncodeError):
            return JSONResponse(
                error_body("BadRequest", "the request holds text that is not valid Unicode (a lone surrogate)"),
                status_code=400,
            )
        if isinstance(exc, OverflowError):
            # a client number too large for a float or an int (1e400 is infinity in JSON) that a
            # check missed: the client's error, not the server's
            log.warning("a number in the request to %s overflowed", request.url.path, exc_info=exc)
            return JSONResponse(
                error_body("BadRequest", "a number in the request is too large (1e400 is infinity); "
                           "send a finite number in the documented range"),
                status_code=400,
            )
        log.exception("unexpected error")
        # the message stays in the log: library errors name files and folders of this server
        return JSONResponse(
            error_body(type(exc).__name__, f"internal error: {type(exc).__name__}: {_first_line(exc)}"),
            status_code=500,
        )
