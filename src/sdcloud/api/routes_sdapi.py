"""``/sdapi/v1/*``: AUTOMATIC1111 1.10's API, same paths, field names and answers."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Request
from starlette.concurrency import run_in_threadpool

from sdcloud.api.extras import html_info, upscale
from sdcloud.api.image_input import decode_image
from sdcloud.api.models import (
    ExtrasBatchRequest,
    ExtrasBatchResponse,
    ExtrasSingleRequest,
    ExtrasSingleResponse,
    GenerationResponse,
    Img2ImgRequest,
    PngInfoRequest,
    PngInfoResponse,
    Txt2ImgRequest,
)
from sdcloud.api.services import Services
from sdcloud.image_files import encode_image
from sdcloud.jobs import Job, JobQueue

router = APIRouter(tags=["A1111 API"])


def _services(request: Request) -> Services:
    return request.app.state.services


async def wait_finished(queue: JobQueue, job_id: str) -> Job:
    """Wait for a job without holding a worker thread (many clients may be waiting)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Job] = loop.create_future()

    def finished(job: Job) -> None:
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(job))

    queue.add_done_callback(job_id, finished)
    return await done


async def _generate(request: Request, req: Txt2ImgRequest | Img2ImgRequest) -> dict[str, Any]:
    services = _services(request)
    job = await run_in_threadpool(services.submit_request, req)
    job = await wait_finished(services.queue, job.id)
    return await run_in_threadpool(services.generation_response, job)


@router.post("/txt2img", response_model=GenerationResponse)
async def txt2img(request: Request, req: Txt2ImgRequest) -> dict[str, Any]:
    return await _generate(request, req)


@router.post("/img2img", response_model=GenerationResponse)
async def img2img(request: Request, req: Img2ImgRequest) -> dict[str, Any]:
    return await _generate(request, req)


@router.post("/png-info", response_model=PngInfoResponse)
def png_info(request: Request, req: PngInfoRequest) -> dict[str, Any]:
    return _services(request).png_info(req.image)


@router.post("/extra-single-image", response_model=ExtrasSingleResponse)
def extra_single_image(request: Request, req: ExtrasSingleRequest) -> dict[str, Any]:
    settings = _services(request).settings
    img = upscale(decode_image(req.image, settings, "image"), req, settings)
    return {"html_info": html_info(req), "image": encode_image(img)}


@router.post("/extra-batch-images", response_model=ExtrasBatchResponse)
def extra_batch_images(request: Request, req: ExtrasBatchRequest) -> dict[str, Any]:
    settings = _services(request).settings
    images = [
        upscale(decode_image(f.data, settings, f"image '{f.name or i}'"), req, settings)
        for i, f in enumerate(req.imageList)
    ]
    return {"html_info": html_info(req), "images": [encode_image(img) for img in images]}


@router.get("/progress")
def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
    return _services(request).progress(skip_current_image)


@router.post("/interrupt")
def interrupt(request: Request) -> dict[str, Any]:
    _services(request).interrupt()
    return {}


@router.post("/skip")
def skip(request: Request) -> None:
    _services(request).skip()


@router.get("/options")
def get_options(request: Request) -> dict[str, Any]:
    return _services(request).options_get()


@router.post("/options")
def set_options(request: Request, changes: dict[str, Any] = Body(...)) -> None:
    _services(request).options_set(changes)


@router.get("/cmd-flags")
def cmd_flags(request: Request) -> dict[str, Any]:
    return _services(request).cmd_flags()


@router.get("/samplers")
def samplers(request: Request) -> list[dict[str, Any]]:
    return _services(request).samplers()


@router.get("/schedulers")
def schedulers(request: Request) -> list[dict[str, Any]]:
    return _services(request).schedulers()


@router.get("/upscalers")
def upscalers(request: Request) -> list[dict[str, Any]]:
    return _services(request).upscalers()


@router.get("/latent-upscale-modes")
def latent_upscale_modes(request: Request) -> list[dict[str, Any]]:
    return _services(request).latent_upscale_modes()


@router.get("/sd-models")
def sd_models(request: Request) -> list[dict[str, Any]]:
    return _services(request).sd_models()


@router.get("/sd-vae")
def sd_vae(request: Request) -> list[dict[str, Any]]:
    return _services(request).sd_vae()


@router.get("/loras")
def loras(request: Request) -> list[dict[str, Any]]:
    return _services(request).loras()


@router.get("/embeddings")
def embeddings(request: Request) -> dict[str, Any]:
    return _services(request).embeddings()


@router.get("/hypernetworks")
def hypernetworks() -> list[dict[str, Any]]:
    return []


@router.get("/face-restorers")
def face_restorers() -> list[dict[str, Any]]:
    return []


@router.get("/realesrgan-models")
def realesrgan_models() -> list[dict[str, Any]]:
    return []


@router.get("/prompt-styles")
def prompt_styles(request: Request) -> list[dict[str, Any]]:
    return _services(request).prompt_styles()


@router.post("/refresh-checkpoints")
def refresh_checkpoints(request: Request) -> None:
    _services(request).refresh()


@router.post("/refresh-vae")
def refresh_vae(request: Request) -> None:
    _services(request).refresh()


@router.post("/refresh-loras")
def refresh_loras(request: Request) -> None:
    _services(request).refresh()


@router.post("/refresh-embeddings")
def refresh_embeddings(request: Request) -> None:
    _services(request).refresh()


@router.get("/memory")
def memory(request: Request) -> dict[str, Any]:
    return _services(request).memory()


@router.get("/scripts")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get("/script-info")
def script_info() -> list[dict[str, Any]]:
    return []


@router.post("/unload-checkpoint")
def unload_checkpoint(request: Request) -> dict[str, Any]:
    _services(request).unload_model()
    return {}


@router.post("/reload-checkpoint")
def reload_checkpoint(request: Request) -> dict[str, Any]:
    _services(request).reload_model()
    return {}
