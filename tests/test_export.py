"""A1111 single-file export: diffusers pipeline -> .safetensors -> from_single_file, offline, exact.

Tiny randomly initialised pipelines with the real SD1.5 / SD2 / SDXL topology (widths shrunk,
reference/diffusers_notes.md §4.3) and the real CLIP tokenizer shipped in the package.
"""

from __future__ import annotations

import os

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from sdcloud.checkpoints.detect import detect_architecture
from sdcloud.checkpoints.safetensors_header import read_header
from sdcloud.engine import export
from sdcloud.engine.export import pipeline_to_a1111_state_dict, save_a1111_checkpoint, write_safetensors
from sdcloud.engine.model_configs import TOKENIZER_DIR, config_dir
from sdcloud.errors import Unsupported

SD_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 32, 32),
    norm_num_groups=32, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=32, attention_head_dim=8,
)
SD2_UNET = dict(SD_UNET, attention_head_dim=(2, 4, 8, 8), use_linear_projection=True)
XL_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 64),
    norm_num_groups=32, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 8), use_linear_projection=True,
    # Context = both encoders' hidden states side by side (32 + 48); pooled te2 output + 6 time ids.
    cross_attention_dim=80, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 48,
)
REFINER_UNET = dict(
    XL_UNET, block_out_channels=(32, 32, 64, 64), transformer_layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4, 8, 8), cross_attention_dim=48, projection_class_embeddings_input_dim=5 * 8 + 48,
)
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(32, 32, 32, 32), sample_size=64,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
CLIP_L = dict(
    vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32,
)
# OpenCLIP-style encoders (SD2's ViT-H, SDXL's bigG) use gelu; SDXL's must differ in width from
# CLIP-L, as the real 768 vs 1280 do, or diffusers' loader cannot tell the two apart.
OPEN_CLIP = dict(CLIP_L, hidden_size=48, intermediate_size=64, num_hidden_layers=3, hidden_act="gelu",
                 projection_dim=48)


def _overrides(pipe, *components: str) -> dict[str, dict]:
    """The tiny widths, written over the shipped real-size configs."""
    return {name: {k: v for k, v in getattr(pipe, name).config.items() if not k.startswith("_")}
            for name in components}


def _text_overrides(model) -> dict:
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings", "hidden_act", "projection_dim")
    return {k: getattr(model.config, k) for k in keys}


def _tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))


def _sd_pipe(unet_cfg: dict, text_cfg: dict, cls=StableDiffusionPipeline, seed: int = 0,
             prediction: str = "epsilon"):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**VAE)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    return cls(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=_tokenizer(),
               scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", steps_offset=1,
                                                prediction_type=prediction),
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _sdxl_pipe(seed: int = 0):
    torch.manual_seed(seed)
    return StableDiffusionXLPipeline(
        unet=UNet2DConditionModel(**XL_UNET), vae=AutoencoderKL(**VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**OPEN_CLIP)),
        tokenizer=_tokenizer(), tokenizer_2=_tokenizer(), scheduler=EulerDiscreteScheduler(),
    )


def _assert_same_weights(original, reloaded, components: tuple[str, ...]) -> None:
    for name in components:
        a = getattr(original, name).state_dict()
        b = getattr(reloaded, name).state_dict()
        assert a.keys() == b.keys(), name
        for key in a:
            assert a[key].dtype == b[key].dtype, (name, key)
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after the round trip"


def _shapes(path) -> dict[str, tuple[int, ...]]:
    return read_header(path).shapes


def _round_trip(pipe, cls, path, text_encoders=("text_encoder",), prediction="epsilon"):
    """Export ``pipe``, detect the file's architecture, reload it offline; return (arch, reloaded)."""
    save_a1111_checkpoint(pipe, path)
    arch = detect_architecture(_shapes(path))
    overrides = _overrides(pipe, "unet", "vae")
    overrides.update({name: _text_overrides(getattr(pipe, name)) for name in text_encoders})
    cfg = config_dir(arch.family, arch.variant, prediction, overrides=overrides)
    reloaded = cls.from_single_file(str(path), config=str(cfg), local_files_only=True)
    _assert_same_weights(pipe, reloaded, ("unet", "vae", *text_encoders))
    return arch, reloaded


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SDCLOUD_CACHE_DIR", str(tmp_path / "cache"))


