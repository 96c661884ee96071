"""``/api/webhooks``: the delivery log of job webhooks, and replay of one delivery."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["sdcloud API"])


@router.get("/webhooks")
def deliveries(request: Request, limit: int = 100, job_id: str | None = None,
               state: str | None = None) -> dict[str, Any]:
    """Newest first: each event sent (or being retried), its attempts and last outcome."""
    sender = request.app.state.services.webhooks.sender
    rows = sender.list(max(1, min(limit, 1000)), job_id=job_id, state=state)
    return {"deliveries": [d.to_dict() for d in rows]}


@router.get("/webhooks/{delivery_id}")
def delivery(request: Request, delivery_id: str) -> dict[str, Any]:
    """One delivery with the exact body that was signed."""
    d = request.app.state.services.webhooks.sender.get(delivery_id)
    return {**d.to_dict(), "body": d.body}


@router.post("/webhooks/{delivery_id}/replay")
def replay(request: Request, delivery_id: str) -> dict[str, Any]:
    """Send a logged event again: same webhook-id (receivers de-duplicate on it), new signature."""
    return request.app.state.services.webhooks.sender.replay(delivery_id).to_dict()
