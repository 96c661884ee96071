"""Bake kohya-format LoRAs and LyCORIS networks into a checkpoint, streaming the checkpoint
(reference §11).

``W += ratio · delta`` per targeted weight, ``delta`` as A1111 computes it
(``sdcloud.checkpoints.lycoris``): ``(alpha / rank) · up @ down`` for LoRA/LoCon (conv kernels over
the rank axis, Tucker cores rebuilt), the Hadamard product for LoHa, the Kronecker product for
LoKr, the stored difference for full-diff files. Network files are small and read whole; the
checkpoint is read and written one tensor at a time.

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
from sdcloud.checkpoints.lycoris import NetworkModule, group_modules, module_delta
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
    "dora_scale": "DoRA", "oft_": "OFT", "lora_A": "PEFT/diffusers-format", "lora_B": "PEFT/diffusers-format",
    "lora_linear_layer": "diffusers-format", "w_norm": "norm", "a1.weight": "GLoRA", "on_input": "IA3",
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
    module: NetworkModule
    ratio: float
    rows: slice | None
    weight_shape: tuple[int, ...] | None = None  # set on a bias patch (full-diff ``diff_b``)


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
            for name, module in modules.items():
                if name not in targets:
                    misses.append(name)
                    continue
                key, rows = targets[name]
                _check_shape(path, key, src.entries[key].shape, module, rows)
                patches.setdefault(key, []).append(_Patch(module, ratio, rows))
                bias_key = key[: -len("weight")] + "bias"
                if "diff_b" in module.parts and rows is None and bias_key in src.entries:
                    patches.setdefault(bias_key, []).append(
                        _Patch(module, ratio, None, tuple(src.entries[key].shape)))
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
        if p.weight_shape is not None:
            w.add_(module_delta(p.module, p.weight_shape)[1], alpha=p.ratio)
            continue
        view = w if p.rows is None else w[p.rows]
        view.add_(module_delta(p.module, tuple(view.shape))[0], alpha=p.ratio)
    return w


def _target_shape(shape: tuple[int, ...], rows: slice | None) -> tuple[int, ...]:
    return shape if rows is None else (rows.stop - rows.start, *shape[1:])


def _check_shape(path: Path, key: str, shape: tuple[int, ...], module: NetworkModule, rows: slice | None) -> None:
    try:
        module_delta(module, _target_shape(tuple(shape), rows))
    except Unsupported as exc:
        raise BadRequest(f"{path.name}: {exc} ('{key}' {tuple(shape)})") from None


def _read_lora(path: Path) -> dict[str, NetworkModule]:
    """The file's modules by kohya name; variants we cannot compute are refused by name."""
    src = open_source(path)
    try:
        for key in src.entries:
            for marker, kind in _UNSUPPORTED_PARTS.items():
                if marker in key:
                    raise Unsupported(f"{path.name} is a {kind} network ('{key}'); LoRA/LoCon, LoHa, LoKr and "
                                      "full-diff files can be baked")
        modules = group_modules({key: src.get(key) for key in src.entries})
    finally:
        src.close()
    for module in modules.values():
        _ = module.kind  # Unsupported for a module that is none of the known kinds
    return modules


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
