"""Run an upscaler over an image in overlapping tiles, so a 4x pass over a big image fits
in VRAM (A1111's ``ESRGAN_tile`` 192 / ``ESRGAN_tile_overlap`` 8).

Each tile is processed with ``overlap`` pixels of context on every side; only its core is
kept, so the seams see the same neighbourhood as an untiled pass (up to the network's
receptive field beyond the overlap).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def run_tiled(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int, tile: int = 192,
              overlap: int = 8, on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``net`` over ``x`` (N, C, H, W); ``tile <= 0`` or an image no larger than one tile runs whole."""
    _, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        with torch.no_grad():
            return net(x)
    out: torch.Tensor | None = None
    ys = list(range(0, h, tile))
    xs = list(range(0, w, tile))
    total, done = len(ys) * len(xs), 0
    for y0 in ys:
        for x0 in xs:
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(0, y0 - overlap), max(0, x0 - overlap)
            py1, px1 = min(h, y1 + overlap), min(w, x1 + overlap)
            with torch.no_grad():
                part = net(x[:, :, py0:py1, px0:px1].contiguous())
            if out is None:
                out = part.new_zeros((x.shape[0], part.shape[1], h * scale, w * scale))
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                part[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    assert out is not None
    return out
