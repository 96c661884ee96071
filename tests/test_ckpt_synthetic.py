"""Synthetic checkpoints with real SD 1.5 / SDXL key names (tiny widths) for the ckpt tests,
and a check that the full-size layouts match the real models' parameter counts."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from sdcloud.checkpoints import layouts
from sdcloud.checkpoints.detect import detect_architecture

TINY_SD15 = replace(layouts.SD15, ch=8, ctx=8, text_width=8, text_layers=2, vocab=16, vae_ch=4)
TINY_SDXL = replace(layouts.SDXL, ch=8, depth=(0, 1, 2), mid_depth=1, ctx=16, adm=12, text_width=8,
                    text_layers=1, big_text_width=8, big_text_layers=2, vocab=16, vae_ch=4)


def synthetic_state(widths: layouts.Widths = TINY_SD15, seed: int = 0, dtype: torch.dtype = torch.float16,
                    ema: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in layouts.checkpoint(widths).items():
        if key.endswith("position_ids"):
            sd[key] = torch.arange(77, dtype=torch.int64).reshape(shape)
        else:
            sd[key] = torch.randn(shape, generator=gen).to(dtype)
    sd["alphas_cumprod"] = torch.rand(1000, generator=gen)
    if ema:
        for key in [k for k in sd if k.startswith("model.diffusion_model.")]:
            sd[layouts.ema_name(key)] = torch.randn(sd[key].shape, generator=gen).to(dtype)
        sd["model_ema.decay"] = torch.tensor(0.9999)
        sd["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    return sd


def write_synthetic(path: Path, widths: layouts.Widths = TINY_SD15, seed: int = 0,
                    dtype: torch.dtype = torch.float16, ema: bool = False,
                    metadata: dict[str, str] | None = None) -> Path:
    save_file(synthetic_state(widths, seed, dtype, ema), str(path), metadata=metadata)
    return path


def test_full_size_layouts_match_the_real_models() -> None:
    sd15 = layouts.checkpoint(layouts.SD15)
    sdxl = layouts.checkpoint(layouts.SDXL)
    count = lambda d, p="": sum(math.prod(s) for k, s in d.items() if k.startswith(p))  # noqa: E731
    assert len(sd15) == 1131  # keys in v1-5-pruned-emaonly.safetensors
    assert count(sd15, "model.diffusion_model.") == 859_520_964  # the SD 1.5 UNet
    assert count(sd15, "first_stage_model.") == 83_653_863  # the SD VAE
    assert count(sdxl, "model.diffusion_model.") == 2_567_463_684  # the SDXL base UNet
    assert detect_architecture(sd15).family == "sd1"
    assert detect_architecture(sdxl).family == "sdxl"


def test_tiny_layouts_are_detected_like_the_real_ones() -> None:
    assert detect_architecture(layouts.checkpoint(TINY_SD15)).label == "SD 1.x"
    assert detect_architecture(layouts.checkpoint(TINY_SDXL)).label == "SDXL base"
    inpaint = replace(TINY_SD15, in_channels=9)
    assert detect_architecture(layouts.checkpoint(inpaint)).variant == "inpaint"
