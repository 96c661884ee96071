"""``/api/img2img/batch``: A1111's img2img Batch over folders on the server's disk
(see :mod:`sdcloud.api.img2img_batch`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from sdcloud.api.models import Img2ImgRequest

router = APIRouter(tags=["sdcloud API"])


class Img2ImgBatchRequest(Img2ImgRequest):
    """An img2img body (``init_images`` and ``mask`` come from the folders) plus the folders."""

    input_dir: str = Field(description="folder of input images (relative: from the data folder)")
    output_dir: str = Field(description="folder the results are written to, named after the inputs")
    inpaint_mask_dir: str = Field("", description="optional: masks named like the inputs (or one mask for all)")
    scale_by: float | None = Field(None, gt=0, le=8, description="Resize by: each image's size times this")


def _runner(request: Request) -> Any:
    return request.app.state.services.batches


@router.post("/img2img/batch", status_code=202)
def start_batch(request: Request, req: Img2ImgBatchRequest) -> dict[str, Any]:
    """Start a batch; answers at once. Poll ``GET /api/img2img/batch/{id}``."""
    body = req.model_dump(exclude_unset=True, exclude={"input_dir", "output_dir", "inpaint_mask_dir", "scale_by"})
    run = _runner(request).start(body, req.input_dir, req.output_dir, req.inpaint_mask_dir, req.scale_by)
    return run.view()


@router.get("/img2img/batch/{batch_id}")
def batch_progress(request: Request, batch_id: str) -> dict[str, Any]:
    """State, images finished of total, the running job's step, files written, errors."""
    return _runner(request).view(batch_id)


@router.post("/img2img/batch/{batch_id}/cancel")
def cancel_batch(request: Request, batch_id: str) -> dict[str, Any]:
    """Stop the image being made and start no more."""
    return _runner(request).stop(batch_id).view()
