"""Training datasets in kohya's folder layout, aspect-ratio buckets and the ``train check`` report.

A dataset folder holds images with sidecar captions (``img.png`` + ``img.txt``/``img.caption``)
either directly or in kohya's ``<repeats>_<concept>`` sub-folders (``20_sks dog``: 20 repeats,
``sks dog`` is the caption of images that have none). A regularisation folder has the same
layout. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, NotFound
from sdcloud.training.captions import CaptionEncodingError, read_caption
from sdcloud.training.config import TrainConfig

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_REPEAT_DIR = re.compile(r"^(\d+)_(.*)$")


@dataclass(frozen=True)
class ImageItem:
    path: Path
    caption: str
    width: int
    height: int
    bucket: tuple[int, int]  # (width, height)
    repeats: int
    is_reg: bool
    subset: str


@dataclass
class DatasetReport:
    """What ``sdcloud train check`` prints, and what training refuses to start with."""

    root: str
    images: list[ImageItem] = field(default_factory=list)
    missing_captions: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    too_small: list[str] = field(default_factory=list)
    bad_captions: list[str] = field(default_factory=list)
    subsets: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def train_images(self) -> list[ImageItem]:
        return [i for i in self.images if not i.is_reg]

    @property
    def reg_images(self) -> list[ImageItem]:
        return [i for i in self.images if i.is_reg]

    @property
    def buckets(self) -> dict[str, int]:
        counts = Counter(f"{w}x{h}" for w, h in (i.bucket for i in self.images))
        return dict(sorted(counts.items()))

    @property
    def errors(self) -> list[str]:
        out = []
        if self.unreadable:
            out.append(f"{len(self.unreadable)} unreadable image(s): {_few(self.unreadable)}")
        if self.too_small:
            out.append(f"{len(self.too_small)} image(s) too small: {_few(self.too_small)}")
        out.extend(self.bad_captions[:3])
        if len(self.bad_captions) > 3:
            out.append(f"... and {len(self.bad_captions) - 3} more captions that are not UTF-8")
        if not self.train_images and not out:
            out.append(f"no training images in {self.root} (looked for {', '.join(IMAGE_EXTS)}, "
                       "directly or in <repeats>_<concept> folders)")
        return out

    def raise_if_bad(self) -> None:
        errors = self.errors
        if errors:
            more = f" (+{len(errors) - 1} more problems; run 'sdcloud train check')" if len(errors) > 1 else ""
            raise BadRequest(f"dataset {self.root}: {errors[0]}{more}")

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """kohya's ``ss_tag_frequency``: per subset folder, how often each caption tag occurs."""
        freq: dict[str, Counter] = {}
        for item in self.images:
            counter = freq.setdefault(item.subset, Counter())
            for tag in (t.strip() for t in item.caption.split(",")):
                if tag:
                    counter[tag] += 1
        return {k: dict(v) for k, v in freq.items()}

    def fingerprint(self) -> str:
        """Changes when images, captions, sizes or repeats change (a resume must see the same data)."""
        h = hashlib.sha256()
        for i in self.images:
            st = i.path.stat()
            h.update(f"{i.subset}/{i.path.name}|{st.st_size}|{i.caption}|{i.repeats}|{i.is_reg}|{i.bucket}\n".encode())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root, "images": len(self.train_images), "reg_images": len(self.reg_images),
            "steps_per_epoch_images": sum(i.repeats for i in self.train_images),
            "missing_captions": self.missing_captions, "unreadable": self.unreadable,
            "too_small": self.too_small, "bad_captions": self.bad_captions, "buckets": self.buckets,
            "subsets": self.subsets, "errors": self.errors, "ok": not self.errors,
        }


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")


