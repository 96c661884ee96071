"""Bake kohya-format LoRAs into a checkpoint, streaming the checkpoint (reference §11).

``W += ratio · (alpha / rank) · up @ down`` per targeted weight (conv kernels through the
same product over the rank axis). LoRA files are small and read whole; the checkpoint is
read and written one tensor at a time.

Module names: SD 1.x/2.x LoRAs name the UNet in diffusers terms
(``lora_unet_down_blocks_0_attentions_0_...``) and SDXL LoRAs in LDM terms
(``lora_unet_input_blocks_4_1_...``); text encoders use HF CLIP names, which for OpenCLIP
towers (SD 2.x, SDXL's second encoder) land in slices of the fused ``in_proj_weight``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sdcloud.checkpoints.hashing import FileHashes, compute_hashes
from sdcloud.checkpoints.stream import (
    CopyStep,
    Entry,
    Progress,
    check_output,
    open_source,
    output_dtype,
    rewrite,
)
from sdcloud.errors import BadRequest, Unsupported

if TYPE_CHECKING:
    import torch

UNET = "model.diffusion_model."
_TEXT_HF = {"cond_stage_model.transformer.": "lora_te_", "conditioner.embedders.0.transformer.": "lora_te1_"}
_TEXT_OPENCLIP = {"cond_stage_model.model.": "lora_te_", "conditioner.embedders.1.model.": "lora_te2_"}
_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(attn\.in_proj_weight|attn\.out_proj\.weight|"
                       r"mlp\.c_fc\.weight|mlp\.c_proj\.weight)$")
_RES_PARTS = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
              "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_UNSUPPORTED_PARTS = {
    "hada_": "LoHa", "lokr_": "LoKr", "dora_scale": "DoRA", "lora_mid": "LoCon with a Tucker mid weight",
    ".diff": "full-difference (LyCORIS 'full')", "oft_": "OFT", "lora_A": "PEFT/diffusers-format",
    "lora_B": "PEFT/diffusers-format", "lora_linear_layer": "diffusers-format", "w_norm": "GLoRA",
}


@dataclass(frozen=True)
class LoraBakeOptions:
    checkpoint: Path
    loras: tuple[tuple[Path, float], ...]  # (file, ratio)
    output: Path
    dtype: str | None = None  # fp16 | bf16 | fp32 | None (keep)
    overwrite: bool = False


@dataclass
class LoraBakeResult:
    path: Path
    hashes: FileHashes
    applied: dict[str, int]  # LoRA file name -> modules baked
    unmatched: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Patch:
    up: torch.Tensor
    down: torch.Tensor
    scale: float
    rows: slice | None


def bake_loras(opts: LoraBakeOptions, progress: Progress | None = None) -> LoraBakeResult:
    if not opts.loras:
        raise BadRequest("no LoRA given to bake")
    out_dtype = output_dtype(opts.dtype)
    check_output(opts.output, [opts.checkpoint, *(p for p, _ in opts.loras)], opts.overwrite)
    src = open_source(opts.checkpoint)
    try:
        targets = target_index(src.entries)
        patches: dict[str, list[_Patch]] = {}
        applied: dict[str, int] = {}
        unmatched: dict[str, list[str]] = {}
        for path, ratio in opts.loras:
            modules = _read_lora(path)
            hits, misses = 0, []
            for name, (up, down, alpha) in modules.items():
                if name not in targets:
                    misses.append(name)
                    continue
                key, rows = targets[name]
                _check_shape(path, name, key, src.entries[key].shape, up, down, rows)
                rank = down.shape[0]
                scale = ratio * (alpha if alpha else rank) / rank
                patches.setdefault(key, []).append(_Patch(up, down, scale, rows))
                hits += 1
            if not hits:
                raise BadRequest(f"none of the {len(modules)} modules of {path.name} match "
                                 f"{opts.checkpoint.name}: is the LoRA for another architecture "
                                 "(SD 1.x vs SDXL)?")
            applied[path.name] = hits
            if misses:
                unmatched[path.name] = misses
        steps = [CopyStep(Entry(k, out_dtype if (out_dtype and e.is_float) else e.dtype, e.shape), k)
                 for k, e in src.entries.items()]
        metadata = {**src.metadata, "format": "pt", "sdcloud_baked_loras": json.dumps(
            [{"name": p.name, "ratio": r, "hash": compute_hashes(p).lora_short} for p, r in opts.loras])}
        hashes = rewrite(src, opts.output, steps, metadata, progress,
                         transform=lambda key, t: _apply(t, patches[key]) if key in patches else t)
    finally:
        src.close()
    return LoraBakeResult(path=opts.output, hashes=hashes, applied=applied, unmatched=unmatched)


def _apply(weight: torch.Tensor, patches: list[_Patch]) -> torch.Tensor:
    import torch

    w = weight.to(torch.float32, copy=True)
    for p in patches:
        delta = _delta(p.up.float(), p.down.float())
        view = w if p.rows is None else w[p.rows]
        view.add_(delta.reshape(view.shape), alpha=p.scale)
    return w


def _delta(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``up @ down`` over the rank axis; a conv ``down`` keeps its kernel dims."""
    import torch

    up2 = up.reshape(up.shape[0], up.shape[1])
    if down.dim() == 4 and down.shape[2:] != (1, 1):
        return torch.einsum("or,rikl->oikl", up2, down)
    return up2 @ down.reshape(down.shape[0], -1)


