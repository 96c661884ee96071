"""sd-webui-controlnet's own routes (``/controlnet/...``), so its API clients work unchanged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request

from sdcloud.api.image_input import decode_image
from sdcloud.controlnet import models, preprocessors
from sdcloud.errors import BadRequest, Unsupported
from sdcloud.image_files import encode_image

router = APIRouter(tags=["ControlNet (sd-webui-controlnet API)"])
API_VERSION = 2


def _folder(request: Request) -> Any:
    return request.app.state.services.settings.models_root / "ControlNet"


@router.get("/version")
def version() -> dict[str, int]:
    return {"version": API_VERSION}


@router.get("/model_list")
def model_list(request: Request, update: bool = True) -> dict[str, list[str]]:
    return {"model_list": [models.name_of(p) for p in models.scan(_folder(request))]}


@router.get("/module_list")
def module_list(request: Request, alias_names: bool = False) -> dict[str, Any]:
    names = preprocessors.module_names(_folder(request) / "annotators")
    detail = {}
    for name in names:
        a, b = preprocessors.WEIGHT_FREE.get(name, (-1, -1))
        sliders: list[dict[str, Any]] = [{"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048}]
        if a != -1:
            sliders.append({"name": "Threshold A", "value": a})
        if b != -1:
            sliders.append({"name": "Threshold B", "value": b})
        detail[name] = {"model_free": name in preprocessors.WEIGHT_FREE, "sliders": sliders}
    return {"module_list": names, "module_detail": detail}


@router.get("/settings")
def cn_settings() -> dict[str, int]:
    return {"control_net_unit_count": 3}


MAX_DETECT_IMAGES = 16  # per /controlnet/detect request (the extension sets none; each is a preprocessor run)


@router.post("/detect")
async def detect(request: Request, controlnet_module: str = Body("none"), controlnet_input_images: list[str] = Body([]),
                 controlnet_processor_res: int = Body(-1), controlnet_threshold_a: float = Body(-1),
                 controlnet_threshold_b: float = Body(-1), controlnet_images: list[str] = Body([])) -> dict[str, Any]:
    """The preprocessor's detected maps, base64 PNG (as the extension answers). Checked here,
    run on the bounded lane for long work (api/heavy.py). ``controlnet_images`` is taken as
    ``controlnet_input_images``: the ``webuiapi`` client from PyPI sends that name."""
    module = preprocessors.check(controlnet_module, _folder(request) / "annotators")
    controlnet_input_images = controlnet_input_images or controlnet_images
    if not controlnet_input_images:
        raise Unsupported("No image selected")
    if len(controlnet_input_images) > MAX_DETECT_IMAGES:
        raise BadRequest(f"controlnet_input_images holds {len(controlnet_input_images)} images; at most "
                         f"{MAX_DETECT_IMAGES} per request")
    res = controlnet_processor_res if controlnet_processor_res != -1 else 512
    if not 64 <= res <= 2048:
        raise Unsupported("controlnet_processor_res must be between 64 and 2048")
    a, b = preprocessors.check_thresholds(module, controlnet_threshold_a, controlnet_threshold_b)
    return await request.app.state.long.run(_detect, request.app.state.services.settings, _folder(request), module,
                                            controlnet_input_images, res, a, b)


def _detect(settings: Any, folder: Any, module: str, texts: list[str], res: int, a: float, b: float
            ) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    images = []
    for i, text in enumerate(texts):
        img = np.asarray(decode_image(text, settings, f"input image {i}").convert("RGB"))
        out = preprocessors.run(module, img, res, a, b, folder / "annotators")
        images.append(encode_image(Image.fromarray(out)))
    return {"images": images, "info": "Success"}
