"""Grids with labelled rows and columns, laid out as A1111 lays them out: column labels above
the grid, row labels in a band on its left (three quarters of a cell wide), black text on
white, an inactive label (prompt matrix) grey and struck through."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ACTIVE = (0, 0, 0)
INACTIVE = (153, 153, 153)


@dataclass(frozen=True)
class Label:
    text: str
    active: bool = True


def image_grid(images: list[Any], rows: int | None = None) -> Any:
    """Paste equally sized images into ``rows`` rows (A1111's default: floor(sqrt(n)))."""
    from PIL import Image

    n = len(images)
    if rows is None:
        rows = max(1, int(math.sqrt(n)))
    rows = max(1, min(rows, n))
    cols = math.ceil(n / rows)
    w = max(im.width for im in images)
    h = max(im.height for im in images)
    grid = Image.new("RGB", (cols * w, rows * h), "black")
    for i, im in enumerate(images):
        grid.paste(im.convert("RGB"), ((i % cols) * w, (i // cols) * h))
    return grid


def _font(size: int) -> Any:
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    """Split ``text`` into lines that fit ``width`` pixels (words are kept whole)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}".strip()
            if line and draw.textlength(trial, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def draw_annotations(grid: Any, cell_w: int, cell_h: int, hor: list[list[Label]],
                     ver: list[list[Label]], margin: int = 0) -> Any:
    """``grid`` with ``hor`` (one label list per column) drawn above and ``ver`` (one per row)
    to the left; ``margin`` pixels of white between cells."""
    from PIL import Image, ImageDraw

    cols, rows = max(1, len(hor)), max(1, len(ver))
    size = max(12, (cell_w + cell_h) // 25)
    font = _font(size)
    spacing = size // 2
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad_left = 0 if not any(any(lb.text for lb in col) for col in ver) else cell_w * 3 // 4

    def block(labels: list[Label], width: int) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        for lb in labels:
            out += [(line, lb.active) for line in _wrap(probe, lb.text, font, width)]
        return out

    hor_lines = [block(col, cell_w) for col in hor]
    ver_lines = [block(row, max(1, pad_left - 2 * spacing)) for row in ver]
    line_h = size + spacing
    has_hor = any(any(t for t, _ in col) for col in hor_lines)
    pad_top = (max(len(col) for col in hor_lines) * line_h + spacing * 2) if has_hor else 0

    width = pad_left + cols * cell_w + (cols - 1) * margin
    height = pad_top + rows * cell_h + (rows - 1) * margin
    out = Image.new("RGB", (width, height), "white")
    for r in range(rows):
        for c in range(cols):
            box = (c * cell_w, r * cell_h, (c + 1) * cell_w, (r + 1) * cell_h)
            out.paste(grid.crop(box), (pad_left + c * (cell_w + margin), pad_top + r * (cell_h + margin)))
    draw = ImageDraw.Draw(out)

    def text_block(lines: list[tuple[str, bool]], cx: float, cy: float) -> None:
        y = cy - len(lines) * line_h / 2
        for text, active in lines:
            w = draw.textlength(text, font=font)
            x = cx - w / 2
            draw.text((x, y), text, font=font, fill=ACTIVE if active else INACTIVE)
            if not active:
                mid = y + size * 0.6
                draw.line((x, mid, x + w, mid), fill=INACTIVE, width=max(1, size // 12))
            y += line_h

    if has_hor:
        for c, lines in enumerate(hor_lines):
            text_block(lines, pad_left + c * (cell_w + margin) + cell_w / 2, pad_top / 2)
    if pad_left:
        for r, lines in enumerate(ver_lines):
            text_block(lines, pad_left / 2, pad_top + r * (cell_h + margin) + cell_h / 2)
    return out
