"""Timing our training step against a bare diffusers + peft loop doing the same work.

Used by ``bench/train_throughput.py`` (any model, CPU or GPU) and by ``bench/gpu_check.py``
(through ``measure_training_step``, on its real-size random pipelines). "Ours" is
``Trainer.train_step`` itself on a ``Trainer.prepare``-d run -- the code ``sdcloud train``
runs, not a copy. "Bare" is the loop of diffusers' ``train_text_to_image_lora.py`` on a copy of
the same UNet: ``unet.add_adapter(LoraConfig(...))`` on the same target modules, the same cached
latents and text-encoder outputs, AdamW with the same learning rates, LR scheduler, grad-norm
clipping, autocast/GradScaler for the same mixed precision and the loss read back every step.

The two are timed in interleaved windows (ours, bare, bare, ours, ...) after a warm-up of each,
in one process with one thread count, and each side's figure is the median of its windows: a
burst of load from other processes hits both sides alike and does not move a median.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sdcloud.settings import Settings
from sdcloud.training.config import TrainConfig
from sdcloud.training.dataset import epoch_batches
from sdcloud.training.model import BaseModel
from sdcloud.training.trainer import Trainer

GB = 2**30
FAMILY_NAMES = {"sd15": "sd1", "sd1": "sd1", "sd2": "sd2", "sdxl": "sdxl"}


def make_dataset(root: Path, n: int, size: int) -> Path:
    """``n`` random ``size``² images with captions in a kohya ``1_bench`` folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    sub = root / "1_bench"
    sub.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(sub / f"{i}.png")
        (sub / f"{i}.txt").write_text(f"bench image {i}, a photo", encoding="utf-8")
    return root


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class OursLoop:
    """``Trainer.train_step`` on a prepared trainer, over its own epoch order."""

    label = "ours"

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.step = 0
        self.batches = epoch_batches(trainer.report, trainer.cfg.batch, trainer.cfg.seed, 0)
        self.losses: list[float] = []

    def __call__(self) -> None:
        micro = [self.batches[(self.step * self.trainer.cfg.grad_accum + k) % len(self.batches)]
                 for k in range(self.trainer.cfg.grad_accum)]
        self.losses.append(self.trainer.train_step(micro, self.step))
        self.step += 1


class BareLoop:
    """The same work as diffusers' example LoRA script writes it, on ``unet`` (a pristine copy of
    the base UNet: no sdcloud code runs in a step)."""

    label = "bare"

    def __init__(self, trainer: Trainer, unet: torch.nn.Module) -> None:
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from peft import LoraConfig

        cfg, dev, dtype = trainer.cfg, trainer.device, trainer.weight_dtype
        if trainer.cfg.trains_text_encoder or trainer.text_cache is None:
            raise ValueError("the bare loop compares UNet-only training with cached text-encoder outputs")
        self.cfg, self.device, self.dtype, self.xl = cfg, dev, dtype, trainer.xl
        targets = [t.module for t in trainer.targets if t.component == "unet"]
        convs = [t.module for t in trainer.targets if t.component == "unet" and t.conv3x3]
        unet.to(dev, dtype).requires_grad_(False)
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        torch.manual_seed(cfg.seed)
        unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights=True,
                                    target_modules=targets,
                                    rank_pattern=dict.fromkeys(convs, trainer.conv_rank),
                                    alpha_pattern=dict.fromkeys(convs, trainer.conv_alpha)))
        self.params = [p for p in unet.parameters() if p.requires_grad]
        for p in self.params:  # LoRA weights train in fp32 under mixed precision
            p.data = p.data.float()
        self.unet = unet
        lr = cfg.unet_lr if cfg.unet_lr is not None else cfg.lr
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=cfg.weight_decay)
        self.lr_scheduler = get_scheduler(cfg.scheduler, self.opt, num_warmup_steps=cfg.warmup_steps,
                                          num_training_steps=cfg.steps)
        self.noise_scheduler = DDPMScheduler.from_config(trainer.pipe.scheduler.config,
                                                         prediction_type=trainer.prediction)
        self.snr = self.noise_scheduler.alphas_cumprod / (1 - self.noise_scheduler.alphas_cumprod)
        self.snr = self.snr.to(dev)
        self.scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        self.latents = torch.stack(trainer.latents).to(dev)
        self.embeds = torch.stack([e for e, _ in trainer.text_cache]).to(dev)
        self.pooled = torch.stack([p for _, p in trainer.text_cache]).to(dev) if trainer.xl else None
        self.time_ids = torch.tensor([list(g) + [h * 8, w * 8] for g, (h, w) in
                                      zip(trainer.geometry, (lat.shape[-2:] for lat in trainer.latents), strict=True)],
                                     device=dev, dtype=dtype) if trainer.xl else None
        self.batches = epoch_batches(trainer.report, cfg.batch, cfg.seed, 0)
        self.step = 0
        self.losses: list[float] = []
        unet.train()

    def __call__(self) -> None:
        cfg = self.cfg
        idx = torch.tensor(self.batches[self.step % len(self.batches)], device=self.device)
        self.step += 1
        latents = self.latents[idx]
        noise = torch.randn_like(latents)
        if cfg.noise_offset:
            noise += cfg.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), device=self.device)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        kwargs: dict[str, Any] = {}
        if self.xl:
            kwargs["added_cond_kwargs"] = {"text_embeds": self.pooled[idx], "time_ids": self.time_ids[idx]}
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            pred = self.unet(noisy.to(self.dtype), timesteps, self.embeds[idx], **kwargs).sample
        target = noise if self.noise_scheduler.config.prediction_type == "epsilon" \
            else self.noise_scheduler.get_velocity(latents, noise, timesteps)
        if cfg.min_snr_gamma:  # diffusers' --snr_gamma
            snr = self.snr[timesteps]
            weights = torch.clamp(snr, max=cfg.min_snr_gamma) / snr
            loss = (F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)) * weights).mean()
        else:
            loss = F.mse_loss(pred.float(), target.float())
        self.scaler.scale(loss).backward()
        if cfg.max_grad_norm:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.lr_scheduler.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(float(loss.detach()))


