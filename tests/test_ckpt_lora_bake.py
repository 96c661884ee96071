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


def test_lycoris_files_bake_like_generation_applies_them(tmp_path: Path) -> None:
    """LoHa and LoKr bake to W + ratio * delta with the same math as ``<lora:...>`` uses."""
    from sdcloud.checkpoints.lycoris import group_modules, module_delta

    ckpt = write_synthetic(tmp_path / "sd15.safetensors", seed=1, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"  # 16x16
    loha = {f"{name}.hada_w1_a": torch.randn(16, 2, generator=g), f"{name}.hada_w1_b": torch.randn(2, 16, generator=g),
            f"{name}.hada_w2_a": torch.randn(16, 2, generator=g), f"{name}.hada_w2_b": torch.randn(2, 16, generator=g),
            f"{name}.alpha": torch.tensor(1.0)}
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"  # 8x8x3x3
    lokr = {f"{conv}.lokr_w1": torch.randn(2, 2, generator=g), f"{conv}.lokr_w2": torch.randn(4, 4, 3, 3, generator=g)}
    save_file(loha, str(tmp_path / "loha.safetensors"))
    save_file(lokr, str(tmp_path / "lokr.safetensors"))
    out = tmp_path / "baked.safetensors"
    res = bake_loras(LoraBakeOptions(ckpt, ((tmp_path / "loha.safetensors", 0.7), (tmp_path / "lokr.safetensors", 1.0)),
                                     out))
    assert res.applied == {"loha.safetensors": 1, "lokr.safetensors": 1}
    base, got = load_file(str(ckpt)), load_file(str(out))
    q = U + "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
    w = {k.split(".", 1)[1]: v for k, v in loha.items()}
    hada = (w["hada_w1_a"] @ w["hada_w1_b"]) * (w["hada_w2_a"] @ w["hada_w2_b"])
    torch.testing.assert_close(got[q], base[q] + 0.7 * 0.5 * hada)
    c = U + "input_blocks.1.0.in_layers.2.weight"
    kron = torch.kron(lokr[f"{conv}.lokr_w1"][:, :, None, None], lokr[f"{conv}.lokr_w2"])
    torch.testing.assert_close(got[c], base[c] + kron)
    assert torch.equal(module_delta(group_modules(lokr)[conv], (8, 8, 3, 3))[0], kron)
    proj = U + "input_blocks.4.1.proj_in."  # full diff: weight and bias
    full = {"lora_unet_down_blocks_1_attentions_0_proj_in.diff": torch.randn(base[proj + "weight"].shape, generator=g),
            "lora_unet_down_blocks_1_attentions_0_proj_in.diff_b": torch.randn(base[proj + "bias"].shape, generator=g)}
    save_file(full, str(tmp_path / "full.safetensors"))
    bake_loras(LoraBakeOptions(ckpt, ((tmp_path / "full.safetensors", 0.5),), tmp_path / "full_baked.safetensors"))
    got = load_file(str(tmp_path / "full_baked.safetensors"))
    for part in ("weight", "bias"):
        diff = full["lora_unet_down_blocks_1_attentions_0_proj_in.diff" + ("_b" if part == "bias" else "")]
        torch.testing.assert_close(got[proj + part], base[proj + part] + 0.5 * diff)


def test_oft_is_refused_by_name(tmp_path: Path) -> None:
    ckpt = write_synthetic(tmp_path / "sd15.safetensors", seed=1)
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.oft_blocks": torch.zeros(2, 4, 4)},
              str(tmp_path / "oft.safetensors"))
    with pytest.raises(Unsupported, match="OFT"):
        bake_loras(LoraBakeOptions(ckpt, ((tmp_path / "oft.safetensors", 1.0),), tmp_path / "o.safetensors"))
