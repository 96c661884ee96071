"""Generated training datasets for the training tests (a few seeded 64x64 images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_dataset(root: Path, n: int = 4, size: tuple[int, int] = (64, 64), folder: str = "5_sks cat",
                 captions: bool = True) -> Path:
    """``root/<folder>/{i}.png`` with ``{i}.txt`` captions: a coloured square on a plain background."""
    sub = root / folder if folder else root
    sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    for i in range(n):
        arr = np.zeros((h, w, 3), np.uint8)
        arr[:] = [200 * (i % 2), 80, 40 * i]
        arr[h // 4:3 * h // 4, w // 4:3 * w // 4] = rng.integers(0, 255, (h // 2, w // 2, 3))
        Image.fromarray(arr).save(sub / f"{i}.png")
        if captions:
            (sub / f"{i}.txt").write_text(f"sks cat, red, tag{i}", encoding="utf-8")
    return root