# -- buckets -------------------------------------------------------------------------------
def make_buckets(resolution: int, lo: int, hi: int, step: int) -> list[tuple[int, int]]:
    """kohya's bucket list: every (w, h) on the ``step`` grid within [lo, hi] with w*h <= resolution²."""
    max_area = resolution * resolution
    side = int(math.sqrt(max_area) // step) * step
    resos = {(side, side)}
    width = lo
    while width <= hi:
        height = min(hi, int((max_area // width) // step) * step)
        if height >= lo:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return sorted(resos)


def pick_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the image's."""
    ar = width / height
    return min(buckets, key=lambda b: (abs(b[0] / b[1] - ar), -b[0] * b[1]))


# -- scanning ------------------------------------------------------------------------------
def _subset_dirs(root: Path) -> list[tuple[Path, int, str]]:
    """(folder, repeats, concept) for the root's own images and each sub-folder."""
    out: list[tuple[Path, int, str]] = []
    if any(p.suffix.lower() in IMAGE_EXTS for p in root.iterdir() if p.is_file()):
        out.append((root, 0, ""))
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        m = _REPEAT_DIR.match(sub.name)
        if m:
            out.append((sub, int(m.group(1)), m.group(2).strip()))
        elif any(p.suffix.lower() in IMAGE_EXTS for p in sub.iterdir() if p.is_file()):
            out.append((sub, 0, ""))
    return out


def _caption_file(image: Path, extension: str) -> Path | None:
    exts = [extension if extension.startswith(".") else "." + extension] if extension else [".txt", ".caption"]
    for ext in exts:
        p = image.with_suffix(ext)
        if p.is_file():
            return p
    return None


def scan_dataset(cfg: TrainConfig) -> DatasetReport:
    """Read the dataset (and regularisation) folders: sizes, captions, buckets and problems."""
    from PIL import Image, UnidentifiedImageError

    root = Path(cfg.dataset).expanduser()
    if not root.is_dir():
        raise NotFound(f"dataset folder {root} not found")
    report = DatasetReport(root=str(root))
    lo, hi = cfg.bucket_range
    if cfg.enable_bucket:
        buckets = make_buckets(cfg.resolution, lo, hi, cfg.bucket_reso_steps)
    else:
        buckets = [(cfg.resolution, cfg.resolution)]
    sources = [(root, False)]
    if cfg.reg_dir:
        reg = Path(cfg.reg_dir).expanduser()
        if not reg.is_dir():
            raise NotFound(f"regularisation folder {reg} not found")
        sources.append((reg, True))
    for base, is_reg in sources:
        for folder, repeats, concept in _subset_dirs(base):
            n_repeats = repeats or cfg.repeats
            label = ("reg/" if is_reg else "") + (folder.name if folder != base else ".")
            count = 0
            for img_path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()):
                rel = f"{label}/{img_path.name}"
                try:
                    with Image.open(img_path) as im:
                        im.verify()
                    with Image.open(img_path) as im:
                        width, height = im.size
                        im.load()
                except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
                    report.unreadable.append(rel)
                    continue
                if min(width, height) < cfg.too_small:
                    report.too_small.append(f"{rel} ({width}x{height}, need >= {cfg.too_small})")
                    continue
                cap_file = _caption_file(img_path, cfg.caption_extension)
                caption = concept
                if cap_file is None:
                    report.missing_captions.append(rel)
                else:
                    try:
                        caption = read_caption(cap_file) or concept
                    except CaptionEncodingError as exc:
                        report.bad_captions.append(f"{label}/{exc}")
                        continue
                report.images.append(ImageItem(img_path, caption, width, height,
                                               pick_bucket(width, height, buckets), n_repeats, is_reg, label))
                count += 1
            report.subsets[label] = {"images": count, "repeats": n_repeats, "class_tokens": concept, "is_reg": is_reg}
    return report


# -- epoch order ---------------------------------------------------------------------------
def epoch_batches(report: DatasetReport, batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch as lists of indices into ``report.images``.

    Each image appears ``repeats`` times; regularisation images are cycled to as many entries
    as training images (kohya). Batches never mix buckets; their order is shuffled with a
    generator seeded by (seed, epoch), so the same epoch always has the same order.
    """
    rng = random.Random(f"{seed}:{epoch}")
    train = [i for i, item in enumerate(report.images) if not item.is_reg for _ in range(item.repeats)]
    reg_pool = [i for i, item in enumerate(report.images) if item.is_reg for _ in range(item.repeats)]
    entries = list(train)
    if reg_pool:
        rng.shuffle(reg_pool)
        entries += [reg_pool[k % len(reg_pool)] for k in range(len(train))]
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for idx in entries:
        by_bucket.setdefault(report.images[idx].bucket, []).append(idx)
    batches: list[list[int]] = []
    for key in sorted(by_bucket):
        items = by_bucket[key]
        rng.shuffle(items)
        batches.extend(items[k:k + batch] for k in range(0, len(items), batch))
    rng.shuffle(batches)
    return batches