def _check_shape(path: Path, name: str, key: str, shape: tuple[int, ...], up: torch.Tensor,
                 down: torch.Tensor, rows: slice | None) -> None:
    out = (rows.stop - rows.start) if rows is not None else shape[0]
    inner = 1
    for d in shape[1:]:
        inner *= d
    kernel = tuple(down.shape[2:]) if down.dim() == 4 else ()
    ok = (up.shape[0] == out and up.shape[1] == down.shape[0] and down[0].numel() == inner
          and (not kernel or kernel == (1, 1) or kernel == tuple(shape[2:])))
    if not ok:
        raise BadRequest(f"{path.name}: module '{name}' (up {tuple(up.shape)}, down {tuple(down.shape)}) "
                         f"does not fit '{key}' {shape}: the LoRA is for another model")


def _read_lora(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float | None]]:
    """kohya modules ``name -> (up, down, alpha)``; unbakeable variants are refused by name."""
    src = open_source(path)
    try:
        for key in src.entries:
            for marker, kind in _UNSUPPORTED_PARTS.items():
                if marker in key:
                    raise Unsupported(f"{path.name} is a {kind} LoRA ('{key}'); only kohya LoRA/LoCon "
                                      "files (lora_down/lora_up/alpha) can be baked")
        parts: dict[str, dict[str, torch.Tensor]] = {}
        for key in src.entries:
            module, _, part = key.partition(".")
            parts.setdefault(module, {})[part] = src.get(key)
    finally:
        src.close()
    out = {}
    for module, p in parts.items():
        if "lora_up.weight" not in p or "lora_down.weight" not in p:
            raise Unsupported(f"{path.name}: module '{module}' has {sorted(p)}, not lora_up/lora_down; "
                              "this LoRA type cannot be baked")
        alpha = p.get("alpha")
        out[module] = (p["lora_up.weight"], p["lora_down.weight"],
                       float(alpha.item()) if alpha is not None else None)
    return out


def target_index(entries: Mapping[str, Entry]) -> dict[str, tuple[str, slice | None]]:
    """kohya module name -> (checkpoint key, rows of that key or None) for every weight."""
    keys = list(entries)
    out: dict[str, tuple[str, slice | None]] = {}
    n_inputs = sum(1 for k in keys if re.match(r"model\.diffusion_model\.input_blocks\.\d+\.0\.", k)
                   and k.endswith(".in_layers.0.weight"))
    for key in keys:
        if not key.endswith(("weight", "in_proj_weight")):
            continue
        if key.startswith(UNET):
            inner = key[len(UNET):-len(".weight")]
            out["lora_unet_" + inner.replace(".", "_")] = (key, None)
            if n_inputs == 8:  # SD 1.x/2.x UNet (8 resblocks down): diffusers names too
                diff = _ldm_to_diffusers(inner)
                if diff:
                    out["lora_unet_" + diff.replace(".", "_")] = (key, None)
            continue
        for prefix, lora in _TEXT_HF.items():
            if key.startswith(prefix):
                out[lora + key[len(prefix):-len(".weight")].replace(".", "_")] = (key, None)
        for prefix, lora in _TEXT_OPENCLIP.items():
            m = _RESBLOCK.match(key[len(prefix):]) if key.startswith(prefix) else None
            if m:
                out.update(_openclip_names(lora, int(m.group(1)), m.group(2), key, entries[key].shape))
    return out


def _openclip_names(lora: str, layer: int, part: str, key: str, shape: tuple[int, ...],
                    ) -> dict[str, tuple[str, slice | None]]:
    """HF CLIP names of an OpenCLIP weight; q, k and v are row thirds of ``in_proj_weight``."""
    base = f"{lora}text_model_encoder_layers_{layer}_"
    if part == "attn.in_proj_weight":
        d = shape[0] // 3
        return {f"{base}self_attn_{n}_proj": (key, slice(i * d, (i + 1) * d)) for i, n in enumerate("qkv")}
    return {base + {"attn.out_proj.weight": "self_attn_out_proj", "mlp.c_fc.weight": "mlp_fc1",
                    "mlp.c_proj.weight": "mlp_fc2"}[part]: (key, None)}


def _ldm_to_diffusers(inner: str) -> str | None:
    """SD 1.x/2.x UNet module path, LDM -> diffusers (only the parts LoRAs target)."""
    m = re.match(r"input_blocks\.(\d+)\.(\d+)\.(.+)$", inner)
    if m:
        k, sub, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if k == 0:
            return None
        level, j = divmod(k - 1, 3)
        if j == 2:
            return f"down_blocks.{level}.downsamplers.0.conv" if rest == "op" else None
        return _inner(f"down_blocks.{level}", sub, j, rest)
    m = re.match(r"middle_block\.(\d)\.(.+)$", inner)
    if m:
        sub, rest = int(m.group(1)), m.group(2)
        return _inner("mid_block", 1 if sub == 1 else 0, sub // 2, rest)
    m = re.match(r"output_blocks\.(\d+)\.(\d+)\.(.+)$", inner)
    if m:
        k, sub, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(k, 3)
        if rest == "conv" and sub in (1, 2):
            return f"up_blocks.{level}.upsamplers.0.conv"
        return _inner(f"up_blocks.{level}", sub, j, rest)
    return None


def _inner(block: str, sub: int, j: int, rest: str) -> str | None:
    if sub == 0:
        for ldm, diff in _RES_PARTS.items():
            if rest == ldm:
                return f"{block}.resnets.{j}.{diff}"
        return None
    return f"{block}.attentions.{j}.{rest}"
