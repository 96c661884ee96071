"""SD upscale (img2img only): upscale the init image with any upscaler, cut it into tiles of
the request's width x height that overlap, run img2img on every tile and blend the tiles back
together across the overlap, as A1111's ``scripts/sd_upscale.py``.

``script_args``: ``info`` (ignored; A1111's HTML note), ``overlap`` (0-256),
``upscaler_index`` (index into ``/sdapi/v1/upscalers`` or its name), ``scale_factor``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sdcloud.errors import BadRequest
from sdcloud.scripts.base import Generate, Script, ScriptArg, ScriptEnv, ScriptOutput, as_choice, as_number
from sdcloud.scripts.infotext_extra import append_params
from sdcloud.scripts.upscale import upscale_image


@dataclass
class Tile:
    x: int
    y: int
    image: Any


def split_tiles(img: Any, tile_w: int, tile_h: int, overlap: int) -> list[Tile]:
    """Tiles covering ``img``, spread evenly so neighbours overlap by at least ``overlap``."""
    w, h = img.size
    cols = max(1, math.ceil((w - overlap) / (tile_w - overlap)))
    rows = max(1, math.ceil((h - overlap) / (tile_h - overlap)))
    dx = (w - tile_w) / (cols - 1) if cols > 1 else 0
    dy = (h - tile_h) / (rows - 1) if rows > 1 else 0
    tiles = []
    for r in range(rows):
        y = min(int(r * dy), h - tile_h)
        for c in range(cols):
            x = min(int(c * dx), w - tile_w)
            tiles.append(Tile(x, y, img.crop((x, y, x + tile_w, y + tile_h))))
    return tiles


def combine_tiles(tiles: list[Tile], size: tuple[int, int], overlap: int) -> Any:
    """Paste ``tiles`` back; where a tile overlaps what is already there, it fades in linearly
    over ``overlap`` pixels from its left and top edges (no visible seams)."""
    import numpy as np
    from PIL import Image

    w, h = size
    acc = np.zeros((h, w, 3), np.float32)
    for t in tiles:
        arr = np.asarray(t.image.convert("RGB"), np.float32)
        th, tw = arr.shape[:2]
        wx = np.ones(tw, np.float32)
        wy = np.ones(th, np.float32)
        if overlap > 0:
            ramp = (np.arange(min(overlap, tw), dtype=np.float32) + 1) / (overlap + 1)
            if t.x > 0:
                wx[:len(ramp)] = ramp
            if t.y > 0:
                wy[:min(overlap, th)] = ramp[:min(overlap, th)]
        mask = (wy[:, None] * wx[None, :])[..., None]
        acc[t.y:t.y + th, t.x:t.x + tw] = acc[t.y:t.y + th, t.x:t.x + tw] * (1 - mask) + arr * mask
    return Image.fromarray(np.clip(acc, 0, 255).round().astype(np.uint8), "RGB")


class SDUpscale(Script):
    title = "SD upscale"
    txt2img = False

    def args(self, is_img2img: bool, env: ScriptEnv | None = None) -> list[ScriptArg]:
        names = env.upscalers if env else None
        return [ScriptArg("info", None), ScriptArg("Tile overlap", 64, minimum=0, maximum=256, step=16),
                ScriptArg("Upscaler", names[0] if names else "None", choices=names),
                ScriptArg("Scale Factor", 2.0, minimum=1.0, maximum=4.0, step=0.05)]

    def prepare(self, args: Sequence[Any], fields: dict[str, Any], env: ScriptEnv,
                is_img2img: bool) -> dict[str, Any]:
        a = self.positional(args, is_img2img)
        overlap = as_number(a[1], "overlap", 0, 256, int)
        upscaler = as_choice(a[2], "upscaler_index", env.upscalers)
        scale = as_number(a[3], "scale_factor", 1.0, 4.0, float)
        tw, th = int(fields["width"]), int(fields["height"])
        if overlap >= min(tw, th):
            raise BadRequest(f"SD upscale: the tile overlap ({overlap}) must be smaller than the tile size {tw}x{th}")
        return {"overlap": overlap, "upscaler": upscaler, "scale": scale}

    def run(self, plan: dict[str, Any], fields: dict[str, Any], generate: Generate,
            init_images: list[Any]) -> ScriptOutput:
        from PIL import Image

        if not init_images:
            raise BadRequest("SD upscale needs an init image")
        tw, th = int(fields["width"]), int(fields["height"])
        big = upscale_image(init_images[0], plan["upscaler"], plan["scale"])
        if big.width < tw or big.height < th:  # smaller than one tile: pad up to it
            canvas = Image.new("RGB", (max(tw, big.width), max(th, big.height)))
            canvas.paste(big, (0, 0))
            big = canvas
        tiles = split_tiles(big, tw, th, plan["overlap"])
        batch = max(1, int(fields.get("batch_size", 1)))
        seed = int(fields["seed"])
        extra = [["SD upscale overlap", plan["overlap"]], ["SD upscale upscaler", plan["upscaler"]]]
        images, texts, seeds = [], [], []
        interrupted = False
        for n in range(max(1, int(fields.get("n_iter", 1)))):
            start_seed = (seed + n) % 2**32
            cur = start_seed
            done: list[Any] = []
            first_text = None
            for i in range(0, len(tiles), batch):
                chunk = [t.image for t in tiles[i:i + batch]]
                f = dict(fields, seed=cur, batch_size=len(chunk), n_iter=1, init_images=chunk)
                result = generate(f, None, "keep")
                first_text = first_text or (result.infotexts[0] if result.infotexts else None)
                done += result.images
                cur = (result.seeds[0] + 1) % 2**32 if result.seeds else cur + 1
                if result.interrupted:
                    interrupted = True
                    break
            for t, img in zip(tiles, done, strict=False):
                t.image = img
            combined = combine_tiles(tiles, big.size, plan["overlap"])
            text = append_params(first_text or "", extra)
            combined.info["parameters"] = text
            images.append(combined)
            texts.append(text)
            seeds.append(start_seed)
            if interrupted:
                break
        return ScriptOutput(images=images, infotexts=texts, seeds=seeds, samples=list(images),
                            sample_infotexts=list(texts), sample_seeds=list(seeds), interrupted=interrupted)
