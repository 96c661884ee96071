"""Memory presets from kohya's documented low-VRAM settings, and a rough VRAM estimate that
``doctor`` and the trainer use to warn before a run that will not fit.

Sources (see docs/training.md): sd-scripts ``docs/train_SDXL-en.md`` (SDXL LoRA "can be done
with 8GB GPU memory (10GB recommended)": U-Net only, gradient checkpointing, cached latents,
8-bit optimizer, dim 4-8), Linaqruf's kohya-trainer README (fp16 gradients fit 8 GB on SD1.x),
hollowstrawberry's Colab XL trainer (T4: fp16, not bf16; AdamW8bit; gradient checkpointing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdcloud.errors import BadRequest


@dataclass(frozen=True)
class Preset:
    family: str
    vram_gb: int
    description: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "vram_gb": self.vram_gb, "description": self.description,
                "options": dict(self.options)}


_LOW = {"mixed_precision": "fp16", "gradient_checkpointing": True, "optimizer": "AdamW8bit"}

PRESETS: dict[str, Preset] = {
    "sd15-16gb": Preset("sd1", 16, "SD1.5 on a T4 16 GB: batch 2, text encoder too",
                        {"mixed_precision": "fp16", "resolution": 512, "batch": 2, "rank": 16, "alpha": 8,
                         "train_text_encoder": True}),
    "sd15-8gb": Preset("sd1", 8, "SD1.5 on 8 GB: fp16, gradient checkpointing, AdamW8bit",
                       dict(_LOW, resolution=512, batch=1, rank=16, alpha=8)),
    "sd15-6gb": Preset("sd1", 6, "SD1.5 on 6 GB: UNet only, fp16, checkpointing, AdamW8bit, batch 1",
                       dict(_LOW, resolution=512, batch=1, rank=8, alpha=4, unet_only=True)),
    "sdxl-t4": Preset("sdxl", 16, "SDXL on a Colab T4 16 GB: UNet only, fp16 (T4 has no bf16), checkpointing, "
                                  "AdamW8bit, dim 8",
                      dict(_LOW, resolution=1024, batch=1, rank=8, alpha=4, unet_only=True)),
    "sdxl-8gb": Preset("sdxl", 8, "SDXL on 8 GB (kohya: 10 GB recommended): UNet only, dim 4, batch 1",
                       dict(_LOW, resolution=1024, batch=1, rank=4, alpha=2, unet_only=True)),
}


def apply_preset(cfg: Any, name: str) -> Any:
    if name not in PRESETS:
        raise BadRequest(f"unknown memory preset {name!r}; use one of {', '.join(PRESETS)}")
    return cfg.replace(memory_preset=name, **PRESETS[name].options)


def estimate_vram_gb(cfg: Any, family: str) -> float:
    """A rough peak-VRAM estimate (GB) for LoRA training: weights + activations + optimizer.

    Weights: UNet (SD1 0.86 B, SDXL 2.6 B parameters) plus the text encoders unless their outputs
    are cached (frozen encoders, fixed captions). Activations at batch 1 and the family's own size:
    SD1 ~6 GB fp32 (the HF blog's 11 GB total), SDXL ~20 GB fp32; gradient checkpointing keeps a
    fifth. It is meant to warn before a run that cannot fit, not to plan to the megabyte.
    """
    half = 0.5 if cfg.mixed_precision in ("fp16", "bf16") else 1.0
    xl = family == "sdxl"
    unet, te = (10.3, 3.2) if xl else (3.4, 0.5)
    cached_te = not (cfg.trains_text_encoder or cfg.shuffle_caption or cfg.caption_dropout or cfg.caption_tag_dropout)
    weights = (unet + (0.0 if cached_te else te)) * half
    pixels = (cfg.resolution / (1024 if xl else 512)) ** 2 * cfg.batch
    act = (20.0 if xl else 6.0) * pixels * half * (0.2 if cfg.gradient_checkpointing else 1.0)
    if cfg.trains_text_encoder:
        act += 0.8 if xl else 0.4
    optim = 0.2 * cfg.rank / 16 * (0.5 if cfg.optimizer == "AdamW8bit" else 1.0) * (3 if xl else 1)
    return round(weights + act + optim + 0.5, 1)


def fit_warning(cfg: Any, family: str, vram_gb: float | None) -> str | None:
    """A one-line warning when the estimate exceeds the GPU's memory, naming a preset that fits."""
    if vram_gb is None:
        return None
    need = estimate_vram_gb(cfg, family)
    if need <= vram_gb * 0.95:
        return None
    # a "16 GB" T4 reports 15 GB: presets are named by the card's nominal size
    fitting = sorted((p.vram_gb, n) for n, p in PRESETS.items() if p.family == family and p.vram_gb <= vram_gb * 1.1)
    hint = f"; try --preset {fitting[-1][1]}" if fitting else ""  # the roomiest preset that fits
    return (f"these training settings need about {need:g} GB of VRAM but the GPU has {vram_gb:g} GB"
            f"{hint} (or --gradient-checkpointing, --mixed-precision fp16, --optimizer AdamW8bit, a smaller --batch)")
