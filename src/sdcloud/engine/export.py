"""Write a diffusers SD1.x / SD2.x / SDXL pipeline as one A1111 (LDM/SGM key layout) checkpoint.

The key mapping is the exact inverse of diffusers' single-file loader
(``diffusers/loaders/single_file_utils.py``: ``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``, ``convert_open_clip_checkpoint``),
so ``from_single_file(file, config=model_configs.config_dir(...))`` gives back the same weights
bit for bit. The name tables follow diffusers' ``scripts/convert_diffusers_to_original_stable_diffusion.py``
and ``scripts/convert_diffusers_to_original_sdxl.py`` (Copyright The HuggingFace Team, Apache-2.0),
rewritten here to derive block indices from the UNet config instead of hard-coding them.

Every source tensor must map to exactly one target name; anything unknown raises, so a
checkpoint is never written with silently missing weights.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from sdcloud.durable import fsync_dir
from sdcloud.errors import Unsupported

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SD2_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."
REFINER_CLIP_G_PREFIX = "conditioner.embedders.0.model."
# An empty tensor that marks a v-prediction model (ComfyUI's convention, used by v-pred SDXL
# releases); A1111 and diffusers ignore it, sdcloud's loader reads it.
V_PRED_KEY = "v_pred"

_UNET_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_TOP = {
    "encoder.conv_norm_out": "encoder.norm_out",
    "decoder.conv_norm_out": "decoder.norm_out",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_CLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def unet_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers ``UNet2DConditionModel`` weights -> LDM/SGM ``diffusion_model`` names (no prefix)."""
    layers = config["layers_per_block"]
    if not isinstance(layers, int):
        raise Unsupported("UNets with a different layer count per block cannot be written in A1111 layout")
    per_block = layers + 1
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]

    def name(key: str) -> str:
        module, _, param = key.rpartition(".")
        if module in _UNET_TOP:
            return f"{_UNET_TOP[module]}.{param}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = 1 + block * per_block + j
            return f"input_blocks.{index}." + (f"0.{_resnet(rest)}" if kind == "resnets" else f"1.{rest}")
        if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            return f"input_blocks.{(int(m[1]) + 1) * per_block}.0.op.{m[2]}"
        if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
            return f"middle_block.1.{m[1]}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = block * per_block + j
            return f"output_blocks.{index}." + (f"0.{_resnet(rest)}" if kind == "resnets" else f"1.{rest}")
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            block = int(m[1])
            slot = 2 if up_has_attn[block] else 1
            return f"output_blocks.{block * per_block + layers}.{slot}.conv.{m[2]}"
        raise Unsupported(f"UNet weight {key!r} has no A1111 equivalent")

    return _rename(state_dict, name)


def _rename(state_dict: Mapping[str, torch.Tensor], name: Callable[[str], str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = name(key)
        if new in out:
            raise Unsupported(f"two weights map to the same A1111 name {new!r}")
        out[new] = value
    return out


def _resnet(rest: str) -> str:
    module, _, param = rest.partition(".")
    return f"{_UNET_RESNET.get(module, module)}.{param}"


def vae_to_ldm(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """diffusers ``AutoencoderKL`` weights -> LDM ``first_stage_model`` names (no prefix)."""
    n_up = len(config["up_block_types"])

    def name(key: str) -> str:
        module, _, param = key.rpartition(".")
        if module in _VAE_TOP:
            return f"{_VAE_TOP[module]}.{param}"
        if module in ("encoder.conv_in", "encoder.conv_out", "decoder.conv_in", "decoder.conv_out",
                      "quant_conv", "post_quant_conv"):
            return key
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            return f"encoder.down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3])}"
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            return f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3])}"
        if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            return f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_vae_resnet(m[3])}"
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            if m[2] in _VAE_ATTN:
                return f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
        raise Unsupported(f"VAE weight {key!r} has no A1111 equivalent")

    out = _rename(state_dict, name)
    # LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers.
    for key, value in out.items():
        if re.search(r"\.mid\.attn_1\.(q|k|v|proj_out)\.weight$", key) and value.ndim == 2:
            out[key] = value.reshape(*value.shape, 1, 1)
    return out


def _vae_resnet(rest: str) -> str:
    return rest.replace("conv_shortcut", "nin_shortcut", 1) if rest.startswith("conv_shortcut.") else rest


