"""``/api/train*``: LoRA training as a queued job. ``POST /api/train`` answers 202 with the job;
``GET /api/train/{id}`` adds the loss curve and sample URLs; cancel with
``POST /api/queue/{id}/cancel`` (the state is saved first; resubmit with ``resume: true``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import FileResponse

from sdcloud.api.routes_jobs import job_view
from sdcloud.api.training import TrainingService, TrainRequest

router = APIRouter(tags=["training"])


def _svc(request: Request) -> TrainingService:
    return request.app.state.services.training


@router.post("/train", status_code=202)
async def submit(request: Request, req: TrainRequest) -> dict[str, Any]:
    """Queue a LoRA training (options, dataset and model are checked now: 4xx on bad input)."""
    return job_view(await request.app.state.long.run(_svc(request).submit, req))  # scans the dataset


@router.get("/train/presets")
def presets(request: Request) -> dict[str, Any]:
    """Memory presets (T4 16 GB SDXL, 8 GB, 6 GB) and their options."""
    return _svc(request).presets()


@router.get("/train/datasets")
def datasets(request: Request) -> dict[str, Any]:
    return {"datasets": _svc(request).datasets()}


@router.post("/train/datasets/{name}")
async def upload(request: Request, name: str, files: list[UploadFile], folder: str = "") -> dict[str, Any]:
    """Upload images + .txt/.caption files (or a .zip) into a dataset; ``folder`` e.g. ``10_sks dog``."""
    items = [(f.filename or "", await f.read()) for f in files]
    return await request.app.state.long.run(_svc(request).upload, name, items, folder)  # bounded: api/heavy.py


@router.get("/train/datasets/{name}/check")
async def check(request: Request, name: str, resolution: int = 512) -> dict[str, Any]:
    """``sdcloud train check``: images, missing captions, buckets, unreadable/too-small images."""
    return await request.app.state.long.run(_svc(request).check, name, resolution)  # reads every image


@router.get("/train/{job_id}")
def status(request: Request, job_id: str) -> dict[str, Any]:
    """The job with ``phase``, ``losses`` ([step, loss] pairs), ``it_s`` and ``samples``."""
    return _svc(request).status(job_id)


@router.get("/train/{job_id}/samples/{index}", response_class=FileResponse)
def sample(request: Request, job_id: str, index: int) -> FileResponse:
    return FileResponse(_svc(request).sample_path(job_id, index), media_type="image/png")
