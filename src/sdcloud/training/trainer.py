"""The LoRA training loop (kohya ``train_network.py`` semantics on diffusers + peft).

Every random draw of step ``s`` (noise, noise offset, timesteps, caption shuffle/dropout) comes
from generators seeded by ``(seed, s)``, and the epoch order from ``(seed, epoch)``; the global
RNG states are saved too. So a run stopped at any saved step and resumed -- on this box or a
fresh one -- continues exactly as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sdcloud.errors import BadRequest, SdcloudError, Unsupported
from sdcloud.settings import Settings
from sdcloud.storage.base import Store
from sdcloud.training import network as net
from sdcloud.training.captions import CaptionOptions, process_caption
from sdcloud.training.config import TrainConfig
from sdcloud.training.dataset import DatasetReport, epoch_batches, scan_dataset
from sdcloud.training.model import BaseModel, load_base_model, resolve_model_path
from sdcloud.training.output import training_metadata, write_lora
from sdcloud.training.state import StateDir, check_resume, require_state

log = logging.getLogger("sdcloud.training")
STATE_VERSION = 1


class TrainingStopped(SdcloudError):
    """Stopped on request (SIGTERM, cancel, the cost meter) after the state was saved."""

    status = 409


@dataclass
class TrainProgress:
    step: int
    total: int
    loss: float | None = None
    avg_loss: float | None = None
    it_s: float | None = None
    eta_s: float | None = None
    epoch: int = 0
    phase: str = "training"  # loading | caching | training | saving | done | stopped
    sample: str | None = None
    state_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    lora_path: Path | None
    steps: int
    losses: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    resumed_from: int | None = None
    seconds: float = 0.0


def state_root(settings: Settings) -> Path:
    return settings.state_path / "train"


def preflight(cfg: TrainConfig, settings: Settings, *, check_model: bool = True) -> DatasetReport:
    """Everything that can be checked before loading a model (one clear error, nothing written)."""
    cfg.validate()
    cuda = torch.cuda.is_available()
    if cfg.mixed_precision != "no" and not cuda:
        raise BadRequest(f"--mixed-precision {cfg.mixed_precision} needs a CUDA GPU; use 'no' on this machine")
    if cfg.optimizer == "AdamW8bit":
        if not cuda:
            raise BadRequest("--optimizer AdamW8bit needs a CUDA GPU (bitsandbytes); use AdamW on this machine")
        _need("bitsandbytes", "AdamW8bit")
    elif cfg.optimizer == "Prodigy":
        _need("prodigyopt", "Prodigy")
    elif cfg.optimizer == "Lion":
        _need("lion_pytorch", "Lion")
    from sdcloud.engine.loader import DEMO_KINDS

    if check_model and cfg.model not in DEMO_KINDS:
        resolve_model_path(settings, cfg.model)  # an unknown model fails here, before anything is loaded
    report = scan_dataset(cfg)
    report.raise_if_bad()
    return report


def _need(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise BadRequest(f"--optimizer {what} needs the '{module}' package: pip install 'sdcloud[train]'")


class Trainer:
    """One LoRA training run. ``stop`` (an Event) asks it to save its state and stop."""

    def __init__(self, cfg: TrainConfig, settings: Settings, *, store: Store | None = None,
                 progress: Callable[[TrainProgress], None] | None = None,
                 stop: threading.Event | None = None, device: str | None = None, restart: bool = False,
                 base: BaseModel | None = None) -> None:
        self.cfg = cfg
        self.given_base = base  # an already built model (bench/gpu_check's random pipelines); else cfg.model
        self.restart = restart  # a fresh run may drop the saved state of an unfinished one
        self.settings = settings
        self.store = store
        self.progress = progress or (lambda p: None)
        self.stop = stop or threading.Event()
        pref = device or settings.device
        if pref == "auto":
            pref = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(pref)
        self.delay = float(os.environ.get("SDCLOUD_TEST_TRAIN_STEP_DELAY", "0") or 0)  # tests: widen the kill window

    # -- setup -----------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        self.report = preflight(cfg, self.settings, check_model=self.given_base is None)
        self.progress(TrainProgress(0, cfg.steps, phase="loading"))
        self.base: BaseModel = self.given_base or load_base_model(self.settings, cfg.model)
        if self.base.family not in ("sd1", "sd2", "sdxl"):
            raise Unsupported(f"training a {self.base.family} model is not supported (SD 1.x, SD 2.x, SDXL)")
        pipe = self.base.pipe
        self.pipe = pipe
        self.xl = self.base.family == "sdxl"
        self.prediction = ("v_prediction" if cfg.v_prediction else "epsilon") if cfg.v_prediction is not None \
            else self.base.prediction
        conv_rank = cfg.conv_rank or (cfg.rank if cfg.network == "locon" else 0)
        self.conv_rank, self.conv_alpha = conv_rank, (cfg.conv_alpha if cfg.conv_rank else cfg.alpha)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
            if module is not None:
                module.requires_grad_(False)
        torch.manual_seed(cfg.seed)
        self.lycoris: net.LycorisNetwork | None = None
        if cfg.mode == "dreambooth":  # full fine-tune: every UNet (and optionally text encoder) weight
            self.targets = []
            self.params = {"unet": list(pipe.unet.parameters())}
            if cfg.trains_text_encoder:
                self.params["text_encoder"] = list(pipe.text_encoder.parameters())
            for comp in self.params:
                getattr(pipe, comp).requires_grad_(True)
        elif cfg.network in ("loha", "lokr"):
            self.targets = []
            self.lycoris = net.LycorisNetwork(pipe, self.base.family, cfg.network, cfg.rank, cfg.alpha, conv_rank,
                                              self.conv_alpha, cfg.dropout, cfg.trains_text_encoder)
            self.lycoris.network.to(self.device)
            self.params = self.lycoris.params()
        else:
            self.targets = net.find_targets(pipe, self.base.family, text_encoder=cfg.trains_text_encoder,
                                            conv=conv_rank > 0)
            self.params = net.inject(pipe, self.targets, cfg.rank, cfg.alpha, conv_rank, self.conv_alpha,
                                     cfg.dropout)
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
        pipe.unet.to(self.device)
        pipe.text_encoder.to(self.device)
        if self.xl:
            pipe.text_encoder_2.to(self.device)
        if self.weight_dtype != torch.float32:  # base weights in half, LoRA weights stay fp32
            for comp in self._components():
                getattr(pipe, comp).to(self.weight_dtype)
            for plist in self.params.values():
                for p in plist:
                    p.data = p.data.float()
        if cfg.gradient_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
            if cfg.trains_text_encoder:
                for comp in self._components()[1:]:
                    getattr(pipe, comp).gradient_checkpointing_enable(
                        gradient_checkpointing_kwargs={"use_reentrant": False})
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config, prediction_type=self.prediction)
        acp = self.noise_scheduler.alphas_cumprod
        self.all_snr = (acp / (1 - acp)).to(self.device)
        self.caption_opts = CaptionOptions(cfg.shuffle_caption, cfg.keep_tokens, cfg.caption_tag_dropout,
                                           cfg.caption_dropout, keep_tokens_separator=cfg.keep_tokens_separator)

    def _components(self) -> list[str]:
        return ["unet", "text_encoder"] + (["text_encoder_2"] if self.xl else [])

    def fingerprint(self) -> dict[str, Any]:
        c = self.cfg
        return {"model": self.base.key, "dataset": self.report.fingerprint(), "mode": c.mode,
                "network": c.network, "rank": c.rank,
                "alpha": c.alpha, "conv_rank": self.conv_rank, "text_encoder": c.trains_text_encoder,
                "resolution": c.resolution, "batch": c.batch, "grad_accum": c.grad_accum, "steps": c.steps,
                "optimizer": c.optimizer, "lr": c.lr, "unet_lr": c.unet_lr, "te_lr": c.te_lr,
                "scheduler": c.scheduler, "warmup_steps": c.warmup_steps, "seed": c.seed,
                "noise_offset": c.noise_offset, "min_snr_gamma": c.min_snr_gamma, "prediction": self.prediction,
                "clip_skip": c.clip_skip, "captions": [c.shuffle_caption, c.keep_tokens, c.caption_dropout,
                                                       c.caption_tag_dropout], "version": STATE_VERSION}

    # -- latents ---------------------------------------------------------------------------
    def _cache_latents(self) -> None:
        """VAE latents of every image at its bucket size (fp32 VAE; on disk and reused when asked)."""
        from safetensors.torch import load_file, save_file

        from sdcloud.durable import temp_name

        vae = self.pipe.vae
        vae.to(self.device)
        cache_dir = state_root(self.settings) / "latents" / self.base.key[:24].replace(":", "_").replace("/", "_")
        self.latents: list[torch.Tensor] = []
        self.geometry: list[tuple[int, int, int, int]] = []  # orig_h, orig_w, crop_top, crop_left
        total = len(self.report.images)
        for n, item in enumerate(self.report.images):
            st = item.path.stat()
            import hashlib

            digest = hashlib.sha1(f"{item.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{item.bucket}".encode())
            file = cache_dir / f"{digest.hexdigest()}.safetensors"
            pixels, geom = _load_pixels(item.path, item.bucket)
            latent = None
            if self.cfg.cache_latents_to_disk and file.is_file():
                try:
                    latent = load_file(str(file))["latent"]
                except Exception:  # noqa: BLE001 - a damaged cache entry is simply recomputed
                    latent = None
            if latent is None:
                with torch.no_grad():
                    dist = vae.encode(pixels.unsqueeze(0).to(self.device, vae.dtype)).latent_dist
                    latent = (dist.mode() * vae.config.scaling_factor)[0].float().cpu()
                if self.cfg.cache_latents_to_disk:
                    cache_dir.mkdir(parents=True, exist_ok=True)
                    tmp = temp_name(file)
                    save_file({"latent": latent.contiguous()}, str(tmp))
                    os.replace(tmp, file)
            self.latents.append(latent)
            self.geometry.append(geom)
            self.progress(TrainProgress(0, self.cfg.steps, phase="caching", loss=None, eta_s=None,
                                        it_s=None, epoch=n + 1 if n + 1 < total else total))
        vae.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _cache_text(self) -> None:
        """kohya's ``--cache_text_encoder_outputs``: with frozen text encoders and captions that never
        change (no shuffle/dropout), encode each caption once and move the encoders off the GPU."""
        cfg = self.cfg
        self.text_cache: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None
        if cfg.trains_text_encoder or cfg.shuffle_caption or cfg.caption_dropout or cfg.caption_tag_dropout:
            return
        cache: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        autocast = torch.autocast(self.device.type, dtype=self.weight_dtype,
                                  enabled=self.weight_dtype != torch.float32)
        with torch.no_grad(), autocast:
            for item in self.report.images:
                embeds, pooled = self._encode_text([item.caption])
                cache.append((embeds[0].cpu(), pooled[0].cpu() if pooled is not None else None))
        self.text_cache = cache
        self._text_encoders_to("cpu")

    def _text_encoders_to(self, device: Any) -> None:
        self.pipe.text_encoder.to(device)
        if self.xl:
            self.pipe.text_encoder_2.to(device)
        if self.device.type == "cuda" and str(device) == "cpu":
            torch.cuda.empty_cache()

    # -- optimizer -------------------------------------------------------------------------
    def _optimizer(self) -> tuple[Any, Any]:
        cfg = self.cfg
        groups = [{"params": self.params["unet"], "lr": cfg.unet_lr if cfg.unet_lr is not None else cfg.lr}]
        te = [p for comp in ("text_encoder", "text_encoder_2") for p in self.params.get(comp, [])]
        if te:
            groups.append({"params": te, "lr": cfg.te_lr if cfg.te_lr is not None else cfg.lr})
        if cfg.optimizer == "AdamW":
            opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "AdamW8bit":
            import bitsandbytes as bnb

            opt = bnb.optim.AdamW8bit(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "Prodigy":
            from prodigyopt import Prodigy

            opt = Prodigy(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            from lion_pytorch import Lion

            opt = Lion(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        from diffusers.optimization import get_scheduler

        sched = get_scheduler(cfg.scheduler, opt, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps)
        return opt, sched

    # -- one step --------------------------------------------------------------------------
    def _encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        pipe, skip = self.pipe, self.cfg.clip_skip
        pairs = [(pipe.tokenizer, pipe.text_encoder)]
        if self.xl:
            pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
        embeds, pooled = [], None
        for idx, (tok, enc) in enumerate(pairs):
            ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids.to(self.device)
            out = enc(ids, output_hidden_states=True)
            if self.xl:
                embeds.append(out.hidden_states[-(skip + 1)])
                if idx == 1:
                    pooled = out.text_embeds
            elif skip > 1:
                embeds.append(getattr(enc, "text_model", enc).final_layer_norm(out.hidden_states[-skip]))
            else:
                embeds.append(out.last_hidden_state)
        return torch.cat(embeds, dim=-1), pooled

    def _loss(self, indices: list[int], step: int, micro: int) -> torch.Tensor:
        cfg, dev = self.cfg, self.device
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + micro)
        rng = random.Random(f"{cfg.seed}:{step}:{micro}")
        items = [self.report.images[i] for i in indices]
        latents = torch.stack([self.latents[i] for i in indices])
        noise = torch.randn(latents.shape, generator=gen)
        if cfg.noise_offset:
            noise = noise + cfg.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=gen)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  generator=gen)
        captions = [process_caption(it.caption, self.caption_opts, rng) for it in items]
        latents, noise, timesteps = latents.to(dev), noise.to(dev), timesteps.to(dev)
        # every host-to-device copy happens here, before the forward pass: one made after it would
        # make the CPU wait for the GPU to finish the forward before it could queue the backward
        weights = None
        if cfg.prior_loss_weight != 1.0 and any(it.is_reg for it in items):
            weights = torch.tensor([cfg.prior_loss_weight if it.is_reg else 1.0 for it in items]).to(dev)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        autocast = torch.autocast(dev.type, dtype=self.weight_dtype, enabled=self.weight_dtype != torch.float32)
        with autocast:
            if self.text_cache is not None:  # fixed captions, frozen encoders: outputs computed once
                embeds = torch.stack([self.text_cache[i][0] for i in indices]).to(dev)
                pooled = torch.stack([self.text_cache[i][1] for i in indices]).to(dev) if self.xl else None
            else:
                with torch.set_grad_enabled(self.cfg.trains_text_encoder):
                    embeds, pooled = self._encode_text(captions)
            kwargs: dict[str, Any] = {}
            if self.xl:
                h, w = latents.shape[-2] * 8, latents.shape[-1] * 8
                ids = [list(self.geometry[i][:2]) + list(self.geometry[i][2:]) + [h, w] for i in indices]
                kwargs["added_cond_kwargs"] = {"text_embeds": pooled,
                                               "time_ids": torch.tensor(ids, device=dev, dtype=embeds.dtype)}
            try:
                pred = self.pipe.unet(noisy.to(self.weight_dtype), timesteps, embeds, **kwargs).sample
            except ValueError as err:  # a group norm that sees one value per group: a tiny model's
                if "more than 1 value per channel" not in str(err):  # deepest feature map at 1x1
                    raise
                raise BadRequest(f"images of {latents.shape[-1] * 8}x{latents.shape[-2] * 8} are too small "
                                 "for this model in a batch of one image (--batch 1, or the last batch of a "
                                 "bucket): use a larger --resolution") from None
        target = noise if self.prediction == "epsilon" else self.noise_scheduler.get_velocity(latents, noise, timesteps)
        loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if weights is not None:
            loss = loss * weights
        if cfg.min_snr_gamma:
            snr = self.all_snr[timesteps]
            clipped = torch.clamp(snr, max=cfg.min_snr_gamma)
            loss = loss * (clipped / (snr + 1) if self.prediction == "v_prediction" else clipped / snr)
        return loss.mean()

    def _prepare_optimizer(self) -> tuple[Any, Any, Any]:
        """The optimizer, LR scheduler and grad scaler that ``train_step`` uses."""
        self.opt, self.sched = self._optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.weight_dtype == torch.float16)
        self.trainable = [p for plist in self.params.values() for p in plist]
        return self.opt, self.sched, self.scaler

    def train_step(self, micro_batches: list[list[int]], step: int) -> float:
        """One optimizer step of the run: forward and backward of each micro-batch (gradient
        accumulation), grad-norm clipping, optimizer, grad scaler and LR scheduler; the loss.

        The loss is read back once, after the optimizer step (the one host sync of a step)."""
        opt, scaler, cfg = self.opt, self.scaler, self.cfg
        total: torch.Tensor | None = None
        for micro, indices in enumerate(micro_batches):
            loss = self._loss(indices, step, micro) / len(micro_batches)
            scaler.scale(loss).backward()
            total = loss.detach() if total is None else total + loss.detach()
        if cfg.max_grad_norm:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        self.sched.step()
        opt.zero_grad(set_to_none=True)
        return float(total) if total is not None else 0.0

    def prepare(self) -> None:
        """Model, network, cached latents and text outputs and optimizer, as a run sets them up,
        without the run loop (``training.benchmark`` times ``train_step`` on this)."""
        self._setup()
        self._prepare_optimizer()
        self._cache_latents()
        self._cache_text()
        self.pipe.unet.train()

    # -- the run ---------------------------------------------------------------------------
    def run(self, resume: bool = False) -> TrainResult:
        cfg, t_start = self.cfg, time.time()
        lora_dir = self.settings.lora_path
        if cfg.num_class_images:
            self.cfg = cfg = cfg.replace(reg_dir=str(make_class_images(cfg, self.settings, self.progress)))
        self._setup()
        states = StateDir(state_root(self.settings), cfg.name, self.store)
        try:
            return self._run(states, resume, lora_dir, t_start)
        finally:
            states.close()

    def _run(self, states: StateDir, resume: bool, lora_dir: Path, t_start: float) -> TrainResult:
        cfg = self.cfg
        out_dir = self.settings.checkpoints_path if cfg.mode == "dreambooth" else lora_dir
        if out_dir.is_dir():  # temp files of a write that a kill cut off (durable.temp_name, the exporter)
            for pattern in (f".{cfg.name}.safetensors.*.tmp", f".{cfg.name}-step*.safetensors.*.tmp",
                            f".{cfg.name}.safetensors.*.part"):
                for stale in out_dir.glob(pattern):
                    stale.unlink(missing_ok=True)
        fingerprint = self.fingerprint()
        opt, sched, scaler = self._prepare_optimizer()
        step, epoch, pos, resumed_from = 0, 0, 0, None
        started_at = time.time()
        if resume:
            gen = require_state(states.pull(), cfg.name)
            lora, trainer_state, meta = states.load(gen)
            check_resume(meta, fingerprint)
            self._load_trained({k: v.to(self.device) for k, v in lora.items()})
            opt.load_state_dict(trainer_state["optimizer"])
            sched.load_state_dict(trainer_state["scheduler"])
            scaler.load_state_dict(trainer_state["scaler"])
            _set_rng(trainer_state["rng"])
            step, epoch, pos = trainer_state["step"], trainer_state["epoch"], trainer_state["pos"]
            started_at = trainer_state.get("started_at", started_at)
            resumed_from = step
        elif states.latest() is not None:
            if not self.restart:
                raise BadRequest(f"'{cfg.name}' has the saved state of an unfinished run (step "
                                 f"{states.latest().step}): add --resume to continue it, or --restart to start over")
            states.clear()
        self._cache_latents()
        self._cache_text()
        batches = epoch_batches(self.report, cfg.batch, cfg.seed, epoch)
        losses: list[float] = []
        samples: list[str] = []
        self.pipe.unet.train()
        t0, first_step = time.monotonic(), step

        def save_state(at: int) -> None:
            trainer_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                             "scaler": scaler.state_dict(), "rng": _get_rng(), "step": at, "epoch": epoch,
                             "pos": pos, "epoch_batches": batches, "started_at": started_at}
            states.save(at, self._trained_state(), trainer_state,
                        {"fingerprint": fingerprint, "name": cfg.name, "config": cfg.to_dict()})

        while step < cfg.steps:
            if self.stop.is_set():
                self.progress(TrainProgress(step, cfg.steps, phase="saving", epoch=epoch))
                save_state(step)
                states.flush()
                self.progress(TrainProgress(step, cfg.steps, phase="stopped", epoch=epoch, state_step=step))
                raise TrainingStopped(f"training '{cfg.name}' stopped at step {step}/{cfg.steps}; its state is "
                                      "saved: run the same command with --resume to continue")
            micro_batches = []
            for _ in range(cfg.grad_accum):
                if pos >= len(batches):
                    epoch, pos = epoch + 1, 0
                    batches = epoch_batches(self.report, cfg.batch, cfg.seed, epoch)
                micro_batches.append(batches[pos])
                pos += 1
            step_loss = self.train_step(micro_batches, step)
            step += 1
            losses.append(step_loss)
            if self.delay:
                time.sleep(self.delay)
            elapsed = time.monotonic() - t0
            it_s = (step - first_step) / elapsed if elapsed > 0 else None
            window = losses[-20:]
            prog = TrainProgress(step, cfg.steps, loss=step_loss, avg_loss=sum(window) / len(window), it_s=it_s,
                                 eta_s=(cfg.steps - step) / it_s if it_s else None, epoch=epoch)
            if cfg.save_state_every and step % cfg.save_state_every == 0 and step < cfg.steps:
                save_state(step)
                prog.state_step = step
            if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
                self._write_lora(lora_dir / f"{cfg.name}-step{step:06d}.safetensors", step, epoch, started_at, batches)
            if cfg.sample_every and step % cfg.sample_every == 0:
                prog.sample = self._sample(step)
                samples.append(prog.sample)
            self.progress(prog)
        self.progress(TrainProgress(step, cfg.steps, phase="saving", epoch=epoch))
        path = self._write_lora(lora_dir / f"{cfg.name}.safetensors", step, epoch, started_at, batches)
        if cfg.mode == "lora":
            states.publish(path, f"session/Lora/{path.name}")  # where a fresh box's session restore finds LoRAs
        states.flush()
        states.clear()  # finished: the local state has done its job (the store keeps its copy)
        self.progress(TrainProgress(step, cfg.steps, phase="done", epoch=epoch, loss=losses[-1] if losses else None))
        return TrainResult(path, step, losses, samples, resumed_from, time.time() - t_start)

    def _trained_state(self) -> dict[str, torch.Tensor]:
        """What the resume state keeps of the network: LoRA/LyCORIS tensors, or the whole UNet
        (+ text encoder) for DreamBooth."""
        if self.lycoris is not None:
            return self.lycoris.state()
        if self.cfg.mode == "dreambooth":
            return {f"{comp}.{k}": v.detach() for comp in self.params
                    for k, v in getattr(self.pipe, comp).state_dict().items()}
        return net.lora_state(self.pipe, self.targets)

    def _load_trained(self, state: dict[str, torch.Tensor]) -> None:
        if self.lycoris is not None:
            self.lycoris.load_state(state)
        elif self.cfg.mode == "dreambooth":
            for comp in self.params:
                prefix = comp + "."
                getattr(self.pipe, comp).load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                                          if k.startswith(prefix)})
        else:
            net.load_lora_state(self.pipe, state)

    def _write_checkpoint(self, path: Path, step: int, epoch: int, started_at: float, batches: list) -> Path:
        """DreamBooth's result: an A1111 single-file checkpoint through the engine's exporter."""
        import json

        from sdcloud.engine.export import save_a1111_checkpoint

        meta = training_metadata(self.cfg, self.report, family=self.base.family, prediction=self.prediction,
                                 model_name=self.base.name, model_sha256=self.base.sha256,
                                 model_autov1=self.base.autov1, step=step, epoch=epoch, started_at=started_at,
                                 batches_per_epoch=len(batches), network_args={}, network_module="dreambooth")
        meta = {k: v for k, v in meta.items() if k.startswith("ss_")}
        if self.base.key in ("demo", "demo-xl"):  # the demo's tiny widths travel in its metadata
            from sdcloud.engine.demo import demo_configs
            from sdcloud.engine.loader import CONFIG_METADATA_KEY, DEMO_KINDS

            cfgs = {n: {k: list(v) if isinstance(v, tuple) else v for k, v in c.items()}
                    for n, c in demo_configs(DEMO_KINDS[self.base.key]).items()}
            meta[CONFIG_METADATA_KEY] = json.dumps(cfgs)
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_a1111_checkpoint(self.pipe, path, metadata=meta, dtype=torch.float16)

    def _write_lora(self, path: Path, step: int, epoch: int, started_at: float, batches: list) -> Path:
        cfg = self.cfg
        if cfg.mode == "dreambooth":
            return self._write_checkpoint(self.settings.checkpoints_path / path.name, step, epoch, started_at,
                                          batches)
        args: dict[str, Any] = {}
        if self.lycoris is not None:
            tensors = self.lycoris.file_tensors()
            args.update(algo=cfg.network, preset="attn-mlp")
        else:
            tensors = net.kohya_state_dict(self.pipe, self.targets, cfg.rank, cfg.alpha, self.conv_rank,
                                           self.conv_alpha)
        if self.conv_rank and self.lycoris is None:
            args.update(conv_dim=self.conv_rank, conv_alpha=self.conv_alpha)
        if cfg.dropout:
            args["dropout"] = cfg.dropout
        meta = training_metadata(cfg, self.report, family=self.base.family, prediction=self.prediction,
                                 model_name=self.base.name, model_sha256=self.base.sha256,
                                 model_autov1=self.base.autov1, step=step, epoch=epoch, started_at=started_at,
                                 batches_per_epoch=len(batches), network_args=args,
                                 network_module="lycoris.kohya" if self.lycoris is not None else "networks.lora")
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_lora(path, tensors, meta)

    @torch.no_grad()
    def _sample(self, step: int) -> str:
        """A sample image with the LoRA as trained so far (under outputs/train-samples/<name>/)."""
        cfg, pipe = self.cfg, self.pipe
        prompt = cfg.sample_prompt or (self.report.train_images[0].caption if self.report.train_images else "")
        pipe.unet.eval()
        pipe.set_progress_bar_config(disable=True)  # the run's own progress line stays the one bar
        pipe.vae.to(self.device)
        if self.text_cache is not None:
            self._text_encoders_to(self.device)
        try:
            # half UNet/encoders with the fp32 VAE: autocast keeps the dtypes compatible
            with torch.autocast(self.device.type, dtype=self.weight_dtype,
                                enabled=self.weight_dtype != torch.float32):
                image = pipe(prompt=prompt, num_inference_steps=cfg.sample_steps, width=cfg.resolution,
                             height=cfg.resolution, generator=torch.Generator().manual_seed(cfg.seed),
                             guidance_scale=7.0).images[0]
        finally:
            pipe.vae.to("cpu")
            if self.text_cache is not None:
                self._text_encoders_to("cpu")
            pipe.unet.train()
        out = self.settings.outputs_path / "train-samples" / cfg.name / f"step-{step:06d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        from sdcloud.durable import atomic_write

        with atomic_write(out) as fh:
            image.save(fh, format="PNG")
        return str(out)


def class_dir(cfg: TrainConfig, settings: Settings) -> Path:
    """Where DreamBooth's generated class images go (kohya layout: one ``1_<class>`` folder)."""
    safe = "".join(c if c.isalnum() or c in " -_" else "_" for c in cfg.class_prompt)[:60].strip() or "class"
    return settings.data_dir / "train-class-images" / cfg.name / f"1_{safe}"