def test_sd15_round_trip_is_exact_offline_and_gives_the_same_image(tmp_path):
    pipe = _sd_pipe(SD_UNET, CLIP_L)
    path = save_a1111_checkpoint(pipe, tmp_path / "tiny-sd15.safetensors")

    shapes = _shapes(path)
    # diffusers' own marker of an SD1 checkpoint, and A1111's names for the first conv and VAE attention.
    assert "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in shapes
    assert shapes["model.diffusion_model.input_blocks.0.0.weight"] == (32, 4, 3, 3)
    assert shapes["first_stage_model.decoder.mid.attn_1.q.weight"] == (32, 32, 1, 1)
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in shapes
    arch = detect_architecture(shapes)
    assert (arch.family, arch.variant) == ("sd1", "base")

    cfg = config_dir(arch.family, arch.variant, overrides={
        **_overrides(pipe, "unet", "vae"), "text_encoder": _text_overrides(pipe.text_encoder)})
    reloaded = StableDiffusionPipeline.from_single_file(str(path), config=str(cfg), local_files_only=True)
    _assert_same_weights(pipe, reloaded, ("unet", "vae", "text_encoder"))
    assert reloaded.tokenizer("a cat in a hat").input_ids == pipe.tokenizer("a cat in a hat").input_ids

    def image(p):
        p.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        return p("a cat in a hat", num_inference_steps=2, height=64, width=64, output_type="pt",
                 generator=torch.Generator().manual_seed(42)).images

    assert torch.equal(image(pipe), image(reloaded))


def test_sd15_inpaint_round_trip(tmp_path):
    pipe = _sd_pipe(dict(SD_UNET, in_channels=9), CLIP_L, cls=StableDiffusionInpaintPipeline, seed=1)
    path = tmp_path / "tiny-inpaint.safetensors"
    arch, reloaded = _round_trip(pipe, StableDiffusionInpaintPipeline, path)
    assert (arch.family, arch.variant) == ("sd1", "inpaint")
    assert _shapes(path)["model.diffusion_model.input_blocks.0.0.weight"] == (32, 9, 3, 3)
    assert reloaded.unet.config.in_channels == 9


def test_sdxl_round_trip(tmp_path):
    pipe = _sdxl_pipe(seed=4)
    path = tmp_path / "tiny-sdxl.safetensors"
    arch, reloaded = _round_trip(pipe, StableDiffusionXLPipeline, path, ("text_encoder", "text_encoder_2"))
    assert (arch.family, arch.variant) == ("sdxl", "base")
    shapes = _shapes(path)
    # SGM layout: CLIP-L in HF names, bigG in OpenCLIP names with fused q/k/v and a transposed projection.
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in shapes
    assert shapes["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"] == (3 * 48, 48)
    assert shapes["conditioner.embedders.1.model.text_projection"] == (48, 48)
    assert shapes["model.diffusion_model.label_emb.0.0.weight"] == (4 * 32, 6 * 8 + 48)
    assert not any(k.startswith("cond_stage_model.") for k in shapes)
    assert isinstance(reloaded.text_encoder_2, CLIPTextModelWithProjection)


def test_sdxl_inpaint_round_trip(tmp_path):
    torch.manual_seed(5)
    pipe = StableDiffusionXLInpaintPipeline(
        unet=UNet2DConditionModel(**dict(XL_UNET, in_channels=9)), vae=AutoencoderKL(**VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**OPEN_CLIP)),
        tokenizer=_tokenizer(), tokenizer_2=_tokenizer(), scheduler=EulerDiscreteScheduler(),
    )
    arch, reloaded = _round_trip(pipe, StableDiffusionXLInpaintPipeline, tmp_path / "xl-inpaint.safetensors",
                                 ("text_encoder", "text_encoder_2"))
    assert (arch.family, arch.variant) == ("sdxl", "inpaint")
    assert reloaded.unet.config.in_channels == 9


