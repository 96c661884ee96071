"""Our LoRA training step vs a bare diffusers + peft loop, same model, batch and options, in one run.

Both train the same LoRA targets (kohya's: the Linear/1x1 layers of every Transformer2DModel) on
the same cached latents and text-encoder outputs, with AdamW, grad-norm clipping and the same
mixed precision. Printed: seconds per step of each (median of ``--repeats`` timed windows,
alternating), the ratio ours / bare (target <= 1.05) and the peak GPU memory of each.

    python bench/train_throughput.py --model demo --resolution 64 --batch 2 --steps 20      # CPU smoke
    python bench/train_throughput.py --model /models/sd15.safetensors --resolution 512 --batch 2 \\
        --mixed-precision fp16 --steps 30                                                  # a GPU box
    python bench/train_throughput.py --random-sd15 --resolution 512 --batch 2 --mixed-precision fp16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sdcloud.settings import Settings  # noqa: E402
from sdcloud.training.config import TrainConfig  # noqa: E402
from sdcloud.training.trainer import Trainer  # noqa: E402


def make_images(root: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    sub = root / "1_bench"
    sub.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(sub / f"{i}.png")
        (sub / f"{i}.txt").write_text(f"bench image {i}, a photo", encoding="utf-8")
    return root


def real_size_sd15(path: Path) -> Path:
    """A random-weight SD1.5 checkpoint of the real size from the shipped configs (speed does not
    depend on the weights), written as an A1111 single file that our loader reads."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from sdcloud.engine.export import save_a1111_checkpoint
    from sdcloud.engine.model_configs import config_dir

    cfg = config_dir("sd1")
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")),
        tokenizer=CLIPTokenizer.from_pretrained(cfg / "tokenizer"),
        scheduler=EulerDiscreteScheduler.from_pretrained(cfg / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    save_a1111_checkpoint(pipe, path, dtype=torch.float16)
    return path


class Timer:
    """Wall time of each step from progress callbacks (CUDA-synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.stamps = device, []

    def __call__(self, p) -> None:  # noqa: ANN001
        if p.phase == "training":
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.stamps.append(time.perf_counter())


def ours(cfg: TrainConfig, settings: Settings, device: torch.device, warmup: int) -> tuple[float, float]:
    timer = Timer(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    Trainer(cfg, settings, progress=timer, device=device.type).run()
    gaps = np.diff(timer.stamps[warmup:])
    peak = torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else float("nan")
    return float(np.median(gaps)), peak


def bare(cfg: TrainConfig, settings: Settings, device: torch.device, warmup: int) -> tuple[float, float]:
    """The same work written as the diffusers example scripts do it."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    # model, latents and text outputs exactly as the trainer prepares them (not timed)
    prep = Trainer(cfg, settings, device=device.type)
    prep._setup()
    prep._cache_latents()
    prep._cache_text()
    pipe, xl = prep.pipe, prep.xl
    unet = pipe.unet
    # drop our adapters and add diffusers' own, on the same modules
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = [t.module for t in prep.targets if t.component == "unet"]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name)
        layer = getattr(parent, child)
        if isinstance(layer, BaseTunerLayer):
            setattr(parent, child, layer.get_base_layer())
    unet.requires_grad_(False)
    unet.__dict__.pop("peft_config", None)  # our injection's bookkeeping
    torch.manual_seed(cfg.seed)
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=True, target_modules=targets))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    dtype = prep.weight_dtype
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    latents_all = torch.stack(prep.latents).to(device)
    embeds_all = torch.stack([e for e, _ in prep.text_cache]).to(device)
    pooled_all = torch.stack([p for _, p in prep.text_cache]).to(device) if xl else None
    n = latents_all.shape[0]
    stamps = []
    unet.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(cfg.steps):
        idx = torch.tensor([(step * cfg.batch + k) % n for k in range(cfg.batch)], device=device)
        latents = latents_all[idx]
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch,), device=device)
        noisy = sched.add_noise(latents, noise, t)
        kwargs = {}
        if xl:
            side = latents.shape[-1] * 8
            ids = torch.tensor([[side, side, 0, 0, side, side]] * cfg.batch, device=device, dtype=dtype)
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled_all[idx], "time_ids": ids}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            pred = unet(noisy.to(dtype), t, embeds_all[idx], **kwargs).sample
        loss = F.mse_loss(pred.float(), noise.float())
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # the trainer reads the loss every step too (progress)
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    peak = torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else float("nan")
    del prep, pipe, unet, opt
    return float(np.median(np.diff(stamps[warmup:]))), peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--random-sd15", action="store_true", help="a random real-size SD1.5 UNet (GPU boxes)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    ap.add_argument("--gradient-checkpointing", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = str(real_size_sd15(root / "sd15-random.safetensors")) if args.random_sd15 else args.model
        data = make_images(root / "ds", 8, args.resolution)
        settings = Settings(data_dir=root / "data")
        cfg = TrainConfig(dataset=str(data), model=model, name="bench", steps=args.steps, rank=args.rank,
                          alpha=args.rank / 2, lr=1e-4, resolution=args.resolution, batch=args.batch,
                          mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
                          save_state_every=0, seed=1)
        mine, base, peaks = [], [], {"ours": 0.0, "bare": 0.0}
        for r in range(args.repeats):
            for label, fn in (("bare", bare), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("bare", bare)):
                s, peak = fn(cfg, settings, device, args.warmup)
                (mine if label == "ours" else base).append(s)
                peaks[label] = max(peaks[label], peak) if peak == peak else peak
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    o, b = statistics.median(mine), statistics.median(base)
    print(f"device: {name}; model {'random real-size SD1.5' if args.random_sd15 else args.model}, "
          f"{args.resolution}px, batch {args.batch}, rank {args.rank}, precision {args.mixed_precision}, "
          f"{args.steps} steps ({args.warmup} warm-up), {args.repeats} alternating repeats")
    print(f"bare diffusers+peft: {b * 1000:.1f} ms/step ({1 / b:.2f} it/s), peak {peaks['bare']:.2f} GB")
    print(f"sdcloud trainer:     {o * 1000:.1f} ms/step ({1 / o:.2f} it/s), peak {peaks['ours']:.2f} GB")
    print(f"ratio ours/bare: {o / b:.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