@dataclass
class Comparison:
    """Seconds per step of each window, per side, and each side's peak memory (CUDA)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)  # wall time per step, per window
    # CPU time of this process per step, per window: on a CPU run the work itself, without the
    # time other processes took the cores away (a shared machine's noise)
    cpu_seconds: dict[str, list[float]] = field(default_factory=dict)
    peak_gb: dict[str, float | None] = field(default_factory=dict)  # ours: peak while alone on the device
    extra_gb: dict[str, float | None] = field(default_factory=dict)  # peak in a window above what it began with
    window: int = 0
    warmup: int = 0
    threads: int = 0

    def median(self, side: str, cpu: bool = False) -> float:
        return statistics.median((self.cpu_seconds if cpu else self.seconds)[side])

    def ratio(self, cpu: bool = False) -> float:
        """Our time per step over the bare loop's (<= 1.05 is the target)."""
        return self.median("ours", cpu) / self.median("bare", cpu)

    def round_ratios(self, cpu: bool = False) -> list[float]:
        """ours / bare of each round (two windows next to each other in time)."""
        times = self.cpu_seconds if cpu else self.seconds
        return [a / b for a, b in zip(times["ours"], times["bare"], strict=True)]

    def spread(self, side: str, cpu: bool = False) -> float:
        """(max - min) / median of a side's windows: how noisy the machine was."""
        s = (self.cpu_seconds if cpu else self.seconds)[side]
        return (max(s) - min(s)) / statistics.median(s)


