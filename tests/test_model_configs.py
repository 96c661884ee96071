"""The shipped weight-free configs: real SD1.5 / SD2 / SDXL topology, and their offline assembly."""

from __future__ import annotations

import json
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from sdcloud.checkpoints.detect import detect_architecture
from sdcloud.engine.export import pipeline_to_a1111_state_dict
from sdcloud.engine.model_configs import component_configs, config_dir, config_name, pipeline_class
from sdcloud.errors import BadRequest, SdcloudError, Unsupported

ALL = [("sd1", "base", "epsilon"), ("sd1", "inpaint", "epsilon"), ("sd2", "base", "epsilon"),
       ("sd2", "base", "v_prediction"), ("sd2", "inpaint", "epsilon"), ("sdxl", "base", "epsilon"),
       ("sdxl", "inpaint", "epsilon"), ("sdxl_refiner", "base", "epsilon")]

# Parameter counts of the released models (UNet, VAE, text encoders), as every model card and
# loader reports them; a wrong width, depth or head layout in a config changes them.
SD15_UNET, SD2_UNET, SDXL_UNET = 859_520_964, 865_910_724, 2_567_463_684
VAE, CLIP_L, OPENCLIP_H_23, OPENCLIP_BIGG = 83_653_863, 123_060_480, 340_387_840, 694_659_840
INPAINT_EXTRA = 5 * 320 * 9  # conv_in takes 9 channels instead of 4


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SDCLOUD_CACHE_DIR", str(tmp_path / "cache"))


def _meta_pipeline(name: str) -> types.SimpleNamespace:
    """Full-size components of a shipped config on the meta device (shapes only, no memory)."""
    files = component_configs(name)
    parts = {}
    with torch.device("meta"):
        parts["unet"] = UNet2DConditionModel.from_config(files["unet/config.json"])
        parts["vae"] = AutoencoderKL.from_config(files["vae/config.json"])
        for te in ("text_encoder", "text_encoder_2"):
            if f"{te}/config.json" in files:
                cfg = files[f"{te}/config.json"]
                cls = CLIPTextModelWithProjection if cfg["architectures"] == ["CLIPTextModelWithProjection"] \
                    else CLIPTextModel
                parts[te] = cls(CLIPTextConfig(**cfg))
    return types.SimpleNamespace(**parts)


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("name", "unet", "text"), [
    ("sd15", SD15_UNET, (CLIP_L,)),
    ("sd15-inpaint", SD15_UNET + INPAINT_EXTRA, (CLIP_L,)),
    ("sd2", SD2_UNET, (OPENCLIP_H_23,)),
    ("sd2-v", SD2_UNET, (OPENCLIP_H_23,)),
    ("sd2-inpaint", SD2_UNET + INPAINT_EXTRA, (OPENCLIP_H_23,)),
    ("sdxl", SDXL_UNET, (CLIP_L, OPENCLIP_BIGG)),
    ("sdxl-inpaint", SDXL_UNET + INPAINT_EXTRA, (CLIP_L, OPENCLIP_BIGG)),
])
def test_configs_have_the_released_models_sizes(name, unet, text):
    pipe = _meta_pipeline(name)
    assert _params(pipe.unet) == unet
    assert _params(pipe.vae) == VAE
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if hasattr(pipe, "text_encoder_2") else [])
    assert tuple(_params(te) for te in encoders) == text


