"""The inpaint editor's value (background + painted layers, optional uploaded mask) as the
init image and mask of an img2img request (PIL only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageChops


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


def inpaint_inputs(editor: Mapping[str, Any] | None, uploaded_mask: Image.Image | None
                   ) -> tuple[Image.Image | None, Image.Image | None]:
    """(init image, mask) from a ``gr.ImageEditor`` value and an optional uploaded mask.

    The drawn strokes and the uploaded mask are combined, so a user can start from a mask
    file and touch it up with the brush.
    """
    if not editor or editor.get("background") is None:
        return None, None
    background: Image.Image = editor["background"]
    mask = mask_from_layers(list(editor.get("layers") or []), background.size)
    if uploaded_mask is not None:
        upload = uploaded_mask.convert("L").resize(background.size, Image.Resampling.NEAREST)
        mask = upload if mask is None else ImageChops.lighter(mask, upload)
    return background.convert("RGB"), mask
