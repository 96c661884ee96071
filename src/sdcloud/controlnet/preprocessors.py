"""sd-webui-controlnet's preprocessors that need no weights (canny, scribble/XDoG, lineart
standard, threshold, invert, blur, tile resample, shuffle, inpaint, none), on numpy/OpenCV,
and the weight-based ones from lllyasviel/Annotators' files in ``models/ControlNet/annotators``
(flat, or in sd-webui-controlnet's ``annotator/downloads/<folder>/`` layout): lineart
realistic/coarse and HED soft edges by our own code (``annotator_nets``), openpose, depth,
lineart anime and normal through ``controlnet_aux`` where it imports (it needs torchvision).
A module whose files or package are missing is not listed, and asking for it is a 422 naming
the files and the folder.

Each takes an RGB uint8 array already scaled to the processor resolution and returns one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sdcloud.client_numbers import finite_float
from sdcloud.errors import BadRequest, Unsupported

log = logging.getLogger(__name__)

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
# the thresholds a module reads and the values it accepts (sd-webui-controlnet's slider ranges,
# widened where a wider value still means something); -1 is always "the default"
THRESHOLD_RANGES: dict[str, tuple[tuple[float, float] | None, tuple[float, float] | None]] = {
    "canny": ((0, 10000), (0, 10000)),
    "blur_gaussian": ((0.01, 64), None),
    "tile_resample": ((0, 64), None),
    "scribble_xdog": ((0, 1000), None),
    "threshold": ((0, 255), None),
}
ALIASES = {"invert": "invert (from white bg & black line)", "lineart_standard":
           "lineart_standard (from white bg & black line)", "inpaint": "inpaint_only", "tile": "tile_resample",
           "blur": "blur_gaussian", "scribble": "scribble_xdog", "content_shuffle": "shuffle"}
# weight-based: name -> (sd-webui-controlnet's annotator/downloads folder, files, controlnet_aux class,
# its call keyword arguments); lllyasviel/Annotators' file names
WEIGHTED: dict[str, tuple[str, tuple[str, ...], str, dict[str, Any]]] = {
    "openpose": ("openpose", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                 "OpenposeDetector", {}),
    "openpose_full": ("openpose", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                      "OpenposeDetector", {"include_hand": True, "include_face": True}),
    "depth_midas": ("midas", ("dpt_hybrid-midas-501f0c75.pt",), "MidasDetector", {}),
    "lineart_realistic": ("lineart", ("sk_model.pth",), "", {}),
    "lineart_coarse": ("lineart", ("sk_model2.pth",), "", {}),
    "lineart_anime": ("lineart_anime", ("netG.pth",), "LineartAnimeDetector", {}),
    "softedge_hed": ("hed", ("ControlNetHED.pth",), "", {}),
    "softedge_hedsafe": ("hed", ("ControlNetHED.pth",), "", {}),
    "normal_bae": ("normal_bae", ("scannet.pt",), "NormalBaeDetector", {}),
}
# run by our own code (annotator_nets.py), everywhere; the others need controlnet_aux
OWN = ("lineart_realistic", "lineart_coarse", "softedge_hed", "softedge_hedsafe")
ALIASES.update({"lineart": "lineart_realistic", "hed": "softedge_hed", "depth": "depth_midas"})
MASKED = ("inpaint_only", "inpaint_global_harmonious")


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def aux_error() -> str | None:
    """Why ``controlnet_aux`` cannot be used here (None when it imports)."""
    try:
        import controlnet_aux  # noqa: F401
    except Exception as exc:  # no package, or torchvision missing/built for another torch
        return f"controlnet_aux cannot be imported ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})"
    return None


def annotator_dir(name: str, annotators: Path) -> Path | None:
    """The folder holding all of ``name``'s files: ``annotators/<folder>/`` (sd-webui-controlnet's
    ``annotator/downloads`` layout) or ``annotators/`` itself (lllyasviel/Annotators, flat)."""
    folder, files, _, _ = WEIGHTED[canonical(name)]
    for where in (annotators / folder, annotators):
        if all((where / f).is_file() for f in files):
            return where
    return None


def weighted_error(name: str, annotators: Path) -> str | None:
    """Why weight-based module ``name`` cannot run here, in one line (None when it can)."""
    folder, files, _, _ = WEIGHTED[name]
    if annotator_dir(name, annotators) is None:
        where = annotators / folder
        missing = [f for f in files if not (where / f).is_file() and not (annotators / f).is_file()]
        # folder names relative to the data dir: the server's absolute paths stay out of answers
        return (f"needs {', '.join(missing or files)} (lllyasviel/Annotators) in "
                f"models/ControlNet/annotators/{folder}/ (sd-webui-controlnet's annotator/downloads/{folder}/) "
                "or in models/ControlNet/annotators/; list the modules that can run with GET /controlnet/module_list")
    if name not in OWN:
        why = aux_error()
        if why is not None:
            return f"runs through controlnet_aux, which {why.removeprefix('controlnet_aux ')}; " \
                   "pip install controlnet_aux (it needs torchvision matching torch)"
    return None


def module_names(annotators: Path) -> list[str]:
    """Every weight-free module, and the weight-based ones that can run here."""
    return list(WEIGHT_FREE) + [n for n in WEIGHTED if weighted_error(n, annotators) is None]


def check(name: str, annotators: Path) -> str:
    """The canonical module name; ``Unsupported`` (422) listing the available ones otherwise."""
    name = canonical(name)
    if name in WEIGHT_FREE:
        return name
    if name in WEIGHTED:
        why = weighted_error(name, annotators)
        if why is not None:
            log.info("ControlNet module %r cannot run: annotators folder %s", name, annotators)
            raise Unsupported(f"ControlNet module '{name}' {why}")
        return name
    raise Unsupported(f"ControlNet module '{name}' not found; available: {', '.join(module_names(annotators))}")


def check_thresholds(name: str, a: Any, b: Any, where: str = "ControlNet") -> tuple[float, float]:
    """``threshold_a``/``threshold_b`` of module ``name`` as finite floats in the module's range
    (400 otherwise: ``1e400`` or a blur sigma of 10^9 would fail or run for hours)."""
    a = finite_float(a, f"{where}: threshold_a")
    b = finite_float(b, f"{where}: threshold_b")
    for label, value, bounds in zip(("threshold_a", "threshold_b"), (a, b),
                                    THRESHOLD_RANGES.get(canonical(name), (None, None)), strict=True):
        if bounds is not None and value != -1 and not bounds[0] <= value <= bounds[1]:
            raise BadRequest(f"{where}: {label} of module '{canonical(name)}' must be between "
                             f"{bounds[0]:g} and {bounds[1]:g} (or -1 for the default), got {value:g}")
    return a, b


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
    a, b = check_thresholds(name, a, b)
    if name in WEIGHTED:
        if annotators is None:
            raise Unsupported(f"ControlNet module '{name}' needs the annotators folder")
        out = _weighted(name, np.ascontiguousarray(img), res, annotators)
    else:
        da, db = WEIGHT_FREE[name]
        a = da if a == -1 else a
        b = db if b == -1 else b
        if name not in ("none", "inpaint_only", "inpaint_global_harmonious"):
            img = resize_short_side(img, res)
        out = _FUNCS[name](np.ascontiguousarray(img), a, b)
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return out.astype(np.uint8)


def _weighted(name: str, img: np.ndarray, res: int, annotators: Path) -> np.ndarray:
    why = weighted_error(name, annotators)
    where = annotator_dir(name, annotators)
    if why is not None or where is None:
        raise Unsupported(f"ControlNet module '{name}' {why}")
    _, files, cls_name, kwargs = WEIGHTED[name]
    if name in OWN:
        from sdcloud.controlnet import annotator_nets

        img = resize_short_side(img, res)
        if name.startswith("lineart"):
            return annotator_nets.lineart(img, where / files[0])
        return annotator_nets.hed(img, where / files[0], safe=name == "softedge_hedsafe")
    return _aux(cls_name, files, kwargs, img, res, where)  # pragma: no cover - needs controlnet_aux


_AUX: dict[tuple[str, Path], Any] = {}


def _aux(cls_name: str, files: tuple[str, ...], kwargs: dict[str, Any], img: np.ndarray, res: int, where: Path
         ) -> np.ndarray:  # pragma: no cover - controlnet_aux needs torchvision, absent beside a CPU torch
    import controlnet_aux
    from PIL import Image

    key = (cls_name, where)
    if key not in _AUX:
        cls = getattr(controlnet_aux, cls_name)
        names = dict(zip(("filename", "hand_filename", "face_filename"), files, strict=False))
        detector = cls.from_pretrained(str(where), **names)
        try:
            import torch

            if torch.cuda.is_available():
                detector = detector.to("cuda")
        except Exception:  # noqa: BLE001 - some detectors have no .to; CPU then
            pass
        if len(_AUX) >= 2:
            _AUX.pop(next(iter(_AUX)))
        _AUX[key] = detector
    out = _AUX[key](Image.fromarray(img), detect_resolution=res, image_resolution=res, output_type="np",
                    **kwargs)
    out = np.asarray(out)
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return out.astype(np.uint8)
