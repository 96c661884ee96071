"""PIL-side helpers for img2img and inpainting: A1111 resize modes, masks, fills, overlays."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from sdcloud.errors import BadRequest

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
FILL_MODES = ("fill", "original", "latent noise", "latent nothing")


def resize_image(mode: int, image: Image.Image, width: int, height: int,
                 resample: Any = Image.LANCZOS) -> Image.Image:
    """A1111 ``resize_mode``: 0 stretch, 1 crop to fill, 2 fit and fill the borders with
    stretched edges, 3 stretch (the latent-upscale variant resizes in latent space later)."""
    if mode in (0, 3):
        return image.resize((width, height), resample)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        return ImageOps.fit(image, (width, height), resample)
    if mode == 2:
        if ratio < src_ratio:
            w, h = width, max(1, round(width / src_ratio))
        else:
            w, h = max(1, round(height * src_ratio)), height
        fitted = image.resize((w, h), resample)
        canvas = image.resize((width, height), resample).filter(ImageFilter.GaussianBlur(max(width, height) / 32))
        canvas.paste(fitted, ((width - w) // 2, (height - h) // 2))
        return canvas
    raise BadRequest(f"resize_mode must be 0-3 ({', '.join(RESIZE_MODES)}), got {mode}")


def prepare_mask(mask: Image.Image, invert: bool, size: tuple[int, int]) -> Image.Image:
    """An 'L' mask, white = repaint. An RGBA mask with real transparency uses its alpha."""
    if mask.mode in ("RGBA", "LA"):
        alpha = mask.getchannel("A")
        mask = alpha if alpha.getextrema()[0] < 255 else mask.convert("L")
    else:
        mask = mask.convert("L")
    if invert:
        mask = ImageOps.invert(mask)
    if mask.size != size:
        mask = mask.resize(size, Image.LANCZOS)
    return mask


def blur_mask(mask: Image.Image, blur: int) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else mask


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """'fill' masked content: replace the masked area with the colours around it, blurred."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    m = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    keep = 1.0 - m
    mean = (arr * keep).sum((0, 1)) / max(float(keep.sum()), 1.0)
    filled = Image.fromarray((arr * keep + mean * m).clip(0, 255).astype(np.uint8))
    blurred = filled.filter(ImageFilter.GaussianBlur(max(image.size) / 16))
    return Image.composite(blurred, image.convert("RGB"), mask)


def masked_region(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Box around the mask plus padding, grown to the target aspect ratio ("Only masked")."""
    box = mask.point(lambda v: 255 if v > 127 else 0).getbbox()
    if box is None:
        return None
    iw, ih = mask.size
    x1, y1, x2, y2 = max(box[0] - padding, 0), max(box[1] - padding, 0), \
        min(box[2] + padding, iw), min(box[3] + padding, ih)
    ratio = width / height
    w, h = x2 - x1, y2 - y1
    if w / h < ratio:
        grow = min(int(h * ratio) - w, iw - w)
        x1 = max(0, x1 - grow // 2)
        x2 = min(iw, x1 + w + grow)
    else:
        grow = min(int(w / ratio) - h, ih - h)
        y1 = max(0, y1 - grow // 2)
        y2 = min(ih, y1 + h + grow)
    return x1, y1, x2, y2


def overlay(original: Image.Image, generated: Image.Image, mask: Image.Image,
            box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """Paste the generated pixels into the original where the (blurred) mask is white."""
    base = original.convert("RGB").copy()
    if box is not None:
        region = generated.resize((box[2] - box[0], box[3] - box[1]), Image.LANCZOS)
        full = base.copy()
        full.paste(region, box[:2])
        generated = full
    elif generated.size != base.size:
        generated = generated.resize(base.size, Image.LANCZOS)
    return Image.composite(generated.convert("RGB"), base, mask)


def to_tensor(images: list[Image.Image]) -> Any:
    """PIL images → float tensor in [-1, 1], NCHW."""
    import torch

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1.0 for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def to_pil(tensor: Any) -> list[Image.Image]:
    """Decoded VAE output in [-1, 1] → PIL images."""
    arr = ((tensor.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
