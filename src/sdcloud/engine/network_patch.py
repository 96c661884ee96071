"""LyCORIS networks (LoCon with Tucker cores, LoHa, LoKr, full diff) at generation time, by
patching the pipeline's weights as A1111 does: ``W += multiplier * delta`` for each module the
file names, undone (from a copy of the touched weights) before the next set is applied.

Plain kohya LoRAs keep going through diffusers/PEFT adapters (``networks.py``); these files
are the ones PEFT cannot load. Module names are kohya's: diffusers paths for SD 1.x UNets
(``lora_unet_down_blocks_0_...``), LDM paths for SDXL (``lora_unet_input_blocks_4_1_...``),
HF CLIP paths for the text encoders (``lora_te_`` / ``lora_te1_`` / ``lora_te2_``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from sdcloud.checkpoints.lycoris import NetworkModule, group_modules, module_delta
from sdcloud.errors import Unsupported

log = logging.getLogger(__name__)

_RES_PARTS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
              "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}


def diffusers_to_ldm(name: str, up_with_attn: set[int]) -> str | None:
    """A diffusers UNet module path in LDM terms (what SDXL kohya files name)."""
    if name in _TOP:
        return _TOP[name]
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv$", name):
        return f"input_blocks.{3 * int(m.group(1)) + 3}.0.op"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv$", name):
        level = int(m.group(1))
        return f"output_blocks.{3 * level + 2}.{2 if level in up_with_attn else 1}.conv"
    if m := re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", name):
        kind, level, part, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        block = f"input_blocks.{3 * level + j + 1}" if kind == "down" else f"output_blocks.{3 * level + j}"
        return _part(block, part, rest)
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", name):
        part, j, rest = m.group(1), int(m.group(2)), m.group(3)
        return _part(f"middle_block.{2 * j if part == 'resnets' else 1}", part, rest, mid=True)
    return None


def _part(block: str, part: str, rest: str, mid: bool = False) -> str | None:
    if part == "attentions":
        return f"{block}{'' if mid else '.1'}.{rest}"
    ldm = _RES_PARTS.get(rest)
    return f"{block}{'' if mid else '.0'}.{ldm}" if ldm else None


def module_index(pipe: Any) -> dict[str, torch.nn.Module]:
    """kohya module name -> the layer (Linear/Conv2d, unwrapped from PEFT) it patches."""
    out: dict[str, torch.nn.Module] = {}
    unet = pipe.unet
    names = [n for n, _ in unet.named_modules()]
    up_with_attn = {int(m.group(1)) for n in names if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", n))}
    for name, mod in unet.named_modules():
        layer = getattr(mod, "base_layer", mod)
        if not isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) or ".lora_" in name or "base_layer" in name:
            continue
        out["lora_unet_" + name.replace(".", "_")] = layer
        ldm = diffusers_to_ldm(name, up_with_attn)
        if ldm:
            out["lora_unet_" + ldm.replace(".", "_")] = layer
    encoders = [("lora_te_", "text_encoder"), ("lora_te1_", "text_encoder"), ("lora_te2_", "text_encoder_2")]
    for prefix, attr in encoders:
        enc = getattr(pipe, attr, None)
        if enc is None:
            continue
        for name, mod in enc.named_modules():
            layer = getattr(mod, "base_layer", mod)
            if isinstance(layer, torch.nn.Linear) and ".lora_" not in name and "base_layer" not in name:
                out[prefix + name.replace(".", "_")] = layer
                if not name.startswith("text_model."):  # newer transformers flatten CLIPTextModel
                    out[prefix + "text_model_" + name.replace(".", "_")] = layer
    return out


def read_network(path: Path) -> dict[str, NetworkModule]:
    from safetensors.torch import load_file

    if path.suffix.lower() == ".safetensors":
        tensors = load_file(str(path))
    else:
        from sdcloud.checkpoints.pickle_safe import load_ckpt_state_dict

        tensors = load_ckpt_state_dict(path)
    return group_modules(tensors)


class WeightPatcher:
    """Applies a set of networks to one pipeline's weights and undoes it."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._index: dict[str, torch.nn.Module] | None = None
        self._backup: dict[int, tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]] = {}
        self._files: dict[Path, dict[str, NetworkModule]] = {}
        self.active: tuple[tuple[str, float, float], ...] = ()

    @property
    def index(self) -> dict[str, torch.nn.Module]:
        if self._index is None:
            self._index = module_index(self.pipe)
        return self._index

    def check(self, path: Path) -> int:
        """Read and check a file against this pipeline (``Unsupported`` if it does not fit)."""
        modules = self._modules(path)
        hits = 0
        for name, module in modules.items():
            layer = self.index.get(name)
            if layer is None:
                continue
            module_delta(module, tuple(layer.weight.shape))  # raises when the shapes do not fit
            hits += 1
        if not hits:
            raise Unsupported(f"none of the {len(modules)} modules of {path.name} match this model: "
                              "is it for another architecture (SD 1.x vs SDXL)?")
        return hits

    def _modules(self, path: Path) -> dict[str, NetworkModule]:
        if path not in self._files:
            self._files[path] = read_network(path)
        return self._files[path]

    def apply(self, nets: list[tuple[Path, float, float]]) -> bool:
        """Make the weights base + these networks (file, te multiplier, unet multiplier).
        Returns whether anything changed."""
        key = tuple((str(p), te, unet) for p, te, unet in nets)
        if key == self.active:
            return False
        self.restore()
        for path, te, unet in nets:
            for name, module in self._modules(path).items():
                layer = self.index.get(name)
                if layer is None:
                    continue
                mult = unet if name.startswith("lora_unet_") else te
                if mult == 0:
                    continue
                self._patch(layer, module, mult)
        self.active = key
        return True

    def _patch(self, layer: torch.nn.Module, module: NetworkModule, mult: float) -> None:
        weight = layer.weight
        if id(layer) not in self._backup:
            bias = layer.bias.detach().clone() if layer.bias is not None else None
            self._backup[id(layer)] = (layer, weight.detach().clone(), bias)
        delta, bias_delta = module_delta(module, tuple(weight.shape))
        with torch.no_grad():
            weight.add_((delta * mult).to(weight.device, weight.dtype))
            if bias_delta is not None and layer.bias is not None:
                layer.bias.add_((bias_delta * mult).to(layer.bias.device, layer.bias.dtype))

    def restore(self) -> None:
        with torch.no_grad():
            for layer, weight, bias in self._backup.values():
                layer.weight.copy_(weight)
                if bias is not None:
                    layer.bias.copy_(bias)
        self._backup.clear()
        self.active = ()
