"""``/sdapi/v1/interrogate``: tag an image with a WD14-style ONNX tagger (SmilingWolf's
wd-v1-4-* / wd-*-v3 layout: ``model.onnx`` and ``selected_tags.csv`` in one folder) on
onnxruntime, A1111's DeepDanbooru output format (``1girl, solo, long hair``; brackets escaped).

Taggers live in ``models/interrogators/<name>/``. ``model`` ``deepdanbooru`` (what A1111
clients send) picks the first tagger; ``clip`` is A1111's BLIP + CLIP interrogator
(``clip_interrogate``), from transformers folders in ``models/BLIP`` and ``models/CLIP``; a 404
says which files to put where when they are missing.
"""

from __future__ import annotations

import csv
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, CorruptFile, NotFound, Unsupported, redact_paths

log = logging.getLogger(__name__)

FOLDER = "interrogators"
GENERAL_THRESHOLD = 0.35  # the WD14 tagger extension's defaults
CHARACTER_THRESHOLD = 0.85
_RATING, _GENERAL, _CHARACTER = 9, 0, 4
_KAOMOJI = {"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
            "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"}


@dataclass(frozen=True)
class Tagger:
    name: str
    model: Path
    tags: Path


def scan(models_root: Path) -> list[Tagger]:
    root = models_root / FOLDER
    if not root.is_dir():
        return []
    return [Tagger(d.name, d / "model.onnx", d / "selected_tags.csv") for d in sorted(root.iterdir())
            if (d / "model.onnx").is_file() and (d / "selected_tags.csv").is_file()]


def _missing(models_root: Path) -> str:
    # the folder relative to the data dir: the server's absolute paths stay out of answers
    return (f"no tagger found: put a WD14 tagger's model.onnx and selected_tags.csv in "
            f"models/{FOLDER}/<name>/ (e.g. wd-v1-4-moat-tagger-v2)")


def format_tag(name: str) -> str:
    """A1111's deepbooru style: underscores to spaces (not in kaomoji), brackets escaped."""
    text = name if name in _KAOMOJI else name.replace("_", " ")
    return text.replace("(", "\\(").replace(")", "\\)")


class Interrogator:
    def __init__(self, models_root: Path) -> None:
        self.models_root = models_root
        self._loaded: tuple[Path, Any, list[tuple[str, int]]] | None = None
        self._lock = threading.Lock()
        from sdcloud.clip_interrogate import ClipInterrogator

        self.clip = ClipInterrogator(models_root)

    def models(self) -> list[str]:
        return [t.name for t in scan(self.models_root)]

    def find(self, model: str) -> Tagger:
        taggers = scan(self.models_root)
        if not taggers:
            log.info("no interrogate tagger in %s", self.models_root / FOLDER)
            raise NotFound(_missing(self.models_root))
        if model in ("deepdanbooru", "wd14", ""):
            return taggers[0]
        for t in taggers:
            if t.name == model:
                return t
        raise NotFound(f"interrogate model '{model}' not found; available: deepdanbooru (= {taggers[0].name}), "
                       f"{', '.join(t.name for t in taggers)}")

    def _session(self, tagger: Tagger) -> tuple[Any, list[tuple[str, int]]]:
        if self._loaded is not None and self._loaded[0] == tagger.model:
            return self._loaded[1], self._loaded[2]
        try:
            import onnxruntime as ort
        except ImportError:
            raise Unsupported("tagging needs onnxruntime: pip install onnxruntime") from None
        try:
            session = ort.InferenceSession(str(tagger.model), providers=ort.get_available_providers())
        except Exception as exc:  # onnxruntime raises its own error types for a bad file
            log.warning("tagger %s: %s", tagger.model, exc)
            first = redact_paths(str(exc).splitlines()[0][:160]) if str(exc).strip() else type(exc).__name__
            raise CorruptFile(f"models/{FOLDER}/{tagger.name}/model.onnx: not a loadable ONNX model ({first})") \
                from None
        with tagger.tags.open(newline="", encoding="utf-8") as fh:
            rows = [(r["name"], int(r.get("category") or 0)) for r in csv.DictReader(fh)]
        outputs = session.get_outputs()[0].shape[-1]
        if isinstance(outputs, int) and outputs != len(rows):
            raise CorruptFile(f"models/{FOLDER}/{tagger.name}/model.onnx: the model gives {outputs} scores but "
                              f"selected_tags.csv has {len(rows)} tags")
        self._loaded = (tagger.model, session, rows)
        return session, rows

    def tags(self, image: Any, model: str = "deepdanbooru", general: float = GENERAL_THRESHOLD,
             character: float = CHARACTER_THRESHOLD) -> dict[str, float]:
        """Tag -> score above the thresholds, best first (ratings left out, as A1111's caption)."""
        import numpy as np
        from PIL import Image

        tagger = self.find(model)
        with self._lock:
            session, rows = self._session(tagger)
            inp = session.get_inputs()[0]
            size = inp.shape[1] if isinstance(inp.shape[1], int) else 448
            rgba = image.convert("RGBA")
            flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            flat.alpha_composite(rgba)
            side = max(flat.size)
            square = Image.new("RGB", (side, side), (255, 255, 255))
            square.paste(flat.convert("RGB"), ((side - flat.width) // 2, (side - flat.height) // 2))
            arr = np.asarray(square.resize((size, size), Image.BICUBIC), dtype=np.float32)[:, :, ::-1]  # BGR
            scores = session.run(None, {inp.name: np.ascontiguousarray(arr)[None]})[0][0]
        found = {}
        for (name, category), score in zip(rows, scores, strict=True):
            if (category == _GENERAL and score >= general) or (category == _CHARACTER and score >= character):
                found[name] = float(score)
        return dict(sorted(found.items(), key=lambda kv: -kv[1]))

    def caption(self, image: Any, model: str = "deepdanbooru", clip_options: Any = None) -> str:
        """A1111's caption: tags (a tagger) or, with ``model`` ``clip``, BLIP + CLIP."""
        if image is None:
            raise BadRequest("Image not found")
        if model == "clip":
            from sdcloud.clip_interrogate import missing

            why = missing(self.models_root)
            if why is not None:
                log.info("CLIP interrogator models missing under %s", self.models_root)
                taggers = scan(self.models_root)
                alt = f"; or use model 'deepdanbooru' ({taggers[0].name})" if taggers else ""
                raise NotFound(why + alt)
            return self.clip.interrogate(image, clip_options)
        return ", ".join(format_tag(t) for t in self.tags(image, model))
