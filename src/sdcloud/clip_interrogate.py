"""A1111's CLIP interrogator (``/sdapi/v1/interrogate`` with ``model: "clip"``, img2img's
"Interrogate CLIP") on transformers, from files the user puts in place:

- ``models/BLIP/<folder>/``: a transformers BLIP captioning model (``config.json`` +
  weights, e.g. Salesforce/blip-image-captioning-large), with its tokenizer files;
- ``models/CLIP/<folder>/``: a transformers CLIP model (e.g. openai/clip-vit-large-patch14,
  A1111's ViT-L/14), with its tokenizer files;
- optional: A1111's category lists (its ``interrogate/`` folder: ``artists.txt``,
  ``flavors.top3.txt``, ``mediums.txt``, ``movements.txt``) in ``models/interrogate/``.

As A1111: BLIP writes the caption (beam count and lengths from the ``interrogate_clip_*``
options), then for each category the ``topN`` lines (``name.topN.txt``, else 1; at most
``interrogate_clip_dict_limit`` lines read) that CLIP ranks closest to the image are appended.
A1111's own files (LAVIS ``model_base_caption_capfilt_large.pth``, OpenAI's JIT ``ViT-L-14.pt``)
are other formats: the refusal says which folders to use instead.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcloud.errors import CorruptFile, NotFound

BLIP_DIR, CLIP_DIR, LISTS_DIR = "BLIP", "CLIP", "interrogate"
BLIP_PROMPT = "a picture of"  # BLIP's captioning prompt, stripped from the caption (as LAVIS does)
MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, used by BLIP too
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ClipOptions:
    num_beams: int = 1
    min_length: int = 24
    max_length: int = 48
    dict_limit: int = 1500
    skip_categories: tuple[str, ...] = ()


def _model_folder(root: Path, arch: str) -> Path | None:
    """The first folder under ``root`` (itself included) whose config.json is a ``arch`` model."""
    import json

    if not root.is_dir():
        return None
    for cfg in sorted([root / "config.json", *root.glob("*/config.json")]):
        if cfg.is_file():
            try:
                kind = json.loads(cfg.read_text(encoding="utf-8")).get("model_type", "")
            except (OSError, ValueError):
                continue
            if kind == arch:
                return cfg.parent
    return None


def missing(models_root: Path) -> str | None:
    """What to put where for the CLIP interrogator (None when both models are present)."""
    need = []
    if _model_folder(models_root / BLIP_DIR, "blip") is None:
        stray = sorted(p.name for p in (models_root / BLIP_DIR).glob("*.pth")) if (models_root / BLIP_DIR).is_dir() \
            else []
        note = f" ({', '.join(stray)} is LAVIS's format, not read here)" if stray else ""
        need.append(f"a transformers BLIP captioning folder (e.g. Salesforce/blip-image-captioning-large: "
                    f"config.json, model.safetensors, tokenizer files) in models/{BLIP_DIR}/<name>/{note}")
    if _model_folder(models_root / CLIP_DIR, "clip") is None:
        need.append(f"a transformers CLIP folder (e.g. openai/clip-vit-large-patch14) in "
                    f"models/{CLIP_DIR}/<name>/")
    if not need:
        return None
    return "the CLIP interrogator needs " + " and ".join(need)


def categories(models_root: Path, limit: int, skip: tuple[str, ...] = ()) -> list[tuple[str, int, list[str]]]:
    """(name, top count, lines) of each ``*.txt`` list in ``models/interrogate`` (A1111's files)."""
    folder = models_root / LISTS_DIR
    out = []
    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        m = re.match(r"^(.*?)(?:\.top(\d+))?\.txt$", path.name)
        name, top = (m.group(1), int(m.group(2) or 1)) if m else (path.stem, 1)
        if name in skip:
            continue
        lines = [x.strip() for x in path.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
        if lines:
            out.append((name, top, lines[: max(1, int(limit))] if limit > 0 else lines))
    return out


class ClipInterrogator:
    """BLIP + CLIP, loaded on first use and kept (on the CPU between calls when a GPU is used)."""

    def __init__(self, models_root: Path) -> None:
        self.models_root = models_root
        self._lock = threading.Lock()
        self._models: tuple[Path, Path, Any, Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any, Any]:
        why = missing(self.models_root)
        if why is not None:
            raise NotFound(why)
        blip_dir = _model_folder(self.models_root / BLIP_DIR, "blip")
        clip_dir = _model_folder(self.models_root / CLIP_DIR, "clip")
        assert blip_dir is not None and clip_dir is not None
        if self._models is None or self._models[:2] != (blip_dir, clip_dir):
            from transformers import AutoTokenizer, BlipForConditionalGeneration, CLIPModel

            try:
                blip = BlipForConditionalGeneration.from_pretrained(str(blip_dir), local_files_only=True).eval()
                blip_tok = AutoTokenizer.from_pretrained(str(blip_dir), local_files_only=True)
                clip = CLIPModel.from_pretrained(str(clip_dir), local_files_only=True).eval()
                clip_tok = AutoTokenizer.from_pretrained(str(clip_dir), local_files_only=True)
            except (OSError, ValueError, KeyError) as exc:
                raise CorruptFile(f"the CLIP interrogator's files cannot be loaded from {blip_dir} / {clip_dir} "
                                  f"({str(exc).splitlines()[0][:160]})") from None
            self._models = (blip_dir, clip_dir, blip, blip_tok, clip, clip_tok)
        return self._models[2:]

    def interrogate(self, image: Any, options: ClipOptions | None = None) -> str:
        import torch

        opts = options or ClipOptions()
        with self._lock:
            blip, blip_tok, clip, clip_tok = self._load()
            device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
            dtype = torch.float16 if device.type == "cuda" else torch.float32
            try:
                blip.to(device, dtype)
                clip.to(device, dtype)
                with torch.no_grad():
                    caption = self._caption(blip, blip_tok, image, opts, device, dtype)
                    parts = [caption] + self._ranked(clip, clip_tok, image, opts, device, dtype)
            finally:
                if device.type == "cuda":  # give the VRAM back to Stable Diffusion (A1111's default)
                    blip.to("cpu", torch.float32)
                    clip.to("cpu", torch.float32)
                    torch.cuda.empty_cache()
        return ", ".join(p for p in parts if p)

    @staticmethod
    def _pixels(image: Any, size: int, device: Any, dtype: Any) -> Any:
        import numpy as np
        import torch
        from PIL import Image

        rgb = image.convert("RGB").resize((size, size), Image.BICUBIC)
        arr = (np.asarray(rgb, dtype=np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1)[None].to(device, dtype)

    def _caption(self, blip: Any, tok: Any, image: Any, opts: ClipOptions, device: Any, dtype: Any) -> str:
        pixels = self._pixels(image, int(blip.config.vision_config.image_size), device, dtype)
        ids = tok(BLIP_PROMPT, return_tensors="pt").input_ids.to(device)
        out = blip.generate(pixel_values=pixels, input_ids=ids, num_beams=max(1, opts.num_beams),
                            min_length=opts.min_length, max_length=max(opts.max_length, opts.min_length + 1))
        text = tok.decode(out[0], skip_special_tokens=True).strip()
        if text.lower().startswith(BLIP_PROMPT):
            text = text[len(BLIP_PROMPT):].strip()
        return text

    def _ranked(self, clip: Any, tok: Any, image: Any, opts: ClipOptions, device: Any, dtype: Any) -> list[str]:
        cats = categories(self.models_root, opts.dict_limit, opts.skip_categories)
        if not cats:
            return []
        pixels = self._pixels(image, int(clip.config.vision_config.image_size), device, dtype)
        img = clip.get_image_features(pixel_values=pixels)
        img = _features(img)
        img = img / img.norm(dim=-1, keepdim=True)
        out = []
        for _, top, lines in cats:
            feats = []
            for i in range(0, len(lines), 256):
                batch = tok(lines[i:i + 256], padding=True, truncation=True, max_length=77, return_tensors="pt")
                feats.append(_features(clip.get_text_features(**{k: v.to(device) for k, v in batch.items()})))
            import torch

            text = torch.cat(feats)
            text = text / text.norm(dim=-1, keepdim=True)
            probs = (100.0 * img @ text.T).softmax(dim=-1)[0]
            best = torch.topk(probs, min(top, len(lines))).indices.tolist()
            out += [lines[j] for j in best]
        return out


def _features(value: Any) -> Any:
    """transformers returns a tensor, or (newer versions) an output object holding one."""
    for attr in ("pooler_output", "image_embeds", "text_embeds"):
        if not hasattr(value, "shape") and hasattr(value, attr) and getattr(value, attr) is not None:
            return getattr(value, attr)
    return value
