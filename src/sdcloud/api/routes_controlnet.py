"""sd-webui-controlnet's own routes (``/controlnet/...``), so its API clients work unchanged."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request

from sdcloud.api.image_input import decode_image
from sdcloud.controlnet import models, preprocessors
from sdcloud.errors import Unsupported
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


@router.post("/detect")
def detect(request: Request, controlnet_module: str = Body("none"), controlnet_input_images: list[str] = Body([]),
           controlnet_processor_res: int = Body(-1), controlnet_threshold_a: float = Body(-1),
           controlnet_threshold_b: float = Body(-1)) -> dict[str, Any]:
    """The preprocessor's detected maps, base64 PNG (as the extension answers)."""
    import numpy as np

    settings = request.app.state.services.settings
    module = preprocessors.check(controlnet_module, _folder(request) / "annotators")
    if not controlnet_input_images:
        raise Unsupported("No image selected")
    res = controlnet_processor_res if controlnet_processor_res != -1 else 512
    if not 64 <= res <= 2048:
        raise Unsupported("controlnet_processor_res must be between 64 and 2048")
    images = []
    for i, text in enumerate(controlnet_input_images):
        img = np.asarray(decode_image(text, settings, f"input image {i}").convert("RGB"))
        out = preprocessors.run(module, img, res, controlnet_threshold_a, controlnet_threshold_b,
                                _folder(request) / "annotators")
        from PIL import Image

        images.append(encode_image(Image.fromarray(out)))
    return {"images": images, "info": "Success"}
