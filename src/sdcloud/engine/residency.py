"""Which models' weights sit on the GPU when a request uses more than one checkpoint (the SDXL
refiner, a hires checkpoint).

The rule: a model that is about to compute is moved to the GPU; if the GPU's free memory
cannot take its UNet and text encoders with a margin, every other model is parked in CPU RAM
first, so only one UNet is resident. Where there is room both stay, and switching costs
nothing. With ``--medvram``/``--lowvram`` diffusers' offload hooks move the weights and this
does nothing; on a CPU or MPS device nothing moves either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

PARTS = ("unet", "text_encoder", "text_encoder_2")
"""The modules that move; the VAE stays (only the main model's decodes)."""
HEADROOM = 1536 * 2**20
"""Free memory kept besides the weights: activations of a 1024x1024 SDXL step in fp16."""


def weights_bytes(pipe: Any) -> int:
    total = 0
    for name in PARTS:
        module = getattr(pipe, name, None)
        if module is not None:
            total += sum(p.numel() * p.element_size() for p in module.parameters())
    return total


def place(pipe: Any, device: Any) -> None:
    for name in PARTS:
        module = getattr(pipe, name, None)
        if module is not None:
            module.to(device)


def make_resident(ctx: Any, others: Iterable[Any], device: torch.device) -> bool:
    """Put ``ctx``'s model (a ``sampling_loop.ModelContext``) on ``device``; returns whether
    other models were parked to make room."""
    if ctx.resident:
        return False
    parked = False
    free, _total = torch.cuda.mem_get_info(device)
    if free < weights_bytes(ctx.pipe) + HEADROOM:
        for other in others:
            if other is not ctx and other.resident:
                place(other.pipe, "cpu")
                other.resident = False
                parked = True
        torch.cuda.empty_cache()
    place(ctx.pipe, device)
    ctx.resident = True
    return parked
