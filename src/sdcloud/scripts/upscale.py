"""Pixel upscalers by name, for SD upscale: the one place a script asks for "upscale this image
with upscaler NAME". Model upscalers register here (``register``) under the names
``/sdapi/v1/upscalers`` lists; the PIL filters are built in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sdcloud.errors import BadRequest

Upscaler = Callable[[Any, float], Any]  # (PIL image, scale) -> PIL image
_REGISTRY: dict[str, Upscaler] = {}


def _pil(name: str) -> Upscaler:
    def run(img: Any, scale: float) -> Any:
        from PIL import Image

        method = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}[name]
        return img.convert("RGB").resize((round(img.width * scale), round(img.height * scale)), method)
    return run


def register(name: str, fn: Upscaler) -> None:
    """Make ``name`` usable by SD upscale (called by whatever provides model upscalers)."""
    _REGISTRY[name] = fn


def available() -> list[str]:
    return ["None", "Lanczos", "Nearest", *[n for n in _REGISTRY if n not in ("None", "Lanczos", "Nearest")]]


def upscale_image(img: Any, name: str, scale: float) -> Any:
    """``img`` upscaled ``scale`` times with upscaler ``name`` ("None": unchanged)."""
    if name == "None" or scale == 1:
        return img.convert("RGB")
    fn = _REGISTRY.get(name) or (_pil(name) if name in ("Lanczos", "Nearest") else None)
    if fn is None:
        raise BadRequest(f"upscaler '{name}' is not available for SD upscale; available: {', '.join(available())}")
    out = fn(img, scale)
    want = (round(img.width * scale), round(img.height * scale))
    return out if out.size == want else out.resize(want)
