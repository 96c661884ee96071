"""``create_app``: one FastAPI app with the A1111 API (``/sdapi/v1``), ours (``/api``), the
OpenAPI docs (``/docs``) and the Gradio UI (``/``), all behind the same auth and limits."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from sdcloud import __version__
from sdcloud.api import (
    routes_batch,
    routes_ckpt,
    routes_controlnet,
    routes_extras,
    routes_history,
    routes_jobs,
    routes_sdapi,
    routes_server,
    routes_train,
    routes_webhooks,
)
from sdcloud.api.errors import install_error_handlers
from sdcloud.api.heavy import HeavyPool
from sdcloud.api.security import (
    ASGIApp,
    AuthMiddleware,
    BodyLimitMiddleware,
    Receive,
    Scope,
    Send,
    check_exposure,
)
from sdcloud.api.services import Services
from sdcloud.api.ui_guard import UIFileURLGuard
from sdcloud.settings import Settings
from sdcloud.startup import StartupTimeline


class ProcessTimeMiddleware:
    """``X-Process-Time`` on every answer, as A1111 sends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()

        async def timed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-process-time", f"{time.perf_counter() - start:.4f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)


def create_app(
    settings: Settings, services: Services | None = None, *, ui: bool = True, public_url: bool = False,
    startup: StartupTimeline | None = None,
) -> FastAPI:
    """The server app. It starts the services (model load, job worker) on start-up and stops
    them on shutdown. Refuses to build an exposed server without auth."""
    check_exposure(settings, public_url=public_url)
    if services is None:
        from sdcloud.runtime import Runtime

        services = Services(Runtime(settings, startup=startup))

    heavy = HeavyPool(settings.limits.heavy_workers, settings.limits.heavy_queue)
    long = HeavyPool(settings.limits.long_workers, settings.limits.long_queue, setting="long",
                     what="long requests (Extras, interrogate, ControlNet detect, checkpoint tools, dataset uploads)")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        services.start()
        try:
            yield
        finally:
            services.stop()
            heavy.shutdown()
            long.shutdown()

    app = FastAPI(
        title="sdcloud",
        version=__version__,
        lifespan=lifespan,
        description="AUTOMATIC1111-compatible API (/sdapi/v1) and sdcloud's queue API (/api).",
    )
    app.state.services = services
    app.state.heavy = heavy
    app.state.long = long
    install_error_handlers(app)
    app.include_router(routes_sdapi.router, prefix="/sdapi/v1")
    app.include_router(routes_extras.router, prefix="/sdapi/v1")
    app.include_router(routes_controlnet.router, prefix="/controlnet")
    app.include_router(routes_jobs.router, prefix="/api")
    app.include_router(routes_batch.router, prefix="/api")
    app.include_router(routes_server.router, prefix="/api")
    app.include_router(routes_history.router, prefix="/api")
    app.include_router(routes_webhooks.router, prefix="/api")
    app.include_router(routes_ckpt.router, prefix="/api/ckpt")
    app.include_router(routes_train.router, prefix="/api")
    if ui:
        from sdcloud.ui import mount_ui

        mount_ui(app, services, path="/")
    if ui:
        app.add_middleware(UIFileURLGuard, settings=settings)
    app.add_middleware(ProcessTimeMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    if settings.auth or settings.api_token:
        app.add_middleware(AuthMiddleware, credentials=settings.auth, token=settings.api_token)
    return app
