"""ControlNet residuals at each UNet call, as sd-webui-controlnet adds them.

For each unit: the hint image (the unit's image, else img2img's init image) is preprocessed
at the processor resolution (or the pixel-perfect one), fitted to the pass size by the unit's
resize mode, and fed to its ControlNet while the sampling progress is within
[guidance start, guidance end]. Control modes: "Balanced" scales every residual by the weight;
"My prompt is more important" uses the soft weights ``weight * 0.825 ** (n - i)`` (deep blocks
strongest); "ControlNet is more important" adds soft weights and applies the control to the
conditional half of the CFG batch only. The hires pass uses both, as sd-webui-controlnet does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdcloud.controlnet import preprocessors
from sdcloud.controlnet.units import ControlUnit


@dataclass
class LoadedUnit:
    unit: ControlUnit
    model: Any
    title: str
    source: Image.Image
    mask: Image.Image | None


def pixel_perfect_resolution(raw: tuple[int, int], target: tuple[int, int], resize_mode: int) -> int:
    """sd-webui-controlnet's estimate of the processor resolution that maps 1:1 onto the target."""
    (raw_w, raw_h), (w, h) = raw, target
    k0, k1 = h / raw_h, w / raw_w
    k = min(k0, k1) if resize_mode == 2 else max(k0, k1)
    return int(round(k * min(raw_w, raw_h)))


def fit(img: np.ndarray, w: int, h: int, resize_mode: int) -> np.ndarray:
    """The detected map onto the pass size: 0 just resize, 1 crop and resize, 2 resize and fill."""
    pil = Image.fromarray(img)
    if resize_mode == 0:
        return np.asarray(pil.resize((w, h), Image.LANCZOS))
    k = (max if resize_mode == 1 else min)(w / pil.width, h / pil.height)
    sw, sh = max(1, round(pil.width * k)), max(1, round(pil.height * k))
    scaled = pil.resize((sw, sh), Image.LANCZOS)
    canvas = Image.new(pil.mode, (w, h))
    canvas.paste(scaled, ((w - sw) // 2, (h - sh) // 2))
    return np.asarray(canvas)


def detect(lu: LoadedUnit, w: int, h: int, annotators: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(detected map at the pass size, mask at the pass size or None)."""
    u = lu.unit
    raw = np.asarray(lu.source.convert("RGB"))
    res = pixel_perfect_resolution((raw.shape[1], raw.shape[0]), (w, h), u.resize_mode) if u.pixel_perfect \
        else u.processor_res
    detected = preprocessors.run(u.module, raw, res, u.threshold_a, u.threshold_b, annotators)
    mask = None
    if lu.mask is not None and preprocessors.canonical(u.module) in preprocessors.MASKED:
        m = np.asarray(lu.mask.convert("L").resize(lu.source.size, Image.NEAREST))
        mask = fit(np.repeat(m[:, :, None], 3, axis=2), w, h, u.resize_mode)[:, :, 0]
    return fit(detected, w, h, u.resize_mode), mask


class ControlRunner:
    """Adds the units' residuals to each UNet call of one request."""

    def __init__(self, units: list[LoadedUnit], device: torch.device, dtype: torch.dtype, annotators: Path) -> None:
        self.units = units
        self.device, self.dtype = device, dtype
        self.annotators = annotators
        self._hints: dict[tuple[int, int], list[torch.Tensor]] = {}

    def hints(self, w: int, h: int) -> list[torch.Tensor]:
        if (w, h) not in self._hints:
            out = []
            for lu in self.units:
                detected, mask = detect(lu, w, h, self.annotators)
                t = torch.from_numpy(detected.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
                if mask is not None:  # inpaint ControlNet: masked pixels are -1
                    t[:, :, torch.from_numpy(mask > 127)] = -1.0
                out.append(t.to(self.device, self.dtype))
            self._hints[(w, h)] = out
        return self._hints[(w, h)]

    def detected_maps(self, w: int, h: int) -> list[Image.Image]:
        return [Image.fromarray(detect(lu, w, h, self.annotators)[0]) for lu in self.units]

    def __call__(self, latents: torch.Tensor, t: Any, emb: torch.Tensor, added: dict[str, Any] | None, step: int,
                 total: int, use_cfg: bool, size: tuple[int, int], hires: bool,
                 uncond_rows: int | None = None) -> dict[str, Any]:
        """UNet keyword arguments (``down_block_additional_residuals`` / ``mid_...``) for this call.
        ``uncond_rows``: how many rows (from the start) are the negative prompt's (default half;
        more positive rows follow with ``AND`` prompts)."""
        progress = step / max(1, total)
        down_sum: list[torch.Tensor] | None = None
        mid_sum: torch.Tensor | None = None
        for lu, hint in zip(self.units, self.hints(*size), strict=True):
            u = lu.unit
            if not u.guidance_start <= progress <= u.guidance_end or u.weight == 0:
                continue
            n = latents.shape[0]
            kwargs = {"added_cond_kwargs": added} if added is not None else {}
            with torch.no_grad():
                down, mid = lu.model(latents.to(self.dtype), t, encoder_hidden_states=emb.to(self.dtype),
                                     controlnet_cond=hint.expand(n, -1, -1, -1), conditioning_scale=1.0,
                                     return_dict=False, **kwargs)
            soft = u.control_mode != 0 or hires
            scales = [u.weight * (0.825 ** float(len(down) - i)) if soft else u.weight for i in range(len(down) + 1)]
            down = [d * s for d, s in zip(down, scales[:-1], strict=True)]
            mid = mid * scales[-1]
            if use_cfg and (u.control_mode == 2 or hires):  # control on the conditional half only
                keep = torch.ones(n, 1, 1, 1, device=mid.device, dtype=mid.dtype)
                keep[: n // 2 if uncond_rows is None else uncond_rows] = 0
                down = [d * keep for d in down]
                mid = mid * keep
            down_sum = down if down_sum is None else [a + b for a, b in zip(down_sum, down, strict=True)]
            mid_sum = mid if mid_sum is None else mid_sum + mid
        if down_sum is None:
            return {}
        return {"down_block_additional_residuals": down_sum, "mid_block_additional_residual": mid_sum}


def build_runner(ctx: Any, req: Any, annotators: Path) -> ControlRunner | None:
    """Load the request's units' ControlNets (via the model context's cache)."""
    if not getattr(req, "controlnet", None):
        return None
    loaded = []
    for i, unit in enumerate(req.controlnet):
        source = unit.image if unit.image is not None else (req.init_images[0] if req.init_images else None)
        if source is None:
            from sdcloud.errors import BadRequest

            raise BadRequest(f"ControlNet unit {i} has no image (and this is not img2img)")
        mask = unit.mask if unit.mask is not None else (req.mask if unit.image is None else None)
        model, title = ctx.controlnets.get(unit.model)
        loaded.append(LoadedUnit(unit, model, title, source, mask))
    return ControlRunner(loaded, ctx.device, ctx.dtype, annotators)
