"""``/sdapi/v1`` routes of the Extras tab's world: postprocessing (upscale, face restoration)
and the upscaler / face-restorer listings (A1111 1.10's paths and fields)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from sdcloud.api.extras import ExtrasService, html_info
from sdcloud.api.heavy import HeavyPool
from sdcloud.api.image_input import decode_image
from sdcloud.api.models import ExtrasBatchRequest, ExtrasBatchResponse, ExtrasSingleRequest, ExtrasSingleResponse
from sdcloud.errors import NotFound
from sdcloud.image_files import encode_image

router = APIRouter(tags=["A1111 API"])


class InterrogateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    image: str = ""
    model: str = "clip"


def _extras(request: Request) -> ExtrasService:
    return request.app.state.services.extras


def _long(request: Request) -> HeavyPool:
    """The bounded lane for long work (api/heavy.py): upscales and interrogation can take
    minutes, so they neither starve the cheap routes nor make submits and PNG Info wait."""
    return request.app.state.long


def _single(extras: ExtrasService, req: ExtrasSingleRequest) -> dict[str, Any]:
    extras.check(req)
    img = extras.run(decode_image(req.image, extras.settings, "image"), req)
    return {"html_info": html_info(req), "image": encode_image(img)}


def _batch(extras: ExtrasService, req: ExtrasBatchRequest) -> dict[str, Any]:
    extras.check(req)
    sources = [decode_image(f.data, extras.settings, f"image '{f.name or i}'") for i, f in enumerate(req.imageList)]
    images = [extras.run(img, req) for img in sources]
    return {"html_info": html_info(req), "images": [encode_image(img) for img in images]}


@router.post("/extra-single-image", response_model=ExtrasSingleResponse)
async def extra_single_image(request: Request, req: ExtrasSingleRequest) -> dict[str, Any]:
    return await _long(request).run(_single, _extras(request), req)


@router.post("/extra-batch-images", response_model=ExtrasBatchResponse)
async def extra_batch_images(request: Request, req: ExtrasBatchRequest) -> dict[str, Any]:
    return await _long(request).run(_batch, _extras(request), req)


def _interrogate(services: Any, body: InterrogateRequest) -> dict[str, Any]:
    if not body.image:
        raise NotFound("Image not found")
    image = decode_image(body.image, services.settings, "image")
    return {"caption": services.interrogator.caption(image, body.model, clip_options(services))}


def clip_options(services: Any) -> Any:
    """The ``interrogate_clip_*`` options (A1111's names) for the CLIP interrogator."""
    from sdcloud.clip_interrogate import ClipOptions

    opts = services.options_get()
    try:
        return ClipOptions(num_beams=int(opts.get("interrogate_clip_num_beams", 1)),
                           min_length=int(opts.get("interrogate_clip_min_length", 24)),
                           max_length=int(opts.get("interrogate_clip_max_length", 48)),
                           dict_limit=int(float(opts.get("interrogate_clip_dict_limit", 1500))),
                           skip_categories=tuple(opts.get("interrogate_clip_skip_categories") or ()))
    except (TypeError, ValueError, OverflowError):  # OverflowError: an option set to 1e400
        return ClipOptions()


@router.post("/interrogate")
async def interrogate(request: Request, body: InterrogateRequest) -> dict[str, Any]:
    """A1111's interrogate: ``{caption}`` from a WD14-style tagger (``model`` deepdanbooru or a tagger
    name) or the BLIP + CLIP interrogator (``model`` clip, A1111's default)."""
    return await _long(request).run(_interrogate, request.app.state.services, body)


@router.get("/upscalers")
def upscalers(request: Request) -> list[dict[str, Any]]:
    return _extras(request).upscaler_list()


@router.get("/face-restorers")
def face_restorers(request: Request) -> list[dict[str, Any]]:
    return _extras(request).face_restorer_list()


@router.get("/realesrgan-models")
def realesrgan_models(request: Request) -> list[dict[str, Any]]:
    return [{"name": u["name"], "path": u["model_path"], "scale": u["scale"]}
            for u in _extras(request).upscaler_list() if u["model_name"] == "RealESRGAN"]