def _text_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Text-encoder weights without the ``text_model.`` level (transformers <5.6 has it, >=5.6 not)."""
    return {k.removeprefix("text_model."): v for k, v in state_dict.items()}


def hf_clip_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP-L as A1111 stores it: the transformers names under ``...transformer.text_model.``.

    Real SD1/SDXL files also carry the int64 ``embeddings.position_ids`` buffer (newer
    transformers no longer saves it); it is written as ``arange`` like theirs, since some
    tools treat a file without it as broken. diffusers ignores it on load.
    """
    out = dict(_text_keys(state_dict))
    positions = out["embeddings.position_embedding.weight"].shape[0]
    out["embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64).unsqueeze(0)
    return out


def hf_clip_to_open_clip(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIP text weights -> OpenCLIP names (q/k/v fused into ``in_proj``)."""
    src = _text_keys(state_dict)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in src.items():
        if key == "embeddings.position_ids":
            continue
        if key in _CLIP_TOP:
            out[_CLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", key):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            if m[2] not in _CLIP_LAYER:
                raise Unsupported(f"text encoder weight {key!r} has no OpenCLIP equivalent")
            out[f"transformer.resblocks.{m[1]}.{_CLIP_LAYER[m[2]]}.{m[3]}"] = value
        else:
            raise Unsupported(f"text encoder weight {key!r} has no OpenCLIP equivalent")
    for (layer, param), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise Unsupported(f"text encoder layer {layer} lacks one of q/k/v {param}")
        out[f"transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def pipeline_family(pipe: Any) -> str:
    """``sd1`` | ``sd2`` | ``sdxl`` | ``sdxl_refiner`` of a loaded diffusers pipeline.

    SD2 is told from SD1 by its OpenCLIP text encoder's ``gelu`` activation (CLIP-L uses
    ``quick_gelu``); every shipped config and real checkpoint follows that.
    """
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl" if getattr(pipe, "text_encoder", None) is not None else "sdxl_refiner"
    text_encoder = getattr(pipe, "text_encoder", None)
    if text_encoder is None:
        raise Unsupported("this pipeline has no text encoder; cannot write an A1111 checkpoint")
    return "sd2" if text_encoder.config.hidden_act == "gelu" else "sd1"


def pipeline_to_a1111_state_dict(pipe: Any, family: str | None = None) -> dict[str, torch.Tensor]:
    """All weights of ``pipe`` (UNet, VAE, text encoders) under A1111 single-file names.

    Tensors are the pipeline's own (no copies, device and dtype unchanged) except where the
    layout forces a new one (fused q/k/v, transposed projection). A pipeline whose scheduler
    predicts ``v_prediction`` also gets the empty ``v_pred`` marker tensor.
    """
    family = family or pipeline_family(pipe)
    out: dict[str, torch.Tensor] = {}

    def add(prefix: str, tensors: Mapping[str, torch.Tensor]) -> None:
        for key, value in tensors.items():
            out[prefix + key] = value

    add(UNET_PREFIX, unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    add(VAE_PREFIX, vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    if family == "sd1":
        add(SD1_CLIP_PREFIX, hf_clip_to_ldm(pipe.text_encoder.state_dict()))
    elif family == "sd2":
        add(SD2_CLIP_PREFIX, hf_clip_to_open_clip(pipe.text_encoder.state_dict()))
    elif family == "sdxl":
        add(SDXL_CLIP_L_PREFIX, hf_clip_to_ldm(pipe.text_encoder.state_dict()))
        add(SDXL_CLIP_G_PREFIX, hf_clip_to_open_clip(pipe.text_encoder_2.state_dict()))
    elif family == "sdxl_refiner":
        add(REFINER_CLIP_G_PREFIX, hf_clip_to_open_clip(pipe.text_encoder_2.state_dict()))
    else:
        raise Unsupported(f"cannot write {family!r} pipelines in A1111 layout")
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is not None and scheduler.config.get("prediction_type") == "v_prediction":
        out[V_PRED_KEY] = torch.empty(0)
    return out


def save_a1111_checkpoint(
    pipe: Any,
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``pipe`` as an A1111 ``.safetensors`` file; floats are cast to ``dtype`` if given.

    Written one tensor at a time (peak extra RAM is one tensor, even for SDXL on a GPU) to a
    temporary name, fsynced and renamed, so a crash never leaves a half-written checkpoint.
    """
    return write_safetensors(pipeline_to_a1111_state_dict(pipe), path, metadata=metadata, dtype=dtype)


_ST_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


def write_safetensors(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Stream ``tensors`` into a safetensors file atomically (temp name, fsync, rename)."""
    path = Path(path)
    if metadata and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("safetensors metadata must map str to str")

    def target_dtype(t: torch.Tensor) -> torch.dtype:
        return dtype if dtype is not None and t.is_floating_point() else t.dtype

    for key, t in tensors.items():
        if target_dtype(t) not in _ST_DTYPES:
            raise Unsupported(f"tensor {key!r} has dtype {t.dtype}, which safetensors cannot store")
    # Largest element size first keeps every tensor aligned to its element size, as safetensors does.
    order = sorted(tensors, key=lambda k: (-target_dtype(tensors[k]).itemsize, k))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for key in order:
        t = tensors[key]
        size = t.numel() * target_dtype(t).itemsize
        header[key] = {"dtype": _ST_DTYPES[target_dtype(t)], "shape": list(t.shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(header_bytes)))
            f.write(header_bytes)
            for key in order:
                _write_tensor(f.write, tensors[key], target_dtype(tensors[key]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _write_tensor(write: Callable[[Any], Any], tensor: torch.Tensor, dtype: torch.dtype) -> None:
    t = tensor.detach().to(device="cpu", dtype=dtype).contiguous().reshape(-1)
    if t.numel():
        write(memoryview(t.view(torch.uint8).numpy()))
