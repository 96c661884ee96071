"""The finished LoRA file: kohya tensors, ``ss_*`` training metadata, ``modelspec.*`` and the
precomputed hashes (``sshs_model_hash`` = A1111's LoRA hash, ``sshs_legacy_hash``), written
atomically so a kill never leaves a partial file in models/Lora."""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from sdcloud import __version__
from sdcloud.durable import atomic_write
from sdcloud.training.config import TrainConfig
from sdcloud.training.dataset import DatasetReport

ARCH = {"sd1": "stable-diffusion-v1", "sd2": "stable-diffusion-v2", "sdxl": "stable-diffusion-xl-v1-base"}
BASE_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def training_metadata(cfg: TrainConfig, report: DatasetReport, *, family: str, prediction: str,
                      model_name: str, model_sha256: str | None, model_autov1: str | None, step: int,
                      epoch: int, started_at: float, batches_per_epoch: int, network_module: str,
                      network_args: dict[str, Any]) -> dict[str, str]:
    """kohya ``train_network.py``'s ``ss_*`` keys (values are strings, as safetensors needs)."""
    res = cfg.resolution
    meta: dict[str, Any] = {
        "ss_session_id": random.Random(f"{cfg.seed}:{cfg.name}").randint(0, 2**32 - 1),
        "ss_training_started_at": started_at,
        "ss_training_finished_at": time.time(),
        "ss_output_name": cfg.name,
        "ss_learning_rate": float(cfg.lr),
        "ss_unet_lr": cfg.unet_lr if cfg.unet_lr is not None else cfg.lr,
        "ss_text_encoder_lr": (cfg.te_lr if cfg.te_lr is not None else cfg.lr) if cfg.trains_text_encoder else 0,
        "ss_num_train_images": sum(i.repeats for i in report.train_images),
        "ss_num_reg_images": len(report.reg_images),
        "ss_num_batches_per_epoch": batches_per_epoch,
        "ss_num_epochs": epoch + 1,
        "ss_epoch": epoch + 1,
        "ss_steps": step,
        "ss_max_train_steps": cfg.steps,
        "ss_batch_size_per_device": cfg.batch,
        "ss_total_batch_size": cfg.batch * cfg.grad_accum,
        "ss_gradient_checkpointing": cfg.gradient_checkpointing,
        "ss_gradient_accumulation_steps": cfg.grad_accum,
        "ss_lr_warmup_steps": cfg.warmup_steps,
        "ss_lr_scheduler": cfg.scheduler,
        "ss_network_module": network_module,
        "ss_network_dim": cfg.rank,
        "ss_network_alpha": float(cfg.alpha),
        "ss_network_dropout": cfg.dropout,
        "ss_network_args": json.dumps({k: str(v) for k, v in network_args.items()}),
        "ss_network_train_unet_only": not cfg.trains_text_encoder,
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_full_fp16": False,
        "ss_v2": family == "sd2",
        "ss_base_model_version": BASE_VERSION.get(family, family),
        "ss_v_parameterization": prediction == "v_prediction",
        "ss_clip_skip": cfg.clip_skip if cfg.clip_skip > 1 else None,
        "ss_max_token_length": None,
        "ss_cache_latents": cfg.cache_latents,
        "ss_seed": cfg.seed,
        "ss_noise_offset": cfg.noise_offset or None,
        "ss_min_snr_gamma": cfg.min_snr_gamma or None,
        "ss_prior_loss_weight": cfg.prior_loss_weight,
        "ss_optimizer": _optimizer_name(cfg),
        "ss_max_grad_norm": cfg.max_grad_norm,
        "ss_caption_dropout_rate": cfg.caption_dropout,
        "ss_caption_tag_dropout_rate": cfg.caption_tag_dropout,
        "ss_shuffle_caption": cfg.shuffle_caption,
        "ss_keep_tokens": cfg.keep_tokens,
        "ss_resolution": f"({res}, {res})",
        "ss_enable_bucket": cfg.enable_bucket,
        "ss_min_bucket_reso": cfg.bucket_range[0],
        "ss_max_bucket_reso": cfg.bucket_range[1],
        "ss_bucket_no_upscale": False,
        "ss_bucket_info": json.dumps({"buckets": {str(i): {"resolution": list(map(int, k.split("x"))), "count": n}
                                                  for i, (k, n) in enumerate(report.buckets.items())},
                                      "mean_img_ar_error": 0.0}),
        "ss_tag_frequency": json.dumps(report.tag_frequency(), ensure_ascii=False),
        "ss_dataset_dirs": json.dumps({k: {"n_repeats": v["repeats"], "img_count": v["images"]}
                                       for k, v in report.subsets.items()}, ensure_ascii=False),
        "ss_sd_model_name": model_name,
        "ss_sd_model_hash": model_autov1,
        "ss_new_sd_model_hash": model_sha256,
        "ss_training_comment": cfg.comment or None,
        "ss_sd_scripts_commit_hash": f"sdcloud {__version__}",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{ARCH.get(family, family)}/lora",
        "modelspec.implementation": ("https://github.com/Stability-AI/generative-models" if family == "sdxl"
                                     else "diffusers"),
        "modelspec.title": cfg.name,
        "modelspec.resolution": f"{res}x{res}",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        "modelspec.prediction_type": "v" if prediction == "v_prediction" else "epsilon",
    }
    return {k: _text(v) for k, v in meta.items() if v is not None}


def _optimizer_name(cfg: TrainConfig) -> str:
    names = {"AdamW": "torch.optim.adamw.AdamW", "AdamW8bit": "bitsandbytes.optim.adamw.AdamW8bit",
             "Prodigy": "prodigyopt.prodigy.Prodigy", "Lion": "lion_pytorch.lion_pytorch.Lion"}
    return f"{names[cfg.optimizer]}(weight_decay={cfg.weight_decay})"


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    return str(v)


def addnet_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(``sshs_model_hash``, ``sshs_legacy_hash``) as kohya precomputes them: sha256 of the data
    after the header, and the legacy 8-hex hash of 64 KiB at 1 MiB, of the file with only ss_* metadata."""
    from safetensors.torch import save

    blob = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    n = int.from_bytes(blob[:8], "little")
    model_hash = hashlib.sha256(blob[8 + n:]).hexdigest()
    buf = io.BytesIO(blob)
    buf.seek(0x100000)
    legacy = hashlib.sha256(buf.read(0x10000)).hexdigest()[:8]
    return model_hash, legacy


def write_lora(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write the LoRA atomically (temp name, fsync, rename) with its hashes in the metadata."""
    from safetensors.torch import save

    model_hash, legacy = addnet_hashes(tensors, metadata)
    meta = dict(metadata, sshs_model_hash=model_hash, sshs_legacy_hash=legacy)
    blob = save(tensors, meta)
    with atomic_write(Path(path)) as fh:
        fh.write(blob)
    return Path(path)
