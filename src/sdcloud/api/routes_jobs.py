"""``/api/*``: sdcloud's own routes: submit without waiting, watch the queue, cancel, fetch images."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from sdcloud.api.models import Img2ImgRequest, Txt2ImgRequest
from sdcloud.api.services import Services
from sdcloud.errors import NotFound
from sdcloud.jobs import Job
from sdcloud.jobs.generation import GENERATION_KINDS, image_keys

router = APIRouter(tags=["sdcloud API"])


def _services(request: Request) -> Services:
    return request.app.state.services


def job_view(job: Job) -> dict[str, Any]:
    """A job as JSON; its images as URLs under this API, never as server paths."""
    out = job.to_dict()
    if job.result is not None and job.kind in GENERATION_KINDS:  # other kinds: result as is
        keys = image_keys(job.result)
        out["result"] = {
            "images": [f"/api/jobs/{job.id}/images/{i}" for i in range(len(keys))],
            "info": job.result.get("info"),
            "interrupted": job.result.get("interrupted", False),
        }
        if job.result.get("keys"):  # ran on a fleet worker: where its images are in the store
            out["result"]["keys"] = job.result["keys"]
            out["result"]["worker"] = job.result.get("worker")
    return out


@router.post("/txt2img", status_code=202)
async def submit_txt2img(request: Request, req: Txt2ImgRequest) -> dict[str, Any]:
    """Queue a txt2img job (A1111 fields) and answer at once with the job; poll ``/api/jobs/{id}``."""
    return job_view(await request.app.state.heavy.run(_services(request).submit_request, req))


@router.post("/img2img", status_code=202)
async def submit_img2img(request: Request, req: Img2ImgRequest) -> dict[str, Any]:
    """Queue an img2img/inpaint job (A1111 fields) and answer at once with the job."""
    return job_view(await request.app.state.heavy.run(_services(request).submit_request, req))


@router.get("/queue")
def queue(request: Request, finished: int = 20) -> dict[str, Any]:
    """Running and queued jobs in run order, then the ``finished`` most recent finished ones."""
    jobs = _services(request).jobs(max(0, min(finished, 500)))
    return {"jobs": [job_view(j) for j in jobs]}


@router.get("/queue/{job_id}")
def queue_job(request: Request, job_id: str) -> dict[str, Any]:
    return job_view(_services(request).job(job_id))


@router.post("/queue/{job_id}/cancel")
def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    """Drop a queued job, or stop a running one between steps."""
    return job_view(_services(request).cancel(job_id))


@router.delete("/queue/{job_id}")
def delete_job(request: Request, job_id: str) -> dict[str, Any]:
    return job_view(_services(request).cancel(job_id))


@router.get("/workers")
def workers(request: Request) -> dict[str, Any]:
    """Workers connected to the broker (``serve --broker``): GPU, VRAM, models held (affinity
    keys), current job, jobs and images done, cost and images per hour. Empty without a broker."""
    return {"workers": _services(request).workers()}


@router.get("/jobs/{job_id}")
def get_job(request: Request, job_id: str) -> dict[str, Any]:
    return job_view(_services(request).job(job_id))


@router.get("/jobs/{job_id}/images/{index}", response_class=FileResponse)
def job_image(request: Request, job_id: str, index: int) -> FileResponse:
    """An image of a finished job. Only files under the outputs folder or the job's own folder
    are ever served."""
    services = _services(request)
    job = services.job(job_id)
    keys = image_keys(job.result)
    if not 0 <= index < len(keys):
        raise NotFound(f"job '{job_id}' has no image {index}")
    try:
        return FileResponse(services.runtime.result_file(job, keys[index]))
    except NotFound:
        raise NotFound(f"image {index} of job '{job_id}' is no longer available") from None
