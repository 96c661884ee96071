"""``/api/ckpt/*``: checkpoint tools. ``inspect`` and ``hash`` answer at once; ``merge``,
``convert``, ``prune`` and ``lora-bake`` answer 202 with a job to poll at ``/api/jobs/{id}``
(its ``result.output`` is the new file in models/Stable-diffusion once it is done)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from sdcloud.api.ckpt_tools import CheckpointTools, HashRequest, InspectRequest
from sdcloud.api.routes_jobs import job_view
from sdcloud.jobs.ckpt import ConvertRequest, LoraBakeRequest, MergeRequest, PruneRequest

router = APIRouter(tags=["checkpoint tools"])


def _tools(request: Request) -> CheckpointTools:
    return request.app.state.services.ckpt


@router.post("/inspect")
async def inspect(request: Request, req: InspectRequest) -> dict[str, Any]:
    """Architecture (with the evidence), dtypes, parameters, components, EMA/VAE, metadata."""
    return await request.app.state.long.run(_tools(request).inspect, req)  # bounded: api/heavy.py


@router.post("/hash")
async def hash_file(request: Request, req: HashRequest) -> dict[str, Any]:
    """SHA-256, A1111 short hash, AutoV1 and the LoRA/addnet hash (cached after the first read)."""
    return await request.app.state.long.run(_tools(request).hash, req)  # a first read can take minutes


@router.post("/merge", status_code=202)
async def merge(request: Request, req: MergeRequest) -> dict[str, Any]:
    """Queue a streaming merge of two or three checkpoints."""
    return job_view(await run_in_threadpool(_tools(request).submit, req))


@router.post("/convert", status_code=202)
async def convert(request: Request, req: ConvertRequest) -> dict[str, Any]:
    """Queue a .ckpt/.pt/.bin -> .safetensors conversion (safe loading only)."""
    return job_view(await run_in_threadpool(_tools(request).submit, req))


@router.post("/prune", status_code=202)
async def prune(request: Request, req: PruneRequest) -> dict[str, Any]:
    """Queue a prune: drop or use EMA, drop trainer state, cast, fix position_ids."""
    return job_view(await run_in_threadpool(_tools(request).submit, req))


@router.post("/lora-bake", status_code=202)
async def lora_bake(request: Request, req: LoraBakeRequest) -> dict[str, Any]:
    """Queue baking kohya LoRAs (with ratios) into a checkpoint."""
    return job_view(await run_in_threadpool(_tools(request).submit, req))
