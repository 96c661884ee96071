"""The built-in demo model: tiny, randomly initialised, real SD1.5 / SDXL topology.

Built locally in well under a second from a seed, with the real CLIP tokenizer shipped in
the package, so everything (generation, single-file export/reload, LoRA, merges, the API)
can run and be tested on a CPU with no weights and no network. Its images are noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEMO_LABEL = "demo model (random weights: images are noise)"
TOKENIZER_DIR = Path(__file__).parent / "configs" / "tokenizer"

# Widths are tiny; topology (4 levels x 2 layers for SD1.5; 3 levels for SDXL) is real so
# A1111 key layouts and diffusers' single-file converters apply unchanged.
SD15_UNET: dict[str, Any] = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(32, 32, 32, 32), norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=32, attention_head_dim=8,
)
SDXL_UNET: dict[str, Any] = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(32, 32, 32), norm_num_groups=32,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 1), attention_head_dim=(2, 4, 8), use_linear_projection=True,
    cross_attention_dim=32 + 48, addition_embed_type="text_time", addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 48,
)
# The SDXL refiner's layout (4 levels, the second text encoder only, 5 time ids with the
# aesthetic score), as tiny as the demo: written out as a file to try and test the refiner.
SDXL_REFINER_UNET: dict[str, Any] = dict(
    SDXL_UNET, block_out_channels=(32, 32, 64, 64), attention_head_dim=(2, 4, 8, 8),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 1, 1, 1), cross_attention_dim=48,
    projection_class_embeddings_input_dim=5 * 8 + 48,
)
VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(32, 32, 32, 32), sample_size=64,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
TEXT: dict[str, Any] = dict(
    vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, layer_norm_eps=1e-5, hidden_act="quick_gelu",
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=32,
)
SCHEDULER: dict[str, Any] = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    steps_offset=1, timestep_spacing="leading", prediction_type="epsilon",
)


def demo_configs(kind: str) -> dict[str, dict[str, Any]]:
    """Component configs of the demo model (used to rebuild it from an exported single file)."""
    if kind in ("sd15", "sd15-inpaint"):
        unet = dict(SD15_UNET, in_channels=9) if kind == "sd15-inpaint" else dict(SD15_UNET)
        return {"unet": unet, "vae": dict(VAE), "text_encoder": dict(TEXT)}
    if kind == "sdxl":
        return {"unet": dict(SDXL_UNET), "vae": dict(VAE, scaling_factor=0.13025),
                # diffusers tells SDXL's two encoders apart by width: keep them different
                "text_encoder": dict(TEXT), "text_encoder_2": dict(TEXT, hidden_size=48, intermediate_size=53,
                                                                    projection_dim=48)}
    if kind == "sdxl-refiner":
        return {"unet": dict(SDXL_REFINER_UNET), "vae": dict(VAE, scaling_factor=0.13025),
                "text_encoder_2": dict(TEXT, hidden_size=48, intermediate_size=53, projection_dim=48)}
    raise ValueError(f"unknown demo kind {kind!r}; use 'sd15', 'sd15-inpaint', 'sdxl' or 'sdxl-refiner'")


def build_demo_pipeline(kind: str = "sd15", seed: int = 0) -> Any:
    """A seeded random pipeline (diffusers ``StableDiffusionPipeline`` or ``...XLPipeline``);
    ``sd15-inpaint`` has the 9-channel UNet of inpainting models, ``sdxl-refiner`` is an SDXL
    refiner (``StableDiffusionXLImg2ImgPipeline``, no first text encoder)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    cfg = demo_configs(kind)
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg["unet"])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**cfg["vae"])
    if kind == "sdxl-refiner":
        torch.manual_seed(seed + 3)
        refiner = StableDiffusionXLImg2ImgPipeline(
            unet=unet, vae=vae, text_encoder=None, tokenizer=None,
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"])),
            tokenizer_2=CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), pad_token="!"),
            scheduler=EulerDiscreteScheduler(**SCHEDULER), requires_aesthetics_score=True,
        )
        for module in (refiner.unet, refiner.vae, refiner.text_encoder_2):
            module.eval()
        return refiner
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    scheduler = EulerDiscreteScheduler(**SCHEDULER)
    if kind != "sdxl":
        pipe = StableDiffusionPipeline(
            unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    else:
        torch.manual_seed(seed + 3)
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"]))
        pipe = StableDiffusionXLPipeline(
            unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
            # SDXL's second tokenizer pads with "!" like the real OpenCLIP bigG one
            tokenizer=tokenizer, tokenizer_2=CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), pad_token="!"),
            scheduler=scheduler,
        )
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval()
    return pipe


def write_demo_checkpoint(path: str | Path, kind: str = "sd15", seed: int = 0, dtype: Any = None) -> Path:
    """Write the demo model as an A1111-layout single ``.safetensors`` file.

    Its tiny widths are recorded in the ``sdcloud_config`` metadata key, which the loader
    applies on top of the shipped SD1.5/SDXL configs (real checkpoints need no such key).
    """
    import json

    from sdcloud.engine.export import save_a1111_checkpoint
    from sdcloud.engine.loader import CONFIG_METADATA_KEY

    pipe = build_demo_pipeline(kind, seed)
    configs = {name: {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
               for name, cfg in demo_configs(kind).items()}
    return save_a1111_checkpoint(pipe, path, metadata={CONFIG_METADATA_KEY: json.dumps(configs)}, dtype=dtype)
