"""``/sdapi/v1/extra-single-image`` and ``extra-batch-images``: upscaling with PIL's Lanczos
and Nearest filters (no model-based upscalers or face restoration here)."""

from __future__ import annotations

from typing import Any

from sdcloud.errors import BadRequest
from sdcloud.settings import Settings

FILTERS = ("None", "Lanczos", "Nearest")


def _resample(name: str) -> Any:
    from PIL import Image

    if name not in FILTERS:
        raise BadRequest(f"unknown upscaler '{name}'; available: {', '.join(FILTERS)}")
    return {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}.get(name)


def _target(img: Any, req: Any, settings: Settings) -> tuple[int, int, bool]:
    if req.resize_mode == 0:
        w, h, crop = round(img.width * req.upscaling_resize), round(img.height * req.upscaling_resize), False
    else:
        scale = max(req.upscaling_resize_w / img.width, req.upscaling_resize_h / img.height)
        if req.upscaling_crop:
            w, h, crop = round(img.width * scale), round(img.height * scale), True
        else:
            w, h, crop = req.upscaling_resize_w, req.upscaling_resize_h, False
    max_w, max_h = 2 * settings.limits.max_width, 2 * settings.limits.max_height
    if not (1 <= w <= max_w and 1 <= h <= max_h):
        raise BadRequest(f"the upscaled image would be {w}x{h}; at most {max_w}x{max_h} is allowed")
    return w, h, crop


def upscale(img: Any, req: Any, settings: Settings) -> Any:
    """One image through A1111's postprocessing upscale step."""
    from PIL import Image

    if req.gfpgan_visibility > 0 or req.codeformer_visibility > 0:
        raise BadRequest("face restoration (GFPGAN/CodeFormer) is not available on this server")
    first, second = _resample(req.upscaler_1), _resample(req.upscaler_2)
    info = {k: v for k, v in img.info.items() if isinstance(v, str)}
    if first is None:
        return img
    w, h, crop = _target(img, req, settings)
    source = img.convert("RGB")
    out = source.resize((w, h), first)
    if second is not None and req.extras_upscaler_2_visibility > 0:
        out = Image.blend(out, source.resize((w, h), second), req.extras_upscaler_2_visibility)
    if crop:
        cw, ch = req.upscaling_resize_w, req.upscaling_resize_h
        left, top = (w - cw) // 2, (h - ch) // 2
        out = out.crop((left, top, left + cw, top + ch))
    out.info.update(info)
    return out


def html_info(req: Any) -> str:
    if req.upscaler_1 == "None":
        return ""
    how = (
        f"{req.upscaling_resize}"
        if req.resize_mode == 0
        else f"{req.upscaling_resize_w}x{req.upscaling_resize_h}"
    )
    return f"<p>Postprocess upscale by: {how}, Postprocess upscaler: {req.upscaler_1}</p>"
