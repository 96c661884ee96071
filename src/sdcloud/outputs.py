"""Write finished images to the outputs folder in A1111's layout, durably.

``outputs/txt2img-images/YYYY-MM-DD/00000-<seed>.png``: each PNG carries its infotext,
is written under a temporary name, fsync'd and renamed, so a crash never leaves a partial
file under a final name. The counter continues from the highest number in the folder.
"""

from __future__ import annotations

import re
import threading
import time
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
                kind: str = "txt2img") -> list[Path]:
    """Save each image as ``NNNNN-<seed>.png``; returns the paths in order."""
    folder = output_dir(settings, kind)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with _lock:
        number = _next_number(folder)
        for image, text, seed in zip(images, infotexts, seeds, strict=True):
            path = folder / f"{number:05d}-{seed}.png"
            write_png_atomic(image, path, text)
            paths.append(path)
            number += 1
    return paths


def save_result(result: Any, settings: Settings, kind: str = "txt2img") -> list[Path]:
    """Save a ``GenerationResult``'s images."""
    return save_images(result.images, result.infotexts, result.seeds, settings, kind)
