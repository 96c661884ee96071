"""Write finished images to the outputs folder in A1111's layout, durably.

``outputs/txt2img-images/YYYY-MM-DD/00000-<seed>.png``: each PNG carries its infotext,
is written under a temporary name, fsync'd and renamed, so a crash never leaves a partial
file under a final name. The counter continues from the highest number in the folder.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcloud.image_files import write_png_atomic
from sdcloud.settings import Settings

FOLDERS = {"txt2img": "txt2img-images", "img2img": "img2img-images", "extras": "extras-images"}
_COUNTER = re.compile(r"^(\d{5})-")
_lock = threading.Lock()


def output_dir(settings: Settings, kind: str, when: float | None = None) -> Path:
    return settings.outputs_path / FOLDERS[kind] / time.strftime("%Y-%m-%d", time.localtime(when))


def _next_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _COUNTER.match(p.name))]
    return max(numbers, default=-1) + 1


def save_images(images: list[Any], infotexts: list[str], seeds: list[int], settings: Settings,
                kind: str = "txt2img", *, paths: list[Path] | None = None,
                on_plan: Callable[[list[Path]], None] | None = None) -> list[Path]:
    """Save each image as ``NNNNN-<seed>.png``; returns the paths in order.

    ``paths`` (the names an earlier attempt of the same job chose) are written again in place,
    so a retried job never leaves a second copy; otherwise the names are chosen here and
    ``on_plan`` records them before the first image is written."""
    if paths is not None and len(paths) == len(images):
        for image, text, path in zip(images, infotexts, paths, strict=True):
            write_png_atomic(image, path, text)
        return list(paths)
    folder = output_dir(settings, kind)
    folder.mkdir(parents=True, exist_ok=True)
    with _lock:
        number = _next_number(folder)
        chosen = [folder / f"{number + i:05d}-{seed}.png" for i, seed in enumerate(seeds)]
        if on_plan is not None:
            on_plan(chosen)
        for image, text, path in zip(images, infotexts, chosen, strict=True):
            write_png_atomic(image, path, text)
    return chosen


def save_result(result: Any, settings: Settings, kind: str = "txt2img", *, paths: list[Path] | None = None,
                on_plan: Callable[[list[Path]], None] | None = None) -> list[Path]:
    """Save a ``GenerationResult``'s images (``paths``/``on_plan`` as :func:`save_images`)."""
    return save_images(result.images, result.infotexts, result.seeds, settings, kind, paths=paths,
                       on_plan=on_plan)