def warm_up(loop: Callable[[], None], steps: int, device: torch.device) -> float | None:
    """Run ``steps`` untimed steps; the peak memory (GB) they reached on CUDA."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        loop()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else None


def compare(loops: list[Any], device: torch.device, *, window: int, repeats: int) -> Comparison:
    """Time ``window`` steps of each (warmed-up) loop per repeat, alternating the order every
    repeat (ours, bare, bare, ours, ...)."""
    out = Comparison(window=window, threads=torch.get_num_threads())
    for loop in loops:
        out.seconds[loop.label], out.cpu_seconds[loop.label] = [], []
        out.extra_gb[loop.label] = None
    for r in range(repeats):
        for loop in loops if r % 2 == 0 else loops[::-1]:
            _sync(device)
            before = 0
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(window):
                loop()
            _sync(device)
            out.seconds[loop.label].append((time.perf_counter() - start) / window)
            out.cpu_seconds[loop.label].append((time.process_time() - cpu_start) / window)
            if device.type == "cuda":
                extra = (torch.cuda.max_memory_allocated(device) - before) / GB
                out.extra_gb[loop.label] = max(out.extra_gb[loop.label] or 0.0, extra)
    return out


def run_comparison(trainer: Trainer, bare_unet: torch.nn.Module | None, *, window: int, repeats: int,
                   warmup: int) -> Comparison:
    """Warm up ours (alone on the device: its peak is the trainer's real peak), then put the bare
    loop's UNet copy on the device, warm it up, and time both in interleaved windows."""
    device = trainer.device
    ours = OursLoop(trainer)
    peak = warm_up(ours, warmup, device)
    loops: list[Any] = [ours]
    if bare_unet is not None:
        bare = BareLoop(trainer, bare_unet)
        warm_up(bare, warmup, device)
        loops.append(bare)
    result = compare(loops, device, window=window, repeats=repeats)
    result.warmup, result.peak_gb["ours"] = warmup, peak
    return result


def prepared_trainer(cfg: TrainConfig, settings: Settings, device: torch.device,
                     base: BaseModel | None = None) -> Trainer:
    trainer = Trainer(cfg, settings, device=device.type if device.index is None else str(device), base=base)
    trainer.prepare()
    return trainer


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """diffusers warns on every ``.to(dtype)`` of a model; casting back and forth is the point here."""
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        yield
    finally:
        dlogging.set_verbosity(level)


def _strip_lora(module: torch.nn.Module) -> None:
    """Put the base layers back where peft wrapped them (the pipeline as it was before)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, child in list(module.named_modules()):
        if isinstance(child, BaseTunerLayer) and name:
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.get_base_layer())
    module.__dict__.pop("peft_config", None)
    if hasattr(module, "_hf_peft_config_loaded"):
        module._hf_peft_config_loaded = False


def measure_training_step(pipe: Any, *, family: str, resolution: int, batch: int, steps: int,
                          device: Any = None, dtype: Any = None, rank: int = 16, warmup: int = 3,
                          repeats: int = 3, baseline: bool = True,
                          gradient_checkpointing: bool = False) -> dict[str, Any]:
    """``bench/gpu_check.py``'s training row: LoRA training on ``pipe`` (a built pipeline on
    ``device``, e.g. random real-size weights), our ``Trainer.train_step`` against the bare
    diffusers + peft loop, ``steps`` timed steps each (in ``repeats`` interleaved windows)
    after ``warmup``. UNet-only LoRA (kohya's targets), AdamW, cached latents and text outputs,
    mixed precision from ``dtype`` (fp16/bf16 on CUDA). ``pipe`` is left as it came: same
    modules, devices, dtypes and ``requires_grad``.

    Returns ``{"steps_per_s", "baseline_steps_per_s", "peak_vram_gb", "note"}`` plus
    ``ratio`` (our time over the bare loop's) and the raw windows.
    """
    device = torch.device(device) if device is not None else pipe.unet.device
    dtype = dtype or pipe.unet.dtype
    fam = FAMILY_NAMES.get(family, family)
    precision = "no" if device.type != "cuda" or dtype == torch.float32 else \
        {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    modules = {k: m for k, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    saved = {k: (next(m.parameters()).device, next(m.parameters()).dtype, [p.requires_grad for p in m.parameters()],
                 m.training) for k, m in modules.items()}
    window = max(1, steps // repeats)
    # the bare loop's UNet: a pristine copy, kept on the CPU until ours has warmed up alone
    bare_unet = copy.deepcopy(pipe.unet).to("cpu") if baseline else None
    try:
        with tempfile.TemporaryDirectory(prefix="sdcloud-train-bench-") as tmp:
            root = Path(tmp)
            data = make_dataset(root / "ds", max(batch * 2, 4), resolution)
            cfg = TrainConfig(dataset=str(data), model=f"random-{family}", name="bench", steps=10_000, rank=rank,
                              alpha=rank / 2, lr=1e-4, resolution=resolution, batch=batch, seed=1,
                              mixed_precision=precision, gradient_checkpointing=gradient_checkpointing,
                              save_state_every=0, cache_latents_to_disk=False)
            with _quiet_diffusers():  # latents are encoded by an fp32 VAE (kohya's --no_half_vae)
                pipe.vae.to(torch.float32)
            base = BaseModel(pipe, fam, "epsilon", f"random-{family}", f"random-{family}")
            trainer = prepared_trainer(cfg, Settings(data_dir=root / "data"), device, base)
            result = run_comparison(trainer, bare_unet, window=window, repeats=repeats, warmup=warmup)
            del trainer
    finally:
        _strip_lora(pipe.unet)
        if bare_unet is not None:
            del bare_unet
        if gradient_checkpointing:
            pipe.unet.disable_gradient_checkpointing()
        for k, m in modules.items():
            dev, dt, flags, training = saved[k]
            first = next(m.parameters())
            if (first.device, first.dtype) != (dev, dt):
                with _quiet_diffusers():
                    m.to(dev, dt)
            for p, flag in zip(m.parameters(), flags, strict=True):
                p.requires_grad_(flag)
            m.train(training)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ours = result.median("ours")
    bare = result.median("bare") if baseline else None
    note = (f"LoRA rank {rank}, {precision if precision != 'no' else 'fp32'}, AdamW, cached latents/TE; "
            f"median of {repeats} windows x {window} steps after {warmup} warm-up")
    if bare is not None:
        note += f"; ratio ours/bare {ours / bare:.3f}"
        if result.extra_gb.get("bare") is not None:
            note += f"; training memory ours {result.extra_gb['ours']:.2f} GB, bare {result.extra_gb['bare']:.2f} GB"
    return {"steps_per_s": 1.0 / ours, "baseline_steps_per_s": 1.0 / bare if bare else None,
            "peak_vram_gb": result.peak_gb.get("ours"), "note": note,
            "ratio": ours / bare if bare else None, "windows": result.seconds,
            "threads": result.threads}