def make_class_images(cfg: TrainConfig, settings: Settings,
                      progress: Callable[[TrainProgress], None] | None = None) -> Path:
    """Generate the missing prior-preservation images with our engine (kept for later runs)."""
    folder = class_dir(cfg, settings)
    folder.mkdir(parents=True, exist_ok=True)
    have = len([p for p in folder.iterdir() if p.suffix == ".png"])
    if have < cfg.num_class_images:
        from sdcloud.durable import atomic_write
        from sdcloud.engine.engine import Engine
        from sdcloud.engine.types import GenerationRequest

        engine = Engine(settings)
        engine.load_model(cfg.model)
        for i in range(have, cfg.num_class_images):
            req = GenerationRequest(prompt=cfg.class_prompt, seed=cfg.seed + i, steps=cfg.class_steps,
                                    width=cfg.resolution, height=cfg.resolution, sampler_name="DPM++ 2M")
            image = engine.generate(req).images[0]
            with atomic_write(folder / f"{i:05d}.png") as fh:
                image.save(fh, format="PNG")
            (folder / f"{i:05d}.txt").write_text(cfg.class_prompt, encoding="utf-8")
            if progress:
                progress(TrainProgress(0, cfg.steps, phase="class images", epoch=i + 1))
        engine.unload()
    return folder.parent


