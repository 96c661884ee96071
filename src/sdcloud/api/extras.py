"""The Extras tab and ``/sdapi/v1/extra-single-image`` / ``extra-batch-images``: A1111's
postprocessing (upscale 1 and 2 blended by visibility, resize by or to with crop, then
GFPGAN and CodeFormer), with the model upscalers and restorers of ``sdcloud.upscalers``.

Runs on the engine's device while holding the engine host's GPU owner, so it never competes
with a generation for VRAM.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, NotFound
from sdcloud.settings import Settings
from sdcloud.upscalers.faces import FaceRestorers
from sdcloud.upscalers.registry import Upscalers


class ExtrasService:
    def __init__(self, settings: Settings, host: Any, on_saved: Callable[[list[Path]], None] | None = None) -> None:
        self.settings = settings
        self.host = host
        self.on_saved = on_saved
        engine = getattr(host, "engine", None)
        self.upscalers: Upscalers = getattr(engine, "upscalers", None) or Upscalers(settings.models_root)
        # the engine's restorers (one per runtime), shared with restore_faces in txt2img/img2img
        self.faces: FaceRestorers = getattr(engine, "faces", None) or FaceRestorers(
            settings.models_root, getattr(engine, "device", None))

    # -- listings -----------------------------------------------------------------------------
    def upscaler_list(self) -> list[dict[str, Any]]:
        return self.upscalers.listing()

    def face_restorer_list(self) -> list[dict[str, Any]]:
        return self.faces.listing()

    def check_upscaler(self, name: str, field: str = "upscaler") -> None:
        if not self.upscalers.has(name):
            raise BadRequest(f"unknown {field} '{name}'; available: {', '.join(self.upscalers.names())}")

    # -- running ------------------------------------------------------------------------------
    def check(self, req: Any) -> None:
        """Everything a request can get wrong, before any image is touched."""
        self.check_upscaler(req.upscaler_1, "upscaler_1")
        if req.extras_upscaler_2_visibility > 0:
            self.check_upscaler(req.upscaler_2, "upscaler_2")
        if req.gfpgan_visibility > 0:
            self.faces.check("GFPGAN")
        if req.codeformer_visibility > 0:
            self.faces.check("CodeFormer")

    def run(self, img: Any, req: Any) -> Any:
        """One image through A1111's postprocessing."""
        self.check(req)
        info = {k: v for k, v in img.info.items() if isinstance(v, str)}
        out = img.convert("RGB")
        gpu = getattr(self.host, "gpu", None)  # the engine host's GPU owner: no race with a generation
        try:
            if gpu is not None:
                gpu.acquire()
            if req.upscaler_1 != "None":
                out = self._upscale(out, req)
            if req.gfpgan_visibility > 0:
                out = self.faces.restore(out, "GFPGAN", req.gfpgan_visibility)
            if req.codeformer_visibility > 0:
                out = self.faces.restore(out, "CodeFormer", req.codeformer_visibility, req.codeformer_weight)
        except NotFound as exc:  # a file removed since the listing
            raise BadRequest(str(exc)) from None
        finally:
            if gpu is not None:
                gpu.release()
        out.info.update(info)
        return out

    def run_and_save(self, img: Any, req: Any) -> tuple[Any, Path, str]:
        """The Extras tab: run, then save under outputs/extras-images (and into the outbox)."""
        from sdcloud.outputs import save_extras_image

        out = self.run(img, req)
        info = html_info(req)[3:-4]  # A1111 keeps the postprocessing text in the PNG
        path = save_extras_image(out, out.info.get("parameters") or None, self.settings)
        if self.on_saved is not None:
            self.on_saved([path])
        return out, path, info

    def _upscale(self, source: Any, req: Any) -> Any:
        from PIL import Image

        w, h, crop, scale = _target(source, req, self.settings)
        out = self._scaled(source, req.upscaler_1, scale, (w, h))
        if req.upscaler_2 != "None" and req.extras_upscaler_2_visibility > 0:
            second = self._scaled(source, req.upscaler_2, scale, out.size)
            out = Image.blend(out, second, req.extras_upscaler_2_visibility)
        if crop:
            cw, ch = req.upscaling_resize_w, req.upscaling_resize_h
            left, top = (out.width - cw) // 2, (out.height - ch) // 2
            out = out.crop((left, top, left + cw, top + ch))
        return out

    def _scaled(self, source: Any, name: str, scale: float, size: tuple[int, int]) -> Any:
        from PIL import Image

        out = self.upscalers.upscale(source, name, scale)
        return out if out.size == size else out.resize(size, Image.LANCZOS)


def _target(img: Any, req: Any, settings: Settings) -> tuple[int, int, bool, float]:
    """(width, height before any crop, crop?, scale) for A1111's resize by / resize to."""
    if req.resize_mode == 0:
        scale = req.upscaling_resize
        w, h, crop = round(img.width * scale), round(img.height * scale), False
    else:
        scale = max(req.upscaling_resize_w / img.width, req.upscaling_resize_h / img.height)
        if req.upscaling_crop:
            w, h, crop = round(img.width * scale), round(img.height * scale), True
        else:
            w, h, crop = req.upscaling_resize_w, req.upscaling_resize_h, False
    max_w, max_h = 2 * settings.limits.max_width, 2 * settings.limits.max_height
    if not (1 <= w <= max_w and 1 <= h <= max_h):
        raise BadRequest(f"the upscaled image would be {w}x{h}; at most {max_w}x{max_h} is allowed")
    return w, h, crop, scale


def html_info(req: Any) -> str:
    """A1111's postprocessing infotext, as the API's ``html_info``."""
    parts = []
    if req.upscaler_1 != "None":
        if req.resize_mode == 0:
            parts.append(f"Postprocess upscale by: {req.upscaling_resize}")
        else:
            parts.append(f"Postprocess upscale to: {req.upscaling_resize_w}x{req.upscaling_resize_h}")
        parts.append(f"Postprocess upscaler: {req.upscaler_1}")
        if req.upscaler_2 != "None" and req.extras_upscaler_2_visibility > 0:
            parts.append(f"Postprocess upscaler 2: {req.upscaler_2}")
    if req.gfpgan_visibility > 0:
        parts.append(f"GFPGAN visibility: {round(req.gfpgan_visibility, 3)}")
    if req.codeformer_visibility > 0:
        parts.append(f"CodeFormer visibility: {round(req.codeformer_visibility, 3)}, "
                     f"CodeFormer weight: {round(req.codeformer_weight, 3)}")
    return f"<p>{', '.join(parts)}</p>" if parts else ""