@pytest.mark.parametrize(("family", "variant", "prediction"), ALL)
def test_full_size_export_has_the_real_a1111_layout(family, variant, prediction):
    """A full-size model from each config, written in A1111 names, is the architecture it claims."""
    name = config_name(family, variant, prediction)
    shapes = {k: tuple(v.shape) for k, v in pipeline_to_a1111_state_dict(_meta_pipeline(name)).items()}
    arch = detect_architecture(shapes)
    assert (arch.family, arch.variant) == (family, variant)
    in_ch = 9 if variant == "inpaint" else 4
    first = shapes["model.diffusion_model.input_blocks.0.0.weight"]
    assert first == ((384 if family == "sdxl_refiner" else 320), in_ch, 3, 3)
    if family == "sd1":
        tokens = shapes["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]
        assert tokens == (49408, 768)
        assert shapes["model.diffusion_model.input_blocks.1.1.proj_in.weight"] == (320, 320, 1, 1)
    if family == "sd2":
        assert shapes["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] == (3072, 1024)
        # diffusers keeps 23 of OpenCLIP-H's 24 layers (SD2 uses the penultimate one).
        assert "cond_stage_model.model.transformer.resblocks.22.ln_1.weight" in shapes
        assert shapes["model.diffusion_model.input_blocks.1.1.proj_in.weight"] == (320, 320)
    if family == "sdxl":
        assert shapes["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
        assert shapes["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
        assert "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight" in shapes
        assert shapes["model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"] == (
            1280, 2048)
    if family == "sdxl_refiner":
        assert shapes["model.diffusion_model.label_emb.0.0.weight"] == (1536, 2560)
        assert shapes["conditioner.embedders.0.model.ln_final.weight"] == (1280,)


def test_config_dir_is_complete_and_loads_the_real_tokenizers():
    sd1 = config_dir("sd1")
    tok = CLIPTokenizer.from_pretrained(str(sd1 / "tokenizer"))
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.pad_token_id == 49407
    assert tok.model_max_length == 77

    xl = config_dir("sdxl")
    assert CLIPTokenizer.from_pretrained(str(xl / "tokenizer")).pad_token == "<|endoftext|>"
    tok2 = CLIPTokenizer.from_pretrained(str(xl / "tokenizer_2"))
    assert (tok2.pad_token, tok2.pad_token_id) == ("!", 0)  # OpenCLIP pads with "!"
    sd2 = config_dir("sd2")
    assert CLIPTokenizer.from_pretrained(str(sd2 / "tokenizer")).pad_token == "!"
    index = json.loads((xl / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    for component in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                      "scheduler"):
        assert index[component][0] is not None
        assert (xl / component).is_dir()
    assert not list(xl.rglob("*.safetensors")) and not list(xl.rglob("*.bin"))


def test_prediction_type_picks_the_sd2_768_v_config():
    eps = config_dir("sd2", prediction="epsilon")
    v = config_dir("sd2", prediction="v_prediction")
    sched = json.loads((v / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction"
    assert json.loads((v / "unet" / "config.json").read_text())["sample_size"] == 96
    assert json.loads((eps / "unet" / "config.json").read_text())["sample_size"] == 64
    xl_v = config_dir("sdxl", prediction="v_prediction")
    assert json.loads((xl_v / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == \
        "v_prediction"
    with pytest.raises(BadRequest, match="prediction"):
        config_dir("sd1", prediction="sample")


def test_overrides_replace_config_keys_in_their_own_dir(tmp_path):
    base = config_dir("sd1")
    tiny = config_dir("sd1", overrides={"unet": {"block_out_channels": [32, 32, 32, 32]},
                                        "text_encoder": {"hidden_size": 32}})
    assert tiny != base
    unet = json.loads((tiny / "unet" / "config.json").read_text())
    assert unet["block_out_channels"] == [32, 32, 32, 32]
    assert unet["cross_attention_dim"] == 768  # untouched keys keep the shipped values
    assert json.loads((tiny / "text_encoder" / "config.json").read_text())["hidden_size"] == 32
    base_unet = json.loads((base / "unet" / "config.json").read_text())
    assert base_unet["block_out_channels"] == [320, 640, 1280, 1280]
    with pytest.raises(BadRequest, match="text_encoder_2"):
        config_dir("sd1", overrides={"text_encoder_2": {"hidden_size": 8}})
    assert str(base).startswith(str(tmp_path / "cache"))  # SDCLOUD_CACHE_DIR


def test_config_dir_is_built_once_and_atomically(tmp_path):
    first = config_dir("sdxl")
    stamp = (first / "unet" / "config.json").stat().st_mtime_ns
    assert config_dir("sdxl") == first
    assert (first / "unet" / "config.json").stat().st_mtime_ns == stamp
    overrides = {"vae": {"sample_size": 256}}
    with ThreadPoolExecutor(8) as pool:
        dirs = set(pool.map(lambda _: config_dir("sdxl", overrides=overrides, cache_dir=tmp_path / "c2"),
                            range(8)))
    assert len(dirs) == 1
    built = dirs.pop()
    assert (built / "tokenizer_2" / "vocab.json").is_file()
    # No temporary build dirs are left beside the finished one.
    assert [p.name for p in (tmp_path / "c2" / "configs").iterdir()] == [built.name]


def test_unwritable_cache_gives_a_message_that_says_what_to_do(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(SdcloudError, match="SDCLOUD_CACHE_DIR"):
        config_dir("sd1", cache_dir=blocker)


def test_unsupported_architectures_are_named():
    with pytest.raises(Unsupported, match="sd3"):
        config_dir("sd3")
    with pytest.raises(Unsupported, match="pix2pix"):
        config_dir("sd1", "pix2pix")
    with pytest.raises(Unsupported, match="inpaint"):
        config_dir("sdxl_refiner", "inpaint")


def test_pipeline_class_names():
    assert pipeline_class("sd1") == "StableDiffusionPipeline"
    assert pipeline_class("sd2", img2img=True) == "StableDiffusionImg2ImgPipeline"
    assert pipeline_class("sd1", inpaint=True) == "StableDiffusionInpaintPipeline"
    # A 9-channel UNet needs the inpaint pipeline even for txt2img.
    assert pipeline_class("sd2", "inpaint") == "StableDiffusionInpaintPipeline"
    assert pipeline_class("sdxl") == "StableDiffusionXLPipeline"
    assert pipeline_class("sdxl", img2img=True) == "StableDiffusionXLImg2ImgPipeline"
    assert pipeline_class("sdxl", "inpaint", img2img=True) == "StableDiffusionXLInpaintPipeline"
    assert pipeline_class("sdxl_refiner", img2img=True) == "StableDiffusionXLImg2ImgPipeline"
    with pytest.raises(Unsupported, match="refiner"):
        pipeline_class("sdxl_refiner")
    import diffusers

    for family, variant, _ in ALL:
        for img2img in (False, True):
            if family == "sdxl_refiner" and not img2img:
                continue
            assert hasattr(diffusers, pipeline_class(family, variant, img2img=img2img))
