"""Weight-free diffusers config dirs, so single-file checkpoints load with no Hub access.

``from_single_file`` only stays offline when it gets ``config=<local diffusers-layout dir>``
(reference/diffusers_notes.md, "from_single_file offline"). The package ships one such dir per
architecture under ``configs/<name>/`` (JSON only) and the CLIP BPE files once, in
``configs/tokenizer/``. :func:`config_dir` assembles a complete directory (configs, the chosen
prediction type, per-component overrides and the tokenizer files) under a cache folder, once per
distinct content, and returns its path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from sdcloud.errors import BadRequest, SdcloudError, Unsupported

CONFIGS_DIR = Path(__file__).parent / "configs"
TOKENIZER_DIR = CONFIGS_DIR / "tokenizer"
TOKENIZER_FILES = ("vocab.json", "merges.txt")
PREDICTIONS = ("epsilon", "v_prediction")

# (family, variant) -> shipped config dir; SD2 base also depends on the prediction type
# (2.x-base 512 epsilon vs 2.x 768 v-prediction).
_CONFIG_NAMES = {
    ("sd1", "base"): "sd15",
    ("sd1", "inpaint"): "sd15-inpaint",
    ("sd2", "base"): "sd2",
    ("sd2", "inpaint"): "sd2-inpaint",
    ("sdxl", "base"): "sdxl",
    ("sdxl", "inpaint"): "sdxl-inpaint",
    ("sdxl_refiner", "base"): "sdxl-refiner",
}
_SD2_V = "sd2-v"

_PIPELINES = {
    "sd1": ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"),
    "sd2": ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"),
    "sdxl": ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
             "StableDiffusionXLInpaintPipeline"),
    "sdxl_refiner": (None, "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"),
}


def config_name(family: str, variant: str = "base", prediction: str = "epsilon") -> str:
    """Name of the shipped config dir for a detected architecture (``ArchInfo.family/variant``)."""
    if prediction not in PREDICTIONS:
        raise BadRequest(f"unknown prediction type {prediction!r}; use one of {', '.join(PREDICTIONS)}")
    if family == "sd2" and variant == "base" and prediction == "v_prediction":
        return _SD2_V
    name = _CONFIG_NAMES.get((family, variant))
    if name is None:
        known = sorted({f for f, _ in _CONFIG_NAMES})
        if family not in known:
            raise Unsupported(f"no model config for architecture {family!r}; supported: {', '.join(known)}")
        raise Unsupported(f"{family} {variant} checkpoints are not supported (supported variants: "
                          f"{', '.join(v for f, v in _CONFIG_NAMES if f == family)})")
    return name


def pipeline_class(family: str, variant: str = "base", img2img: bool = False, inpaint: bool = False) -> str:
    """Name of the diffusers pipeline class for a task on an architecture.

    An inpainting checkpoint (9-channel UNet) always needs the inpaint pipeline: txt2img on it is
    an inpaint of an empty image under a full mask, as A1111 does it.
    """
    config_name(family, variant)  # validates family/variant
    txt2img_cls, img2img_cls, inpaint_cls = _PIPELINES[family]
    if inpaint or variant == "inpaint":
        return inpaint_cls
    if img2img:
        return img2img_cls
    if txt2img_cls is None:
        raise Unsupported("the SDXL refiner only refines existing images: use it for img2img or as the "
                          "hires-fix model, not for txt2img")
    return txt2img_cls


def cache_root() -> Path:
    """``$SDCLOUD_CACHE_DIR``, else ``$XDG_CACHE_HOME/sdcloud``, else ``~/.cache/sdcloud``."""
    env = os.environ.get("SDCLOUD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sdcloud"


def component_configs(name: str) -> dict[str, dict[str, Any]]:
    """The shipped JSON files of config dir ``name``, keyed by relative path."""
    src = CONFIGS_DIR / name
    if not (src / "model_index.json").is_file():
        raise Unsupported(f"no shipped model config named {name!r}")
    return {p.relative_to(src).as_posix(): json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(src.rglob("*.json"))}


def _config_file(files: Mapping[str, Any], component: str) -> str:
    for fname in ("config.json", "scheduler_config.json", "tokenizer_config.json"):
        rel = f"{component}/{fname}"
        if rel in files:
            return rel
    components = sorted({rel.split("/")[0] for rel in files if "/" in rel})
    raise BadRequest(f"no component {component!r} to override; this model has: {', '.join(components)}")


def config_dir(
    family: str,
    variant: str = "base",
    prediction: str = "epsilon",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    cache_dir: Path | None = None,
) -> Path:
    """A complete local diffusers config dir for ``from_single_file(path, config=<dir>)``.

    ``overrides`` maps a component (``unet``, ``vae``, ``text_encoder``, ``scheduler``, ...) to
    config keys that replace the shipped ones (non-standard widths, shape-derived fields). The
    scheduler's ``prediction_type`` is set to ``prediction``. Dirs are keyed by a hash of their
    content, built in a temporary dir and renamed into place, so concurrent callers never see a
    half-written one.
    """
    name = config_name(family, variant, prediction)
    files = component_configs(name)
    files[_config_file(files, "scheduler")]["prediction_type"] = prediction
    for component, values in (overrides or {}).items():
        files[_config_file(files, component)].update(values)
    texts = {rel: json.dumps(cfg, indent=2, sort_keys=True) + "\n" for rel, cfg in files.items()}
    tokenizer_dirs = sorted(rel.split("/")[0] for rel in files if rel.endswith("/tokenizer_config.json"))

    digest = hashlib.sha256()
    for rel, text in sorted(texts.items()):
        digest.update(f"{rel}\0{text}\0".encode())
    digest.update(_tokenizer_digest().encode())
    root = (cache_dir or cache_root()) / "configs"
    target = root / f"{name}-{digest.hexdigest()[:16]}"
    if (target / "model_index.json").is_file():
        return target

    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    except OSError as exc:
        raise SdcloudError(f"cannot write model configs under {root} ({exc.strerror}); set "
                           "SDCLOUD_CACHE_DIR to a writable folder") from None
    try:
        for rel, text in texts.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")
        for tok_dir in tokenizer_dirs:
            for fname in TOKENIZER_FILES:
                shutil.copyfile(TOKENIZER_DIR / fname, tmp / tok_dir / fname)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model_index.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@lru_cache(maxsize=1)
def _tokenizer_digest() -> str:
    digest = hashlib.sha256()
    for fname in TOKENIZER_FILES:
        digest.update((TOKENIZER_DIR / fname).read_bytes())
    return digest.hexdigest()
