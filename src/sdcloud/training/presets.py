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

    Calibrated on the published figures (SD1.5 fp32/no tricks ~11 GB at 512 bs1; SDXL UNet-only
    with fp16 + checkpointing + 8-bit Adam ~8-10 GB at 1024 bs1). It is meant to warn, not to plan.
    """
    half = cfg.mixed_precision in ("fp16", "bf16")
    xl = family == "sdxl"
    weights = (5.1 if xl else 1.7) * (0.5 if half else 1.0)  # UNet + text encoder(s) (+ VAE off-GPU)
    pixels = (cfg.resolution / (1024 if xl else 512)) ** 2 * cfg.batch
    act = (9.0 if xl else 7.5) * pixels * (0.5 if half else 1.0)
    if cfg.gradient_checkpointing:
        act *= 0.3
    if cfg.trains_text_encoder:
        act += 0.8 if xl else 0.4
    optim = 0.2 * cfg.rank / 16 * (0.5 if cfg.optimizer == "AdamW8bit" else 1.0) * (3 if xl else 1)
    return round(weights + act + optim + 0.8, 1)


def fit_warning(cfg: Any, family: str, vram_gb: float | None) -> str | None:
    """A one-line warning when the estimate exceeds the GPU's memory, naming a preset that fits."""
    if vram_gb is None:
        return None
    need = estimate_vram_gb(cfg, family)
    if need <= vram_gb * 0.95:
        return None
    fitting = [n for n, p in PRESETS.items() if p.family == family and p.vram_gb <= vram_gb]
    hint = f"; try --preset {fitting[-1] if family == 'sdxl' else fitting[0]}" if fitting else ""
    return (f"these training settings need about {need:g} GB of VRAM but the GPU has {vram_gb:g} GB"
            f"{hint} (or --gradient-checkpointing, --mixed-precision fp16, --optimizer AdamW8bit, a smaller --batch)")