def test_sdxl_refiner_round_trip(tmp_path):
    torch.manual_seed(6)
    pipe = StableDiffusionXLImg2ImgPipeline(
        unet=UNet2DConditionModel(**REFINER_UNET), vae=AutoencoderKL(**VAE),
        text_encoder=None, tokenizer=None,
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**OPEN_CLIP)), tokenizer_2=_tokenizer(),
        scheduler=EulerDiscreteScheduler(), requires_aesthetics_score=True,
    )
    path = tmp_path / "refiner.safetensors"
    arch, reloaded = _round_trip(pipe, StableDiffusionXLImg2ImgPipeline, path, ("text_encoder_2",))
    assert arch.family == "sdxl_refiner"
    assert "conditioner.embedders.0.model.text_projection" in _shapes(path)
    assert reloaded.text_encoder is None and reloaded.config.requires_aesthetics_score


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_sd2_round_trip(tmp_path, prediction):
    pipe = _sd_pipe(SD2_UNET, OPEN_CLIP, seed=7, prediction=prediction)
    path = tmp_path / "tiny-sd2.safetensors"
    arch, reloaded = _round_trip(pipe, StableDiffusionPipeline, path, prediction=prediction)
    assert (arch.family, arch.variant) == ("sd2", "base")
    shapes = _shapes(path)
    assert shapes["cond_stage_model.model.transformer.resblocks.2.attn.in_proj_bias"] == (3 * 48,)
    assert shapes["cond_stage_model.model.positional_embedding"] == (77, 48)
    assert reloaded.scheduler.config.prediction_type == prediction
    # A v-prediction export says so in the file, so a loader can pick the right config again.
    assert ("v_pred" in shapes) == (prediction == "v_prediction")
    assert reloaded.tokenizer.pad_token == "!"


def test_sd2_inpaint_round_trip(tmp_path):
    pipe = _sd_pipe(dict(SD2_UNET, in_channels=9), OPEN_CLIP, cls=StableDiffusionInpaintPipeline, seed=8)
    arch, _ = _round_trip(pipe, StableDiffusionInpaintPipeline, tmp_path / "sd2-inpaint.safetensors")
    assert (arch.family, arch.variant) == ("sd2", "inpaint")


def test_fp16_export_halves_floats_and_reloads_in_fp16(tmp_path):
    pipe = _sd_pipe(SD_UNET, CLIP_L, seed=2)
    path = save_a1111_checkpoint(pipe, tmp_path / "half.safetensors", metadata={"note": "fp16"},
                                 dtype=torch.float16)
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"note": "fp16"}
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    # Floats are halved; CLIP's integer position ids stay int64.
    assert dtypes.pop("cond_stage_model.transformer.text_model.embeddings.position_ids") == "I64"
    assert set(dtypes.values()) == {"F16"}
    cfg = config_dir("sd1", overrides={**_overrides(pipe, "unet", "vae"),
                                       "text_encoder": _text_overrides(pipe.text_encoder)})
    reloaded = StableDiffusionPipeline.from_single_file(str(path), config=str(cfg), local_files_only=True,
                                                        torch_dtype=torch.float16)
    for key, value in pipe.unet.state_dict().items():
        assert torch.equal(value.half(), reloaded.unet.state_dict()[key])


def test_written_file_is_what_the_state_dict_says(tmp_path):
    pipe = _sd_pipe(SD_UNET, CLIP_L, seed=3)
    state = pipeline_to_a1111_state_dict(pipe)
    path = save_a1111_checkpoint(pipe, tmp_path / "x.safetensors")
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == set(state)
        for key in state:
            assert torch.equal(f.get_tensor(key), state[key]), key
    # Every UNet/VAE/text weight of the pipeline is in the file exactly once, plus CLIP's position ids.
    n = sum(len(getattr(pipe, c).state_dict()) for c in ("unet", "vae", "text_encoder"))
    assert len(state) == n + 1
    assert torch.equal(state["cond_stage_model.transformer.text_model.embeddings.position_ids"],
                       torch.arange(77).unsqueeze(0))


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous version")
    calls = []

    def broken(write, tensor, dtype):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        write(b"\0" * tensor.numel() * dtype.itemsize)

    monkeypatch.setattr(export, "_write_tensor", broken)
    with pytest.raises(OSError, match="disk full"):
        write_safetensors({f"t{i}": torch.zeros(4) for i in range(5)}, target)
    assert target.read_bytes() == b"previous version"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_unknown_weight_is_refused_not_dropped():
    with pytest.raises(Unsupported, match="no A1111 equivalent"):
        export.unet_to_ldm({"extra_module.weight": torch.zeros(1)}, SD_UNET)
    with pytest.raises(Unsupported, match="no OpenCLIP equivalent"):
        export.hf_clip_to_open_clip({"encoder.layers.0.mystery.weight": torch.zeros(1)})
