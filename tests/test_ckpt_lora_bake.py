"""Baking kohya LoRAs into a checkpoint equals W + ratio·alpha/rank·up@down, key by key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from sdcloud.checkpoints.lora_bake import LoraBakeOptions, bake_loras
from sdcloud.errors import BadRequest, Unsupported
from test_ckpt_synthetic import TINY_SDXL, write_synthetic

U = "model.diffusion_model."


def _module(sd: dict, name: str, out_f: int, in_f: int, rank: int, alpha: float | None, seed: int,
            kernel: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    if kernel:
        sd[f"{name}.lora_down.weight"] = torch.randn(rank, in_f, kernel, kernel, generator=g)
        sd[f"{name}.lora_up.weight"] = torch.randn(out_f, rank, 1, 1, generator=g)
    else:
        sd[f"{name}.lora_down.weight"] = torch.randn(rank, in_f, generator=g)
        sd[f"{name}.lora_up.weight"] = torch.randn(out_f, rank, generator=g)
    if alpha is not None:
        sd[f"{name}.alpha"] = torch.tensor(alpha)


def _naive_delta(sd: dict, name: str) -> torch.Tensor:
    down, up = sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"]
    rank = down.shape[0]
    alpha = float(sd[f"{name}.alpha"]) if f"{name}.alpha" in sd else rank
    if down.dim() == 4:  # kohya's conv 3x3 formula
        w = F.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    else:
        w = up @ down
    return w * alpha / rank


def test_sd15_lora_with_diffusers_names_bakes_exactly(tmp_path: Path) -> None:
    ckpt = write_synthetic(tmp_path / "base.safetensors", seed=1, dtype=torch.float32)
    # name in the LoRA -> the LDM key it must land on (tiny SD1.5: ch=8, ctx=8, text width 8)
    lora1: dict = {}
    _module(lora1, "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", 16, 16, 2, 1.0, 1)
    _module(lora1, "lora_unet_down_blocks_0_resnets_0_conv1", 8, 8, 2, 2.0, 2, kernel=3)
    _module(lora1, "lora_unet_mid_block_attentions_0_proj_in", 32, 32, 4, None, 3)
    _module(lora1, "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k", 8, 8, 2, 1.0, 4)
    _module(lora1, "lora_te_text_model_encoder_layers_1_self_attn_q_proj", 8, 8, 2, 1.0, 5)
    lora2: dict = {}
    _module(lora2, "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", 16, 16, 4, 4.0, 6)
    targets = {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q":
            U + "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight",
        "lora_unet_down_blocks_0_resnets_0_conv1": U + "input_blocks.1.0.in_layers.2.weight",
        "lora_unet_mid_block_attentions_0_proj_in": U + "middle_block.1.proj_in.weight",
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_k":
            U + "output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight",
        "lora_te_text_model_encoder_layers_1_self_attn_q_proj":
            "cond_stage_model.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight",
    }
    save_file(lora1, str(tmp_path / "one.safetensors"))
    save_file(lora2, str(tmp_path / "two.safetensors"))
    out = tmp_path / "baked.safetensors"
    res = bake_loras(LoraBakeOptions(ckpt, ((tmp_path / "one.safetensors", 0.8),
                                            (tmp_path / "two.safetensors", -0.5)), out))
    assert res.applied == {"one.safetensors": 5, "two.safetensors": 1}
    base, got = load_file(str(ckpt)), load_file(str(out))
    for name, key in targets.items():
        want = base[key] + 0.8 * _naive_delta(lora1, name).reshape(base[key].shape)
        if f"{name}.lora_up.weight" in lora2:
            want = want - 0.5 * _naive_delta(lora2, name)
        torch.testing.assert_close(got[key], want, rtol=1e-5, atol=1e-5)
    untouched = U + "input_blocks.4.1.transformer_blocks.0.attn1.to_k.weight"
    assert torch.equal(got[untouched], base[untouched])


def test_sdxl_lora_text_encoder_2_lands_in_the_fused_qkv(tmp_path: Path) -> None:
    ckpt = write_synthetic(tmp_path / "xl.safetensors", TINY_SDXL, seed=1, dtype=torch.float32)
    lora: dict = {}
    _module(lora, "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 16, 16, 2, 1.0, 1)
    _module(lora, "lora_te2_text_model_encoder_layers_1_self_attn_k_proj", 8, 8, 2, 1.0, 2)
    _module(lora, "lora_te1_text_model_encoder_layers_0_mlp_fc1", 32, 8, 2, 1.0, 3)
    save_file(lora, str(tmp_path / "xl_lora.safetensors"))
    out = tmp_path / "baked.safetensors"
    bake_loras(LoraBakeOptions(ckpt, ((tmp_path / "xl_lora.safetensors", 1.0),), out))
    base, got = load_file(str(ckpt)), load_file(str(out))
    qkv = "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"
    want = base[qkv].clone()
    want[8:16] += _naive_delta(lora, "lora_te2_text_model_encoder_layers_1_self_attn_k_proj")
    torch.testing.assert_close(got[qkv], want)
    k = U + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
    torch.testing.assert_close(got[k], base[k] + _naive_delta(
        lora, "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"))


def test_lora_for_another_architecture_is_refused(tmp_path: Path) -> None:
    ckpt = write_synthetic(tmp_path / "sd15.safetensors", seed=1)
    lora: dict = {}
    _module(lora, "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 640, 2048, 2, 1.0, 1)
    save_file(lora, str(tmp_path / "xl_lora.safetensors"))
    out = tmp_path / "baked.safetensors"
    with pytest.raises(BadRequest, match="another"):
        bake_loras(LoraBakeOptions(ckpt, ((tmp_path / "xl_lora.safetensors", 1.0),), out))
    assert not out.exists()


def test_loha_is_refused_by_name(tmp_path: Path) -> None:
    ckpt = write_synthetic(tmp_path / "sd15.safetensors", seed=1)
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a": torch.zeros(8, 2)},
              str(tmp_path / "loha.safetensors"))
    with pytest.raises(Unsupported, match="LoHa"):
        bake_loras(LoraBakeOptions(ckpt, ((tmp_path / "loha.safetensors", 1.0),), tmp_path / "o.safetensors"))
