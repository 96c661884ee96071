"""``/api/storage`` and ``/api/session``: where the images go and what this session costs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["sdcloud API"])


@router.get("/storage")
def storage(request: Request) -> dict[str, Any]:
    """The persistent store and its upload queue: ``store`` (null when none is set), ``pending``,
    ``uploaded``, ``healthy``, ``last_error``, ``warning`` (store unavailable, images kept on local
    disk), ``warnings`` (start-up advice such as outputs on ephemeral disk) and ``restore`` (the
    session pulled from the store at start)."""
    return request.app.state.services.persistence.status()


@router.get("/session")
def session(request: Request) -> dict[str, Any]:
    """The cost meter: ``elapsed_s``, ``spend`` (null when the price is unknown), ``price_per_hour``,
    ``currency``, ``price_source``, the next ``limit`` (budget, --max-hours or the platform's) with
    ``seconds_left``, ``state`` (running, warned, stopping, stopped) and ``warning``."""
    return request.app.state.services.session.snapshot()