def _load_pixels(path: Path, bucket: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """The image scaled to cover ``bucket`` and centre-cropped; [-1, 1] CHW; (orig_h, orig_w, top, left)."""
    import numpy as np
    from PIL import Image

    bw, bh = bucket
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = max(bw / w, bh / h)
        nw, nh = max(bw, math.ceil(w * scale - 1e-6)), max(bh, math.ceil(h * scale - 1e-6))
        im = im.resize((nw, nh), Image.LANCZOS) if (nw, nh) != (w, h) else im
        left, top = (nw - bw) // 2, (nh - bh) // 2
        im = im.crop((left, top, left + bw, top + bh))
        arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1), (h, w, top, left)


def _get_rng() -> dict[str, Any]:
    import numpy as np

    state = np.random.get_state()
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                           "numpy": [state[0], torch.from_numpy(state[1].astype("int64")), int(state[2]), int(state[3]),
                                     float(state[4])]}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(cfg: TrainConfig, settings: Settings, *, resume: bool = False, store: Store | None = None,
          progress: Callable[[TrainProgress], None] | None = None, stop: threading.Event | None = None,
          device: str | None = None, restart: bool = False) -> TrainResult:
    """Run (or resume) a LoRA training; writes ``models/Lora/<name>.safetensors`` only on success."""
    return Trainer(cfg, settings, store=store, progress=progress, stop=stop, device=device,
                   restart=restart).run(resume=resume)
