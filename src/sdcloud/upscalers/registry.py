"""The upscalers a user can name: A1111's built-in filters and the model files in the usual
A1111 folders (``models/ESRGAN``, ``models/RealESRGAN``, ``models/SwinIR``, ``models/DAT``,
``models/HAT``, ``models/ScuNET``), listed under the file stem (``4x-UltraSharp``) or, for
the files A1111 downloads itself, under A1111's own name (``R-ESRGAN 4x+ Anime6B``).

Listing reads only the folders (no torch); ``Upscalers.upscale`` loads the model on first use
and keeps one loaded.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcloud.errors import NotFound

log = logging.getLogger(__name__)

FOLDERS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT", "ScuNET")
MODEL_EXTS = (".pth", ".pt", ".safetensors", ".ckpt")
FILTERS = ("None", "Lanczos", "Nearest")
# The names A1111 gives the files it downloads into these folders (modules/realesrgan_model.py,
# swinir and dat scripts); any other file is listed under its stem.
A1111_NAMES = {
    "RealESRGAN_x4plus": "R-ESRGAN 4x+",
    "RealESRGAN_x4plus_anime_6B": "R-ESRGAN 4x+ Anime6B",
    "RealESRGAN_x2plus": "R-ESRGAN 2x+",
    "realesr-general-x4v3": "R-ESRGAN General 4xV3",
    "realesr-general-wdn-x4v3": "R-ESRGAN General WDN 4xV3",
    "realesr-animevideov3": "R-ESRGAN AnimeVideo",
    "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN": "SwinIR 4x",
    "DAT_x2": "DAT x2",
    "DAT_x3": "DAT x3",
    "DAT_x4": "DAT x4",
    "ScuNET": "ScuNET GAN",
    "ScuNET_PSNR": "ScuNET PSNR",
}


@dataclass(frozen=True)
class UpscalerFile:
    name: str  # what users type: A1111's name or the file stem
    folder: str  # ESRGAN, RealESRGAN, ...
    path: Path

    @property
    def nominal_scale(self) -> float:
        """The scale the file name announces (4x-..., x2...), 4 when it says none."""
        m = re.search(r"(?:^|[^a-z\d])(\d)x|x(\d)(?:$|[^\d])", self.path.stem, re.IGNORECASE)
        return float(next(g for g in m.groups() if g)) if m else 4.0


def scan(models_root: Path) -> list[UpscalerFile]:
    found: list[UpscalerFile] = []
    seen: set[str] = set()
    for folder in FOLDERS:
        root = models_root / folder
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in MODEL_EXTS or path.name.startswith("."):
                continue
            name = A1111_NAMES.get(path.stem, path.stem)
            if name in seen or name in FILTERS:
                continue
            seen.add(name)
            found.append(UpscalerFile(name, folder, path))
    return found


class Upscalers:
    """Model upscalers under one ``models`` root, on one device."""

    def __init__(self, models_root: Path, device: Any = None, dtype: Any = None, tile: int = 192,
                 overlap: int = 8) -> None:
        self.models_root = models_root
        self.device, self.dtype = device, dtype
        self.tile, self.overlap = tile, overlap
        self._loaded: tuple[Path, Any] | None = None
        self._lock = threading.Lock()

    def files(self) -> list[UpscalerFile]:
        return scan(self.models_root)

    def names(self) -> list[str]:
        return [*FILTERS, *(f.name for f in self.files())]

    def find(self, name: str) -> UpscalerFile:
        """By listed name, file stem or file name; case-insensitive as a last resort."""
        files = self.files()
        for match in (lambda f: f.name == name, lambda f: f.path.stem == name, lambda f: f.path.name == name,
                      lambda f: f.name.lower() == name.lower() or f.path.stem.lower() == name.lower()):
            hits = [f for f in files if match(f)]
            if hits:
                return hits[0]
        raise NotFound(f"upscaler '{name}' not found; available: {', '.join(self.names())} "
                       f"(put model files in {self.models_root}/ESRGAN or {self.models_root}/RealESRGAN)")

    def has(self, name: str) -> bool:
        if name in FILTERS:
            return True
        try:
            self.find(name)
        except NotFound:
            return False
        return True

    def listing(self) -> list[dict[str, Any]]:
        """``/sdapi/v1/upscalers``: A1111's fields, filters first."""
        out: list[dict[str, Any]] = [
            {"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4.0} for n in FILTERS
        ]
        for f in self.files():
            out.append({"name": f.name, "model_name": f.folder, "model_path": str(f.path), "model_url": None,
                        "scale": f.nominal_scale})
        return out

    # -- running -----------------------------------------------------------------------------
    def model(self, name: str) -> Any:
        """The loaded network for ``name`` (one kept; loading another frees it)."""
        import torch

        from sdcloud.upscalers.loading import load_model

        entry = self.find(name)
        if self._loaded is not None and self._loaded[0] == entry.path:
            return self._loaded[1]
        self._loaded = None
        model = load_model(entry.path)
        if model.purpose not in ("SR", "Restoration"):
            from sdcloud.errors import Unsupported

            raise Unsupported(f"{entry.path.name}: a {model.arch} {model.purpose} model, not an upscaler")
        device = self.device or torch.device("cpu")
        half = self.dtype is not None and device.type == "cuda" and model.supports_half
        dtype = self.dtype if half else torch.float32
        model.to(device, dtype)
        self._loaded = (entry.path, model)
        log.info("loaded upscaler %s (%s x%d)", entry.name, model.arch, model.scale)
        return model

    def upscale_once(self, image: Any, name: str) -> Any:
        """One pass of the model (its native scale), tiled."""
        import numpy as np
        import torch
        from PIL import Image

        from sdcloud.upscalers.tiling import run_tiled

        with self._lock:
            model = self.model(name)
            param = next(model.net.parameters())
            arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
            x = torch.from_numpy(arr).permute(2, 0, 1)[None].to(param.device, param.dtype)
            y = run_tiled(model.net, x, model.scale, self.tile, self.overlap)
            out = (y[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
        return Image.fromarray(out)

    def upscale(self, image: Any, name: str, scale: float) -> Any:
        """A1111's ``Upscaler.upscale``: run the model until the image reaches ``scale`` (at most
        3 passes), then Lanczos to the exact size (sides rounded down to multiples of 8)."""
        from PIL import Image

        if name in FILTERS:
            if name == "None":
                return image
            dest = (int(image.width * scale), int(image.height * scale))
            return image.resize(dest, Image.LANCZOS if name == "Lanczos" else Image.NEAREST)
        dest_w, dest_h = int(image.width * scale // 8 * 8), int(image.height * scale // 8 * 8)
        img = image
        for _ in range(3):
            if img.width >= dest_w and img.height >= dest_h:
                break
            before = img.size
            img = self.upscale_once(img, name)
            if img.size == before:
                break
        if img.size != (dest_w, dest_h):
            img = img.resize((dest_w, dest_h), Image.LANCZOS)
        return img

    def upscale_to(self, image: Any, name: str, width: int, height: int) -> Any:
        """Hires fix's resize: scale to cover ``width``x``height``, then Lanczos to exactly that."""
        from PIL import Image

        if name in ("Lanczos", "Nearest"):
            return image.resize((width, height), Image.LANCZOS if name == "Lanczos" else Image.NEAREST)
        scale = max(width / image.width, height / image.height)
        img = self.upscale(image, name, scale)
        return img if img.size == (width, height) else img.resize((width, height), Image.LANCZOS)
