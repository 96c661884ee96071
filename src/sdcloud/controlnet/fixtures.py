"""A tiny random ControlNet shaped like a pipeline's UNet, saved as users' files are: the
A1111/lllyasviel single-file layout (``control_model.input_blocks...``) or the diffusers layout.
For tests and benches (no weights ship with sdcloud)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdcloud.engine.network_patch import diffusers_to_ldm


def random_controlnet(unet: Any, seed: int = 0, scale: float = 0.05) -> Any:
    from diffusers import ControlNetModel

    cn = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cn.parameters():  # the zero convs too, so the control is visible
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return cn.eval()


def to_a1111_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers ControlNet keys -> lllyasviel's (``control_model.`` prefixed)."""
    blocks = len({k.split(".")[2] for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        parts = module.split(".")
        if module == "controlnet_cond_embedding.conv_in":
            ldm = "input_hint_block.0"
        elif module == "controlnet_cond_embedding.conv_out":
            ldm = f"input_hint_block.{2 * blocks + 2}"
        elif module.startswith("controlnet_cond_embedding.blocks."):
            ldm = f"input_hint_block.{2 * int(parts[2]) + 2}"
        elif module.startswith("controlnet_down_blocks."):
            ldm = f"zero_convs.{parts[1]}.0"
        elif module == "controlnet_mid_block":
            ldm = "middle_block_out.0"
        else:
            ldm = diffusers_to_ldm(module, set())
            if ldm is None:
                raise KeyError(f"no LDM name for {key}")
        out[f"control_model.{ldm}.{param}"] = value
    return out


def save_controlnet(path: Path, unet: Any, layout: str = "A1111", seed: int = 0) -> dict[str, torch.Tensor]:
    """Save a random ControlNet for ``unet``; returns its diffusers state dict."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in random_controlnet(unet, seed).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    out = to_a1111_keys(state) if layout == "A1111" else state
    if path.suffix == ".safetensors":
        save_file(out, str(path))
    else:
        torch.save(out, path)
    return state


def save_annotator(path: Path, kind: str, seed: int = 0, scale: float = 0.1) -> dict[str, torch.Tensor]:
    """A random ``lineart`` (sk_model.pth) or ``hed`` (ControlNetHED.pth) annotator, saved as
    lllyasviel/Annotators' pickles are; returns its state dict."""
    from sdcloud.controlnet.annotator_nets import HED, LineartGenerator

    net = LineartGenerator() if kind == "lineart" else HED()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state
