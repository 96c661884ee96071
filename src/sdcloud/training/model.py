"""Load the base model for training with the engine's own offline loader (demo, diffusers folder,
single file), and everything the trainer needs to know about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcloud.settings import Settings


@dataclass
class BaseModel:
    pipe: Any
    family: str  # sd1 | sd2 | sdxl
    prediction: str  # epsilon | v_prediction
    name: str
    key: str  # identifies the weights (sha256, or demo name) for caches and resume checks
    sha256: str | None = None
    autov1: str | None = None


def resolve_model_path(settings: Settings, name: str) -> Path:
    """A path, or a name in models/Stable-diffusion (``NotFound`` naming the folder otherwise)."""
    from sdcloud.catalog import Catalog

    path = Path(name).expanduser()
    if (path.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin") or path.is_dir()) and path.exists():
        return path
    return Catalog(settings).resolve("checkpoint", name).path


def model_family(settings: Settings, name: str) -> str:
    """``sd1`` | ``sd2`` | ``sdxl`` of a base model without loading it (a ``.safetensors`` header;
    a name guess for the rest: "xl" in it)."""
    from sdcloud.engine.loader import DEMO_KINDS

    if name in DEMO_KINDS:
        return "sdxl" if DEMO_KINDS[name].startswith("sdxl") else "sd1"
    guess = "sdxl" if "xl" in name.lower() else "sd1"
    try:
        path = resolve_model_path(settings, name)
        if not path.is_file() or path.suffix.lower() != ".safetensors":
            return guess
        from sdcloud.checkpoints.detect import detect_architecture
        from sdcloud.checkpoints.safetensors_header import read_header

        header = read_header(path)
        family = detect_architecture(header.shapes, header.metadata).family
    except Exception:  # noqa: BLE001  a warning's input: the run's own checks report a bad file
        return guess
    return "sdxl" if family.startswith("sdxl") else family


def load_base_model(settings: Settings, name: str) -> BaseModel:
    import torch

    from sdcloud.engine.demo import build_demo_pipeline
    from sdcloud.engine.loader import DEMO_KINDS, load_any
    from sdcloud.errors import Unsupported

    if name in DEMO_KINDS:
        kind = DEMO_KINDS[name]
        if kind.endswith("inpaint"):
            raise Unsupported("training on an inpainting model is not supported; use 'demo' or 'demo-xl'")
        pipe = build_demo_pipeline(kind)
        return BaseModel(pipe, "sdxl" if kind == "sdxl" else "sd1", "epsilon", name, name)
    path = resolve_model_path(settings, name)
    pipe, arch, prediction = load_any(path, torch.float32)
    if arch.variant != "base":
        raise Unsupported(f"{path.name} is an {arch.variant} model; LoRA training needs a base (txt2img) model")
    hashes = None
    if path.is_file():
        from sdcloud.checkpoints.hashing import HashCache

        hashes = HashCache(settings.state_path / "hashes.json").get(path)
    stem = path.stem if path.is_file() else path.name
    key = hashes.sha256 if hashes else f"dir:{path.resolve()}"
    return BaseModel(pipe, arch.family, prediction, stem, key, hashes.sha256 if hashes else None,
                     hashes.autov1 if hashes else None)
