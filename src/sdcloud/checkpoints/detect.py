"""Architecture detection from tensor names and shapes (reference/checkpoints.md §9).

Works on the header alone (names + shapes), so it is instant even for 7 GB files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sdcloud.errors import Unsupported

Shapes = Mapping[str, tuple[int, ...]]

UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
SDXL_BIGG = "conditioner.embedders.1.model.ln_final.weight"
SDXL_REFINER_BIGG = "conditioner.embedders.0.model.ln_final.weight"
SD2_CLIP = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
SD1_CLIP_PREFIX = "cond_stage_model.transformer."

FAMILY_LABELS = {
    "sd1": "SD 1.x",
    "sd2": "SD 2.x",
    "sdxl": "SDXL base",
    "sdxl_refiner": "SDXL refiner",
}

_UNSUPPORTED_MARKERS = {
    "double_blocks.0.img_attn.norm.key_norm.scale": "Flux",
    "model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale": "Flux",
    "joint_blocks.0.context_block.attn.qkv.weight": "SD3",
    "model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight": "SD3",
    "depth_model.model.pretrained.act_postprocess3.0.project.0.bias": "SD2 depth",
    "embedder.model.ln_final.weight": "SD2 unCLIP",
    "cond_stage_model.roberta.embeddings.word_embeddings.weight": "AltDiffusion",
    "model.diffusion_model.adaLN_modulation.1.weight": "a DiT model (Lumina/Chroma-like)",
}


@dataclass(frozen=True)
class ArchInfo:
    """What a checkpoint is. ``variant`` is base | inpaint | pix2pix."""

    family: str
    variant: str = "base"
    in_channels: int = 4
    has_vae: bool = True
    has_text_encoder: bool = True
    has_ema: bool = False
    evidence: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        text = FAMILY_LABELS.get(self.family, self.family)
        return text if self.variant == "base" else f"{text} {self.variant}"


def is_lora(shapes: Shapes) -> bool:
    for k in shapes:
        if k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")):
            return True
        if ".lora_A." in k or ".lora_B." in k or "lora_linear_layer" in k:
            return True
    return False


def normalise_key(k: str) -> str:
    """Unwrap ``state_dict.`` and rename an NAI-style CLIP key to the ``text_model.`` layout."""
    if k.startswith("state_dict."):
        k = k[len("state_dict."):]
    if k.startswith(SD1_CLIP_PREFIX) and not k.startswith(SD1_CLIP_PREFIX + "text_model."):
        rest = k[len(SD1_CLIP_PREFIX):]
        if rest.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
            k = SD1_CLIP_PREFIX + "text_model." + rest
    return k


def normalise_keys(shapes: Shapes) -> dict[str, tuple[int, ...]]:
    """``shapes`` with every key passed through :func:`normalise_key`."""
    return {normalise_key(k): v for k, v in shapes.items()}


def detect_architecture(shapes: Shapes, metadata: Mapping[str, str] | None = None) -> ArchInfo:
    """Name the architecture, or raise ``Unsupported`` with the evidence."""
    shapes = normalise_keys(shapes)
    for marker, name in _UNSUPPORTED_MARKERS.items():
        if marker in shapes:
            raise Unsupported(f"this is a {name} checkpoint ('{marker}'); sdcloud supports SD 1.x, "
                              "SD 2.x and SDXL")
    if is_lora(shapes):
        raise Unsupported("this file is a LoRA, not a checkpoint: put it in models/Lora and use "
                          "<lora:name:weight> in the prompt")
    if UNET_IN not in shapes:
        sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
        raise Unsupported(f"not a Stable Diffusion checkpoint: no UNet key '{UNET_IN}' "
                          f"(first keys: {sample})")
    in_ch = shapes[UNET_IN][1] if len(shapes[UNET_IN]) > 1 else 4
    variant = {9: "inpaint", 8: "pix2pix"}.get(in_ch, "base")
    evidence = [f"{UNET_IN} in_channels={in_ch}"]
    if SDXL_BIGG in shapes:
        family = "sdxl"
        evidence.append(SDXL_BIGG)
    elif SDXL_REFINER_BIGG in shapes:
        family = "sdxl_refiner"
        evidence.append(SDXL_REFINER_BIGG)
    elif SD2_CLIP in shapes:
        family = "sd2"
        evidence.append(f"{SD2_CLIP} {shapes[SD2_CLIP]}")
    elif any(k.startswith(SD1_CLIP_PREFIX) for k in shapes):
        family = "sd1"
        evidence.append("cond_stage_model.transformer.* (CLIP-L)")
    else:
        # A UNet-only file: decide from the cross-attention width.
        ctx = _context_dim(shapes)
        family = {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl_refiner"}.get(ctx or -1, "")
        if not family:
            raise Unsupported("UNet found but no text encoder and an unknown context width; cannot tell "
                              "SD1/SD2/SDXL apart")
        evidence.append(f"context_dim={ctx} (no text encoder in file)")
    return ArchInfo(
        family=family,
        variant=variant,
        in_channels=in_ch,
        has_vae=any(k.startswith("first_stage_model.") for k in shapes),
        has_text_encoder=any(k.startswith(("cond_stage_model.", "conditioner.")) for k in shapes),
        has_ema=any(k.startswith("model_ema.") for k in shapes),
        evidence=tuple(evidence),
    )


def _context_dim(shapes: Shapes) -> int | None:
    for k, v in shapes.items():
        if k.startswith("model.diffusion_model.") and k.endswith("attn2.to_k.weight") and len(v) == 2:
            return v[1]
    return None
