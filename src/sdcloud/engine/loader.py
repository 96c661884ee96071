"""Load checkpoints into diffusers pipelines, offline.

Sources: the built-in demo model, a diffusers folder, a single ``.safetensors`` file in
A1111 layout, or a ``.ckpt``/``.pt`` pickle (checked first with a restricted unpickler:
anything beyond plain tensors is refused, never executed). Single files are built from
weight-free configs shipped in the package, so no Hub access is ever needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcloud.checkpoints.detect import ArchInfo, detect_architecture
from sdcloud.checkpoints.safetensors_header import read_header
from sdcloud.errors import CorruptFile, NotFound, Unsupported

DEMO_KINDS = {"demo": "sd15", "demo-xl": "sdxl", "demo-inpaint": "sd15-inpaint"}
CONFIG_METADATA_KEY = "sdcloud_config"


@dataclass(frozen=True)
class ModelInfo:
    """What is loaded. ``name`` is A1111's ``Model:`` (file stem); ``title`` ``name [hash]``."""

    name: str
    title: str
    path: str | None
    sha256: str | None
    family: str
    variant: str
    prediction: str
    is_demo: bool = False

    @property
    def short_hash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def short_title(self) -> str:
        """A1111's ``short_title`` (``name [hash]``): how infotexts name a refiner or hires checkpoint."""
        return f"{self.name} [{self.short_hash}]" if self.sha256 else self.name


def _prediction_type(path: Path, arch: ArchInfo, metadata: dict[str, str], keys: set[str]) -> str:
    """v_prediction or epsilon, from a sidecar .yaml, metadata, a ``v_pred`` key, or the SD2 heuristic."""
    yaml = path.with_suffix(".yaml")
    if yaml.is_file():
        text = yaml.read_text(errors="replace")
        if "parameterization" in text and ('"v"' in text or "'v'" in text or ": v\n" in text):
            return "v_prediction"
        return "epsilon"
    hint = (metadata.get("modelspec.prediction_type") or metadata.get("prediction_type") or "").lower()
    if hint in ("v", "v_prediction", "v-prediction"):
        return "v_prediction"
    if hint in ("epsilon", "eps"):
        return "epsilon"
    if "v_pred" in keys:
        return "v_prediction"
    if arch.family == "sd2" and arch.variant == "base" and path.suffix.lower() == ".safetensors":
        # ComfyUI's heuristic: v-models have a wide spread in this norm bias.
        key = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
        if key in keys:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                if float(fh.get_tensor(key).float().std()) > 0.09:
                    return "v_prediction"
    return "epsilon"


def inspect_single_file(path: Path) -> tuple[ArchInfo, str, dict[str, dict]]:
    """Architecture, prediction type and config overrides of a single-file checkpoint."""
    if path.suffix.lower() == ".safetensors":
        header = read_header(path)
        shapes, metadata = header.shapes, header.metadata
    else:
        from sdcloud.checkpoints.pickle_safe import load_ckpt_state_dict

        state = load_ckpt_state_dict(path)
        shapes, metadata = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}, {}
        del state
    arch = detect_architecture(shapes, metadata)
    prediction = _prediction_type(path, arch, metadata, set(shapes))
    overrides: dict[str, dict] = {}
    if CONFIG_METADATA_KEY in metadata:
        try:
            overrides = json.loads(metadata[CONFIG_METADATA_KEY])
        except ValueError:
            raise CorruptFile(f"{path.name}: metadata '{CONFIG_METADATA_KEY}' is not valid JSON") from None
    if arch.in_channels != 4:
        overrides.setdefault("unet", {})["in_channels"] = arch.in_channels
    return arch, prediction, overrides


def refuse_refiner(path: Path) -> None:
    """``Unsupported`` for an SDXL refiner ``.safetensors`` (read from its header: cheap), so a
    refiner picked as the main model is refused before the loaded model is freed."""
    if path.is_file() and path.suffix.lower() == ".safetensors" and \
            inspect_single_file(path)[0].family == "sdxl_refiner":
        raise Unsupported(f"{path.name} is an SDXL refiner; use it as the refiner (refiner_checkpoint), "
                          "not as the main model")


def load_single_file(path: Path, torch_dtype: Any, refiner: bool = False) -> tuple[Any, ArchInfo, str]:
    """Build a diffusers pipeline from an A1111-layout single file, with no network access.
    ``refiner``: it is loaded to refine (A1111's refiner, hires checkpoint), so the SDXL
    refiner is accepted (as its img2img pipeline)."""
    import diffusers

    from sdcloud.engine.model_configs import config_dir, pipeline_class

    arch, prediction, overrides = inspect_single_file(path)
    if arch.family == "sdxl_refiner" and not refiner:
        raise Unsupported(f"{path.name} is an SDXL refiner; use it as the refiner (refiner_checkpoint), "
                          "not as the main model")
    if not arch.has_text_encoder or not arch.has_vae:
        raise Unsupported(f"{path.name} lacks a {'text encoder' if not arch.has_text_encoder else 'VAE'}; "
                          "sdcloud needs a full checkpoint (UNet + VAE + text encoder)")
    cfg = config_dir(arch.family, arch.variant, prediction, overrides=overrides or None)
    cls = getattr(diffusers, pipeline_class(arch.family, arch.variant, img2img=arch.family == "sdxl_refiner"))
    kwargs: dict[str, Any] = {}
    if arch.family in ("sd1", "sd2"):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        pipe = cls.from_single_file(str(path), config=str(cfg), local_files_only=True,
                                    torch_dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CorruptFile(f"{path.name}: could not be loaded as {arch.label}: {str(exc).splitlines()[0][:300]}") \
            from None
    return pipe, arch, prediction


def load_diffusers_dir(path: Path, torch_dtype: Any) -> tuple[Any, ArchInfo, str]:
    import diffusers

    index = json.loads((path / "model_index.json").read_text())
    cls_name = index.get("_class_name", "")
    if "XL" in cls_name:
        family = "sdxl"
    elif cls_name.startswith("StableDiffusion"):
        family = "sd1"
    else:
        raise Unsupported(f"{path.name}: pipeline {cls_name!r} is not supported (SD 1.x, SD 2.x, SDXL only)")
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(str(path), local_files_only=True, torch_dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise CorruptFile(f"{path.name}: could not load the diffusers folder: {str(exc).splitlines()[0][:300]}") \
            from None
    if family == "sd1" and pipe.text_encoder.config.hidden_size == 1024:
        family = "sd2"
    in_ch = pipe.unet.config.in_channels
    variant = {9: "inpaint", 8: "pix2pix"}.get(in_ch, "base")
    arch = ArchInfo(family=family, variant=variant, in_channels=in_ch, evidence=(f"model_index {cls_name}",))
    return pipe, arch, pipe.scheduler.config.get("prediction_type", "epsilon")


def load_any(path: Path, torch_dtype: Any, refiner: bool = False) -> tuple[Any, ArchInfo, str]:
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise NotFound(f"{path.name} is a folder without model_index.json (not a diffusers model)")
        return load_diffusers_dir(path, torch_dtype)
    if not path.is_file():
        raise NotFound(f"model file {path.name} not found")
    if path.suffix.lower() not in (".safetensors", ".ckpt", ".pt", ".bin", ".pth"):
        raise Unsupported(f"{path.name}: unknown checkpoint format (use .safetensors or .ckpt)")
    return load_single_file(path, torch_dtype, refiner)
