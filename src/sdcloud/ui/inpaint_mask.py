"""The img2img editors' values (``gr.ImageEditor``: background + painted layers + composite)
as the init image and mask of an img2img request, the way A1111's sub-tabs read them
(PIL only; no Gradio, no torch).

- *Inpaint*: the strokes are the mask; the image is the uploaded one.
- *Sketch*: the drawn-on picture is the init image, colours kept; no mask.
- *Inpaint sketch*: the strokes are both the colour and the mask (A1111: the mask is what
  changed; *Mask transparency* dims it, *Mask blur* softens the colour's edge).
- *Inpaint upload*: an init image and a separate black-and-white mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageChops, ImageEnhance, ImageFilter

from sdcloud.api.img2img_batch import scaled_size


def mask_from_layers(layers: list[Image.Image], size: tuple[int, int]) -> Image.Image | None:
    """Union of the painted strokes of the editor's layers as an ``L`` mask (white = repaint).

    Strokes are whatever is not transparent in a layer, whatever colour the brush had.
    Returns ``None`` when nothing was painted.
    """
    mask = Image.new("L", size, 0)
    for layer in layers:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != size:
            alpha = alpha.resize(size, Image.Resampling.NEAREST)
        mask = ImageChops.lighter(mask, alpha.point(lambda a: 255 if a > 0 else 0))
    return mask if mask.getbbox() else None


def inpaint_inputs(editor: Mapping[str, Any] | None, uploaded_mask: Image.Image | None = None
                   ) -> tuple[Image.Image | None, Image.Image | None]:
    """(init image, mask) from a ``gr.ImageEditor`` value and an optional uploaded mask.

    The drawn strokes and the uploaded mask are combined, so a user can start from a mask
    file and touch it up with the brush.
    """
    background = editor_background(editor)
    if background is None:
        return None, None
    mask = mask_from_layers(list((editor or {}).get("layers") or []), background.size)
    if uploaded_mask is not None:
        upload = upload_mask(uploaded_mask, background.size)
        mask = upload if mask is None else ImageChops.lighter(mask, upload)
    return background.convert("RGB"), mask


def editor_background(editor: Mapping[str, Any] | None) -> Image.Image | None:
    """The uploaded picture of an editor value, or ``None`` when nothing was uploaded."""
    if not editor or not isinstance(editor.get("background"), Image.Image):
        return None
    return editor["background"]


def sketched_image(editor: Mapping[str, Any] | None) -> Image.Image | None:
    """*Sketch*: the picture with the strokes drawn on it (RGB), or ``None`` without a picture.

    Gradio's composite is used when it is there; otherwise the layers are pasted over the
    background by their alpha.
    """
    background = editor_background(editor)
    if background is None:
        return None
    composite = (editor or {}).get("composite")
    if isinstance(composite, Image.Image):
        return _flatten(composite, background.size)
    out = background.convert("RGBA")
    for layer in (editor or {}).get("layers") or []:
        if layer is not None:
            out.alpha_composite(layer.convert("RGBA").resize(out.size, Image.Resampling.NEAREST))
    return out.convert("RGB")


def _flatten(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """RGB on white (a transparent corner of a composite is not black), at ``size``."""
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def changed_mask(original: Image.Image, sketched: Image.Image) -> Image.Image:
    """A1111's Inpaint sketch mask: white where any channel of ``sketched`` differs."""
    diff = ImageChops.difference(original.convert("RGB"), sketched.convert("RGB").resize(original.size))
    return diff.convert("L").point(lambda v: 255 if v > 0 else 0)


def inpaint_sketch_inputs(editor: Mapping[str, Any] | None, mask_alpha: float = 0.0, mask_blur: int = 4
                          ) -> tuple[Image.Image | None, Image.Image | None]:
    """*Inpaint sketch*: (init image, mask), as A1111 makes them.

    The mask is what the strokes changed (plus any stroke in the layers, even one the colour
    of the picture under it); *Mask transparency* (``mask_alpha``, 0-100) dims it so the
    model keeps more of the picture, and the sketch is laid over the picture through the
    blurred mask so its colour fades out at the edge. ``(image, None)`` when nothing was
    drawn, ``(None, None)`` without a picture.
    """
    original = editor_background(editor)
    sketched = sketched_image(editor)
    if original is None or sketched is None:
        return None, None
    original = original.convert("RGB")
    mask = changed_mask(original, sketched)
    strokes = mask_from_layers(list((editor or {}).get("layers") or []), original.size)
    if strokes is not None:
        mask = ImageChops.lighter(mask, strokes)
    if not mask.getbbox():
        return original, None
    mask = ImageEnhance.Brightness(mask).enhance(1 - max(0.0, min(100.0, float(mask_alpha))) / 100)
    blur = ImageFilter.GaussianBlur(max(0, int(mask_blur)))
    image = Image.composite(sketched.filter(blur), original, mask.filter(blur))
    return image, mask


def upload_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """An uploaded mask as ``L`` at the picture's ``size`` (white = repaint). A mask with
    transparency counts its opaque part, as A1111's mask upload does with a PNG cut-out."""
    if mask.mode in ("RGBA", "LA") or (mask.mode == "P" and "transparency" in mask.info):
        rgba = mask.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        mask = Image.alpha_composite(black, rgba)
    return mask.convert("L").resize(size, Image.Resampling.NEAREST)


def resize_preview(size: tuple[int, int] | None, scale: float) -> str:
    """The line under *Resize by*: ``Resize: from 512x512 to 768x768``."""
    if not size:
        return "No image selected"
    width, height = scaled_size(size, scale)
    return f"Resize: from {size[0]}x{size[1]} to {width}x{height}"
