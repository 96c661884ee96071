"""sd-webui-controlnet's preprocessors that need no weights (canny, scribble/XDoG, lineart
standard, threshold, invert, blur, tile resample, shuffle, inpaint, none), on numpy/OpenCV,
and the weight-based ones (openpose, depth, lineart, softedge) through ``controlnet_aux`` when
it is installed and the annotator files are in ``models/ControlNet/annotators``.

Each takes an RGB uint8 array already scaled to the processor resolution and returns one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sdcloud.errors import Unsupported

# name -> (threshold_a default, threshold_b default)
WEIGHT_FREE: dict[str, tuple[float, float]] = {
    "none": (-1, -1),
    "canny": (100, 200),
    "invert (from white bg & black line)": (-1, -1),
    "blur_gaussian": (9.0, -1),
    "tile_resample": (1.0, -1),
    "inpaint_only": (-1, -1),
    "inpaint_global_harmonious": (-1, -1),
    "shuffle": (-1, -1),
    "scribble_xdog": (32, -1),
    "threshold": (127, -1),
    "lineart_standard (from white bg & black line)": (-1, -1),
}
ALIASES = {"invert": "invert (from white bg & black line)", "lineart_standard":
           "lineart_standard (from white bg & black line)", "inpaint": "inpaint_only", "tile": "tile_resample",
           "blur": "blur_gaussian", "scribble": "scribble_xdog", "content_shuffle": "shuffle"}
# weight-based: name -> (controlnet_aux class, its call keyword arguments)
WEIGHTED: dict[str, tuple[str, dict[str, Any]]] = {
    "openpose": ("OpenposeDetector", {}),
    "openpose_full": ("OpenposeDetector", {"include_hand": True, "include_face": True}),
    "depth_midas": ("MidasDetector", {}),
    "lineart_realistic": ("LineartDetector", {}),
    "lineart_anime": ("LineartAnimeDetector", {}),
    "softedge_hed": ("HEDdetector", {}),
    "normal_bae": ("NormalBaeDetector", {}),
}
MASKED = ("inpaint_only", "inpaint_global_harmonious")


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def weighted_available(annotators: Path) -> str | None:
    """Why the weight-based preprocessors cannot run (None when they can)."""
    try:
        import controlnet_aux  # noqa: F401
    except Exception as exc:
        return f"controlnet_aux cannot be imported ({str(exc).splitlines()[0][:100]}); pip install controlnet_aux"
    if not annotators.is_dir() or not any(annotators.iterdir()):
        return f"no annotator files in {annotators} (put lllyasviel/Annotators' files there)"
    return None


def module_names(annotators: Path) -> list[str]:
    names = list(WEIGHT_FREE)
    if weighted_available(annotators) is None:
        names += list(WEIGHTED)
    return names


def check(name: str, annotators: Path) -> str:
    """The canonical module name; ``Unsupported`` (422) listing the available ones otherwise."""
    name = canonical(name)
    if name in WEIGHT_FREE:
        return name
    if name in WEIGHTED:
        why = weighted_available(annotators)
        if why is not None:
            raise Unsupported(f"ControlNet module '{name}' needs weights: {why}")
        return name
    raise Unsupported(f"ControlNet module '{name}' not found; available: {', '.join(module_names(annotators))}")


def _cv2() -> Any:
    import cv2

    return cv2


def _canny(img: np.ndarray, a: float, b: float) -> np.ndarray:
    return _cv2().Canny(img, int(a), int(b))


def _invert(img: np.ndarray, a: float, b: float) -> np.ndarray:
    return 255 - img


def _blur(img: np.ndarray, a: float, b: float) -> np.ndarray:
    return _cv2().GaussianBlur(img, (0, 0), float(a))


def _tile(img: np.ndarray, a: float, b: float) -> np.ndarray:
    cv2 = _cv2()
    rate = max(float(a), 1.0)
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, int(w / rate)), max(1, int(h / rate))), interpolation=cv2.INTER_AREA)


def _threshold(img: np.ndarray, a: float, b: float) -> np.ndarray:
    gray = img.mean(axis=2) if img.ndim == 3 else img
    return np.where(gray > a, 255, 0).astype(np.uint8)


def _xdog(img: np.ndarray, a: float, b: float) -> np.ndarray:
    cv2 = _cv2()
    x = img.astype(np.float32)
    g1, g2 = cv2.GaussianBlur(x, (0, 0), 0.5), cv2.GaussianBlur(x, (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255)
    return np.where(2 * (255 - dog) > a, 255, 0).astype(np.uint8)


def _lineart_standard(img: np.ndarray, a: float, b: float) -> np.ndarray:
    x = img.astype(np.float32)
    g = _cv2().GaussianBlur(x, (0, 0), 6.0)
    intensity = np.min(g - x, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity /= max(16.0, float(np.median(strong)) if strong.size else 16.0)
    return (intensity * 127).clip(0, 255).astype(np.uint8)


def _shuffle(img: np.ndarray, a: float, b: float) -> np.ndarray:
    """Content shuffle: the image warped by a smooth random flow (fixed seed, so repeatable)."""
    cv2 = _cv2()
    h, w = img.shape[:2]
    rng = np.random.default_rng(0)
    f = max(8, min(h, w) // 8)
    flow = [cv2.resize(rng.uniform(0, 1, (max(2, h // f), max(2, w // f))).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC) for _ in range(2)]
    return cv2.remap(img, flow[0] * (w - 1), flow[1] * (h - 1), cv2.INTER_LINEAR)


_FUNCS: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "none": lambda img, a, b: img, "canny": _canny, "invert (from white bg & black line)": _invert,
    "blur_gaussian": _blur, "tile_resample": _tile, "inpaint_only": lambda img, a, b: img,
    "inpaint_global_harmonious": lambda img, a, b: img, "shuffle": _shuffle, "scribble_xdog": _xdog,
    "threshold": _threshold, "lineart_standard (from white bg & black line)": _lineart_standard,
}


def resize_short_side(img: np.ndarray, res: int) -> np.ndarray:
    """Scale so the short side is ``res`` (sd-webui-controlnet's processor resolution)."""
    cv2 = _cv2()
    h, w = img.shape[:2]
    k = res / min(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)


def run(name: str, img: np.ndarray, res: int, a: float = -1, b: float = -1, annotators: Path | None = None
        ) -> np.ndarray:
    """Detected map (H, W, 3) uint8 of an RGB uint8 image."""
    name = canonical(name)
    if name in WEIGHTED:
        assert annotators is not None
        return _weighted(name, img, res, annotators)
    da, db = WEIGHT_FREE[name]
    a = da if a == -1 else a
    b = db if b == -1 else b
    if name not in ("none", "inpaint_only", "inpaint_global_harmonious"):
        img = resize_short_side(img, res)
    out = _FUNCS[name](np.ascontiguousarray(img), a, b)
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return out.astype(np.uint8)


def _weighted(name: str, img: np.ndarray, res: int, annotators: Path) -> np.ndarray:  # pragma: no cover - needs files
    import controlnet_aux
    from PIL import Image

    cls_name, kwargs = WEIGHTED[name]
    detector = getattr(controlnet_aux, cls_name).from_pretrained(str(annotators))
    out = detector(Image.fromarray(img), detect_resolution=res, image_resolution=res, **kwargs)
    return np.asarray(out.convert("RGB"))
